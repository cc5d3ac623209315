"""One browser session's app, composed of the dashboard's parts; :func:`explore` and :func:`serve`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import panel as pn

from latentdask.location import Where
from latentdask.progress import console
from latentdask.render.dashboard.controls import Controls
from latentdask.render.dashboard.images import Images
from latentdask.render.dashboard.linked import LinkedView
from latentdask.render.dashboard.projection import ProjectionPlots
from latentdask.render.dashboard.selection import SelectionPanel
from latentdask.render.dashboard.sources import ServeError, Sources


class Dashboard(pn.viewable.Viewer):
    """One browser session's widgets and plots, over what all sessions share (``sources``)."""

    def __init__(self, sources: Sources) -> None:
        super().__init__()
        self.sources = sources
        self.controls = Controls(sources.explorer, list(sources.overlays), sources.varying_attributes())
        self.plots = ProjectionPlots(sources)
        self.images = Images(sources, self.controls)
        self.selection = SelectionPanel(sources, self.controls, self.images, show_pair=self.set_pair)
        self.linked = LinkedView(sources.explorer, self.selection.param.held, pick=self.show_clicked_pair)

    def set_pair(self, a: int, b: int) -> None:
        """Show the pair (a, b) in the view the "clicks show" buttons name."""
        (self.linked if self.linked.clicks_show.value == "right" else self.controls).set_pair(a, b)

    def show_clicked_pair(self, x: float | None, y: float | None) -> None:
        """A click on the heatmap at (x, y): the pair of that cell."""
        if x is None or y is None:
            return
        dim = self.sources.explorer.dim
        a, b = round(x), round(y)
        if 0 <= a < dim and 0 <= b < dim and a != b:
            self.set_pair(a, b)

    def __panel__(self) -> Any:
        import holoviews as hv

        controls, plots, selection = self.controls, self.plots, self.selection
        view_widgets = controls.view_widgets()
        projection = hv.DynamicMap(
            pn.bind(plots.projection, **view_widgets, shading=controls.shading),
            streams=[hv.streams.RangeXY()],
        )
        overlays = hv.DynamicMap(
            pn.bind(
                plots.overlay_points,
                mode=controls.mode,
                a=controls.a,
                b=controls.b,
                shown=controls.shown_overlays,
            )
        )
        outline = hv.DynamicMap(
            pn.bind(
                plots.outline, mode=controls.mode, a=controls.a, b=controls.b, drawn=selection.param.drawn
            )
        )
        categories = hv.DynamicMap(
            pn.bind(plots.categories, **view_widgets), streams=[hv.streams.RangeXY(source=projection)]
        )
        thumbnails = hv.DynamicMap(
            pn.bind(plots.thumbnail_layer, **view_widgets, shown=controls.thumbnails_shown),
            streams=[hv.streams.RangeXY(source=projection)],
        )
        hv.streams.Tap(source=projection, x=None, y=None).add_subscriber(self.images.show_point)
        # holoviews throttles the pointer's events
        hv.streams.PointerXY(source=projection, x=None, y=None).add_subscriber(self.images.hover)
        hv.streams.BoundsXY(source=projection, bounds=None).add_subscriber(selection.select_box)
        hv.streams.Lasso(source=projection, geometry=None).add_subscriber(selection.select_lasso)
        return pn.Row(
            controls,
            pn.Column(
                pn.pane.HoloViews(
                    projection * categories * thumbnails * overlays * outline, name="projection"
                ),
                self.images,
            ),
            self.linked,
            selection,
        )


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
    return Dashboard(Sources.open(store, stats, points, dataset, model, client, selections)).__panel__()


def _extensions() -> None:
    """Panel and holoviews with their resources inline: nothing is fetched from a CDN."""
    import holoviews as hv

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
    _extensions()
    sources = Sources.open(store, stats, points, dataset, model, client, selections)

    def session() -> Any:
        """One browser session's app (its own widgets and selection) over what all sessions share."""
        return Dashboard(sources).__panel__()

    server = pn.serve(
        {"/": session},
        address=address,
        port=port,
        show=show,
        title="latentdask",
        websocket_origin=[f"{address}:{port}", f"localhost:{port}"],
        verbose=False,  # panel's own line is a plain print: unflushed in a log file
        start=False,
    )
    # bound now: the address is said once it answers, on stderr (unbuffered even in a log file)
    console.print(f"serving on http://{address}:{server.port}/ (Ctrl-C stops)")
    server.start()
    server.io_loop.start()
