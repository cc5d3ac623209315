"""``latentdask serve``: a panel app to explore every z-point of a store in the browser.

The projection (a pair of components or of principal axes, optionally a slice, coloured
by an attribute) is re-aggregated with datashader over **all** points on every zoom and
pan, from the columns held in the cluster's memory (:mod:`latentdask.render.explore`). Beside it:
both components' histograms, the correlation heatmap (a click selects that pair), and the
headline statistics. A click in the projection shows the nearest real images and the
image the decoder makes at that latent position (every other component at the mean).

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
from pathlib import Path
from typing import Any

import numpy as np

from latentdask.errors import LatentdaskError
from latentdask.render.explore import Explorer, View
from latentdask.stats.analysis import headline

#: canvas pixels of the projection (the plot's inner area)
CANVAS = (560, 480)
NEAREST = 6
THUMBNAIL = 72


class ServeError(LatentdaskError):
    """A dashboard that cannot start as asked."""


def _figure(png: bytes | None, caption: str, width: int, *, alt: str | None = None) -> str:
    """An image and its caption as HTML; every text escaped (``&<>"'``), so data stays text."""
    text = html.escape(caption, quote=True)
    style = f"margin:0 4px;width:{int(width)}px;font-size:10px;line-height:1.2;overflow-wrap:anywhere"
    image = (
        f'<img src="data:image/png;base64,{base64.b64encode(png).decode()}" width="{int(width)}" '
        f'alt="{html.escape(caption if alt is None else alt, quote=True)}">'
        if png is not None
        else ""
    )
    return f'<figure style="{style}">{image}<figcaption>{text}</figcaption></figure>'


def _png(pixels: np.ndarray, size: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).resize((size, size), Image.Resampling.NEAREST).save(buffer, format="PNG")
    return buffer.getvalue()


class Dashboard:
    """One browser session's widgets and plots, over an explorer shared by all sessions."""

    def __init__(
        self,
        explorer: Explorer,
        *,
        dataset: Any = None,
        checkpoint: Any = None,
        filenames: np.ndarray | None = None,
        overlays: dict[str, np.ndarray] | None = None,
    ) -> None:
        import panel as pn

        self.explorer = explorer
        self.dataset = dataset
        self.checkpoint = checkpoint
        self.filenames = filenames
        self.overlays = overlays or {}
        stats = explorer.stats
        dim = explorer.dim
        a0, b0 = _strongest_pair(stats)
        self.mode = pn.widgets.RadioButtonGroup(name="axes", options=["pair", "pc"], value="pair")
        self.a = pn.widgets.IntInput(
            name="x axis (component, or principal axis counted from 0)", value=a0, start=0, end=dim - 1
        )
        self.b = pn.widgets.IntInput(name="y axis", value=b0, start=0, end=dim - 1)
        self.threshold = pn.widgets.Select(
            name="slice |x_j| < t outside the pair",
            options=["none"] + [f"{t:g}" for t in explorer.thresholds],
        )
        self.color_by = pn.widgets.Select(
            name="colour by", options=["none", *explorer.points.attribute_names]
        )
        self.shading = pn.widgets.Select(name="shading", options=["eq_hist", "log"], value="eq_hist")
        self.shown_overlays = pn.widgets.CheckBoxGroup(name="overlays", options=list(self.overlays))
        self.nearest = pn.Row(name="nearest real images")
        self.decoded = pn.Row(name="decoded")
        self._last_view: View | None = None
        self.mode.param.watch(self._axes_for_mode, "value")

    def _axes_for_mode(self, event: Any) -> None:
        """Principal axes start at the first two; components at the most correlated pair."""
        self.a.value, self.b.value = (0, 1) if event.new == "pc" else _strongest_pair(self.explorer.stats)

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
            "tools": ["tap"],
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
            x, y = overlay_xy(projection, self.overlays[name], self.explorer.stats)
            xs.append(x)
            ys.append(y)
        return hv.Points((np.concatenate(xs), np.concatenate(ys))).opts(color="red", size=3, alpha=0.7)

    def histograms(self, mode: str, a: int, b: int) -> Any:
        import holoviews as hv

        stats = self.explorer.stats
        if mode == "pc":
            return hv.Div("<p>histograms are per component: choose the 'pair' axes</p>")
        edges = stats["bin_edges"].values
        plots = []
        for component in (a, b):
            counts = stats["hist"].values[component]
            used = np.flatnonzero(counts)
            low, high = (used[0], used[-1] + 1) if len(used) else (0, len(counts))
            peak, fwhm = float(stats["peak"].values[component]), float(stats["fwhm"].values[component])
            plots.append(
                hv.Histogram((edges[low : high + 1], counts[low:high]), kdims=[f"latent {component}"]).opts(
                    width=330,
                    height=200,
                    title=f"latent {component}: peak {peak:.3f}, FWHM {fwhm:.3f}",
                    color="#3b6ea5",
                    line_width=0,
                )
            )
        return hv.Layout(plots).cols(1)

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
            self.mode.value = "pair"
            self.a.value, self.b.value = a, b

    def show_point(self, x: float | None, y: float | None) -> None:
        import panel as pn

        if x is None or y is None:
            return
        view = self.current_view()
        rows = self.explorer.nearest_rows(view, x, y, NEAREST)
        thumbnails: list[Any] = []
        for row in rows:
            if self.dataset is not None and self.filenames is not None:
                name = str(self.filenames[row])
                try:
                    shown = _figure(self._thumbnail(name), name, THUMBNAIL)
                except Exception as exc:  # moved or damaged since the encode: say so in its place
                    shown = _figure(None, f"{name}: cannot be shown ({exc})", THUMBNAIL)
            else:
                shown = _figure(None, f"row {row}", THUMBNAIL)
            thumbnails.append(pn.pane.HTML(shown, width=THUMBNAIL + 8))
        self.nearest.objects = thumbnails
        if self.checkpoint is not None:
            from latentdask.generate.grids import decode_points

            z = self.explorer.latent_at(view, x, y).astype(np.float32)[None, :]
            pixels = decode_points(self.checkpoint.model, z)[0]
            self.decoded.objects = [
                pn.pane.HTML(
                    _figure(
                        _png(pixels, 128),
                        f"decoded at ({x:.3f}, {y:.3f}), other components at the mean",
                        128,
                        alt="decoded",
                    ),
                    width=140,
                ),
            ]

    def _thumbnail(self, name: str) -> bytes:
        from PIL import Image

        image = Image.open(io.BytesIO(self.dataset.container.read(name))).convert("RGB")
        image.thumbnail((THUMBNAIL, THUMBNAIL))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()

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
        clicks = hv.streams.Tap(source=projection, x=None, y=None)
        clicks.add_subscriber(lambda x, y: self.show_point(x, y))
        heat = self.heatmap()
        picks = hv.streams.Tap(source=heat, x=None, y=None)
        picks.add_subscriber(lambda x, y: self.show_pair(x, y))
        controls = pn.Column(
            pn.pane.Markdown("### latentdask"),
            self.mode,
            self.a,
            self.b,
            self.threshold,
            self.color_by,
            self.shading,
            pn.pane.Markdown("overlays (red)") if self.overlays else None,
            self.shown_overlays if self.overlays else None,
            pn.pane.Markdown(self.headline_markdown()),
            width=260,
        )
        return pn.Row(
            controls,
            pn.Column(
                pn.pane.HoloViews(projection * overlays, name="projection"),
                pn.pane.Markdown("click a point: the nearest real images, and what the decoder makes there"),
                self.nearest,
                self.decoded,
            ),
            pn.Column(pn.bind(self.histograms, mode=self.mode, a=self.a, b=self.b), heat),
        )


def _strongest_pair(stats: Any) -> tuple[int, int]:
    from latentdask.render.projections import ranked_pairs

    return ranked_pairs(stats, "corr", 1)[0]


def serve(
    store: str | Path,
    *,
    stats: str | Path | None = None,
    points: list[str | Path] | None = None,
    dataset: str | Path | None = None,
    model: str | Path | None = None,
    client: Any,
    address: str = "127.0.0.1",
    port: int = 5006,
    show: bool = False,
) -> None:
    """Serve the dashboard until interrupted; see the module docstring."""
    import holoviews as hv
    import panel as pn
    import zarr

    from latentdask.render.projections import read_overlay
    from latentdask.store.paths import default_stats_path

    store = Path(store)
    stats_path = Path(stats) if stats is not None else default_stats_path(store)
    if not stats_path.exists():
        raise ServeError(f"{stats_path} does not exist; give --stats")
    explorer = Explorer(store, stats_path, client)
    attrs = zarr.open_group(str(store), mode="r").attrs if (store / "zarr.json").exists() else {}
    dataset_root = dataset or attrs.get("dataset_root")
    model_path = model or attrs.get("model_path")
    opened = None
    filenames = None
    if dataset_root is not None and Path(str(dataset_root)).exists():
        from latentdask.data.dataset import open_dataset

        opened = open_dataset(str(dataset_root))
        group = zarr.open_group(str(store), mode="r")
        filenames = np.asarray(group["filename"][...]) if "filename" in group else None  # type: ignore[index]
    checkpoint = None
    if model_path is not None and Path(str(model_path)).exists():
        from latentdask.model.checkpoint import load_checkpoint

        checkpoint = load_checkpoint(str(model_path))
        if checkpoint.model.config.latent_dim != explorer.dim:
            raise ServeError(
                f"{model_path} decodes {checkpoint.model.config.latent_dim} components; "
                f"the store has {explorer.dim}"
            )
    overlays = {}
    for path in points or []:
        overlay = read_overlay(path)
        if overlay.z.shape[1] != explorer.dim:
            raise ServeError(f"{path} has {overlay.z.shape[1]} components; the store has {explorer.dim}")
        overlays[overlay.label] = overlay.z
    pn.extension(inline=True)
    hv.extension("bokeh")
    explorer.frame(Dashboard(explorer).current_view())  # hold the first view's columns before anyone asks

    def session() -> Any:
        return Dashboard(
            explorer, dataset=opened, checkpoint=checkpoint, filenames=filenames, overlays=overlays
        ).layout()

    pn.serve(
        {"/": session},
        address=address,
        port=port,
        show=show,
        title="latentdask",
        websocket_origin=[f"{address}:{port}", f"localhost:{port}"],
        print_url=True,
    )
