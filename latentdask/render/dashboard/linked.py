"""The linked view: a second projection with its own pair or principal axes, the selection's rows in
orange over every point in grey; beside it the correlation heatmap, and which view clicks set."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import panel as pn

from latentdask.errors import LatentdaskError
from latentdask.render.dashboard.controls import second_pair, view_of
from latentdask.render.dashboard.projection import RangedView
from latentdask.render.explore import Explorer

#: canvas pixels of the linked view
LINKED = (340, 300)
#: every point in grey, the selection's rows in orange
GREYS = ["#e6e6e6", "#8c8c8c", "#3a3a3a"]
ORANGES = ["#fdae6b", "#e6550d", "#a63603"]
#: where a click on the heatmap or on a component shows its pair, said once the server has the choice
#: (a click that reaches the server before the choice does goes to the view chosen before)
CLICKS_SHOW = {
    "left": "clicks on the heatmap or on a component now show their pair in the left view",
    "right": "clicks on the heatmap or on a component now show their pair in the right view",
}


class LinkedView(pn.viewable.Viewer):
    """The linked view's widgets and plot, drawing the rows of ``held`` (the selection's parameter),
    with the correlation heatmap under them, whose clicks go to ``pick``."""

    def __init__(self, explorer: Explorer, held: Any, pick: Callable[[float | None, float | None], None]):
        super().__init__()
        self.explorer = explorer
        self.held = held
        self.pick = pick  # a click on the heatmap at (x, y)
        dim = explorer.dim
        c0, d0 = second_pair(explorer.stats)
        self.linked_mode = pn.widgets.RadioButtonGroup(
            options={"components": "pair", "principal axes": "pc"}, value="pair" if dim > 2 else "pc"
        )
        self.c = pn.widgets.IntInput(label="linked view: x axis", value=c0, start=0, end=dim - 1, width=160)
        self.d = pn.widgets.IntInput(label="linked view: y axis", value=d0, start=0, end=dim - 1, width=160)
        self.linked_mode.param.watch(self._axes_for_mode, "value")
        self.clicks_show = pn.widgets.RadioButtonGroup(
            options={"left view": "left", "right view": "right"}, value="left"
        )
        self.clicks_note = pn.pane.Markdown(CLICKS_SHOW["left"], width=420)
        self.clicks_show.param.watch(self._clicks_note, "value")
        self.highlighted = pn.pane.Markdown("", width=420)
        self._shown = RangedView()

    def _axes_for_mode(self, event: Any) -> None:
        self.c.value, self.d.value = (0, 1) if event.new == "pc" else second_pair(self.explorer.stats)

    def _clicks_note(self, event: Any) -> None:
        self.clicks_note.object = CLICKS_SHOW[event.new]

    def set_pair(self, a: int, b: int) -> None:
        """Show the pair of components (a, b)."""
        self.linked_mode.value = "pair"
        self.c.value, self.d.value = a, b

    def plot(self, mode: str, a: int, b: int, held: Any, x_range: Any = None, y_range: Any = None) -> Any:
        """Every point in grey, the selection's rows (``held``) in orange over them.

        Always an overlay of two images (a DynamicMap returns one type); the line under it says how
        many of the selection's rows are highlighted in view.
        """
        import holoviews as hv

        view = view_of(self.explorer, mode, a, b, "none", "none")
        size = {"width": LINKED[0] + 80, "height": LINKED[1] + 60}
        try:
            full = self.explorer.projection(view)
        except LatentdaskError as exc:
            blank = hv.Image(np.full((2, 2), np.nan))
            self.highlighted.object = f"linked view: {exc}"
            return (blank * blank).opts(hv.opts.Image(**size, title="linked view"))
        x_range, y_range = self._shown.ranges(view, full, x_range, y_range)
        ranges = (x_range, y_range, *LINKED)
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

    def __panel__(self) -> Any:
        import holoviews as hv

        plot = hv.DynamicMap(
            pn.bind(self.plot, mode=self.linked_mode, a=self.c, b=self.d, held=self.held),
            streams=[hv.streams.RangeXY()],
        )
        heatmap = correlation_heatmap(self.explorer.stats)
        hv.streams.Tap(source=heatmap, x=None, y=None).add_subscriber(self.pick)
        return pn.Column(
            pn.pane.HoloViews(plot, name="linked view"),
            self.highlighted,
            self.linked_mode,
            pn.Row(self.c, self.d),
            self.clicks_show,
            self.clicks_note,
            heatmap,
            width=440,
        )


def correlation_heatmap(stats: Any) -> Any:
    """The correlation matrix as an image; a click picks a pair."""
    import holoviews as hv

    corr = stats["corr"].values
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
