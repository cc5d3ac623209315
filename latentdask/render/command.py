"""Datashader images of every z-point: pairs, principal axes, slices, overlays.

Reading two columns of a row-chunked store reads the whole store, so :func:`render`
reads it **once**: one task per block builds a pandas DataFrame of the columns the
projections need and aggregates every requested projection from it with datashader;
the blocks' aggregates are summed in a tree. Only then is anything drawn.

The row filter is the statistics' own: valid rows, all components finite, and the
optional split/attribute selection. Every canvas is fixed before the pass:

- pairs and slices span the components' full range from ``stats.zarr`` (``min``/``max``),
  so every selected point lands on the canvas; a slice projection keeps the points with
  |x_j| < t for all j outside the pair, so its total equals ``slice_count`` exactly;
- principal-axis projections (x − mean onto the axes of ``pca_vectors``) span
  ±``PC_SPREAD`` standard deviations; points beyond are counted and said in the title.

Each projection becomes a labelled PNG drawn with matplotlib over the aggregate (no
browser): component numbers on the axes, the point count in the title, a colour bar in
points per pixel (histogram-equalized or logarithmic), the origin marked, artificial
points in red and one special real point in orange above it. Ranked selections (the most
correlated pairs, the smallest or largest slice populations) are also laid out as grids,
like the seed's 4 × 4 figures.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal

import dask
import numpy as np
import xarray as xr
import zarr
from dask.delayed import delayed

from latentdask.errors import LatentdaskError
from latentdask.stats.analysis import upper_pairs
from latentdask.stats.io import ZPoints, open_stats, open_zpoints, selection_mask
from latentdask.stats.summary import select_rows
from latentdask.store.output import check_output, owned_output

#: principal-axis canvases span this many standard deviations either side of the mean
PC_SPREAD = 5.0
#: the fraction of a single image's width taken by the canvas (the rest: axes, colour bar)
CANVAS_FRACTION = (0.72, 0.80)
#: artificial points drawn over a projection at most (a sample beyond that)
OVERLAY_POINTS = 5000
Shading = Literal["eq_hist", "log"]


class RenderError(LatentdaskError):
    """A projection that cannot be rendered as asked."""


@dataclass(frozen=True)
class Projection:
    """One 2-D view of the z-points and its canvas."""

    name: str  # file stem
    kind: Literal["pair", "pc", "slice"]
    a: int  # component (pair, slice) or principal axis (pc), 0-based
    b: int
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    width: int
    height: int
    threshold: float | None = None
    color_by: int | None = None  # attribute column, categorical colouring by its ±1 value
    note: str = ""  # how it was chosen (e.g. "rank 1 by |r|")

    @property
    def labels(self) -> tuple[str, str]:
        word = "PC" if self.kind == "pc" else "latent"
        base = 1 if self.kind == "pc" else 0
        return f"{word} {self.a + base}", f"{word} {self.b + base}"


@dataclass
class Aggregate:
    """A projection's counts over its canvas, (height, width) or (height, width, 2) when coloured."""

    projection: Projection
    counts: np.ndarray
    candidates: int  # selected points that belong to the projection (on the canvas or not)

    @property
    def shown(self) -> int:
        return int(self.counts.sum())


#: the kind of output a render folder is, in its latentdask.json record
PROJECTIONS_KIND = "projections"


@dataclass
class RenderResult:
    aggregates: list[Aggregate]
    files: list[Path] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    points: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "points": self.points,
            "seconds": self.seconds,
            "files": [str(f) for f in self.files],
            "projections": [
                asdict(a.projection) | {"shown": a.shown, "candidates": a.candidates} for a in self.aggregates
            ],
        }


# ---------------------------------------------------------------------------- choosing projections


