"""The per-block pass: every per-value statistic of a block in one numba scan.

A block of z-points is read once by :func:`scan_block`, which returns the states of
the moments, histogram, radius and slice families (see :mod:`.kernels`). Steps:

1. the mean of the kept rows (one numba loop);
2. the kept rows, centred, :data:`GEMM_ROWS` at a time into one reused float64 buffer,
   and the co-moment matrix summed over one GEMM per tile (exact to float64 rounding,
   stable far from the origin); the attribute groups' sums from the same tiles;
3. one numba scan over tiles of 512 rows, column by column inside a tile (each
   column's histogram stays in cache while the tile stays in L2), that bins every
   value exactly as ``np.histogram`` does, adds the 3rd and 4th central powers, the
   minimum and maximum, each row's squared norm, and for every threshold how many
   and which components of the row lie outside ±t;
4. per row of the tile: its radius into the radius histogram, and its slice class
   (k = 0, 1 or 2 components outside) into ``n0``, ``c1`` or ``c2``.

No temporary the size of the block is made: a fresh block-sized float64 copy cost more
in page faults than its GEMM (``latentdask bench stats`` profiles the parts).
"""

from __future__ import annotations

import numba
import numpy as np

from latentdask.reduction import float_block
from latentdask.stats.kernels import (
    BlockScan,
    Counts1D,
    GroupMoments,
    Histogram,
    Moments,
    Slices,
    empty_scan,
    groups_chunk,
    groups_merge,
)

#: rows of a tile of the numba scan (each column's histogram stays in cache while the tile stays in L2)
TILE = 512
#: rows centred at a time for the co-moment GEMM (a buffer of GEMM_ROWS x N float64, reused)
GEMM_ROWS = 8192


@numba.njit(cache=True, nogil=True, inline="always")
def histogram_bin(v: float, edges: np.ndarray, scale: float) -> int:
    """-1 below, len(edges) - 1 above, else the bin np.histogram would choose."""
    bins = len(edges) - 1
    if v < edges[0]:
        return -1
    if v > edges[bins]:
        return bins
    i = int((v - edges[0]) * scale)
    if i == bins:
        i -= 1
    if v < edges[i]:
        i -= 1
    elif v >= edges[i + 1] and i != bins - 1:
        i += 1
    return i


@numba.njit(cache=True, nogil=True)
def _kept_mean(x: np.ndarray, keep: np.ndarray) -> np.ndarray:
    rows, dim = x.shape
    total = np.zeros(dim)
    count = 0
    for r in range(rows):
        if keep[r]:
            count += 1
            for j in range(dim):
                total[j] += x[r, j]
    return total / max(count, 1)


@numba.njit(cache=True, nogil=True)
def _centre(x: np.ndarray, keep: np.ndarray, mean: np.ndarray, out: np.ndarray) -> None:
    rows, dim = x.shape
    k = 0
    for r in range(rows):
        if keep[r]:
            for j in range(dim):
                out[k, j] = x[r, j] - mean[j]
            k += 1


@numba.njit(cache=True, nogil=True)
def _finite_rows(x: np.ndarray) -> np.ndarray:
    rows, dim = x.shape
    finite = np.ones(rows, dtype=np.bool_)
    for r in range(rows):
        for j in range(dim):
            if not np.isfinite(x[r, j]):
                finite[r] = False
                break
    return finite


@numba.njit(cache=True, nogil=True)
def _scan(
    x: np.ndarray,
    keep: np.ndarray,
    mean: np.ndarray,
    edges: np.ndarray,
    thresholds: np.ndarray,
    radius_edges: np.ndarray,
):
    rows, dim = x.shape
    bins = len(edges) - 1
    scale = bins / (edges[bins] - edges[0])
    radius_bins = len(radius_edges) - 1
    radius_scale = radius_bins / (radius_edges[radius_bins] - radius_edges[0])
    n_thresholds = len(thresholds)
    hist = np.zeros((dim, bins + 2), dtype=np.int64)
    m3 = np.zeros(dim)
    m4 = np.zeros(dim)
    low = np.full(dim, np.inf)
    high = np.full(dim, -np.inf)
    radius = np.zeros(radius_bins + 2, dtype=np.int64)
    radius_total = 0.0
    n0 = np.zeros(n_thresholds, dtype=np.int64)
    c1 = np.zeros((n_thresholds, dim), dtype=np.int64)
    c2 = np.zeros((n_thresholds, dim, dim), dtype=np.int64)
    squared = np.zeros(TILE)
    outside = np.zeros((n_thresholds, TILE), dtype=np.int64)
    first = np.zeros((n_thresholds, TILE), dtype=np.int64)
    second = np.zeros((n_thresholds, TILE), dtype=np.int64)
    for r0 in range(0, rows, TILE):
        r1 = min(r0 + TILE, rows)
        squared[:] = 0.0
        outside[:, :] = 0
        for j in range(dim):
            mu = mean[j]
            for r in range(r0, r1):
                if not keep[r]:
                    continue
                v = np.float64(x[r, j])
                hist[j, histogram_bin(v, edges, scale) + 1] += 1
                d = v - mu
                d2 = d * d
                m3[j] += d2 * d
                m4[j] += d2 * d2
                low[j] = min(low[j], v)
                high[j] = max(high[j], v)
                squared[r - r0] += v * v
                magnitude = abs(v)
                for k in range(n_thresholds):
                    if magnitude >= thresholds[k]:
                        c = outside[k, r - r0]
                        if c == 0:
                            first[k, r - r0] = j
                        elif c == 1:
                            second[k, r - r0] = j
                        outside[k, r - r0] = c + 1
        for r in range(r0, r1):
            if not keep[r]:
                continue
            length = np.sqrt(squared[r - r0])
            radius_total += length
            radius[histogram_bin(length, radius_edges, radius_scale) + 1] += 1
            for k in range(n_thresholds):
                c = outside[k, r - r0]
                if c == 0:
                    n0[k] += 1
                elif c == 1:
                    c1[k, first[k, r - r0]] += 1
                elif c == 2:
                    c2[k, first[k, r - r0], second[k, r - r0]] += 1
    return hist, m3, m4, low, high, radius, radius_total, n0, c1, c2


