"""Per-chunk kernels and associative merges, one state per statistic family.

Pure numpy: no dask, no torch. Every family follows chunk → combine → finalize:
the states of one block come from :func:`latentdask.stats.scan.scan_block` (one
numba pass per block), ``*_combine(states)`` merges any number of states
(associative, and the state of zero rows is neutral), and the finalize step lives
in :mod:`latentdask.stats.summary`. Everything accumulates in float64.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, TypeVar

import numpy as np

S = TypeVar("S")

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
    m3 = a.m3 + b.m3 + delta**3 * (a.n * b.n * (a.n - b.n) / n**2) + 3 * delta * (a.n * db - b.n * da) / n
    m4 = (
        a.m4
        + b.m4
        + delta**4 * (a.n * b.n * (a.n**2 - a.n * b.n + b.n**2) / n**3)
        + 6 * delta**2 * (a.n**2 * db + b.n**2 * da) / n**2
        + 4 * delta * (a.n * b.m3 - b.n * a.m3) / n
    )
    return Moments(
        n, a.mean + delta * (b.n / n), m2, m3, m4, np.minimum(a.min, b.min), np.maximum(a.max, b.max)
    )


def pairwise(states: Sequence[S], merge: Callable[[S, S], S]) -> S:
    """Merge states two by two, level by level: a balanced tree keeps rounding balanced."""
    level = list(states)
    while len(level) > 1:
        level = [
            merge(level[i], level[i + 1]) if i + 1 < len(level) else level[i] for i in range(0, len(level), 2)
        ]
    return level[0]


def moments_combine(states: Sequence[Moments]) -> Moments:
    """Merge any number of moment states (Chan/Pébay, pairwise)."""
    return pairwise(states, moments_merge)


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


def histogram_combine(states: Sequence[Histogram]) -> Histogram:
    return Histogram(*(np.sum([s[k] for s in states], axis=0) for k in range(3)))


class Counts1D(NamedTuple):
    """A single histogram with under/overflow, and the exact sum of the values (radii)."""

    counts: np.ndarray
    underflow: int
    overflow: int
    total: float


def counts_combine(states: Sequence[Counts1D]) -> Counts1D:
    return Counts1D(
        np.sum([s.counts for s in states], axis=0),
        sum(s.underflow for s in states),
        sum(s.overflow for s in states),
        float(np.sum([s.total for s in states])),
    )


# ---------------------------------------------------------------------------- slices


class Slices(NamedTuple):
    """Slice-population counts for each threshold t.

    With k(x) = #{j : |x_j| ≥ t}: ``n0[t]`` = #(k = 0), ``c1[t, j]`` = #(k = 1, outside
    component j), ``c2[t, a, b]`` = #(k = 2, outside a and b), a < b (upper triangle).
    """

    n0: np.ndarray  # (T,) int64
    c1: np.ndarray  # (T, N) int64
    c2: np.ndarray  # (T, N, N) int64


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


def groups_chunk(centred: np.ndarray, centre: np.ndarray, attributes: np.ndarray) -> GroupMoments:
    """Group moments for all attributes at once, from rows already centred at ``centre``.

    Two GEMMs of the (rows, A) indicator matrix of each group with the rows and their
    squares give every group's sums; centring first keeps them accurate far from 0.
    """
    n = np.zeros((attributes.shape[1], 2), dtype=np.int64)
    mean = np.zeros((attributes.shape[1], 2, centred.shape[1]))
    m2 = np.zeros_like(mean)
    squared = centred * centred
    for g, value in enumerate((1, -1)):
        member = (attributes == value).astype(np.float64)  # (rows, A)
        count = member.sum(axis=0)
        s1 = member.T @ centred
        s2 = member.T @ squared
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
    return pairwise(states, groups_merge)


class BlockScan(NamedTuple):
    """Every state of one block of rows, as the numba scan and the torch scan return them."""

    moments: Moments
    hist: Histogram
    radius: Counts1D
    slices: Slices
    groups: GroupMoments | None  # per attribute and group, when attributes were given


def empty_scan(
    dim: int, *, bins: int, thresholds: int, radius_bins: int, attributes: np.ndarray | None
) -> BlockScan:
    """The states of a block with no row kept (every family's neutral element)."""
    return BlockScan(
        moments_empty(dim),
        Histogram(np.zeros((dim, bins), np.int64), np.zeros(dim, np.int64), np.zeros(dim, np.int64)),
        Counts1D(np.zeros(radius_bins, np.int64), 0, 0, 0.0),
        Slices(
            np.zeros(thresholds, np.int64),
            np.zeros((thresholds, dim), np.int64),
            np.zeros((thresholds, dim, dim), np.int64),
        ),
        None if attributes is None else groups_chunk(np.zeros((0, dim)), np.zeros(dim), attributes[:0]),
    )
