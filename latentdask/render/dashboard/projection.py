"""The projection: every point re-aggregated on each zoom and pan, and what is drawn over it
(thumbnails of dense regions, overlays, the selection's outline)."""

from __future__ import annotations

from typing import Any

import numpy as np

from latentdask.errors import LatentdaskError
from latentdask.render.dashboard.controls import view_of
from latentdask.render.dashboard.sources import Sources
from latentdask.render.explore import View
from latentdask.render.selected import Drawn

#: canvas pixels of the projection (the plot's inner area)
CANVAS = (560, 480)

Range = tuple[float, float]


class RangedView:
    """The range a plot of a view shows: the one zoomed to, or a new view's full extent."""

    def __init__(self) -> None:
        self.last: View | None = None

    def ranges(self, view: View, full: Any, x_range: Any, y_range: Any) -> tuple[Range, Range]:
        """``x_range`` and ``y_range`` if they are of the view shown last, else ``full``'s
        (the projection of ``view``): a new view starts from its full extent."""
        if view != self.last or x_range is None or y_range is None:
            x_range, y_range = full.x_range, full.y_range
        self.last = view
        return tuple(x_range), tuple(y_range)


class ProjectionPlots:
    """The plots of one session's projection, as functions of its widgets' values (DynamicMaps)."""

    def __init__(self, sources: Sources) -> None:
        self.sources = sources
        self.explorer = sources.explorer
        self._shown = RangedView()
        self._coloured = RangedView()
        self._thumbnails = RangedView()
        self._last_counts: tuple[tuple[View, Range, Range], np.ndarray] | None = None

    def _counts(self, view: View, x_range: Range, y_range: Range) -> np.ndarray:
        """The view's counts on the canvas over the ranges: aggregated once for the layers drawn
        from the same ranges (the points and, coloured by an attribute, the categories)."""
        key = (view, x_range, y_range)
        if self._last_counts is None or self._last_counts[0] != key:
            self._last_counts = (key, self.explorer.aggregate(view, x_range, y_range, *CANVAS))
        return self._last_counts[1]

    def projection(
        self,
        mode: str,
        a: int,
        b: int,
        threshold: str,
        color_by: str,
        shading: str,
        x_range: Any = None,
        y_range: Any = None,
    ) -> Any:
        """Every point of the view on the canvas, as an image of counts (always that one type: a
        DynamicMap's). Coloured by an attribute, the image is empty and :meth:`categories` draws the
        points in the attribute's colours, which the title names."""
        import holoviews as hv

        view = view_of(self.explorer, mode, a, b, threshold, color_by)
        try:
            full = self.explorer.projection(view)
        except LatentdaskError as exc:  # e.g. the same axis twice: say so where the projection would be
            return hv.Image(np.full((2, 2), np.nan)).opts(
                width=CANVAS[0] + 120, height=CANVAS[1] + 60, title=str(exc)
            )
        x_range, y_range = self._shown.ranges(view, full, x_range, y_range)
        counts = self._counts(view, x_range, y_range)
        x_label, y_label = full.labels
        bounds = (x_range[0], y_range[0], x_range[1], y_range[1])
        shown = int(counts.sum())
        where = f", |x_j| < {view.threshold:g} elsewhere" if view.threshold is not None else ""
        coloured = f" ({color_by} = +1 orange, −1 blue)" if counts.ndim == 3 else ""
        title = f"{x_label} × {y_label}{where}{coloured}: {shown:,} points in view"
        if counts.ndim == 3:  # coloured: the categories' layer draws the points, this image is empty
            image = np.full(counts.shape[:2], np.nan)
            points = hv.Dimension("points", range=(1, 1))  # given: an empty image has no range to find
        else:
            image, points = np.where(counts > 0, counts, np.nan), hv.Dimension("points")
        return hv.Image(image[::-1], bounds=bounds, kdims=[x_label, y_label], vdims=[points]).opts(
            width=CANVAS[0] + 120,
            height=CANVAS[1] + 60,
            tools=["tap", "box_select", "lasso_select"],
            title=title,
            framewise=True,
            xlabel=x_label,
            ylabel=y_label,
            cmap="viridis",
            cnorm=shading,
            colorbar=True,
            clabel="points per pixel",
        )

    def categories(
        self,
        mode: str,
        a: int,
        b: int,
        threshold: str,
        color_by: str,
        x_range: Any = None,
        y_range: Any = None,
    ) -> Any:
        """The view's points coloured by the attribute chosen (their colour mixes by share, their
        opacity grows with the count), over the canvas shown; transparent when none is chosen.
        Always one RGBA image (a DynamicMap's type)."""
        import holoviews as hv

        from latentdask.render.draw import category_rgba

        view = view_of(self.explorer, mode, a, b, threshold, color_by)
        try:
            full = self.explorer.projection(view)
        except LatentdaskError:  # the projection says why
            return hv.RGB(np.zeros((2, 2, 4), np.uint8), vdims=list("RGBA"))
        # the ranges followed whether coloured or not: a colour chosen again starts where the view is
        x_range, y_range = self._coloured.ranges(view, full, x_range, y_range)
        bounds = (x_range[0], y_range[0], x_range[1], y_range[1])
        if view.color_by is None:  # transparent over the canvas shown
            return hv.RGB(np.zeros((2, 2, 4), np.uint8), bounds=bounds, vdims=list("RGBA"))
        rgba = category_rgba(self._counts(view, x_range, y_range))[::-1]
        return hv.RGB(rgba, bounds=bounds, vdims=list("RGBA"))

    def overlay_points(self, mode: str, a: int, b: int, shown: list[str]) -> Any:
        """The shown overlays' points, all in one red Points element.

        Always that one type: a DynamicMap must return the same type every time, and an Overlay
        returned once a box was ticked (Points before) broke the projection until a reload.
        """
        import holoviews as hv

        from latentdask.render.projections import overlay_xy

        xs, ys = [np.empty(0)], [np.empty(0)]
        try:
            projection = self.explorer.projection(view_of(self.explorer, mode, a, b, "none", "none"))
        except LatentdaskError:  # the projection says why; nothing to draw over it
            shown = []
        for name in shown:
            x, y = overlay_xy(projection, self.sources.overlays[name], self.explorer.stats)
            xs.append(x)
            ys.append(y)
        return hv.Points((np.concatenate(xs), np.concatenate(ys))).opts(color="red", size=3, alpha=0.7)

    def outline(self, mode: str, a: int, b: int, drawn: Drawn) -> Any:
        """The drawn views of the pair shown, as closed orange paths (always a Path, maybe empty)."""
        import holoviews as hv

        paths = []
        for _, view in drawn.steps if mode == "pair" else ():
            if {a, b} == set(view.pair):
                vertices = np.asarray(view.polygon, dtype=np.float64)
                if view.pair != (a, b):
                    vertices = vertices[:, ::-1]
                paths.append(np.vstack([vertices, vertices[:1]]))
        return hv.Path(paths).opts(color="#e07b39", line_width=2)

    def thumbnail_rows(self, view: View, x_range: Range, y_range: Range) -> list[tuple[int, int, int]]:
        """(cell column, cell row, store row) of each dense cell's representative in the canvas shown: the
        real point nearest to the centre of the cell's densest pixel (see latentdask.render.thumbnails)."""
        from latentdask.render.thumbnails import dense_spots, pixel_centre

        counts = self.explorer.aggregate(view, x_range, y_range, *CANVAS)
        if counts.ndim == 3:  # coloured by an attribute: every category's points count
            counts = counts.sum(axis=2)
        spots = dense_spots(counts)
        if not spots:
            return []
        centres = np.array([pixel_centre(i, j, x_range, y_range, counts.shape) for _, _, i, j in spots])
        nearest = self.explorer.nearest_each(view, centres, 1)
        return [
            (c, r, int(found[0])) for (c, r, _, _), found in zip(spots, nearest, strict=True) if len(found)
        ]

    def thumbnail_layer(
        self,
        mode: str,
        a: int,
        b: int,
        threshold: str,
        color_by: str,
        shown: list[str],
        x_range: Any = None,
        y_range: Any = None,
    ) -> Any:
        """The representatives' images over their cells, as one RGBA image over the canvas shown
        (transparent elsewhere; all of it when the toggle is off). Always that one type (a DynamicMap's)."""
        import holoviews as hv

        from latentdask.render.thumbnails import compose

        view = view_of(self.explorer, mode, a, b, threshold, color_by)
        try:
            full = self.explorer.projection(view)
        except LatentdaskError:  # the projection says why
            return hv.RGB(np.zeros((2, 2, 4), np.uint8), vdims=list("RGBA"))
        x_range, y_range = self._thumbnails.ranges(view, full, x_range, y_range)
        rgba = np.zeros((2, 2, 4), np.uint8)
        sources = self.sources
        if shown and sources.dataset is not None and sources.filenames is not None:
            images = []
            for c, r, row in self.thumbnail_rows(view, x_range, y_range):
                try:
                    images.append((c, r, sources.real_image(str(sources.filenames[row]))))
                except Exception:  # moved or damaged since the encode: its cell stays empty
                    continue
            rgba = compose(images, (CANVAS[1], CANVAS[0]))
        bounds = (x_range[0], y_range[0], x_range[1], y_range[1])
        return hv.RGB(rgba, bounds=bounds, vdims=list("RGBA"))