@numba.njit(cache=True, nogil=True)
def _centred_radii(x: np.ndarray, keep: np.ndarray, centre: np.ndarray, radius_edges: np.ndarray):
    rows, dim = x.shape
    radius_bins = len(radius_edges) - 1
    scale = radius_bins / (radius_edges[radius_bins] - radius_edges[0])
    counts = np.zeros(radius_bins + 2, dtype=np.int64)
    total = 0.0
    for r in range(rows):
        if keep[r]:
            s = 0.0
            for j in range(dim):
                d = x[r, j] - centre[j]
                s += d * d
            length = np.sqrt(s)
            total += length
            counts[histogram_bin(length, radius_edges, scale) + 1] += 1
    return counts, total


def finite_rows(x: np.ndarray) -> np.ndarray:
    """True for rows whose every value is finite."""
    return _finite_rows(np.ascontiguousarray(x))


def scan_block(
    x: np.ndarray,
    keep: np.ndarray,
    *,
    edges: np.ndarray,
    thresholds: np.ndarray,
    radius_edges: np.ndarray,
    attributes: np.ndarray | None = None,
) -> BlockScan:
    """The moments, histogram, radius and slice states of the kept rows of ``x``; with
    ``attributes`` ((rows, A) of ±1, 0 unknown) the attribute groups' moments too."""
    x = float_block(x)
    keep = np.ascontiguousarray(keep, dtype=bool)
    dim = x.shape[1]
    n = int(keep.sum())
    thresholds = np.asarray(thresholds, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    radius_edges = np.asarray(radius_edges, dtype=np.float64)
    if n == 0:
        return empty_scan(
            dim,
            bins=len(edges) - 1,
            thresholds=len(thresholds),
            radius_bins=len(radius_edges) - 1,
            attributes=attributes,
        )
    mean = _kept_mean(x, keep)
    m2, groups = _co_moments(x, keep, mean, attributes)
    hist, m3, m4, low, high, radius, radius_total, n0, c1, c2 = _scan(
        x, keep, mean, edges, thresholds, radius_edges
    )
    return BlockScan(
        moments=Moments(n, mean, m2, m3, m4, low, high),
        hist=Histogram(hist[:, 1:-1].copy(), hist[:, 0].copy(), hist[:, -1].copy()),
        radius=Counts1D(radius[1:-1].copy(), int(radius[0]), int(radius[-1]), float(radius_total)),
        slices=Slices(n0, c1, c2),
        groups=groups,
    )


def _co_moments(
    x: np.ndarray, keep: np.ndarray, mean: np.ndarray, attributes: np.ndarray | None
) -> tuple[np.ndarray, GroupMoments | None]:
    """Σ (x-μ)(x-μ)ᵀ over the kept rows, one GEMM per tile of centred rows; and the groups' moments."""
    m2 = np.zeros((x.shape[1], x.shape[1]))
    groups = None
    buffer = np.empty((min(GEMM_ROWS, len(x)), x.shape[1]))
    for start in range(0, len(x), GEMM_ROWS):
        part = keep[start : start + GEMM_ROWS]
        centred = buffer[: int(part.sum())]
        if not len(centred):
            continue
        _centre(x[start : start + GEMM_ROWS], part, mean, centred)
        m2 += centred.T @ centred
        if attributes is not None:
            tile = groups_chunk(centred, mean, np.asarray(attributes[start : start + GEMM_ROWS])[part])
            groups = tile if groups is None else groups_merge(groups, tile)
    return m2, groups


def centred_radius_counts(
    x: np.ndarray, keep: np.ndarray, *, centre: np.ndarray, radius_edges: np.ndarray
) -> Counts1D:
    """Histogram of |x - centre| over the kept rows, without a block-sized temporary."""
    counts, total = _centred_radii(
        float_block(x),
        np.ascontiguousarray(keep, dtype=bool),
        np.asarray(centre, dtype=np.float64),
        np.asarray(radius_edges, dtype=np.float64),
    )
    return Counts1D(counts[1:-1].copy(), int(counts[0]), int(counts[-1]), float(total))


def moments_chunk(x: np.ndarray) -> Moments:
    """The moments state of all rows of ``x`` (one family alone, for tests and callers)."""
    return scan_block(
        x,
        np.ones(len(x), bool),
        edges=np.array([0.0, 1.0]),
        thresholds=np.zeros(0),
        radius_edges=np.array([0.0, 1.0]),
    ).moments


def histogram_chunk(x: np.ndarray, edges: np.ndarray) -> Histogram:
    """The histogram state of all rows of ``x`` with ``edges``."""
    return scan_block(
        x, np.ones(len(x), bool), edges=edges, thresholds=np.zeros(0), radius_edges=np.array([0.0, 1.0])
    ).hist


def slices_chunk(x: np.ndarray, thresholds: np.ndarray) -> Slices:
    """The slice-count state of all rows of ``x`` at ``thresholds``."""
    return scan_block(
        x,
        np.ones(len(x), bool),
        edges=np.array([0.0, 1.0]),
        thresholds=thresholds,
        radius_edges=np.array([0.0, 1.0]),
    ).slices
