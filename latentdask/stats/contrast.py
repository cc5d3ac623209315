"""A row selection against the rest, what sets it apart: its size, and per component the standardized mean
difference between the selected rows and the rest, over every valid, finite row.

One pass, block by block: each block's selected and other rows are two groups whose count,
mean and Σ(x − mean)² merge as the statistics' attribute groups do
(:func:`~latentdask.stats.kernels.groups_chunk`, Chan's update). The difference of the two
means over the pooled standard deviation is the same effect size ``stats`` reports per
CelebA attribute (``attribute_effect``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import numpy as np

from latentdask.stats.kernels import GroupMoments, groups_chunk, groups_combine
from latentdask.stats.reduce import reduce_blocks, row_blocks
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


def _profile_block(block: np.ndarray, valid: np.ndarray | None, chosen: np.ndarray) -> GroupMoments:
    keep, _, _ = select_rows(block, valid, None)
    x = np.asarray(block, dtype=np.float64)[keep]
    centre = x.mean(axis=0) if len(x) else np.zeros(block.shape[1])
    groups = np.where(np.asarray(chosen, dtype=bool)[keep], 1, -1).astype(np.int8)[:, None]
    return groups_chunk(x - centre, centre, groups)


def profile(
    z: da.Array, chosen: da.Array, *, valid: da.Array | None = None, scheduler: Any = None
) -> SelectionProfile:
    """The profile of the rows ``chosen`` (a boolean dask array aligned with ``z``'s rows)."""
    graph = reduce_blocks(
        row_blocks(z, valid, chosen), chunk=_profile_block, combine=groups_combine, name="selection_profile"
    )
    (groups,) = dask.compute(graph, scheduler=scheduler)
    n, mean, m2 = groups.n[0], groups.mean[0], groups.m2[0]  # group 0 selected, 1 the rest
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = np.sqrt((m2[0] + m2[1]) / max(int(n.sum()) - 2, 1))
        smd = (mean[0] - mean[1]) / pooled if n.min() > 0 else np.full(len(pooled), np.nan)
    return SelectionProfile(int(n[0]), int(n.sum()), smd)
