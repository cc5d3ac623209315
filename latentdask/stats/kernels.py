"""Per-chunk kernels and associative merges, one state per statistic family.

Pure numpy: no dask, no torch. Every family follows chunk → combine → finalize:
``*_chunk(x, ...)`` makes the state of one block of rows, ``*_combine(states)``
merges any number of states (associative, and the state of zero rows is neutral),
and the finalize step lives in :mod:`latentdask.stats.summary`.

Blocks arrive as float32 or float64 (rows, N); everything accumulates in float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numba
import numpy as np

# ----------------------------------------------------------------------------- moments


class Moments(NamedTuple):
    """Count, mean, co-moment matrix and per-component 3rd/4th central moments, min, max.

    ``m2 = Σ (x-μ)(x-μ)ᵀ``; ``m3 = Σ (x-μ)³``, ``m4 = Σ (x-μ)⁴`` per component.
    """

    n: int
    mean: np.ndarray
    m2: np.ndarray
    m3: np.ndarray
    m4: np.ndarray
    min: np.ndarray
    max: np.ndarray


def moments_empty(dim: int) -> Moments:
    zeros = np.zeros(dim)
    return Moments(0, zeros, np.zeros((dim, dim)), zeros, zeros, np.full(dim, np.inf), np.full(dim, -np.inf))


def moments_chunk(x: np.ndarray) -> Moments:
    """Moments of the rows of ``x`` about their own mean (a centred float64 GEMM)."""
    if len(x) == 0:
        return moments_empty(x.shape[1])
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=0)
    d = x - mean
    m3, m4 = _third_and_fourth(d)
    return Moments(n=len(x), mean=mean, m2=d.T @ d, m3=m3, m4=m4, min=x.min(axis=0), max=x.max(axis=0))


@numba.njit(cache=True, nogil=True)
def _third_and_fourth(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Σd³ and Σd⁴ per column in one fused loop (numpy would allocate two block-sized temporaries)."""
    rows, dim = d.shape
    m3 = np.zeros(dim)
    m4 = np.zeros(dim)
    for i in range(rows):
        for j in range(dim):
            v = d[i, j]
            v2 = v * v
            m3[j] += v2 * v
            m4[j] += v2 * v2
    return m3, m4


def moments_merge(a: Moments, b: Moments) -> Moments:
    """Chan et al.'s pairwise update, extended to the 3rd and 4th moments (Pébay 2008)."""
    if a.n == 0:
        return b
    if b.n == 0:
        return a
    n = a.n + b.n
    delta = b.mean - a.mean
    da, db = np.diag(a.m2), np.diag(b.m2)
    m2 = a.m2 + b.m2 + np.outer(delta, delta) * (a.n * b.n / n)
    m3 = (
        a.m3 + b.m3
        + delta**3 * (a.n * b.n * (a.n - b.n) / n**2)
        + 3 * delta * (a.n * db - b.n * da) / n
    )  # fmt: skip
    m4 = (
        a.m4 + b.m4
        + delta**4 * (a.n * b.n * (a.n**2 - a.n * b.n + b.n**2) / n**3)
        + 6 * delta**2 * (a.n**2 * db + b.n**2 * da) / n**2
        + 4 * delta * (a.n * b.m3 - b.n * a.m3) / n
    )  # fmt: skip
    return Moments(
        n, a.mean + delta * (b.n / n), m2, m3, m4, np.minimum(a.min, b.min), np.maximum(a.max, b.max)
    )


def moments_combine(states: Sequence[Moments]) -> Moments:
    """Merge any number of states; pairwise (tree) order keeps rounding balanced."""
    states = list(states)
    while len(states) > 1:
        states = [moments_merge(*states[i : i + 2]) if i + 1 < len(states) else states[i]
                  for i in range(0, len(states), 2)]  # fmt: skip
    return states[0]


# -------------------------------------------------------------------------- histograms


class Histogram(NamedTuple):
    """Counts per (component, bin) for fixed edges, with values below and above the range."""

    counts: np.ndarray  # (N, bins) int64
    underflow: np.ndarray  # (N,) int64
    overflow: np.ndarray  # (N,) int64


