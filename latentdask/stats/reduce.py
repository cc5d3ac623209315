"""All dask wiring of the passes over the rows: one block-reduction driver, used everywhere.

Every pass over the rows — the summary's two passes, Mahalanobis² for normality, the
nearest-neighbour search, render's aggregation, the dashboard's columns — is built here
in the same three steps (the pattern of flox's ``dask.py``):

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
from functools import partial
from typing import Any, TypeVar

import dask
import dask.array as da
import numpy as np
import xarray as xr
from dask.delayed import Delayed, delayed

from latentdask.cluster.watch import compute
from latentdask.stats.kernels import Counts1D, counts_combine
from latentdask.stats.options import SummaryParams
from latentdask.stats.summary import (
    SummaryState,
    centred_radius_chunk,
    centred_radius_chunk_torch,
    summary_chunk,
    summary_combine,
    summary_finalize,
)

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


def summary_graph(
    z: da.Array,
    *,
    valid: da.Array | None = None,
    attributes: da.Array | None = None,
    selected: da.Array | None = None,
    params: SummaryParams,
) -> Delayed:
    """A delayed SummaryState of all rows (pass 1); building it computes nothing."""
    blocks = row_blocks(z, valid, attributes, selected)
    if not blocks:
        return delayed(summary_chunk)(np.zeros((0, z.shape[1]), np.float32), params=params)
    return reduce_blocks(
        blocks, chunk=partial(summary_chunk, params=params), combine=summary_combine, name="summary"
    )


def centred_radius_graph(
    z: da.Array,
    *,
    valid: da.Array | None = None,
    selected: da.Array | None = None,
    centre: np.ndarray,
    params: SummaryParams,
    on_torch: bool = False,
) -> Delayed:
    """A delayed histogram of |x - centre| (pass 2), over the rows :func:`summary_graph` keeps;
    ``on_torch``: each block computed by torch (the same counts), for workers without numba."""
    blocks = row_blocks(z, valid, selected)
    if not blocks:
        return delayed(counts_combine)(
            [Counts1D(np.zeros(len(params.radius_edges) - 1, np.int64), 0, 0, 0.0)]
        )
    return reduce_blocks(
        blocks,
        chunk=partial(
            centred_radius_chunk_torch if on_torch else centred_radius_chunk, centre=centre, params=params
        ),
        combine=counts_combine,
        name="centred_radius",
    )


class Inputs:
    """The z-points and their row-aligned companions, as dask arrays chunked alike."""

    def __init__(self, x: Any, *, valid: Any = None, attributes: Any = None, selected: Any = None) -> None:
        self.z = as_row_blocks(x)
        self.valid = aligned(valid, self.z)
        self.attributes = aligned(attributes, self.z)
        self.selected = aligned(selected, self.z)

    def rows(self, start: int, stop: int) -> Inputs:
        """The same inputs restricted to rows ``start:stop`` (block boundaries kept)."""
        sliced = Inputs.__new__(Inputs)
        for name in ("z", "valid", "attributes", "selected"):
            array = getattr(self, name)
            setattr(sliced, name, None if array is None else array[start:stop])
        return sliced


def first_pass(*inputs: Inputs, params: SummaryParams, scheduler: Any = None) -> list[SummaryState]:
    """Compute pass 1 over each of ``inputs``, in one graph.

    ``scheduler``: a distributed Client (or any dask scheduler) to run on; None takes
    dask's default. Passing the client explicitly keeps concurrent runs in one process
    (a resumed encode beside the original) each on their own.
    """
    graphs = [
        summary_graph(i.z, valid=i.valid, attributes=i.attributes, selected=i.selected, params=params)
        for i in inputs
    ]
    return list(compute(*graphs, scheduler=scheduler))


def second_pass(
    inputs: Inputs,
    state: SummaryState,
    params: SummaryParams,
    scheduler: Any = None,
    *,
    on_torch: bool = False,
) -> Counts1D | None:
    """Compute pass 2 (radii about the mean of ``state``); None when no row was kept."""
    if not state.moments.n:
        return None
    graph = centred_radius_graph(
        inputs.z,
        valid=inputs.valid,
        selected=inputs.selected,
        centre=state.moments.mean,
        params=params,
        on_torch=on_torch,
    )
    (centred,) = compute(graph, scheduler=scheduler)
    return centred


def summarize(
    x: Any,
    *,
    valid: Any = None,
    attributes: Any = None,
    attribute_names: Sequence[str] = (),
    selected: Any = None,
    params: SummaryParams | None = None,
    selection: str = "all rows",
) -> xr.Dataset:
    """Every statistic of the z-points ``x`` in one pass (plus the light radius pass).

    Parameters
    ----------
    x
        (n, N) z-points: numpy, dask, Zarr or xarray.
    valid, selected
        Optional boolean rows: ``valid`` rows count as invalid when false; rows not
        ``selected`` are left out silently (a subset).
    attributes
        Optional (n, A) int8 of ±1 (0 unknown) for per-attribute statistics.
    attribute_names
        Names of the attribute columns.
    params
        Bin edges, thresholds, correlation levels.
    selection
        Words recorded in the result, saying which rows were used.

    Examples
    --------
    >>> stats = summarize(np.random.default_rng(0).normal(size=(1000, 8)))
    >>> int(stats["count"])
    1000
    """
    params = params or SummaryParams()
    inputs = Inputs(x, valid=valid, attributes=attributes, selected=selected)
    (state,) = first_pass(inputs, params=params)
    centred = second_pass(inputs, state, params)
    return summary_finalize(
        state, params, centred_radius=centred, attribute_names=attribute_names, selection=selection
    )