def ranked_pairs(
    stats: xr.Dataset, rank_by: str, count: int, threshold: float | None = None
) -> list[tuple[int, int]]:
    """The ``count`` first pairs (a < b) by |correlation| or by slice population."""
    if rank_by == "corr":
        a, b, r = upper_pairs(stats["corr"].values)
        order = np.argsort(-np.abs(np.nan_to_num(r)), kind="stable")
    elif rank_by in ("smallest-slice", "largest-slice"):
        population = stats["slice_count"].sel(threshold=_stats_threshold(stats, threshold)).values
        a, b, pop = upper_pairs(population)
        order = np.argsort(pop, kind="stable")
        if rank_by == "largest-slice":
            order = np.argsort(-pop, kind="stable")
    else:
        raise RenderError(f"unknown ranking {rank_by!r}; use corr, smallest-slice or largest-slice")
    return [(int(a[k]), int(b[k])) for k in order[:count]]


def _stats_threshold(stats: xr.Dataset, threshold: float | None) -> float:
    available = [float(t) for t in stats["threshold"].values]
    t = available[0] if threshold is None else float(threshold)
    if t not in available:
        raise RenderError(f"slice threshold {t:g} is not among the statistics' thresholds {available}")
    return t


PAIR_SPEC = re.compile(r"^(?:(\d+),(\d+)|(corr|smallest-slice|largest-slice):(\d+))$")


def parse_pair(spec: str, stats: xr.Dataset, threshold: float | None) -> tuple[tuple[int, int], str]:
    """``30,118`` (component numbers) or ``corr:1`` / ``smallest-slice:2`` / ``largest-slice:1`` (rank)."""
    match = PAIR_SPEC.match(spec.strip())
    if match is None:
        raise RenderError(
            f"pair {spec!r}: expected a,b (component numbers) or corr:K, smallest-slice:K, largest-slice:K"
        )
    dim = stats.sizes["latent"]
    if match.group(1) is not None:
        pair = int(match.group(1)), int(match.group(2))
        if not (0 <= pair[0] < dim and 0 <= pair[1] < dim) or pair[0] == pair[1]:
            raise RenderError(f"pair {spec!r}: two different components in 0…{dim - 1} expected")
        return pair, ""
    rank = int(match.group(4))
    if rank < 1:
        raise RenderError(f"pair {spec!r}: ranks start at 1")
    pairs = ranked_pairs(stats, match.group(3), rank, threshold)
    return pairs[rank - 1], f"rank {rank} by {match.group(3)}"


def _component_range(stats: xr.Dataset, j: int) -> tuple[float, float]:
    low, high = float(stats["min"].values[j]), float(stats["max"].values[j])
    if not (math.isfinite(low) and math.isfinite(high)):
        raise RenderError(f"the statistics hold no finite range for component {j} (no valid points?)")
    if high <= low:
        low, high = low - 0.5, high + 0.5
    return low, high


def canvas_size(width: int, grid: int = 1) -> tuple[int, int]:
    """Canvas pixels of one panel in an image ``width`` px wide with ``grid`` panels a row."""
    cell = width / grid
    return max(int(cell * CANVAS_FRACTION[0]), 8), max(int(cell * CANVAS_FRACTION[1]), 8)


def pair_projection(
    stats: xr.Dataset, a: int, b: int, size: tuple[int, int], *, threshold: float | None = None,
    color_by: int | None = None, note: str = "",
) -> Projection:  # fmt: skip
    kind: Literal["pair", "slice"] = "pair" if threshold is None else "slice"
    name = f"pair-{a}-{b}" if threshold is None else f"slice-{threshold:g}-{a}-{b}"
    return Projection(name=name, kind=kind, a=a, b=b, x_range=_component_range(stats, a),
                      y_range=_component_range(stats, b), width=size[0], height=size[1], threshold=threshold,
                      color_by=color_by, note=note)  # fmt: skip


def pc_projection(stats: xr.Dataset, i: int, k: int, size: tuple[int, int]) -> Projection:
    spread = [PC_SPREAD * math.sqrt(max(float(stats["pca_eigenvalues"].values[p]), 1e-12)) for p in (i, k)]
    return Projection(name=f"pc-{i + 1}-{k + 1}", kind="pc", a=i, b=k, x_range=(-spread[0], spread[0]),
                      y_range=(-spread[1], spread[1]), width=size[0], height=size[1])  # fmt: skip


# ---------------------------------------------------------------------------- the one pass


