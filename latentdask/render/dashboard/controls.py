"""The controls beside the projection: which view it shows, how it is shaded, what is drawn over it."""

from __future__ import annotations

from typing import Any

import panel as pn

from latentdask.render.explore import Explorer, View
from latentdask.stats.analysis import headline

THUMBNAILS_TOGGLE = "thumbnails over dense regions"


def strongest_pair(stats: Any) -> tuple[int, int]:
    """The most correlated pair of components: the projection's first view."""
    from latentdask.render.projections import ranked_pairs

    return ranked_pairs(stats, "corr", 1)[0]


def second_pair(stats: Any) -> tuple[int, int]:
    """The linked view's first pair: the second most correlated (the first when there is one)."""
    from latentdask.render.projections import ranked_pairs

    return ranked_pairs(stats, "corr", 2)[-1]


def view_of(explorer: Explorer, mode: str, a: int, b: int, threshold: str, color_by: str) -> View:
    """The :class:`View` the widgets' values describe (a slice and a colour in the pair mode only)."""
    names = explorer.points.attribute_names
    return View(
        mode="pc" if mode == "pc" else "pair",
        a=int(a),
        b=int(b),
        threshold=None if mode == "pc" or threshold == "none" else float(threshold),
        color_by=None if color_by == "none" or mode == "pc" else names.index(color_by),
    )


def headline_markdown(stats: Any) -> str:
    """The statistics' headline figures, as the controls show them."""
    figures = headline(stats)
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


class Controls(pn.viewable.Viewer):
    """The projection's axes (a pair of components or of principal axes), slice, colour (by one of
    ``attributes``), shading, the thumbnails toggle and the ``overlays`` shown; and the headline figures."""

    def __init__(self, explorer: Explorer, overlays: list[str], attributes: list[str]) -> None:
        super().__init__()
        self.explorer = explorer
        dim = explorer.dim
        a0, b0 = strongest_pair(explorer.stats)
        self.mode = pn.widgets.RadioButtonGroup(label="axes", options=["pair", "pc"], value="pair")
        self.a = pn.widgets.IntInput(
            label="x axis (component, or principal axis counted from 0)", value=a0, start=0, end=dim - 1
        )
        self.b = pn.widgets.IntInput(label="y axis", value=b0, start=0, end=dim - 1)
        self.threshold = pn.widgets.Select(
            label="slice |x_j| < t outside the pair",
            options=["none"] + [f"{t:g}" for t in explorer.thresholds],
        )
        self.color_by = pn.widgets.Select(label="colour by", options=["none", *attributes])
        self.shading = pn.widgets.Select(label="shading", options=["eq_hist", "log"], value="eq_hist")
        self.shown_overlays = pn.widgets.CheckBoxGroup(label="overlays", options=overlays)
        self.thumbnails_shown = pn.widgets.CheckBoxGroup(options=[THUMBNAILS_TOGGLE], value=[])
        self.mode.param.watch(self._axes_for_mode, "value")

    def _axes_for_mode(self, event: Any) -> None:
        """Principal axes start at the first two; components at the most correlated pair."""
        self.a.value, self.b.value = (0, 1) if event.new == "pc" else strongest_pair(self.explorer.stats)

    def set_pair(self, a: int, b: int) -> None:
        """Show the pair of components (a, b)."""
        self.mode.value = "pair"
        self.a.value, self.b.value = a, b

    def view_widgets(self) -> dict[str, Any]:
        """The widgets that make the :class:`View`, by the name of its argument in :func:`view_of`."""
        return {
            "mode": self.mode,
            "a": self.a,
            "b": self.b,
            "threshold": self.threshold,
            "color_by": self.color_by,
        }

    def current_view(self) -> View:
        a, b = self.a.value or 0, self.b.value or 0
        return view_of(self.explorer, self.mode.value, a, b, self.threshold.value, self.color_by.value)

    def __panel__(self) -> Any:
        overlaid = bool(self.shown_overlays.options)
        return pn.Column(
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
            pn.pane.Markdown(headline_markdown(self.explorer.stats)),
            width=260,
        )
