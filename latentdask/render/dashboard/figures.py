"""The dashboard's HTML from data: images with captions, and the attribute table.

Text from data (file names, error texts, attribute names) reaches the page only through
:func:`figure` and :func:`attribute_table`, which escape it: panel's image panes write ``alt``
with ``repr()``, so a file named ``a" b' onload=alert(1) x='1.jpg`` would otherwise become an
attribute of the image.
"""

from __future__ import annotations

import base64
import html
import io

import numpy as np

from latentdask.stats.describe import Summary


def figure(png: bytes | None, caption: str, width: int, *, alt: str | None = None, strip: str = "") -> str:
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


def png(pixels: np.ndarray, size: int) -> bytes:
    """``pixels`` (uint8 RGB) as a PNG of ``size`` × ``size``, scaled without smoothing."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).resize((size, size), Image.Resampling.NEAREST).save(buffer, format="PNG")
    return buffer.getvalue()


def attribute_table(summary: Summary) -> str:
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
