"""The baselines of ``latentdask bench stats`` (:mod:`latentdask.bench.stats`): the CelebA study's
code, what a numpy expert writes for the same figures in RAM, and the same with dask.array on the
cluster; each returns its figures, which the bench checks against the fused pass's.
"""

from __future__ import annotations

import time
from typing import Any

import dask
import dask.array as da
import numpy as np

# ----------------------------------------------------------------------- the baselines' kernels


def block_histograms(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """(N, bins) counts of one block, binned as ``np.histogram`` bins them, with ONE ``np.bincount``.

    For uniform edges whose bins per unit are a power of two (the default 8): ``x`` times
    that is exact, so its floor is the bin. Each column's bins are offset by column ×
    (bins + 2), one bin below and one above for values outside; the right edge itself
    belongs to the last bin, as in ``np.histogram``.
    """
    low, high = float(edges[0]), float(edges[-1])
    bins = len(edges) - 1
    scale = bins / (high - low)
    if np.frexp(scale)[0] != 0.5 or low * scale != round(low * scale):
        raise ValueError(f"binning by scaling is exact for power-of-two bins per unit, not {scale:g}")
    dim = x.shape[1]
    index = np.floor(x * np.float32(scale)).astype(np.intp)
    index -= round(low * scale) - 1  # bin 0 of each column holds the values below
    np.clip(index, 0, bins + 1, out=index)
    index += np.arange(dim) * (bins + 2)
    counts = np.bincount(index.ravel(), minlength=dim * (bins + 2)).reshape(dim, bins + 2)[:, 1:-1]
    counts[:, -1] += (x == np.float32(high)).sum(axis=0)  # the right edge, counted above
    return counts


def pair_populations(x: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(T, N, N) slice populations of every pair at every threshold, one block (diagonal 0).

    A row belongs to the slice of (a, b) when every component outside {a, b} lies within
    ±t: rows with no component outside count for every pair, rows with one outside
    component c for the pairs holding c, rows with exactly (c1, c2) outside for that pair.
    """
    dim = x.shape[1]
    populations = np.zeros((len(thresholds), dim, dim), np.int64)
    magnitude = np.abs(x)
    for k, t in enumerate(thresholds):
        outside = magnitude >= np.float64(t)  # compared in float64, as the statistics do
        count = outside.sum(axis=1)
        one = np.bincount(outside[count == 1].argmax(axis=1), minlength=dim)
        _, columns = np.nonzero(outside[count == 2])  # row-major: each row's two columns, a < b
        first, second = columns[0::2], columns[1::2]
        two = np.bincount(first * dim + second, minlength=dim * dim).reshape(dim, dim)
        populations[k] = int((count == 0).sum()) + one[:, None] + one[None, :] + two + two.T
        np.fill_diagonal(populations[k], 0)
    return populations


def _histograms_task(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return block_histograms(x, edges)[None]


def _populations_task(x: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    return pair_populations(x, thresholds)[None]


# ------------------------------------------------------------------------------- the baselines


def seed_code(
    x: np.ndarray, edges: np.ndarray, pairs: list[tuple[int, int]], t: float
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """The CelebA study's way, on an array in RAM: seconds per part, and its figures."""
    seconds = {}
    started = time.perf_counter()
    correlation = np.corrcoef(x.T)
    seconds["np.corrcoef"] = time.perf_counter() - started
    started = time.perf_counter()
    hist = np.stack([np.histogram(x[:, j], bins=edges)[0] for j in range(x.shape[1])])
    seconds[f"np.histogram x {x.shape[1]}"] = time.perf_counter() - started
    started = time.perf_counter()
    counts = []
    for a, b in pairs:
        y = x[(np.abs(x[:, :a]) < t).all(axis=1)]
        y = y[(np.abs(y[:, a + 1 : b]) < t).all(axis=1)]
        counts.append(len(y[(np.abs(y[:, b + 1 :]) < t).all(axis=1)]))
    seconds[f"slices of {len(pairs)} pairs at t={t:g}, three column-slice filters each"] = (
        time.perf_counter() - started
    )
    return seconds, {"corr": correlation, "hist": hist, "pairs": np.array(counts)}


def numpy_all_pairs(
    x: np.ndarray, edges: np.ndarray, thresholds: np.ndarray, block_rows: int
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """What a numpy expert writes for the same figures, in RAM: seconds per part, and the figures."""
    seconds = {}
    started = time.perf_counter()
    cov = np.cov(x, rowvar=False)  # float64
    seconds["np.cov (float64)"] = time.perf_counter() - started
    started = time.perf_counter()
    hist = sum(block_histograms(x[r : r + block_rows], edges) for r in range(0, len(x), block_rows))
    seconds["one np.bincount per block for all histograms"] = time.perf_counter() - started
    started = time.perf_counter()
    populations = sum(
        pair_populations(x[r : r + block_rows], thresholds) for r in range(0, len(x), block_rows)
    )
    seconds["all pair populations from per-row outside counts"] = time.perf_counter() - started
    return seconds, {"cov": cov, "hist": np.asarray(hist), "populations": np.asarray(populations)}


def dask_all_pairs(
    z: da.Array, edges: np.ndarray, thresholds: np.ndarray, client: Any
) -> dict[str, np.ndarray]:
    """The same figures with dask.array on the cluster, in one compute."""
    blocks = len(z.chunks[0])
    dim = z.shape[1]
    hist = da.map_blocks(
        _histograms_task,
        z,
        edges=edges,
        chunks=((1,) * blocks, (dim,), (len(edges) - 1,)),
        new_axis=2,
        dtype=np.int64,
    ).sum(axis=0)
    populations = da.map_blocks(
        _populations_task,
        z,
        thresholds=thresholds,
        chunks=((1,) * blocks, (len(thresholds),), (dim,), (dim,)),
        new_axis=[2, 3],
        dtype=np.int64,
    ).sum(axis=0)
    cov, hist, populations = dask.compute(
        da.cov(z.astype(np.float64), rowvar=False), hist, populations, scheduler=client
    )
    return {"cov": cov, "hist": hist, "populations": populations}
