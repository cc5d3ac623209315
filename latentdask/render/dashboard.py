"""``latentdask serve``: a panel app to explore every z-point of a store in the browser.

The projection (a pair of components or of principal axes, optionally a slice, coloured
by an attribute) is re-aggregated with datashader over **all** points on every zoom and
pan, from the columns held in the cluster's memory (:mod:`latentdask.render.explore`). Beside it:
both components' histograms, the correlation heatmap (a click selects that pair), and the
headline statistics. Hovering shows the real image nearest to the cursor (from the view's plane
indexes on the workers); a click shows the nearest real images, keeps the nearest, and shows
the image the decoder makes at that latent position (every other component at the mean). A
toggle draws the images of representative points over the dense cells of the canvas shown
(:mod:`latentdask.render.thumbnails`).

A box or a lasso drawn in a pair of components selects rows over every z-point, evaluated
on the workers (:mod:`latentdask.render.selected`); selections combine (new, add, subtract,
intersect). Beside the projection: the selection's count and share, the components that set
it apart (a click shows that pair), where the store has CelebA attributes the ones whose share
in it differs most from their share in the corpus, its histograms over the corpus's, the decoded
image of its mean, a seeded sample of its real images, and ``Export``, which writes
``selection-NAME.zarr`` for ``--rows`` (stats, render, score). The linked view, a second
projection with its own pair or principal axes, draws the selection's rows in orange over
every point in grey; a click on the heatmap or on a component sets the pair of the view the
"clicks show" buttons name.
:func:`explore` gives the same app to a notebook.

Everything the page loads comes from the app's own server (bokeh and panel resources are
served by it, no template, no remote fonts), so it works on a closed network.

Text from data (file names, error texts) reaches the page only through :func:`_figure`, which
escapes it: panel's image panes write ``alt`` with ``repr()``, so a file named
``a" b' onload=alert(1) x='1.jpg`` would otherwise become an attribute of the image.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import param

from latentdask.errors import LatentdaskError
from latentdask.location import Location, Where, location
from latentdask.render.explore import Explorer, View
from latentdask.render.selected import Drawn, describe_drawn, export, selection_path
from latentdask.stats.analysis import headline
from latentdask.stats.describe import Corpus, Summary, describe, warm_kernels
from latentdask.store import selection

#: canvas pixels of the projection (the plot's inner area)
CANVAS = (560, 480)
#: canvas pixels of the linked view
LINKED = (340, 300)
#: the linked view: every point in grey, the selection's rows in orange
GREYS = ["#e6e6e6", "#8c8c8c", "#3a3a3a"]
ORANGES = ["#fdae6b", "#e6550d", "#a63603"]
NEAREST = 6
THUMBNAIL = 72
#: images kept by clicks in the projection (the oldest leaves first)
KEPT = 12
HOVER_HINT = "hover over the projection: the nearest real image; a click keeps it"
THUMBNAILS_TOGGLE = "thumbnails over dense regions"
#: components listed as setting a selection apart
APART = 10
#: what the next box or lasso does, per combine mode
NEXT_DRAWN = {
    "new": "the next box or lasso drawn starts a new selection",
    "add": "the next box or lasso drawn adds its rows to the selection",
    "subtract": "the next box or lasso drawn takes its rows out of the selection",
    "intersect": "the next box or lasso drawn keeps the selected rows inside it",
}

#: where a click on the heatmap or on a component shows its pair, said once the server has the choice
#: (a click that reaches the server before the choice does goes to the view chosen before)
CLICKS_SHOW = {
    "left": "clicks on the heatmap or on a component now show their pair in the left view",
    "right": "clicks on the heatmap or on a component now show their pair in the right view",
}


class ServeError(LatentdaskError):
    """A dashboard that cannot start as asked."""


def _figure(png: bytes | None, caption: str, width: int, *, alt: str | None = None, strip: str = "") -> str:
    """An image and its caption as HTML; every text escaped (``&<>"'``), so data stays text.
    ``strip``: which row of images it is in (a ``data-strip`` attribute: nearest, sample, ...)."""
    text = html.escape(caption, quote=True)
    style = f"margin:0 4px;width:{int(width)}px;font-size:10px;line-height:1.2;overflow-wrap:anywhere"
    image = (
        f'<img src="data:image/png;base64,{base64.b64encode(png).decode()}" width="{int(width)}" '
        f'alt="{html.escape(caption if alt is None else alt, quote=True)}" data-strip="{strip}">'
        if png is not None
        else ""
    )
    return f'<figure style="{style}">{image}<figcaption>{text}</figcaption></figure>'


def _png(pixels: np.ndarray, size: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).resize((size, size), Image.Resampling.NEAREST).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class Sources:
    """What every session of the dashboard shares: the explorer, whose columns the cluster holds, the
    dataset and file names for real images, the model for decoding, overlays, and where exports go."""

    explorer: Explorer
    dataset: Any = None
    checkpoint: Any = None
    filenames: np.ndarray | None = None
    overlays: dict[str, np.ndarray] = field(default_factory=dict)
    selections: Location = field(default_factory=Path)
    #: every valid row's moments, from the statistics (None when they are of a split): a selection
    #: is then described from its own rows alone
    corpus: Corpus | None = None

    @classmethod
    def open(
        cls,
        store: Where,
        *,
        stats: Where | None,
        points: Sequence[Where],
        dataset: Where | None,
        model: Where | None,
        client: Any,
        selections: Where,
    ) -> Sources:
        """Open what a session needs; the first view's columns are held before anyone asks."""
        import zarr

        from latentdask.render.projections import read_overlay
        from latentdask.store.paths import default_stats_path

        store = location(store)
        stats_path = location(stats) if stats is not None else default_stats_path(store)
        if not stats_path.exists():
            raise ServeError(f"{stats_path} does not exist; give --stats")
        explorer = Explorer(store, stats_path, client)
        client.run(warm_kernels)
        attrs = zarr.open_group(str(store), mode="r").attrs if (store / "zarr.json").exists() else {}
        dataset_root = dataset or attrs.get("dataset_root")
        model_path = model or attrs.get("model_path")
        sources = cls(
            explorer,
            selections=location(selections),
            corpus=Corpus.of(explorer.stats, explorer.points.z.shape[0]),
        )
        if dataset_root is not None and location(str(dataset_root)).exists():
            from latentdask.data.dataset import open_dataset

            sources.dataset = open_dataset(str(dataset_root))
            group = zarr.open_group(str(store), mode="r")
            sources.filenames = np.asarray(group["filename"][...]) if "filename" in group else None  # type: ignore[index]
        if model_path is not None and location(str(model_path)).exists():
            from latentdask.model.checkpoint import load_checkpoint

            sources.checkpoint = load_checkpoint(str(model_path))
            if sources.checkpoint.model.config.latent_dim != explorer.dim:
                raise ServeError(
                    f"{model_path} decodes {sources.checkpoint.model.config.latent_dim} components; "
                    f"the store has {explorer.dim}"
                )
        for path in points:
            overlay = read_overlay(path)
            if overlay.z.shape[1] != explorer.dim:
                raise ServeError(f"{path} has {overlay.z.shape[1]} components; the store has {explorer.dim}")
            sources.overlays[overlay.label] = overlay.z
        explorer.frame(Dashboard(sources).current_view())
        explorer.hold_rows()  # queued behind the first view's columns: selections then read memory
        return sources

    def session(self) -> Any:
        """One browser session's app (its own widgets and selection) over what all sessions share."""
        return Dashboard(self).layout()


class Chosen(param.Parameterized):
    """A session's selection: the views drawn so far and what the panel shows of their rows."""

    drawn = param.Parameter(default=Drawn())
    summary = param.Parameter(default=None)
    held = param.Parameter(default=None)  # the selected rows, held on the workers (Explorer.hold)


class Dashboard:
    """One browser session's widgets and plots, over an explorer shared by all sessions."""

    def __init__(self, sources: Sources) -> None:
        import panel as pn

        self.sources = sources
        self.explorer = explorer = sources.explorer
        stats = explorer.stats
        dim = explorer.dim
        a0, b0 = _strongest_pair(stats)
        self.mode = pn.widgets.RadioButtonGroup(label="axes", options=["pair", "pc"], value="pair")
        self.a = pn.widgets.IntInput(
            label="x axis (component, or principal axis counted from 0)", value=a0, start=0, end=dim - 1
        )
        self.b = pn.widgets.IntInput(label="y axis", value=b0, start=0, end=dim - 1)
        self.threshold = pn.widgets.Select(
            label="slice |x_j| < t outside the pair",
            options=["none"] + [f"{t:g}" for t in explorer.thresholds],
        )
        self.color_by = pn.widgets.Select(
            label="colour by", options=["none", *explorer.points.attribute_names]
        )
        self.shading = pn.widgets.Select(label="shading", options=["eq_hist", "log"], value="eq_hist")
        self.shown_overlays = pn.widgets.CheckBoxGroup(label="overlays", options=list(sources.overlays))
        self.nearest = pn.Row(name="nearest real images")
        self.decoded = pn.Row(name="decoded")
        # images instead of dots: the real image under the cursor, those kept by a click, thumbnails
        self.under_cursor = pn.Row(name="under the cursor")
        self.under_cursor_text = pn.pane.Markdown(HOVER_HINT, width=CANVAS[0])
        self._hovered: int | None = None
        self.kept = pn.Row(name="kept")
        self.thumbnails_shown = pn.widgets.CheckBoxGroup(options=[THUMBNAILS_TOGGLE], value=[])
        self._last_thumbnail_view: View | None = None
        self._last_view: View | None = None
        self.mode.param.watch(self._axes_for_mode, "value")
        # the linked view: its own axes; the selection's rows drawn over every point
        c0, d0 = _second_pair(stats)
        self.linked_mode = pn.widgets.RadioButtonGroup(
            options={"components": "pair", "principal axes": "pc"}, value="pair" if dim > 2 else "pc"
        )
        self.c = pn.widgets.IntInput(label="linked view: x axis", value=c0, start=0, end=dim - 1, width=160)
        self.d = pn.widgets.IntInput(label="linked view: y axis", value=d0, start=0, end=dim - 1, width=160)
        self.linked_mode.param.watch(self._axes_for_linked_mode, "value")
        self.clicks_show = pn.widgets.RadioButtonGroup(
            options={"left view": "left", "right view": "right"}, value="left"
        )
        self.clicks_note = pn.pane.Markdown(CLICKS_SHOW["left"], width=420)
        self.clicks_show.param.watch(self._clicks_note, "value")
        self._last_linked: View | None = None
        self.highlighted = pn.pane.Markdown("", width=420)
        # the selection beside the projection
        self.chosen = Chosen()
        self.combine = pn.widgets.RadioButtonGroup(
            label="combine", options=["new", "add", "subtract", "intersect"], value="new"
        )
        self.next_drawn = pn.pane.Markdown(NEXT_DRAWN["new"], width=340)
        self.combine.param.watch(self._next_drawn, "value")
        self.selection_name = pn.widgets.TextInput(
            label="name (exported as selection-NAME.zarr)", value="selected", width=190
        )
        self.export_button = pn.widgets.Button(label="Export", color="primary")
        self.clear_button = pn.widgets.Button(label="Clear")
        self.export_button.on_click(self.export)
        self.clear_button.on_click(self.clear)
        self.selection_text = pn.pane.Markdown(
            "draw a box or a lasso in the projection (toolbar) to select rows", width=340
        )
        self.selection_note = pn.pane.Markdown("", width=340)
        self.apart = pn.Column(name="apart")
        self.mean_image = pn.Row(name="decoded mean")
        self.sample = pn.GridBox(ncols=4, name="sample")
        self.attribute_profile = pn.pane.Markdown("", width=340)

    def _axes_for_mode(self, event: Any) -> None:
        """Principal axes start at the first two; components at the most correlated pair."""
        self.a.value, self.b.value = (0, 1) if event.new == "pc" else _strongest_pair(self.explorer.stats)

    def _axes_for_linked_mode(self, event: Any) -> None:
        self.c.value, self.d.value = (0, 1) if event.new == "pc" else _second_pair(self.explorer.stats)

    def _set_pair(self, a: int, b: int) -> None:
        """Show the pair (a, b) in the view the "clicks show" buttons name."""
        if self.clicks_show.value == "right":
            self.linked_mode.value = "pair"
            self.c.value, self.d.value = a, b
        else:
            self.mode.value = "pair"
            self.a.value, self.b.value = a, b

    # ------------------------------------------------------------------ state

    def view(self, mode: str, a: int, b: int, threshold: str, color_by: str) -> View:
        names = self.explorer.points.attribute_names
        return View(
            mode="pc" if mode == "pc" else "pair",
            a=int(a),
            b=int(b),
            threshold=None if mode == "pc" or threshold == "none" else float(threshold),
            color_by=None if color_by == "none" or mode == "pc" else names.index(color_by),
        )

    def current_view(self) -> View:
        a, b = self.a.value or 0, self.b.value or 0
        return self.view(self.mode.value, a, b, self.threshold.value, self.color_by.value)

    # ------------------------------------------------------------------ plots

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
        import holoviews as hv

        view = self.view(mode, a, b, threshold, color_by)
        try:
            full = self.explorer.projection(view)
        except LatentdaskError as exc:  # e.g. the same axis twice: say so where the projection would be
            return hv.Image(np.full((2, 2), np.nan)).opts(
                width=CANVAS[0] + 120, height=CANVAS[1] + 60, title=str(exc)
            )
        if view != self._last_view or x_range is None or y_range is None:
            x_range, y_range = full.x_range, full.y_range  # a new view starts from its full extent
        self._last_view = view
        counts = self.explorer.aggregate(view, tuple(x_range), tuple(y_range), *CANVAS)
        x_label, y_label = full.labels
        bounds = (x_range[0], y_range[0], x_range[1], y_range[1])
        shown = int(counts.sum())
        where = f", |x_j| < {view.threshold:g} elsewhere" if view.threshold is not None else ""
        title = f"{x_label} × {y_label}{where}: {shown:,} points in view"
        common = {
            "width": CANVAS[0] + 120,
            "height": CANVAS[1] + 60,
            "tools": ["tap", "box_select", "lasso_select"],
            "title": title,
            "framewise": True,
            "xlabel": x_label,
            "ylabel": y_label,
        }
        if counts.ndim == 3:
            from latentdask.render.draw import category_rgba

            return hv.RGB(category_rgba(counts)[::-1], bounds=bounds, kdims=[x_label, y_label]).opts(**common)
        image = np.where(counts > 0, counts, np.nan)[::-1]
        return hv.Image(image, bounds=bounds, kdims=[x_label, y_label], vdims=["points"]).opts(
            cmap="viridis", cnorm=shading, colorbar=True, clabel="points per pixel", **common
        )

    def linked(self, mode: str, a: int, b: int, held: Any, x_range: Any = None, y_range: Any = None) -> Any:
        """The linked view: every point in grey, the selection's rows (``held``) in orange over them.

        Always an overlay of two images (a DynamicMap returns one type); the line under it says how
        many of the selection's rows are highlighted in view.
        """
        import holoviews as hv

        view = self.view(mode, a, b, "none", "none")
        size = {"width": LINKED[0] + 80, "height": LINKED[1] + 60}
        try:
            full = self.explorer.projection(view)
        except LatentdaskError as exc:
            blank = hv.Image(np.full((2, 2), np.nan))
            self.highlighted.object = f"linked view: {exc}"
            return (blank * blank).opts(hv.opts.Image(**size, title="linked view"))
        if view != self._last_linked or x_range is None or y_range is None:
            x_range, y_range = full.x_range, full.y_range
        self._last_linked = view
        ranges = (tuple(x_range), tuple(y_range), *LINKED)
        counts = self.explorer.aggregate(view, *ranges)
        chosen = np.zeros_like(counts) if held is None else self.explorer.aggregate_held(view, held, *ranges)
        x_label, y_label = full.labels
        bounds = (x_range[0], y_range[0], x_range[1], y_range[1])
        title = f"linked view {x_label} × {y_label}"
        self.highlighted.object = (
            f"highlighted: {int(chosen.sum()):,} rows of the selection, "
            f"among {int(counts.sum()):,} points in view"
        )
        kdims = [x_label, y_label]
        common = {"cnorm": "eq_hist", "xlabel": x_label, "ylabel": y_label, "framewise": True}
        layers = []
        for name, values, cmap in (("points", counts, GREYS), ("highlighted", chosen, ORANGES)):
            # the range given: an empty layer (nothing selected) has no data range to compute
            vdim = hv.Dimension(name, range=(1, max(int(values.max(initial=0)), 1)))
            image = np.where(values > 0, values, np.nan)[::-1]
            layers.append(hv.Image(image, bounds=bounds, kdims=kdims, vdims=[vdim]).opts(cmap=cmap, **common))
        corpus, selected = layers
        return (corpus * selected).opts(**size, title=title, toolbar="above")

    def overlay_points(self, mode: str, a: int, b: int, shown: list[str]) -> Any:
        """The shown overlays' points, all in one red Points element.

        Always that one type: a DynamicMap must return the same type every time, and an Overlay
        returned once a box was ticked (Points before) broke the projection until a reload.
        """
        import holoviews as hv

        from latentdask.render.projections import overlay_xy

        xs, ys = [np.empty(0)], [np.empty(0)]
        try:
            projection = self.explorer.projection(self.view(mode, a, b, "none", "none"))
        except LatentdaskError:  # the projection says why; nothing to draw over it
            shown = []
        for name in shown:
            x, y = overlay_xy(projection, self.sources.overlays[name], self.explorer.stats)
            xs.append(x)
            ys.append(y)
        return hv.Points((np.concatenate(xs), np.concatenate(ys))).opts(color="red", size=3, alpha=0.7)

    def histograms(self, mode: str, a: int, b: int, summary: Summary | None) -> Any:
        """Both components' histograms over the corpus, the selection's (same bins) drawn over them."""
        import holoviews as hv

        stats = self.explorer.stats
        if mode == "pc":
            return hv.Div("<p>histograms are per component: choose the 'pair' axes</p>")
        edges = stats["bin_edges"].values
        missing = [j for j in (a, b) if summary is not None and j not in summary.hist]
        if missing and self.chosen.held is not None:  # another pair since the selection: its histograms now
            assert summary is not None
            summary.hist.update(
                describe(
                    self.explorer.points,
                    self.chosen.held,
                    edges=edges,
                    columns=missing,
                    corpus=self.sources.corpus,
                    scheduler=self.explorer.client,
                ).hist
            )
        plots = []
        for component in (a, b):
            counts = stats["hist"].values[component]
            used = np.flatnonzero(counts)
            low, high = (used[0], used[-1] + 1) if len(used) else (0, len(counts))
            peak, fwhm = float(stats["peak"].values[component]), float(stats["fwhm"].values[component])
            kdims = [f"latent {component}"]
            corpus = hv.Histogram((edges[low : high + 1], counts[low:high]), kdims=kdims).opts(
                color="#3b6ea5", line_width=0
            )
            chosen = hv.Histogram(
                (
                    edges[low : high + 1],
                    np.zeros(high - low) if summary is None else summary.hist[component][low:high],
                ),
                kdims=kdims,
            ).opts(color="#e07b39", line_width=0, alpha=0.9)
            where = "" if summary is None else ", the selection in orange"
            plots.append(
                (corpus * chosen).opts(
                    width=330,
                    height=200,
                    title=f"latent {component}: peak {peak:.3f}, FWHM {fwhm:.3f}{where}",
                )
            )
        return hv.Layout(plots).cols(1)

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

    def heatmap(self) -> Any:
        import holoviews as hv

        corr = self.explorer.stats["corr"].values
        dim = len(corr)
        return hv.Image(
            corr[::-1], bounds=(-0.5, -0.5, dim - 0.5, dim - 0.5), kdims=["latent a", "latent b"], vdims=["r"]
        ).opts(
            cmap="RdBu_r",
            clim=(-1, 1),
            colorbar=True,
            width=360,
            height=320,
            tools=["tap", "hover"],
            title="correlation (click: show that pair)",
        )

    def headline_markdown(self) -> str:
        figures = headline(self.explorer.stats)
        slices = next(iter(figures["slice_populations"].items()), None)
        lines = [
            f"**{figures['count']:,}** z-points ({figures['invalid']} invalid, "
            f"{figures['nonfinite']} non-finite)",
            f"mean radius **{figures['mean_radius']:.3f}**",
            f"pairs with |r| ≥ 0.5: **{figures['strong_pairs_count']}**",
        ]
        if slices:
            t, populations = slices
            a, b, count = populations["smallest"][0]
            lines.append(f"smallest slice at |x_j| < {t}: ({a}, {b}) with **{count:,}** points")
        return "\n\n".join(lines)

    # ------------------------------------------------------------------ clicks

    def show_pair(self, x: float | None, y: float | None) -> None:
        if x is None or y is None:
            return
        dim = self.explorer.dim
        a, b = round(x), round(y)
        if 0 <= a < dim and 0 <= b < dim and a != b:
            self._set_pair(a, b)

    def hover(self, x: float | None, y: float | None) -> None:
        """The real image nearest to the cursor (the view's plane indexes answer on the workers)."""
        if x is None or y is None:
            return
        try:
            rows = self.explorer.nearest_rows(self.current_view(), x, y, 1)
        except LatentdaskError:  # no view to hover over: the projection says why
            return
        if not rows:
            return
        self.under_cursor_text.object = f"under the cursor ({x!r}, {y!r}): nearest real point, row {rows[0]}"
        if rows[0] != self._hovered:
            self._hovered = rows[0]
            self.under_cursor.objects = self._images(rows, "under-cursor")

    def show_point(self, x: float | None, y: float | None) -> None:
        """A click: the nearest real images, the nearest one kept, and what the decoder makes there."""
        import panel as pn

        if x is None or y is None:
            return
        view = self.current_view()
        rows = self.explorer.nearest_rows(view, x, y, NEAREST)
        self.nearest.objects = self._images(rows, "nearest")
        if rows:
            self.kept.objects = [*self.kept.objects, *self._images(rows[:1], "kept")][-KEPT:]
        if self.sources.checkpoint is not None:
            z = self.explorer.latent_at(view, x, y)
            caption = f"decoded at ({x:.3f}, {y:.3f}), other components at the mean"
            self.decoded.objects = [pn.pane.HTML(self._decoded(z, caption, "decoded"), width=140)]

    def _images(self, rows: Any, strip: str) -> list[Any]:
        """The real images of store rows as captioned thumbnails (their row numbers without a dataset),
        for the row of images ``strip``."""
        import panel as pn

        sources = self.sources
        thumbnails: list[Any] = []
        for row in rows:
            if sources.dataset is not None and sources.filenames is not None:
                name = str(sources.filenames[row])
                try:
                    shown = _figure(self._thumbnail(name), name, THUMBNAIL, strip=strip)
                except Exception as exc:  # moved or damaged since the encode: say so in its place
                    shown = _figure(None, f"{name}: cannot be shown ({exc})", THUMBNAIL)
            else:
                shown = _figure(None, f"row {row}", THUMBNAIL)
            thumbnails.append(pn.pane.HTML(shown, width=THUMBNAIL + 8))
        return thumbnails

    def _decoded(self, z: np.ndarray, caption: str, alt: str) -> str:
        """What the decoder makes of one latent vector, as a captioned image."""
        from latentdask.generate.grids import decode_points

        pixels = decode_points(self.sources.checkpoint.model, z.astype(np.float32)[None, :])[0]
        return _figure(_png(pixels, 128), caption, 128, alt=alt)

    def _thumbnail(self, name: str) -> bytes:
        from PIL import Image

        image = Image.fromarray(self._real_image(name))
        image.thumbnail((THUMBNAIL, THUMBNAIL))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()

    def _real_image(self, name: str) -> np.ndarray:
        """A dataset image as uint8 RGB, as its file holds it."""
        from PIL import Image

        return np.asarray(Image.open(io.BytesIO(self.sources.dataset.container.read(name))).convert("RGB"))

    # ------------------------------------------------------------------ thumbnails

    def thumbnail_rows(
        self, view: View, x_range: tuple[float, float], y_range: tuple[float, float]
    ) -> list[tuple[int, int, int]]:
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

        view = self.view(mode, a, b, threshold, color_by)
        try:
            full = self.explorer.projection(view)
        except LatentdaskError:  # the projection says why
            return hv.RGB(np.zeros((2, 2, 4), np.uint8), vdims=list("RGBA"))
        if view != self._last_thumbnail_view or x_range is None or y_range is None:
            x_range, y_range = full.x_range, full.y_range
        self._last_thumbnail_view = view
        rgba = np.zeros((2, 2, 4), np.uint8)
        if shown and self.sources.dataset is not None and self.sources.filenames is not None:
            filenames = self.sources.filenames
            picks = self.thumbnail_rows(view, tuple(x_range), tuple(y_range))
            images = []
            for c, r, row in picks:
                try:
                    images.append((c, r, self._real_image(str(filenames[row]))))
                except Exception:  # moved or damaged since the encode: its cell stays empty
                    continue
            rgba = compose(images, (CANVAS[1], CANVAS[0]))
        bounds = (x_range[0], y_range[0], x_range[1], y_range[1])
        return hv.RGB(rgba, bounds=bounds, vdims=list("RGBA"))

    # ------------------------------------------------------------------ selection

    def select_box(self, bounds: tuple[float, float, float, float] | None) -> None:
        if bounds is not None:
            x0, y0, x1, y1 = bounds
            self._select(partial(selection.View.box, x=(x0, x1), y=(y0, y1)))

    def select_lasso(self, geometry: np.ndarray | None) -> None:
        if geometry is not None:
            polygon = tuple((float(x), float(y)) for x, y in np.asarray(geometry))
            self._select(partial(selection.View, polygon=polygon))

    def _next_drawn(self, event: Any) -> None:
        self.next_drawn.object = NEXT_DRAWN[event.new]

    def _clicks_note(self, event: Any) -> None:
        self.clicks_note.object = CLICKS_SHOW[event.new]

    def _select(self, drawn_view: Any) -> None:
        """Combine the view drawn in the pair shown (with its slice) with the selection, and describe it."""
        view = self.current_view()
        if view.mode == "pc":
            self.selection_note.object = (
                "selections are drawn in a pair of components: choose the 'pair' axes"
            )
            return
        try:
            drawn = self.chosen.drawn.then(
                self.combine.value, drawn_view((view.a, view.b), slice=view.threshold)
            )
            # evaluated once, held on the workers: described here, drawn in the linked view
            held, summary = describe_drawn(
                self.explorer.points,
                drawn,
                edges=self.explorer.stats["bin_edges"].values,
                columns=(view.a, view.b),
                corpus=self.sources.corpus,
                client=self.explorer.client,
            )
        except LatentdaskError as exc:  # e.g. a lasso of two vertices: say so, keep the selection
            self.selection_note.object = str(exc)
            return
        self.selection_note.object = ""
        self.chosen.param.update(drawn=drawn, summary=summary, held=held)
        self._show_selection()

    def _show_selection(self) -> None:
        """The panel beside the projection, from the current selection's summary."""
        import panel as pn

        summary, drawn = self.chosen.summary, self.chosen.drawn
        if summary is None:
            self.selection_text.object = "draw a box or a lasso in the projection (toolbar) to select rows"
            self.apart.objects, self.mean_image.objects, self.sample.objects = [], [], []
            self.attribute_profile.object = ""
            return
        contrast = summary.profile
        steps = " then ".join(f"{m} in ({v.pair[0]}, {v.pair[1]})" for m, v in drawn.steps)
        self.selection_text.object = (
            f"**{contrast.selected:,} of {contrast.rows:,} rows selected** ({contrast.share:.2%} of the "
            f"valid rows; {steps}); its histograms are drawn in orange over the corpus's"
        )
        selected_on = sorted({j for _, v in drawn.steps for j in v.pair})
        # none when the selection or the rest is empty: no difference to rank
        apart = [(j, smd) for j, smd in contrast.apart(APART, leave_out=selected_on) if np.isfinite(smd)]
        buttons = []
        for j, smd in apart:
            button = pn.widgets.Button(label=f"latent {j}: {smd:+.2f}", color="light", width=160)
            button.on_click(partial(self._show_apart, j, [k for k, _ in apart if k != j]))
            buttons.append(button)
        self.apart.objects = [
            pn.pane.Markdown(
                "besides the components selected on, the ones that set it apart (standardized mean "
                "difference against the rest; a click shows it against the strongest other)",
                width=340,
            ),
            pn.GridBox(*buttons, ncols=2),
        ]
        self.attribute_profile.object = _attribute_table(summary)
        if summary.mean is None:
            self.mean_image.objects = []
        elif self.sources.checkpoint is None:
            self.mean_image.objects = [
                pn.pane.Markdown("no model to decode the mean: the store records none (give --model)")
            ]
        else:
            image = self._decoded(summary.mean, "the selection's mean, decoded", "decoded mean")
            self.mean_image.objects = [pn.pane.HTML(image, width=140)]
        self.sample.objects = self._images(summary.sample, "sample")

    def _show_apart(self, component: int, others: list[int], _event: Any = None) -> None:
        """Show ``component`` against the strongest other one set apart."""
        if others:
            self._set_pair(component, others[0])

    def export(self, _event: Any = None) -> None:
        """Write the selection as ``selection-NAME.zarr`` in the selections folder."""
        summary = self.chosen.summary
        if summary is None:
            self.selection_note.object = "nothing is selected: draw a box or a lasso in the projection"
            return
        try:
            out = selection_path(self.sources.selections, self.selection_name.value or "")
            count = export(
                out,
                self.chosen.drawn,
                self.explorer.points,
                summary.profile,
                rows=self.chosen.held,  # computed when drawn, held on the workers
                scheduler=self.explorer.client,
            )
        except LatentdaskError as exc:
            self.selection_note.object = str(exc)
            return
        self.selection_note.object = f"wrote {count:,} rows → {out}"

    def clear(self, _event: Any = None) -> None:
        self.selection_note.object = ""
        self.chosen.param.update(drawn=Drawn(), summary=None, held=None)
        self._show_selection()

    # ------------------------------------------------------------------ layout

    def layout(self) -> Any:
        import holoviews as hv
        import panel as pn

        widgets: dict[str, Any] = {
            "mode": self.mode,
            "a": self.a,
            "b": self.b,
            "threshold": self.threshold,
            "color_by": self.color_by,
            "shading": self.shading,
        }
        ranges = hv.streams.RangeXY()
        projection = hv.DynamicMap(pn.bind(self.projection, **widgets), streams=[ranges])
        overlays = hv.DynamicMap(
            pn.bind(self.overlay_points, mode=self.mode, a=self.a, b=self.b, shown=self.shown_overlays)
        )
        outline = hv.DynamicMap(
            pn.bind(self.outline, mode=self.mode, a=self.a, b=self.b, drawn=self.chosen.param.drawn)
        )
        view_widgets = {k: widgets[k] for k in ("mode", "a", "b", "threshold", "color_by")}
        thumbnails = hv.DynamicMap(
            pn.bind(self.thumbnail_layer, **view_widgets, shown=self.thumbnails_shown),
            streams=[hv.streams.RangeXY(source=projection)],
        )
        clicks = hv.streams.Tap(source=projection, x=None, y=None)
        clicks.add_subscriber(lambda x, y: self.show_point(x, y))
        pointer = hv.streams.PointerXY(source=projection, x=None, y=None)  # holoviews throttles its events
        pointer.add_subscriber(lambda x, y: self.hover(x, y))
        boxes = hv.streams.BoundsXY(source=projection, bounds=None)
        boxes.add_subscriber(self.select_box)
        lassos = hv.streams.Lasso(source=projection, geometry=None)
        lassos.add_subscriber(self.select_lasso)
        linked_ranges = hv.streams.RangeXY()
        linked = hv.DynamicMap(
            pn.bind(self.linked, mode=self.linked_mode, a=self.c, b=self.d, held=self.chosen.param.held),
            streams=[linked_ranges],
        )
        heat = self.heatmap()
        picks = hv.streams.Tap(source=heat, x=None, y=None)
        picks.add_subscriber(lambda x, y: self.show_pair(x, y))
        overlaid = bool(self.sources.overlays)
        controls = pn.Column(
            pn.pane.Markdown("### latentdask"),
            self.mode,
            self.a,
            self.b,
            self.threshold,
            self.color_by,
            self.shading,
            self.thumbnails_shown,
            pn.pane.Markdown("overlays (red)") if overlaid else None,
            self.shown_overlays if overlaid else None,
            pn.pane.Markdown(self.headline_markdown()),
            width=260,
        )
        histograms = pn.bind(
            self.histograms, mode=self.mode, a=self.a, b=self.b, summary=self.chosen.param.summary
        )
        chosen = pn.Column(
            pn.pane.Markdown("### selection"),
            self.combine,
            self.next_drawn,
            self.selection_text,
            pn.Row(self.selection_name, self.export_button, self.clear_button),
            self.selection_note,
            self.mean_image,
            pn.pane.Markdown("a seeded sample of its rows"),
            self.sample,
            self.apart,
            self.attribute_profile,
            histograms,
            width=360,
        )
        return pn.Row(
            controls,
            pn.Column(
                pn.pane.HoloViews(projection * thumbnails * overlays * outline, name="projection"),
                self.under_cursor_text,
                self.under_cursor,
                pn.pane.Markdown("click a point: the nearest real images, and what the decoder makes there"),
                self.nearest,
                self.decoded,
                pn.pane.Markdown("kept by clicks"),
                self.kept,
            ),
            pn.Column(
                pn.pane.HoloViews(linked, name="linked view"),
                self.highlighted,
                self.linked_mode,
                pn.Row(self.c, self.d),
                self.clicks_show,
                self.clicks_note,
                heat,
                width=440,
            ),
            chosen,
        )


def _strongest_pair(stats: Any) -> tuple[int, int]:
    from latentdask.render.projections import ranked_pairs

    return ranked_pairs(stats, "corr", 1)[0]


def _second_pair(stats: Any) -> tuple[int, int]:
    """The linked view's first pair: the second most correlated (the first when there is one)."""
    from latentdask.render.projections import ranked_pairs

    return ranked_pairs(stats, "corr", 2)[-1]


def _attribute_table(summary: Summary) -> str:
    """The attributes whose share in the selection differs most from the corpus's, as a table."""
    shares = summary.attributes
    ranked = [] if shares is None else shares.ranked()
    if not ranked:
        return ""
    lines = [
        "attributes whose share differs most (selected vs all valid rows)",
        "",
        "| attribute | selected | all | difference |",
        "|---|---:|---:|---:|",
    ]
    for name, chosen, corpus in ranked:
        cell = html.escape(name).replace("|", "\\|")  # a name stays text and one cell
        lines.append(f"| {cell} | {chosen:.1%} | {corpus:.1%} | {100 * (chosen - corpus):+.1f} pt |")
    return "\n".join(lines)


def explore(
    store: Where,
    *,
    stats: Where | None = None,
    points: Sequence[Where] | None = None,
    dataset: Where | None = None,
    model: Where | None = None,
    client: Any = None,
    selections: Where = ".",
) -> Any:
    """The dashboard of ``serve`` as a panel object, to show in a Jupyter notebook.

    ``client``: the Dask client whose workers hold the shown columns (default: the current one).
    ``selections``: the folder ``Export`` writes ``selection-NAME.zarr`` into.

    Examples
    --------
    >>> from distributed import Client
    >>> import latentdask as ld
    >>> client = Client()  # doctest: +SKIP
    >>> ld.explore("latents.zarr")  # doctest: +SKIP
    """
    _extensions()
    if client is None:
        from distributed import default_client

        try:
            client = default_client()
        except ValueError:
            raise ServeError(
                "explore needs a Dask client: start one (distributed.Client()) or give client="
            ) from None
    return Sources.open(
        store,
        stats=stats,
        points=list(points or []),
        dataset=dataset,
        model=model,
        client=client,
        selections=selections,
    ).session()


def _extensions() -> None:
    """Panel and holoviews with their resources inline: nothing is fetched from a CDN."""
    import holoviews as hv
    import panel as pn

    pn.extension(inline=True)
    hv.extension("bokeh")


def serve(
    store: Where,
    *,
    stats: Where | None = None,
    points: Sequence[Where] | None = None,
    dataset: Where | None = None,
    model: Where | None = None,
    client: Any,
    address: str = "127.0.0.1",
    port: int = 5006,
    show: bool = False,
    selections: Where = ".",
) -> None:
    """Serve the dashboard until interrupted: one :func:`explore` app per browser session."""
    import panel as pn

    _extensions()
    sources = Sources.open(
        store,
        stats=stats,
        points=list(points or []),
        dataset=dataset,
        model=model,
        client=client,
        selections=selections,
    )
    pn.serve(
        {"/": sources.session},
        address=address,
        port=port,
        show=show,
        title="latentdask",
        websocket_origin=[f"{address}:{port}", f"localhost:{port}"],
        print_url=True,
    )
