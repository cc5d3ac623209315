"""The selection beside the projection: boxes and lassos combined into rows held on the workers, what
sets them apart, their histograms, decoded mean, sample and attributes, and ``Export``."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import panel as pn
import param

from latentdask.errors import LatentdaskError
from latentdask.render.dashboard.controls import Controls
from latentdask.render.dashboard.figures import attribute_table
from latentdask.render.dashboard.images import Images
from latentdask.render.dashboard.sources import Sources
from latentdask.render.selected import Drawn, describe_drawn, export, selection_path
from latentdask.stats.describe import Summary, describe
from latentdask.store import selection

#: components listed as setting a selection apart
APART = 10
#: what the next box or lasso does, per combine mode
NEXT_DRAWN = {
    "new": "the next box or lasso drawn starts a new selection",
    "add": "the next box or lasso drawn adds its rows to the selection",
    "subtract": "the next box or lasso drawn takes its rows out of the selection",
    "intersect": "the next box or lasso drawn keeps the selected rows inside it",
}
NOTHING_SELECTED = "draw a box or a lasso in the projection (toolbar) to select rows"


class SelectionPanel(pn.viewable.Viewer):
    """A session's selection: the views drawn so far, the rows they select (held on the workers,
    :meth:`latentdask.render.explore.Explorer.hold`) and what the panel shows of them."""

    drawn = param.Parameter(default=Drawn())
    summary = param.Parameter(default=None)
    held = param.Parameter(default=None)

    def __init__(
        self, sources: Sources, controls: Controls, images: Images, show_pair: Callable[[int, int], None]
    ):
        super().__init__()
        self.sources = sources
        self.explorer = sources.explorer
        self.controls = controls
        self.images = images
        self.show_pair = show_pair  # where a component that sets the selection apart is shown
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
        self.selection_text = pn.pane.Markdown(NOTHING_SELECTED, width=340)
        self.selection_note = pn.pane.Markdown("", width=340)
        self.apart = pn.Column(name="apart")
        self.mean_image = pn.Row(name="decoded mean")
        self.sample = pn.GridBox(ncols=4, name="sample")
        self.attribute_profile = pn.pane.Markdown("", width=340)

    def _next_drawn(self, event: Any) -> None:
        self.next_drawn.object = NEXT_DRAWN[event.new]

    def select_box(self, bounds: tuple[float, float, float, float] | None) -> None:
        if bounds is not None:
            x0, y0, x1, y1 = bounds
            self._select(partial(selection.View.box, x=(x0, x1), y=(y0, y1)))

    def select_lasso(self, geometry: np.ndarray | None) -> None:
        if geometry is not None:
            polygon = tuple((float(x), float(y)) for x, y in np.asarray(geometry))
            self._select(partial(selection.View, polygon=polygon))

    def _select(self, drawn_view: Any) -> None:
        """Combine the view drawn in the pair shown (with its slice) with the selection, and describe it."""
        view = self.controls.current_view()
        if view.mode == "pc":
            self.selection_note.object = (
                "selections are drawn in a pair of components: choose the 'pair' axes"
            )
            return
        try:
            drawn = self.drawn.then(self.combine.value, drawn_view((view.a, view.b), slice=view.threshold))
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
        self.param.update(drawn=drawn, summary=summary, held=held)
        self._show()

    def _show(self) -> None:
        """The panel, from the current selection's summary."""
        summary, drawn = self.summary, self.drawn
        if summary is None:
            self.selection_text.object = NOTHING_SELECTED
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
        self.attribute_profile.object = attribute_table(summary)
        if summary.mean is None:
            self.mean_image.objects = []
        elif self.sources.checkpoint is None:
            self.mean_image.objects = [
                pn.pane.Markdown("no model to decode the mean: the store records none (give --model)")
            ]
        else:
            image = self.images.decoded_image(summary.mean, "the selection's mean, decoded", "decoded mean")
            self.mean_image.objects = [pn.pane.HTML(image, width=140)]
        self.sample.objects = self.images.images(summary.sample, "sample")

    def _show_apart(self, component: int, others: list[int], _event: Any = None) -> None:
        """Show ``component`` against the strongest other one set apart."""
        if others:
            self.show_pair(component, others[0])

    def export(self, _event: Any = None) -> None:
        """Write the selection as ``selection-NAME.zarr`` in the selections folder."""
        summary = self.summary
        if summary is None:
            self.selection_note.object = "nothing is selected: draw a box or a lasso in the projection"
            return
        try:
            out = selection_path(self.sources.selections, self.selection_name.value or "")
            count = export(
                out,
                self.drawn,
                self.explorer.points,
                summary.profile,
                rows=self.held,  # computed when drawn, held on the workers
                scheduler=self.explorer.client,
            )
        except LatentdaskError as exc:
            self.selection_note.object = str(exc)
            return
        self.selection_note.object = f"wrote {count:,} rows → {out}"

    def clear(self, _event: Any = None) -> None:
        self.selection_note.object = ""
        self.param.update(drawn=Drawn(), summary=None, held=None)
        self._show()

    def histograms(self, mode: str, a: int, b: int, summary: Summary | None) -> Any:
        """Both components' histograms over the corpus, the selection's (same bins) drawn over them."""
        import holoviews as hv

        stats = self.explorer.stats
        if mode == "pc":
            return hv.Div("<p>histograms are per component: choose the 'pair' axes</p>")
        edges = stats["bin_edges"].values
        missing = [j for j in (a, b) if summary is not None and j not in summary.hist]
        if missing and self.held is not None:  # another pair since the selection: its histograms now
            assert summary is not None
            summary.hist.update(
                describe(
                    self.explorer.points,
                    self.held,
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

    def __panel__(self) -> Any:
        controls = self.controls
        histograms = pn.bind(
            self.histograms, mode=controls.mode, a=controls.a, b=controls.b, summary=self.param.summary
        )
        return pn.Column(
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
