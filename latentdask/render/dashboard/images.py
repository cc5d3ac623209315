"""Images instead of dots: the real image under the cursor, the nearest real images of a click (the
nearest kept), and what the decoder makes at the latent position clicked."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import panel as pn

from latentdask.errors import LatentdaskError
from latentdask.render.dashboard.controls import Controls
from latentdask.render.dashboard.figures import figure, png
from latentdask.render.dashboard.projection import CANVAS
from latentdask.render.dashboard.sources import Sources

NEAREST = 6
THUMBNAIL = 72
#: images kept by clicks in the projection (the oldest leaves first)
KEPT = 12
HOVER_HINT = "hover over the projection: the nearest real image; a click keeps it"


class Images(pn.viewable.Viewer):
    """The rows of images under the projection, filled by hovering and clicking on it."""

    def __init__(self, sources: Sources, controls: Controls) -> None:
        super().__init__()
        self.sources = sources
        self.controls = controls
        self.nearest = pn.Row(name="nearest real images")
        self.decoded = pn.Row(name="decoded")
        self.under_cursor = pn.Row(name="under the cursor")
        self.under_cursor_text = pn.pane.Markdown(HOVER_HINT, width=CANVAS[0])
        self._hovered: int | None = None
        self.kept = pn.Row(name="kept")

    def hover(self, x: float | None, y: float | None) -> None:
        """The real image nearest to the cursor (the view's plane indexes answer on the workers)."""
        if x is None or y is None:
            return
        try:
            rows = self.sources.explorer.nearest_rows(self.controls.current_view(), x, y, 1)
        except LatentdaskError:  # no view to hover over: the projection says why
            return
        if not rows:
            return
        self.under_cursor_text.object = f"under the cursor ({x!r}, {y!r}): nearest real point, row {rows[0]}"
        if rows[0] != self._hovered:
            self._hovered = rows[0]
            self.under_cursor.objects = self.images(rows, "under-cursor")

    def show_point(self, x: float | None, y: float | None) -> None:
        """A click: the nearest real images, the nearest one kept, and what the decoder makes there."""
        if x is None or y is None:
            return
        explorer = self.sources.explorer
        view = self.controls.current_view()
        rows = explorer.nearest_rows(view, x, y, NEAREST)
        self.nearest.objects = self.images(rows, "nearest")
        if rows:
            self.kept.objects = [*self.kept.objects, *self.images(rows[:1], "kept")][-KEPT:]
        if self.sources.checkpoint is not None:
            z = explorer.latent_at(view, x, y)
            caption = f"decoded at ({x:.3f}, {y:.3f}), other components at the mean"
            self.decoded.objects = [pn.pane.HTML(self.decoded_image(z, caption, "decoded"), width=140)]

    def images(self, rows: Any, strip: str) -> list[Any]:
        """The real images of store rows as captioned thumbnails (their row numbers without a dataset),
        for the row of images ``strip``."""
        sources = self.sources
        thumbnails: list[Any] = []
        for row in rows:
            if sources.dataset is not None and sources.filenames is not None:
                name = str(sources.filenames[row])
                try:
                    shown = figure(self._thumbnail(name), name, THUMBNAIL, strip=strip)
                except Exception as exc:  # moved or damaged since the encode: say so in its place
                    shown = figure(None, f"{name}: cannot be shown ({exc})", THUMBNAIL)
            else:
                shown = figure(None, f"row {row}", THUMBNAIL)
            thumbnails.append(pn.pane.HTML(shown, width=THUMBNAIL + 8))
        return thumbnails

    def decoded_image(self, z: np.ndarray, caption: str, alt: str) -> str:
        """What the decoder makes of one latent vector, as a captioned image."""
        from latentdask.generate.grids import decode_points

        pixels = decode_points(self.sources.checkpoint.model, z.astype(np.float32)[None, :])[0]
        return figure(png(pixels, 128), caption, 128, alt=alt)

    def _thumbnail(self, name: str) -> bytes:
        from PIL import Image

        image = Image.fromarray(self.sources.real_image(name))
        image.thumbnail((THUMBNAIL, THUMBNAIL))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()

    def __panel__(self) -> Any:
        return pn.Column(
            self.under_cursor_text,
            self.under_cursor,
            pn.pane.Markdown("click a point: the nearest real images, and what the decoder makes there"),
            self.nearest,
            self.decoded,
            pn.pane.Markdown("kept by clicks"),
            self.kept,
        )
