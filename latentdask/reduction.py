"""All dask wiring of the passes over the rows: one block-reduction driver, used everywhere.

Every pass over the rows — the summary's two passes (:mod:`latentdask.stats.reduce`),
Mahalanobis² for normality, the nearest-neighbour search, render's aggregation, the dashboard's
columns and selections — is built with it in the same three steps (the pattern of flox's ``dask.py``):

1. :func:`row_blocks`: per block of rows, the aligned blocks of z and its companions
   (valid, attributes, selection) as delayed objects;
2. :func:`map_blocks`: one named task per block, ``chunk(*block)`` → a state;
3. :func:`tree_reduce`: a named tree that merges ``split_every`` states per task with an
   associative ``combine``, so no task holds every state.

:func:`reduce_blocks` is 2 then 3. Building a graph computes nothing: bin edges,
thresholds and shapes come from parameters and metadata, never from the data. Task names
are ``{name}_chunk-…`` and ``{name}_combine-…``, readable on the dashboard. The summary's
state is a few MB whatever the block size, so memory stays bounded by one block per
worker thread plus the states in flight.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import dask
import dask.array as da
import numpy as np
import xarray as xr
from dask.delayed import Delayed, delayed

#: states merged per task of the tree
SPLIT_EVERY = 8
#: rows per block when the input is an in-memory array
DEFAULT_BLOCK_ROWS = 65_536

S = TypeVar("S")


def as_row_blocks(x: Any, *, block_rows: int = DEFAULT_BLOCK_ROWS) -> da.Array:
    """Any (n, N) array — numpy, dask, Zarr, xarray — as a dask array chunked by rows only."""
    if isinstance(x, xr.DataArray):
        x = x.data
    if not isinstance(x, da.Array):
        chunks = getattr(x, "chunks", None)
        rows = (
            chunks[0] if isinstance(chunks, tuple) and chunks and isinstance(chunks[0], int) else block_rows
        )
        x = da.from_array(x, chunks=(rows, -1))
    if x.ndim != 2:
        raise ValueError(f"expected an (n, N) array of z-points, got shape {x.shape}")
    return x.rechunk({1: -1})


def aligned(values: Any, like: da.Array) -> da.Array | None:
    """``values`` (rows first) as a dask array chunked along rows like ``like``; None stays None."""
    if values is None:
        return None
    array = values.data if isinstance(values, xr.DataArray) else values
    array = array if isinstance(array, da.Array) else da.from_array(np.asarray(array))
    return array.rechunk({0: like.chunks[0]} | ({1: -1} if array.ndim == 2 else {}))


def row_blocks(z: da.Array, *companions: Any) -> list[tuple[Any, ...]]:
    """Per block of rows of ``z``: ``(z block, companion blocks...)`` as delayed objects, aligned on rows.

    A companion that is None gives None in every block.
    """
    count = len(z.chunks[0])
    columns = [z, *(aligned(c, z) for c in companions)]
    return list(
        zip(*([None] * count if c is None else list(c.to_delayed().ravel()) for c in columns), strict=True)
    )


def row_starts(z: da.Array) -> list[int]:
    """The first row of each block of ``z``."""
    return [int(s) for s in np.concatenate([[0], np.cumsum(z.chunks[0])[:-1]])]


def ship(value: Any) -> Delayed:
    """``value`` as one key of the graph, which every task that needs it shares: sent once to a
    worker, not inside each task. Unlike data scattered to the workers, a key of the graph is
    computed again when the worker holding it leaves (a job that retires mid-run), so the
    reduction goes on."""
    return delayed(value, traverse=False)


def add_states(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Merge per-block states that are dicts of sums, key by key."""
    return {key: sum(p[key] for p in parts) for key in parts[0]}


def map_blocks(blocks: Sequence[Sequence[Any]], chunk: Callable[..., S], *, name: str) -> list[Delayed]:
    """One task per block, ``chunk(*block)``, named ``{name}_chunk-{token}``."""
    return [
        delayed(chunk, pure=True)(*block, dask_key_name=f"{name}_chunk-{dask.base.tokenize(chunk, *block)}")
        for block in blocks
    ]


def tree_reduce(
    states: Sequence[Any], combine: Callable[[Sequence[S]], S], *, name: str, split_every: int = SPLIT_EVERY
) -> Delayed:
    """Merge delayed states ``split_every`` at a time until one remains.

    Its tasks are named ``{name}_combine-{depth}-{i}-{token}``.
    """
    if not states:
        raise ValueError(f"{name}: no blocks to reduce")
    level = list(states)
    depth = 0
    while len(level) > 1:
        token = dask.base.tokenize(*[getattr(item, "key", item) for item in level])
        level = [
            delayed(combine, pure=True)(
                level[i : i + split_every], dask_key_name=f"{name}_combine-{depth}-{i}-{token}"
            )
            for i in range(0, len(level), split_every)
        ]
        depth += 1
    return level[0] if isinstance(level[0], Delayed) else delayed(level[0])


def reduce_blocks(
    blocks: Sequence[Sequence[Any]],
    *,
    chunk: Callable[..., S],
    combine: Callable[[Sequence[S]], S],
    name: str,
    split_every: int = SPLIT_EVERY,
) -> Delayed:
    """``combine`` over ``chunk(*block)`` of every block: a delayed state; nothing is computed.

    Examples
    --------
    >>> z = da.ones((10, 3), chunks=(4, 3))
    >>> total = reduce_blocks(row_blocks(z), chunk=np.sum, combine=sum, name="total")
    >>> float(total.compute())
    30.0
    """
    return tree_reduce(map_blocks(blocks, chunk, name=name), combine, name=name, split_every=split_every)


def float_block(x: np.ndarray) -> np.ndarray:
    """``x`` C-contiguous in float32 or float64, as the kernels take it (other types as float64)."""
    x = np.ascontiguousarray(x)
    return x if x.dtype in (np.float32, np.float64) else x.astype(np.float64)
