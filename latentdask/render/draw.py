"""Drawing aggregates with matplotlib (no browser): shading, colour, labels, overlays, PNG files.

Each projection becomes a labelled image over its aggregate: component numbers on the
axes, the point count in the title, a colour bar in points per pixel (histogram-equalized
or logarithmic), the origin marked, artificial points in red and one special real point
in orange above it. Ranked selections are laid out as grids, like the CelebA study's 4 × 4 figures.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import xarray as xr

from latentdask.location import Location
from latentdask.render.aggregate import Aggregate
from latentdask.render.projections import CANVAS_FRACTION, Overlay, overlay_xy

Shading = Literal["eq_hist", "log"]
CATEGORY_COLOURS = np.array([[0.13, 0.40, 0.85], [0.90, 0.35, 0.10]])  # value −1, value +1


def _norm(counts: np.ndarray, how: Shading) -> Any:
    from matplotlib.colors import BoundaryNorm, LogNorm, Normalize

    top = max(int(counts.max()), 1)
    if how == "log":
        return LogNorm(vmin=1, vmax=max(top, 2))
    nonzero = counts[counts > 0]
    if nonzero.size == 0:
        return Normalize(vmin=0.5, vmax=top)
    bounds = np.unique(np.quantile(nonzero, np.linspace(0, 1, 257), method="lower"))
    if len(bounds) < 3:
        return Normalize(vmin=0.5, vmax=top)
    bounds = np.append(bounds, bounds[-1] + 1)  # the top bin holds the maximum
    return BoundaryNorm(bounds - 0.5, ncolors=256)


def category_rgba(counts: np.ndarray) -> np.ndarray:
    """Categorical counts (height, width, 2) as RGBA: colour mixes by share, opacity grows with log(count)."""
    total = counts.sum(axis=2)
    rgb = (counts / np.maximum(total, 1)[..., None]) @ CATEGORY_COLOURS
    alpha = np.where(total > 0, 0.25 + 0.75 * np.log1p(total) / np.log1p(max(int(total.max()), 1)), 0.0)
    return np.dstack([rgb, alpha])


def spread(counts: np.ndarray) -> np.ndarray:
    """For display only: grow pixels of sparse aggregates (like datashader's dynspread) so they stay visible.

    Radius 0 when at least 10 % of the canvas is lit, 1 above 2 %, else 2; each pixel shows
    the largest count within that radius.
    """
    from scipy.ndimage import maximum_filter

    total = counts.sum(axis=2) if counts.ndim == 3 else counts
    lit = float((total > 0).mean())
    radius = 0 if lit >= 0.1 else 1 if lit >= 0.02 else 2
    if radius == 0:
        return counts
    size = (2 * radius + 1, 2 * radius + 1) + ((1,) if counts.ndim == 3 else ())
    return maximum_filter(counts, size=size, mode="constant")


def draw(
    ax: Any,
    aggregate: Aggregate,
    *,
    how: Shading,
    stats: xr.Dataset,
    overlays: Sequence[Overlay] = (),
    attribute: str | None = None,
    colour_bar: bool = True,
    small: bool = False,
) -> None:
    """One projection into matplotlib axes: shaded counts, labels, origin, overlays."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    p = aggregate.projection
    extent = (*p.x_range, *p.y_range)
    pixels = spread(aggregate.counts)
    colours = None  # the attribute's legend
    if pixels.ndim == 3:
        ax.imshow(
            category_rgba(pixels), origin="lower", extent=extent, aspect="auto", interpolation="nearest"
        )
        colours = ax.legend(
            handles=[
                Patch(color=CATEGORY_COLOURS[1], label=f"{attribute} = +1"),
                Patch(color=CATEGORY_COLOURS[0], label=f"{attribute} = −1"),
            ],
            loc="upper right",
            fontsize=7,
        )
    else:
        image = ax.imshow(
            np.ma.masked_equal(pixels, 0),
            origin="lower",
            extent=extent,
            aspect="auto",
            interpolation="nearest",
            cmap="viridis",
            norm=_norm(pixels, how),
        )
        if colour_bar:
            bar = plt.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
            bar.set_label(f"points per pixel ({how})")
    if p.x_range[0] <= 0 <= p.x_range[1] and p.y_range[0] <= 0 <= p.y_range[1]:
        ax.plot(
            [0],
            [0],
            marker="+",
            color="black",
            markersize=10 if not small else 6,
            mew=1.2,
            label="mean" if p.kind == "pc" else "origin",
        )
    for overlay in overlays:
        x, y = overlay_xy(p, overlay.z, stats)
        if overlay.special:
            ax.scatter(
                x,
                y,
                marker="*",
                s=140 if not small else 50,
                c="orange",
                edgecolors="black",
                zorder=5,
                label=overlay.label,
            )
        else:
            ax.scatter(
                x, y, s=6 if not small else 2, c="red", alpha=0.8, linewidths=0, zorder=4, label=overlay.label
            )
    ax.set_xlim(p.x_range)
    ax.set_ylim(p.y_range)
    x_label, y_label = p.labels
    fontsize = 7 if small else 10
    ax.set_xlabel(x_label, fontsize=fontsize)
    ax.set_ylabel(y_label, fontsize=fontsize)
    ax.tick_params(labelsize=fontsize - 2)
    count = f"{aggregate.shown:,} points" + (
        f" of {aggregate.candidates:,}" if aggregate.shown != aggregate.candidates else ""
    )
    where = f"|x_j| < {p.threshold:g} elsewhere; " if p.kind == "slice" else ""
    note = f" ({p.note})" if p.note else ""
    if small:  # the grid's title says what the panels share
        ax.set_title(
            f"{p.a + (p.kind == 'pc')} × {p.b + (p.kind == 'pc')}{note}"
            + (f": {aggregate.shown:,}" if p.kind == "slice" else ""),
            fontsize=fontsize,
        )
    else:
        ax.set_title(f"{x_label} × {y_label}{note}: {where}{count}", fontsize=fontsize)
        if overlays:
            if colours is not None:
                ax.add_artist(colours)  # a second legend replaces the axes' first unless it is kept
            ax.legend(loc="lower right", fontsize=7, markerscale=0.7)


def _figure(width: int, height: int) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.figure(figsize=(width / 100, height / 100), dpi=100)


def save_single(
    aggregate: Aggregate,
    out: Location,
    *,
    width: int,
    how: Shading,
    stats: xr.Dataset,
    overlays: Sequence[Overlay] = (),
    attribute: str | None = None,
) -> Location:
    """A ``width`` × ``width`` PNG of one projection; the canvas fills the axes pixel for pixel."""
    import matplotlib.pyplot as plt

    fig = _figure(width, width)
    ax = fig.add_axes((0.12, 0.1, CANVAS_FRACTION[0], CANVAS_FRACTION[1]))
    draw(ax, aggregate, how=how, stats=stats, overlays=overlays, attribute=attribute, colour_bar=False)
    if aggregate.counts.ndim == 2:
        bar_axes = fig.add_axes((0.12 + CANVAS_FRACTION[0] + 0.02, 0.1, 0.025, CANVAS_FRACTION[1]))
        bar = fig.colorbar(ax.images[0], cax=bar_axes)
        bar.set_label(f"points per pixel ({how})")
    with out.open("wb") as file:  # a local path or an object on object storage
        fig.savefig(file, format="png", dpi=100)
    plt.close(fig)
    return out


#: a grid panel's surroundings in pixels: tick labels and axis label left and below, its title above
PANEL_LEFT, PANEL_BELOW, PANEL_ABOVE = 46, 34, 20
#: the smallest panel (pixels) laid out with fixed margins
PANEL_LEAST = 60


def _grid_margins(width: int, height: int, rows: int, columns: int) -> dict[str, float] | None:
    """Fixed margins that fit the small panels' labels (``tight_layout`` measured them by drawing the
    whole figure once more: a third of a grid's drawing time); None where the panels would be
    smaller than :data:`PANEL_LEAST` pixels (then ``tight_layout`` does what it can)."""
    left, right = PANEL_LEFT / width, 1 - 8 / width
    bottom, top = PANEL_BELOW / height, 1 - (30 + PANEL_ABOVE) / height
    panel_width = (width * (right - left) - (columns - 1) * PANEL_LEFT) / columns
    panel_height = (height * (top - bottom) - (rows - 1) * (PANEL_BELOW + PANEL_ABOVE)) / rows
    if min(panel_width, panel_height) < PANEL_LEAST:
        return None
    return {
        "left": left,
        "right": right,
        "bottom": bottom,
        "top": top,
        "wspace": PANEL_LEFT / panel_width,
        "hspace": (PANEL_BELOW + PANEL_ABOVE) / panel_height,
    }


def save_grid(
    aggregates: Sequence[Aggregate],
    out: Location,
    *,
    title: str,
    width: int,
    how: Shading,
    stats: xr.Dataset,
    overlays: Sequence[Overlay] = (),
) -> Location:
    """Projections in a square grid (4 × 4 for 16), one shared title, ``width`` px wide."""
    import matplotlib.pyplot as plt

    columns = math.ceil(math.sqrt(len(aggregates)))
    rows = math.ceil(len(aggregates) / columns)
    height = int(width * rows / columns) + 40
    fig = _figure(width, height)
    margins = _grid_margins(width, height, rows, columns)
    axes = fig.subplots(rows, columns, squeeze=False, gridspec_kw=margins)
    for ax, aggregate in zip(axes.ravel(), aggregates, strict=False):
        draw(ax, aggregate, how=how, stats=stats, overlays=overlays, colour_bar=False, small=True)
    for ax in axes.ravel()[len(aggregates) :]:
        ax.axis("off")
    counts = {(a.shown, a.candidates) for a in aggregates}
    if len(counts) == 1 and aggregates[0].projection.kind != "slice":
        shown, candidates = counts.pop()
        title += f": {shown:,} points each" + (
            f" ({candidates - shown:,} beyond the canvas)" if shown != candidates else ""
        )
    fig.suptitle(title, fontsize=11)
    if margins is None:
        with warnings.catch_warnings():  # it says when it cannot fit every label: it does what it can
            warnings.simplefilter("ignore", UserWarning)
            fig.tight_layout()
    with out.open("wb") as file:  # a local path or an object on object storage
        fig.savefig(file, format="png", dpi=100)
    plt.close(fig)
    return out
