"""A row selection against the rest, what sets it apart: its size, and per component the standardized mean
difference between the selected rows and the rest, over every valid, finite row.

One pass, block by block: each block's selected and other rows are two groups whose count,
mean and Σ(x − mean)² (one numba pass over the float32 block) merge as the statistics'
attribute groups do (:func:`~latentdask.stats.kernels.groups_combine`, Chan's update). The
difference of the two means over the pooled standard deviation is the same effect size
``stats`` reports per CelebA attribute (``attribute_effect``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numba
import numpy as np

from latentdask.cluster.watch import compute
from latentdask.reduction import reduce_blocks, row_blocks
from latentdask.stats.kernels import GroupMoments, groups_combine
from latentdask.stats.summary import select_rows


@dataclass(frozen=True)
class SelectionProfile:
    selected: int  # valid, finite rows selected
    rows: int  # valid, finite rows in all
    smd: np.ndarray  # (N,) standardized mean difference, selected minus the rest

    @property
    def share(self) -> float:
        return self.selected / self.rows if self.rows else 0.0

    def apart(self, count: int = 10, *, leave_out: Sequence[int] = ()) -> list[tuple[int, float]]:
        """The ``count`` components whose |SMD| is largest, with their SMD, but for ``leave_out``
        (the components the rows were selected on: apart by construction)."""
        size = np.nan_to_num(np.abs(self.smd), nan=-1.0)
        size[list(leave_out)] = -2.0
        order = np.argsort(-size, kind="stable")[:count]
        return [(int(j), float(self.smd[j])) for j in order if size[j] > -2.0]


@numba.njit(cache=True, nogil=True)
def _two_group_sums(
    block: np.ndarray, keep: np.ndarray, chosen: np.ndarray, centre: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per group (0: chosen, 1: the rest) of the kept rows: count, Σ(x − centre) and Σ(x − centre)²,
    in float64, one pass over the float32 block."""
    width = block.shape[1]
    n = np.zeros(2, dtype=np.int64)
    s1 = np.zeros((2, width))
    s2 = np.zeros((2, width))
    for i in range(block.shape[0]):
        if keep[i]:
            g = 0 if chosen[i] else 1
            n[g] += 1
            for j in range(width):
                d = np.float64(block[i, j]) - centre[j]
                s1[g, j] += d
                s2[g, j] += d * d
    return n, s1, s2


def profile_block(block: np.ndarray, valid: np.ndarray | None, chosen: np.ndarray) -> GroupMoments:
    """One block's two groups, the ``chosen`` rows and the rest of its valid, finite rows."""
    keep, _, _ = select_rows(block, valid, None)
    block = np.ascontiguousarray(block)
    first = np.flatnonzero(keep)[:1024]  # sums about a point near the data stay accurate far from 0
    centre = block[first].mean(axis=0, dtype=np.float64) if len(first) else np.zeros(block.shape[1])
    n, s1, s2 = _two_group_sums(block, keep, np.asarray(chosen, dtype=bool), centre)
    safe = np.maximum(n, 1)[:, None]
    mean = np.where(n[:, None] > 0, centre + s1 / safe, 0.0)
    m2 = np.where(n[:, None] > 0, s2 - s1 * s1 / safe, 0.0)
    return GroupMoments(n[None], mean[None], m2[None])


def profile(
    z: da.Array, chosen: da.Array, *, valid: da.Array | None = None, scheduler: Any = None
) -> SelectionProfile:
    """The profile of the rows ``chosen`` (a boolean dask array aligned with ``z``'s rows)."""
    graph = reduce_blocks(
        row_blocks(z, valid, chosen), chunk=profile_block, combine=groups_combine, name="selection_profile"
    )
    (groups,) = compute(graph, scheduler=scheduler)
    return profile_of(groups)


def profile_of(groups: GroupMoments) -> SelectionProfile:
    """The profile from the merged moments of :func:`profile_block`'s two groups."""
    n, mean, m2 = groups.n[0], groups.mean[0], groups.m2[0]  # group 0 selected, 1 the rest
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = np.sqrt((m2[0] + m2[1]) / max(int(n.sum()) - 2, 1))
        smd = (mean[0] - mean[1]) / pooled if n.min() > 0 else np.full(len(pooled), np.nan)
    return SelectionProfile(int(n[0]), int(n.sum()), smd)
