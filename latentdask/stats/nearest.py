"""The exact distance from query points to their nearest real z-point, by brute force over every row.

One task per block of the store (|q|² + |x|² − 2 q·x, a GEMM per batch of queries, on the worker's
GPU when it has one), merged by minimum; the neighbour found is measured again in float64, so the
distance reported is exact for it. ``score`` measures real and artificial points against the same
rows with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from latentdask.cluster.watch import compute
from latentdask.reduction import reduce_blocks, row_blocks, row_starts, ship
from latentdask.stats.summary import select_rows
from latentdask.store.points import ZPoints

if TYPE_CHECKING:
    import torch

#: queries per GEMM against a block: 256 x 65,536 float32 distances = 64 MiB on the CPU
QUERY_BATCH = 256
#: on a GPU: 4,096 x 65,536 float32 distances = 1 GiB of device memory
GPU_QUERY_BATCH = 4096


def _nearest_in_block(
    block: np.ndarray,
    start: int,
    queries: np.ndarray,
    valid: np.ndarray | None,
    *,
    query_rows: np.ndarray,
    device: str = "auto",
) -> np.ndarray:
    """Squared distance from each query to its nearest valid row of this block (inf if none).

    Steps, per batch of queries, on the worker's GPU when it has one (``device="auto"``):
    1. rank the block's rows by |x|² − 2 q·x (a float32 GEMM; |q|² is the same for every row);
    2. take the best row and measure its distance again in float64, so that the distance
       reported is exact for the neighbour found.
    """
    x = np.asarray(block, dtype=np.float32)
    keep, _, _ = select_rows(x, valid, None)  # the statistics' own row filter
    if not keep.any():
        return np.full(len(queries), np.inf)
    x = np.where(keep.reshape(-1, 1), x, 0.0).astype(np.float32)
    rows = start + np.arange(len(x))
    own_rows = query_rows if bool(((query_rows >= start) & (query_rows < start + len(x))).any()) else None
    from latentdask.device import resolve_device  # torch, imported by the tasks only

    target = resolve_device(device)
    if target.type == "cuda":
        return _nearest_torch(x, keep, rows, queries, own_rows, target)
    return _nearest_numpy(x, keep, rows, queries, own_rows)


def _nearest_numpy(
    x: np.ndarray, keep: np.ndarray, rows: np.ndarray, queries: np.ndarray, own_rows: np.ndarray | None
) -> np.ndarray:
    best = np.full(len(queries), np.inf)
    norms = np.einsum("ij,ij->i", x, x)
    excluded = ~keep
    any_excluded = bool(excluded.any())
    for q0 in range(0, len(queries), QUERY_BATCH):
        q = np.asarray(queries[q0 : q0 + QUERY_BATCH], dtype=np.float32)
        rank = q @ x.T  # in place from here on: the batch's only large array
        rank *= -2.0
        rank += norms
        if any_excluded:
            rank[:, excluded] = np.inf
        if own_rows is not None:
            rank[own_rows[q0 : q0 + QUERY_BATCH, None] == rows[None, :]] = np.inf  # not its own neighbour
        nearest = rank.argmin(axis=1)
        found = np.isfinite(rank[np.arange(len(q)), nearest])
        exact = ((q.astype(np.float64) - x[nearest].astype(np.float64)) ** 2).sum(axis=1)
        best[q0 : q0 + QUERY_BATCH] = np.where(found, exact, np.inf)
    return best


def _nearest_torch(
    x_host: np.ndarray,
    keep: np.ndarray,
    rows_host: np.ndarray,
    queries: np.ndarray,
    own_rows: np.ndarray | None,
    device: torch.device,
) -> np.ndarray:
    import torch

    best = np.full(len(queries), np.inf)
    x = torch.from_numpy(x_host).to(device)
    norms = (x * x).sum(dim=1)
    excluded = torch.from_numpy(~keep).to(device)
    rows = torch.from_numpy(rows_host).to(device)
    with torch.inference_mode():
        for q0 in range(0, len(queries), GPU_QUERY_BATCH):
            q = torch.from_numpy(np.asarray(queries[q0 : q0 + GPU_QUERY_BATCH], dtype=np.float32)).to(device)
            rank = torch.addmm(norms[None, :], q, x.T, alpha=-2.0)
            rank[:, excluded] = torch.inf
            if own_rows is not None:
                own = torch.from_numpy(np.asarray(own_rows[q0 : q0 + GPU_QUERY_BATCH])).to(device)
                rank[own[:, None] == rows[None, :]] = torch.inf
            nearest = rank.argmin(dim=1)
            found = torch.isfinite(rank[torch.arange(len(q), device=device), nearest])
            exact = ((q.double() - x[nearest].double()) ** 2).sum(dim=1)
            best[q0 : q0 + GPU_QUERY_BATCH] = torch.where(found, exact, torch.inf).cpu().numpy()
    return best


def _nearest_combine(parts: Sequence[np.ndarray]) -> np.ndarray:
    return np.minimum.reduce(list(parts))


def nearest_real_distance(
    corpus: ZPoints,
    queries: np.ndarray,
    *,
    query_rows: np.ndarray | None = None,
    keep: Any = None,
    device: str = "auto",
    scheduler: Any = None,
) -> np.ndarray:
    """Exact distance from each query to its nearest valid (and ``keep``-selected) real z-point:
    one task per block. Each task runs on its worker's GPU when it has one (``device="auto"``).
    """
    query_rows = np.full(len(queries), -1) if query_rows is None else np.asarray(query_rows)
    shipped = ship(queries)
    kernel = partial(_nearest_in_block, query_rows=query_rows, device=device)
    searched = corpus.valid if keep is None else (keep if corpus.valid is None else corpus.valid & keep)
    blocks = [
        (block, start, shipped, rows)
        for (block, rows), start in zip(row_blocks(corpus.z, searched), row_starts(corpus.z), strict=True)
    ]
    graph = reduce_blocks(blocks, chunk=kernel, combine=_nearest_combine, name="nearest_real")
    (squared,) = compute(graph, scheduler=scheduler)
    return np.sqrt(squared)