@dataclass
class BlockColumns:
    """What every projection of one block is read from: the kept rows' needed columns."""

    rows: np.ndarray  # which of the block's rows were kept (valid, finite, selected)
    components: dict[int, np.ndarray]  # component → its kept values, float32 as stored
    pcs: dict[int, np.ndarray]  # principal axis → (z − mean) · v of the kept rows
    outside: dict[float, np.ndarray]  # threshold → per kept row, the number of |z_j| ≥ t

    @classmethod
    def of(cls, block: np.ndarray, keep: np.ndarray | None, projections: Sequence[Projection],
           mean: np.ndarray | None, vectors: np.ndarray | None) -> BlockColumns:  # fmt: skip
        z = np.asarray(block)
        rows, _, _ = select_rows(z, None, keep)  # the statistics' own row filter
        every = bool(rows.all())
        needed = sorted({c for p in projections if p.kind != "pc" for c in (p.a, p.b)})
        components = {c: z[:, c] if every else z[rows, c] for c in needed}
        axes = sorted({axis for p in projections if p.kind == "pc" for axis in (p.a, p.b)})
        pcs: dict[int, np.ndarray] = {}
        if axes:
            assert mean is not None and vectors is not None
            centred = ((z if every else z[rows]).astype(np.float64) - mean) @ vectors[:, axes]
            pcs = {axis: centred[:, k] for k, axis in enumerate(axes)}
        outside = {}
        for t in {p.threshold for p in projections if p.threshold is not None}:
            count = (np.abs(z) >= np.float64(t)).sum(axis=1)  # compared in float64, as the statistics do
            outside[t] = count if every else count[rows]
        return cls(rows, components, pcs, outside)

    def xy(self, projection: Projection) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The projection's two columns, and for slices the mask of rows inside the slice."""
        if projection.kind == "pc":
            return self.pcs[projection.a], self.pcs[projection.b], None
        x, y = self.components[projection.a], self.components[projection.b]
        if projection.kind != "slice":
            return x, y, None
        t = np.float64(projection.threshold)
        inside = self.outside[float(t)] - (np.abs(x) >= t) - (np.abs(y) >= t) == 0
        return x, y, inside


#: a projection's columns over some rows: x, y (float32) and the colour column (or None)
Columns = tuple[np.ndarray, np.ndarray, np.ndarray | None]


def project_block(
    block: np.ndarray,
    keep: np.ndarray | None,
    attributes: np.ndarray | None,
    *,
    projections: Sequence[Projection],
    mean: np.ndarray | None,
    vectors: np.ndarray | None,
) -> list[Columns]:
    """Each projection's columns over one block's kept rows (a small fraction of the block's bytes)."""
    columns = BlockColumns.of(block, keep, projections, mean, vectors)
    attrs = None if attributes is None else np.asarray(attributes)[columns.rows]
    result = []
    for p in projections:
        x, y, inside = columns.xy(p)
        colour = None if p.color_by is None else np.asarray(attrs)[:, p.color_by]
        if inside is not None:
            x, y, colour = x[inside], y[inside], None if colour is None else colour[inside]
        # contiguous copies: a column view would keep the whole block alive and concatenate slowly
        result.append(
            (np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(y, dtype=np.float32), colour)
        )
    return result


def aggregate_columns(
    parts: Sequence[list[Columns]], *, projections: Sequence[Projection]
) -> list[tuple[np.ndarray, int]]:
    """Datashader counts of each projection over several blocks' columns, and its candidate count."""
    import datashader as ds
    import pandas as pd

    results = []
    for k, p in enumerate(projections):
        x = np.concatenate([part[k][0] for part in parts])
        y = np.concatenate([part[k][1] for part in parts])
        canvas = ds.Canvas(plot_width=p.width, plot_height=p.height, x_range=p.x_range, y_range=p.y_range)
        if p.color_by is not None:
            colour = np.concatenate([np.asarray(part[k][2]) for part in parts])
            frame = pd.DataFrame({"x": x, "y": y, "c": category_column(colour)})
            counts = canvas.points(frame, "x", "y", agg=ds.by("c", ds.count())).values
        else:
            counts = canvas.points(pd.DataFrame({"x": x, "y": y}), "x", "y", agg=ds.count()).values
        results.append((counts.astype(np.int64), len(x)))
    return results