def uniform_edges(low: float, high: float, width: float) -> np.ndarray:
    """Edges from ``low`` to ``high`` in steps of ``width`` (``high - low`` a multiple of it)."""
    bins = round((high - low) / width)
    if bins < 1 or not np.isclose(bins * width, high - low):
        raise ValueError(f"range [{low}, {high}] is not a whole number of bins of width {width}")
    return np.linspace(low, high, bins + 1)


def bin_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each value for uniform ``edges``: -1 below, ``bins`` above, like np.histogram.

    Steps (numpy's own fast path for uniform bins, so counts agree exactly):
    1. scale to a float bin number and truncate;
    2. correct by one where rounding put a value on the wrong side of an edge;
    3. the last edge belongs to the last bin.
    """
    bins = len(edges) - 1
    low, high = edges[0], edges[-1]
    values = np.asarray(values, dtype=np.float64)
    inside = (values >= low) & (values <= high)
    index = np.full(values.shape, -1, dtype=np.intp)
    index[values > high] = bins
    v = values[inside]
    i = ((v - low) * (bins / (high - low))).astype(np.intp)
    i[i == bins] -= 1
    i[v < edges[i]] -= 1
    i[(v >= edges[i + 1]) & (i != bins - 1)] += 1
    index[inside] = i
    return index


def histogram_chunk(x: np.ndarray, edges: np.ndarray) -> Histogram:
    """Per-component histograms of the rows of ``x``, binned exactly as :func:`bin_index` bins."""
    table = _histogram_table(np.asarray(x), np.asarray(edges, dtype=np.float64))
    return Histogram(table[:, 1:-1].copy(), table[:, 0].copy(), table[:, -1].copy())


@numba.njit(cache=True, nogil=True)
def _histogram_table(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """(N, bins + 2) counts: column 0 below the range, column bins + 1 above; NaN counts nowhere.

    The steps of :func:`bin_index`, value by value. Tiles of 512 rows, column by column
    inside a tile, keep each column's counts in cache while the tile stays in L2: 6-7x
    faster than row by row, and ~7x faster than numpy's fancy indexing.
    """
    rows, dim = x.shape
    bins = len(edges) - 1
    low, high = edges[0], edges[-1]
    scale = bins / (high - low)
    table = np.zeros((dim, bins + 2), dtype=np.int64)
    for r0 in range(0, rows, 512):
        r1 = min(r0 + 512, rows)
        for j in range(dim):
            for r in range(r0, r1):
                v = np.float64(x[r, j])
                if v < low:
                    table[j, 0] += 1
                elif v > high:
                    table[j, bins + 1] += 1
                elif v >= low:  # False for NaN
                    i = int((v - low) * scale)
                    if i == bins:
                        i -= 1
                    if v < edges[i]:
                        i -= 1
                    elif v >= edges[i + 1] and i != bins - 1:
                        i += 1
                    table[j, i + 1] += 1
    return table


def histogram_combine(states: Sequence[Histogram]) -> Histogram:
    return Histogram(*(np.sum([s[k] for s in states], axis=0) for k in range(3)))


class Counts1D(NamedTuple):
    """A single histogram with under/overflow, and the exact sum of the values (radii)."""

    counts: np.ndarray
    underflow: int
    overflow: int
    total: float


def counts_chunk(values: np.ndarray, edges: np.ndarray) -> Counts1D:
    index = bin_index(values, edges)
    bins = len(edges) - 1
    counts = np.bincount(index[(index >= 0) & (index < bins)], minlength=bins).astype(np.int64)
    return Counts1D(
        counts, int((index < 0).sum()), int((index >= bins).sum()), float(np.sum(values, dtype=np.float64))
    )


def counts_combine(states: Sequence[Counts1D]) -> Counts1D:
    return Counts1D(np.sum([s.counts for s in states], axis=0), sum(s.underflow for s in states),
                    sum(s.overflow for s in states), float(np.sum([s.total for s in states])))  # fmt: skip


# ---------------------------------------------------------------------------- slices


class Slices(NamedTuple):
    """Slice-population counts for each threshold t.

    With k(x) = #{j : |x_j| ≥ t}: ``n0[t]`` = #(k = 0), ``c1[t, j]`` = #(k = 1, outside
    component j), ``c2[t, a, b]`` = #(k = 2, outside a and b), a < b (upper triangle).
    """

    n0: np.ndarray  # (T,) int64
    c1: np.ndarray  # (T, N) int64
    c2: np.ndarray  # (T, N, N) int64


def slices_chunk(x: np.ndarray, thresholds: np.ndarray) -> Slices:
    """Count rows by how many and which components lie outside ±t; O(rows · N) per t."""
    dim = x.shape[1]
    magnitude = np.abs(np.asarray(x, dtype=np.float64))
    n0 = np.zeros(len(thresholds), dtype=np.int64)
    c1 = np.zeros((len(thresholds), dim), dtype=np.int64)
    c2 = np.zeros((len(thresholds), dim, dim), dtype=np.int64)
    for k, t in enumerate(thresholds):
        outside = magnitude >= t
        count = outside.sum(axis=1)
        n0[k] = int((count == 0).sum())
        one = outside[count == 1]
        c1[k] = one.sum(axis=0)
        two = outside[count == 2]
        if len(two):
            _, columns = np.nonzero(two)  # two per row, in increasing order
            a, b = columns[0::2], columns[1::2]
            c2[k] = np.bincount(a * dim + b, minlength=dim * dim).reshape(dim, dim)
    return Slices(n0, c1, c2)


def slices_combine(states: Sequence[Slices]) -> Slices:
    return Slices(*(np.sum([s[k] for s in states], axis=0) for k in range(3)))


def slice_population(state: Slices) -> np.ndarray:
    """(T, N, N) symmetric: rows with |x_j| < t for every j outside {a, b}; diagonal 0."""
    c2 = state.c2 + state.c2.transpose(0, 2, 1)
    population = state.n0[:, None, None] + state.c1[:, :, None] + state.c1[:, None, :] + c2
    dim = population.shape[1]
    population[:, np.arange(dim), np.arange(dim)] = 0
    return population


# ----------------------------------------------------------------------- attribute groups


class GroupMoments(NamedTuple):
    """Per attribute and group (+1, -1): count, mean and Σ(x-μ)² per component."""

    n: np.ndarray  # (A, 2) int64
    mean: np.ndarray  # (A, 2, N)
    m2: np.ndarray  # (A, 2, N)


def groups_chunk(x: np.ndarray, attributes: np.ndarray) -> GroupMoments:
    """Group sums for all attributes at once: two GEMMs of indicator matrices with x."""
    x = np.asarray(x, dtype=np.float64)
    centre = x.mean(axis=0) if len(x) else np.zeros(x.shape[1])
    d = x - centre
    n = np.zeros((attributes.shape[1], 2), dtype=np.int64)
    mean = np.zeros((attributes.shape[1], 2, x.shape[1]))
    m2 = np.zeros_like(mean)
    for g, value in enumerate((1, -1)):
        member = (attributes == value).astype(np.float64)  # (rows, A)
        count = member.sum(axis=0)
        s1 = member.T @ d
        s2 = member.T @ (d * d)
        safe = np.maximum(count, 1)[:, None]
        n[:, g] = count.astype(np.int64)
        mean[:, g] = np.where(count[:, None] > 0, centre + s1 / safe, 0.0)
        m2[:, g] = np.where(count[:, None] > 0, s2 - s1 * s1 / safe, 0.0)
    return GroupMoments(n, mean, m2)


def groups_merge(a: GroupMoments, b: GroupMoments) -> GroupMoments:
    n = a.n + b.n
    safe = np.maximum(n, 1)[..., None]
    delta = b.mean - a.mean
    mean = a.mean + delta * (b.n[..., None] / safe)
    m2 = a.m2 + b.m2 + delta**2 * (a.n * b.n)[..., None] / safe
    return GroupMoments(n, mean, m2)


def groups_combine(states: Sequence[GroupMoments]) -> GroupMoments:
    states = list(states)
    while len(states) > 1:
        states = [groups_merge(*states[i : i + 2]) if i + 1 < len(states) else states[i]
                  for i in range(0, len(states), 2)]  # fmt: skip
    return states[0]
