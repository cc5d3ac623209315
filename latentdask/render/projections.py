"""Which 2-D views render draws, and the canvas of each, fixed before any row is read.

- pairs and slices span the components' full range from ``stats.zarr`` (``min``/``max``),
  so every selected point lands on the canvas;
- principal-axis projections (x − mean onto the axes of ``pca_vectors``) span
  ±``PC_SPREAD`` standard deviations; points beyond are counted and said in the title;
- ranked pairs (the most correlated, the smallest or largest slice populations) come
  from the statistics too;
- overlays (artificial points from a POINTS.zarr, or one special real point) widen the
  canvases so none is drawn off the axes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import xarray as xr
import zarr

from latentdask.errors import LatentdaskError
from latentdask.location import Where, location
from latentdask.stats.analysis import upper_pairs
from latentdask.store.points import ZPoints

#: principal-axis canvases span this many standard deviations either side of the mean
PC_SPREAD = 5.0
#: the fraction of a single image's width taken by the canvas (the rest: axes, colour bar)
CANVAS_FRACTION = (0.72, 0.80)
#: artificial points drawn over a projection at most (a sample beyond that)
OVERLAY_POINTS = 5000


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


# ---------------------------------------------------------------------------- choosing pairs


def ranked_pairs(
    stats: xr.Dataset, rank_by: str, count: int, threshold: float | None = None
) -> list[tuple[int, int]]:
    """The ``count`` first pairs (a < b) by |correlation| or by slice population."""
    if rank_by == "corr":
        a, b, r = upper_pairs(stats["corr"].values)
        order = np.argsort(-np.abs(np.nan_to_num(r)), kind="stable")
    elif rank_by in ("smallest-slice", "largest-slice"):
        population = stats["slice_count"].sel(threshold=stats_threshold(stats, threshold)).values
        a, b, pop = upper_pairs(population)
        order = np.argsort(pop, kind="stable")
        if rank_by == "largest-slice":
            order = np.argsort(-pop, kind="stable")
    else:
        raise RenderError(f"unknown ranking {rank_by!r}; use corr, smallest-slice or largest-slice")
    return [(int(a[k]), int(b[k])) for k in order[:count]]


def stats_threshold(stats: xr.Dataset, threshold: float | None) -> float:
    """``threshold`` as one of the statistics' slice thresholds (None: the first of them)."""
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


# ---------------------------------------------------------------------------- canvases


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
    stats: xr.Dataset,
    a: int,
    b: int,
    size: tuple[int, int],
    *,
    threshold: float | None = None,
    color_by: int | None = None,
    note: str = "",
) -> Projection:
    kind: Literal["pair", "slice"] = "pair" if threshold is None else "slice"
    name = f"pair-{a}-{b}" if threshold is None else f"slice-{threshold:g}-{a}-{b}"
    return Projection(
        name=name,
        kind=kind,
        a=a,
        b=b,
        x_range=_component_range(stats, a),
        y_range=_component_range(stats, b),
        width=size[0],
        height=size[1],
        threshold=threshold,
        color_by=color_by,
        note=note,
    )


def pc_projection(stats: xr.Dataset, i: int, k: int, size: tuple[int, int]) -> Projection:
    spread = [PC_SPREAD * math.sqrt(max(float(stats["pca_eigenvalues"].values[p]), 1e-12)) for p in (i, k)]
    return Projection(
        name=f"pc-{i + 1}-{k + 1}",
        kind="pc",
        a=i,
        b=k,
        x_range=(-spread[0], spread[0]),
        y_range=(-spread[1], spread[1]),
        width=size[0],
        height=size[1],
    )


# ---------------------------------------------------------------------------- overlays


@dataclass(frozen=True)
class Overlay:
    """Points drawn above the projections: artificial (red) or a special real point (orange)."""

    label: str
    z: np.ndarray
    special: bool = False


def overlay_xy(projection: Projection, z: np.ndarray, stats: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Where the points ``z`` fall in the projection's plane."""
    if projection.kind == "pc":
        centred = (np.asarray(z, dtype=np.float64) - stats["mean"].values) @ stats["pca_vectors"].values[
            :, [projection.a, projection.b]
        ]
        return centred[:, 0], centred[:, 1]
    return z[:, projection.a], z[:, projection.b]


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


def read_overlay(path: Where) -> Overlay:
    """The first ``OVERLAY_POINTS`` z-points of a POINTS.zarr, labelled by their sampler."""
    group = zarr.open_group(str(location(path)), mode="r")
    z = np.asarray(group["z"][:OVERLAY_POINTS], dtype=np.float64)  # type: ignore[index]
    return Overlay(f"{group.attrs.get('sampler', location(path).stem)} ({len(z):,})", z)


def special_overlay(points: ZPoints, index: int) -> Overlay:
    """Row ``index`` of the store, drawn as the special (orange) point."""
    n = points.z.shape[0]
    if not 0 <= index < n:
        raise RenderError(f"--special {index}: the store has rows 0…{n - 1}")
    z = np.asarray(points.z[index].compute(), dtype=np.float64)[None, :]
    if not np.isfinite(z).all():
        raise RenderError(f"--special {index}: that row has no valid z-point")
    return Overlay(f"image {index}", z, special=True)