def category_column(values: np.ndarray) -> Any:
    """A CelebA attribute (±1) as a pandas categorical with both categories always present."""
    import pandas as pd

    return pd.Categorical(np.where(np.asarray(values) > 0, 1, -1), categories=[-1, 1])


def _add(parts: Sequence[list[tuple[np.ndarray, int]]]) -> list[tuple[np.ndarray, int]]:
    return [(sum(p[k][0] for p in parts), sum(p[k][1] for p in parts)) for k in range(len(parts[0]))]  # type: ignore[misc]


#: rows one task reads and aggregates at most (fewer when that leaves workers idle)
ROWS_PER_TASK = 1_000_000


def aggregate_rows(
    source: zarr.Array,
    start: int,
    stop: int,
    keep: np.ndarray | None,
    attributes: np.ndarray | None,
    *,
    block_rows: int,
    projections: Sequence[Projection],
    mean: np.ndarray | None,
    vectors: np.ndarray | None,
) -> list[tuple[np.ndarray, int]]:
    """Rows [start, stop) of the store, read block by block: each block's columns kept, the block
    dropped, then every projection aggregated once over all of them (one datashader call each)."""
    parts = []
    for r0 in range(start, stop, block_rows):
        r1 = min(r0 + block_rows, stop)
        within = slice(r0 - start, r1 - start)
        parts.append(project_block(np.asarray(source[r0:r1]), None if keep is None else keep[within],
                                   None if attributes is None else attributes[within],
                                   projections=projections, mean=mean, vectors=vectors))  # fmt: skip
    return aggregate_columns(parts, projections=projections)


def aggregate(
    points: ZPoints,
    projections: Sequence[Projection],
    *,
    stats: xr.Dataset,
    split: str = "all",
    where: Sequence[str] = (),
    scheduler: Any = None,
    fan_in: int = 8,
) -> list[Aggregate]:
    """All projections over every selected z-point, reading the store once.

    The graph: one task per range of whole chunks (at most ``ROWS_PER_TASK`` rows, and at
    least two ranges per worker thread) reads its chunks one at a time, keeps only the
    projections' columns of the kept rows, and aggregates each projection once with
    datashader; a tree of sums merges the canvases. Reading inside the task keeps the
    columns where they were read (nothing but canvases crosses the network) and spends
    datashader's per-call cost once per range rather than once per chunk.
    """
    if points.source is None:
        raise RenderError(f"{points.path}: rendering reads a Zarr array")
    selected, _ = selection_mask(points, split, where)
    keep = points.valid
    if selected is not None:
        keep = selected if keep is None else keep & selected
    coloured = sorted({p.color_by for p in projections if p.color_by is not None})
    if coloured and points.attributes is None:
        raise RenderError(f"colouring by an attribute asked for, but {points.path} has no attributes")
    needs_pcs = any(p.kind == "pc" for p in projections)
    kernel = partial(aggregate_rows, block_rows=int(points.source.chunks[0]), projections=list(projections),
                     mean=stats["mean"].values if needs_pcs else None,
                     vectors=stats["pca_vectors"].values if needs_pcs else None)  # fmt: skip
    level = [
        delayed(kernel, pure=True)(
            points.source, start, stop, None if keep is None else keep[start:stop],
            None if not coloured else points.attributes[start:stop],  # type: ignore[index]
        )
        for start, stop in row_ranges(points.z.shape[0], int(points.source.chunks[0]), scheduler)
    ]  # fmt: skip
    while len(level) > 1:  # a tree of sums: no single task holds every range's canvases
        level = [delayed(_add, pure=True)(level[i : i + fan_in]) for i in range(0, len(level), fan_in)]
    (merged,) = dask.compute(level[0], scheduler=scheduler)
    return [
        Aggregate(p, counts, candidates) for p, (counts, candidates) in zip(projections, merged, strict=True)
    ]


