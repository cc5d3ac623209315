"""Sample quality of a point set against real vectors: precision, recall, density, coverage.

With k-nearest-neighbour balls (k = :data:`K`) around points of each set:

- **precision** (Kynkäänniemi et al., NeurIPS 2019): the share of artificial points inside the
  k-NN ball of at least one real point — how much of what is made lies where real points are;
- **recall** (same): the share of real points inside the k-NN ball of at least one artificial
  point — how much of the real distribution is reached;
- **density** (Naeem et al., ICML 2020): the mean number of real balls an artificial point lies
  in, divided by k (1 for a set drawn like the real points; above 1 where points crowd
  dense real regions);
- **coverage** (same): the share of real points whose own ball holds at least one artificial point.

The real points are the held-out reference of :mod:`latentdask.generate.score` (rows outside the
fit). Their k-NN radii are exact, found among all of them by a blockwise search over the store
(one task per block, the reference shipped once to the workers); the balls are then counted
in one more blockwise pass per point set. Cost: reference² · N for the radii and reference ·
points · N per set, in float64 — ``--reference-size`` caps it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np

from latentdask.cluster.watch import compute
from latentdask.reduction import add_states, reduce_blocks, row_blocks, row_starts, ship
from latentdask.store.points import ZPoints

#: the k of the k-nearest-neighbour balls (the papers' choice)
K = 3
#: queries compared with a block at a time (a (batch, rows) float64 distance matrix)
BATCH = 128


def _squared_distances(queries: np.ndarray, rows: np.ndarray) -> np.ndarray:
    d2 = (queries**2).sum(axis=1)[:, None] + (rows**2).sum(axis=1)[None, :] - 2 * queries @ rows.T
    return np.maximum(d2, 0.0)


def _k_smallest_block(
    block: np.ndarray, keep: np.ndarray | None, start: int, queries: Any, *, query_rows: np.ndarray, k: int
) -> np.ndarray:
    """The k smallest squared distances from each query to this block's kept rows, its own row excepted."""
    queries = np.asarray(queries, dtype=np.float64)
    x = np.asarray(block, dtype=np.float64)
    kept = np.ones(len(x), dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    kept &= np.isfinite(x).all(axis=1)
    rows, x = start + np.flatnonzero(kept), x[kept]
    best = np.full((len(queries), k), np.inf)
    if not len(x):
        return best
    for q0 in range(0, len(queries), BATCH):
        d2 = _squared_distances(queries[q0 : q0 + BATCH], x)
        d2[query_rows[q0 : q0 + BATCH, None] == rows[None, :]] = np.inf  # not its own neighbour
        taken = min(k, d2.shape[1])
        nearest = np.sort(np.partition(d2, taken - 1, axis=1)[:, :taken], axis=1)
        best[q0 : q0 + BATCH, :taken] = nearest
    return best


def _merge_k_smallest(parts: Sequence[np.ndarray]) -> np.ndarray:
    joined = np.concatenate(list(parts), axis=1)
    k = parts[0].shape[1]
    return np.sort(np.partition(joined, k - 1, axis=1)[:, :k], axis=1)


def reference_radii(corpus: ZPoints, rows: np.ndarray, *, k: int = K, scheduler: Any = None) -> np.ndarray:
    """The exact k-NN radius of each reference row among the reference rows: one task per block."""
    mask = np.zeros(corpus.z.shape[0], dtype=bool)
    mask[rows] = True
    queries = np.asarray(compute(corpus.z[rows], scheduler=scheduler)[0], dtype=np.float64)
    shipped = ship(queries)
    kernel = partial(_k_smallest_block, query_rows=np.asarray(rows), k=k)
    blocks = [
        (block, keep, start, shipped)
        for (block, keep), start in zip(row_blocks(corpus.z, mask), row_starts(corpus.z), strict=True)
    ]
    graph = reduce_blocks(blocks, chunk=kernel, combine=_merge_k_smallest, name="knn_radii")
    (nearest,) = compute(graph, scheduler=scheduler)
    return np.sqrt(nearest[:, -1])


def own_radii(points: np.ndarray, k: int = K) -> np.ndarray:
    """The k-NN radius of each point among the points of its own set (in memory)."""
    points = np.asarray(points, dtype=np.float64)
    own = np.arange(len(points))
    return np.sqrt(_k_smallest_block(points, None, 0, points, query_rows=own, k=k)[:, -1])


def _balls_block(
    block: np.ndarray,
    keep: np.ndarray | None,
    radius: np.ndarray,
    shipped: Any,
) -> dict[str, Any]:
    """Per artificial point, the real balls (of this block) it lies in; per real row, whether it is covered
    (an artificial point in its ball) and recalled (in an artificial point's ball)."""
    points, point_radii = (np.asarray(a, dtype=np.float64) for a in shipped)
    x = np.asarray(block, dtype=np.float64)
    kept = np.ones(len(x), dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    x, real_radii = x[kept], np.asarray(radius, dtype=np.float64)[kept]
    inside = np.zeros(len(points), dtype=np.int64)
    covered = np.zeros(len(x), dtype=bool)
    recalled = np.zeros(len(x), dtype=bool)
    for q0 in range(0, len(points), BATCH):
        d2 = _squared_distances(points[q0 : q0 + BATCH], x)
        in_real_ball = d2 <= real_radii[None, :] ** 2
        inside[q0 : q0 + BATCH] += in_real_ball.sum(axis=1)
        covered |= in_real_ball.any(axis=0)
        recalled |= (d2 <= point_radii[q0 : q0 + BATCH, None] ** 2).any(axis=0)
    return {"inside": inside, "covered": int(covered.sum()), "recalled": int(recalled.sum())}


def sample_quality(
    corpus: ZPoints,
    rows: np.ndarray,
    radii: np.ndarray,
    points: np.ndarray,
    *,
    k: int = K,
    scheduler: Any = None,
) -> dict[str, float]:
    """Precision, recall, density and coverage of ``points`` against the reference ``rows`` (their
    k-NN ``radii`` from :func:`reference_radii`): one pass over the reference's blocks."""
    mask = np.zeros(corpus.z.shape[0], dtype=bool)
    mask[rows] = True
    radius = np.zeros(corpus.z.shape[0])
    radius[rows] = radii
    shipped = ship((np.asarray(points, dtype=np.float64), own_radii(points, k)))
    blocks = [(block, keep, r, shipped) for block, keep, r in row_blocks(corpus.z, mask, radius)]
    graph = reduce_blocks(blocks, chunk=_balls_block, combine=add_states, name="sample_quality")
    (found,) = compute(graph, scheduler=scheduler)
    return {
        "precision": float((found["inside"] > 0).mean()),
        "recall": found["recalled"] / len(rows),
        "density": float(found["inside"].sum() / (k * len(points))),
        "coverage": found["covered"] / len(rows),
    }