def row_ranges(n: int, chunk: int, scheduler: Any = None) -> list[tuple[int, int]]:
    """Ranges of whole chunks: at most ``ROWS_PER_TASK`` rows, at least two per worker thread."""
    threads = sum(scheduler.nthreads().values()) if hasattr(scheduler, "nthreads") else 2
    chunks = max(math.ceil(n / chunk), 1)
    per_task = max(1, min(ROWS_PER_TASK // chunk, math.ceil(chunks / (2 * max(threads, 1)))))
    return [(c * chunk, min((c + per_task) * chunk, n)) for c in range(0, chunks, per_task)]


# ---------------------------------------------------------------------------- drawing


@dataclass(frozen=True)
class Overlay:
    """Points drawn above the projections: artificial (red) or a special real point (orange)."""

    label: str
    z: np.ndarray
    special: bool = False


def overlay_xy(projection: Projection, z: np.ndarray, stats: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    if projection.kind == "pc":
        centred = (np.asarray(z, dtype=np.float64) - stats["mean"].values) @ stats["pca_vectors"].values[
            :, [projection.a, projection.b]
        ]
        return centred[:, 0], centred[:, 1]
    return z[:, projection.a], z[:, projection.b]


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


CATEGORY_COLOURS = np.array([[0.13, 0.40, 0.85], [0.90, 0.35, 0.10]])  # value −1, value +1


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


def draw(ax: Any, aggregate: Aggregate, *, how: Shading, stats: xr.Dataset, overlays: Sequence[Overlay] = (),
         attribute: str | None = None, colour_bar: bool = True, small: bool = False) -> None:  # fmt: skip
    """One projection into matplotlib axes: shaded counts, labels, origin, overlays."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    p = aggregate.projection
    extent = (*p.x_range, *p.y_range)
    pixels = spread(aggregate.counts)
    if pixels.ndim == 3:
        ax.imshow(
            category_rgba(pixels), origin="lower", extent=extent, aspect="auto", interpolation="nearest"
        )
        ax.legend(handles=[Patch(color=CATEGORY_COLOURS[1], label=f"{attribute} = +1"),
                           Patch(color=CATEGORY_COLOURS[0], label=f"{attribute} = −1")],
                  loc="upper right", fontsize=7)  # fmt: skip
    else:
        image = ax.imshow(np.ma.masked_equal(pixels, 0), origin="lower", extent=extent, aspect="auto",
                          interpolation="nearest", cmap="viridis", norm=_norm(pixels, how))  # fmt: skip
        if colour_bar:
            bar = plt.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
            bar.set_label(f"points per pixel ({how})")
    if p.x_range[0] <= 0 <= p.x_range[1] and p.y_range[0] <= 0 <= p.y_range[1]:
        ax.plot([0], [0], marker="+", color="black", markersize=10 if not small else 6, mew=1.2,
                label="mean" if p.kind == "pc" else "origin")  # fmt: skip
    for overlay in overlays:
        x, y = overlay_xy(p, overlay.z, stats)
        if overlay.special:
            ax.scatter(x, y, marker="*", s=140 if not small else 50, c="orange", edgecolors="black", zorder=5,
                       label=overlay.label)  # fmt: skip
        else:
            ax.scatter(x, y, s=6 if not small else 2, c="red", alpha=0.8, linewidths=0, zorder=4,
                       label=overlay.label)  # fmt: skip
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
            ax.legend(loc="lower right", fontsize=7, markerscale=0.7)


def _figure(width: int, height: int) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.figure(figsize=(width / 100, height / 100), dpi=100)


def save_single(aggregate: Aggregate, out: Path, *, width: int, how: Shading, stats: xr.Dataset,
                overlays: Sequence[Overlay] = (), attribute: str | None = None) -> Path:  # fmt: skip
    """A ``width`` × ``width`` PNG of one projection; the canvas fills the axes pixel for pixel."""
    import matplotlib.pyplot as plt

    fig = _figure(width, width)
    ax = fig.add_axes((0.12, 0.1, CANVAS_FRACTION[0], CANVAS_FRACTION[1]))
    draw(ax, aggregate, how=how, stats=stats, overlays=overlays, attribute=attribute, colour_bar=False)
    if aggregate.counts.ndim == 2:
        bar_axes = fig.add_axes((0.12 + CANVAS_FRACTION[0] + 0.02, 0.1, 0.025, CANVAS_FRACTION[1]))
        bar = fig.colorbar(ax.images[0], cax=bar_axes)
        bar.set_label(f"points per pixel ({how})")
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def save_grid(aggregates: Sequence[Aggregate], out: Path, *, title: str, width: int, how: Shading,
              stats: xr.Dataset, overlays: Sequence[Overlay] = ()) -> Path:  # fmt: skip
    """Projections in a square grid (4 × 4 for 16), one shared title, ``width`` px wide."""
    import matplotlib.pyplot as plt

    columns = math.ceil(math.sqrt(len(aggregates)))
    rows = math.ceil(len(aggregates) / columns)
    fig = _figure(width, int(width * rows / columns) + 40)
    axes = fig.subplots(rows, columns, squeeze=False)
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
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


# ---------------------------------------------------------------------------- the command


def widened(projection: Projection, overlays: Sequence[Overlay], stats: xr.Dataset) -> Projection:
    """The projection with its ranges grown to hold every overlaid point."""
    xs, ys = zip(*(overlay_xy(projection, o.z, stats) for o in overlays), strict=True)
    x, y = np.concatenate(xs), np.concatenate(ys)
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    if not len(x):
        return projection
    return replace(
        projection,
        x_range=(min(projection.x_range[0], float(x.min())), max(projection.x_range[1], float(x.max()))),
        y_range=(min(projection.y_range[0], float(y.min())), max(projection.y_range[1], float(y.max()))),
    )


def read_overlay(path: str | Path) -> Overlay:
    group = zarr.open_group(str(path), mode="r")
    z = np.asarray(group["z"][:OVERLAY_POINTS], dtype=np.float64)  # type: ignore[index]
    return Overlay(f"{group.attrs.get('sampler', Path(path).stem)} ({len(z):,})", z)


def special_overlay(points: ZPoints, index: int) -> Overlay:
    n = points.z.shape[0]
    if not 0 <= index < n:
        raise RenderError(f"--special {index}: the store has rows 0…{n - 1}")
    z = np.asarray(points.z[index].compute(), dtype=np.float64)[None, :]
    if not np.isfinite(z).all():
        raise RenderError(f"--special {index}: that row has no valid z-point")
    return Overlay(f"image {index}", z, special=True)


def render(
    store: str | Path,
    out: str | Path,
    *,
    stats: str | Path | None = None,
    pairs: Sequence[str] = (),
    top_correlated: int = 16,
    pcs: int = 4,
    slice_threshold: float | None = None,
    slice_ranked: int = 4,
    overlays: Sequence[str | Path] = (),
    special: int | None = None,
    color_by: str | None = None,
    width: int = 800,
    how: Shading = "eq_hist",
    split: str = "all",
    where: Sequence[str] = (),
    scheduler: Any = None,
    points: ZPoints | None = None,
) -> RenderResult:
    """Every requested projection of every selected z-point, as PNGs in ``out``; see the module docstring.

    ``points``: the store already opened (e.g. leaving out damaged shards); default: opened from ``store``.
    """
    from latentdask.store.paths import default_stats_path

    if width < 100:
        raise RenderError(f"--width {width}: at least 100 pixels")
    if how not in ("eq_hist", "log"):
        raise RenderError(f"shading {how!r}: use eq_hist or log")
    store = Path(store)
    stats_path = Path(stats) if stats is not None else default_stats_path(store)
    if not stats_path.exists():
        raise RenderError(f"{stats_path} does not exist; give --stats (render takes ranges and PCs from it)")
    inputs = [store, stats_path, *overlays]
    check_output(out, PROJECTIONS_KIND, inputs=inputs)
    points = points or open_zpoints(store)
    statistics = open_stats(stats_path)
    dim = statistics.sizes["latent"]
    if points.z.shape[1] != dim:
        raise RenderError(
            f"{store} has {points.z.shape[1]} components; the statistics {stats_path} have {dim}"
        )
    attribute = None
    if color_by is not None:
        if color_by not in points.attribute_names:
            raise RenderError(
                f"--color-by {color_by}: the store's attributes are {', '.join(points.attribute_names) or 'none'}"
            )
        attribute = points.attribute_names.index(color_by)

    single = canvas_size(width)
    chosen = [(parse_pair(spec, statistics, slice_threshold), spec) for spec in pairs]
    singles = [
        pair_projection(statistics, a, b, single, color_by=attribute, note=note)
        for (a, b), note in (c[0] for c in chosen)
    ]
    grids: dict[str, tuple[str, list[Projection]]] = {}
    if top_correlated > 0:
        ranked = ranked_pairs(statistics, "corr", top_correlated)
        corr = statistics["corr"].values
        grids["top-correlated"] = (
            f"the {len(ranked)} most correlated pairs",
            [pair_projection(statistics, a, b, canvas_size(width, math.ceil(math.sqrt(len(ranked)))),
                             note=f"r = {corr[a, b]:+.2f}") for a, b in ranked],
        )  # fmt: skip
    if pcs >= 2:
        if pcs > dim:
            raise RenderError(f"--pcs {pcs}: the latent space has {dim} principal axes")
        plane = [(i, k) for i in range(pcs) for k in range(i + 1, pcs)]
        size = canvas_size(width, math.ceil(math.sqrt(len(plane))))
        grids["pcs"] = (f"projections onto the first {pcs} principal axes",
                        [pc_projection(statistics, i, k, size) for i, k in plane])  # fmt: skip
    if slice_threshold is not None:
        t = _stats_threshold(statistics, slice_threshold)
        listed = [(a, b) for (a, b), _ in (c[0] for c in chosen)]
        smallest = ranked_pairs(statistics, "smallest-slice", slice_ranked, t)
        largest = ranked_pairs(statistics, "largest-slice", slice_ranked, t)
        plane = list(dict.fromkeys(listed + smallest + largest))
        size = canvas_size(width, math.ceil(math.sqrt(len(plane))))
        grids[f"slices-{t:g}"] = (f"slices |x_j| < {t:g} outside the pair: given pairs, the {slice_ranked} "
                                  f"smallest and largest populations",
                                  [pair_projection(statistics, a, b, size, threshold=t) for a, b in plane])  # fmt: skip
    projections = singles + [p for _, group in grids.values() for p in group]
    if not projections:
        raise RenderError("nothing to render: give --pairs, --top-correlated, --pcs or --slice")
    drawn = [read_overlay(path) for path in overlays]
    if special is not None:
        drawn.append(special_overlay(points, special))
    if drawn:  # canvases also hold the overlaid points, so none is drawn off the axes
        projections = [widened(p, drawn, statistics) for p in projections]
        singles = projections[: len(singles)]
        offset = len(singles)
        for name, (title, group) in grids.items():
            grids[name] = (title, projections[offset : offset + len(group)])
            offset += len(group)

    started = time.perf_counter()
    aggregates = aggregate(
        points, projections, stats=statistics, split=split, where=where, scheduler=scheduler
    )
    aggregated = time.perf_counter() - started

    started = time.perf_counter()
    result = RenderResult(aggregates, points=int(points.z.shape[0]))
    with owned_output(out, PROJECTIONS_KIND, inputs=inputs) as staged:
        for aggregate_ in aggregates[: len(singles)]:
            result.files.append(save_single(aggregate_, staged.path / f"{aggregate_.projection.name}.png",
                                            width=width, how=how, stats=statistics, overlays=drawn,
                                            attribute=color_by))  # fmt: skip
        offset = len(singles)
        for name, (title, group) in grids.items():
            part = aggregates[offset : offset + len(group)]
            offset += len(group)
            result.files.append(save_grid(part, staged.path / f"{name}.png", title=title, width=width, how=how,
                                          stats=statistics, overlays=drawn))  # fmt: skip
        result.seconds = {"aggregate": round(aggregated, 3), "draw": round(time.perf_counter() - started, 3)}
        result.files = [
            Path(out) / path.name for path in result.files
        ]  # where they are once moved into place
        (staged.path / "render.json").write_text(json.dumps(result.summary(), indent=2) + "\n")
    return result
