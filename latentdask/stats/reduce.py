"""Dask wiring of the summary: one task per block of rows, a tree of merges, one finalize.

Building the graphs computes nothing: bin edges and thresholds come from
:class:`SummaryParams`, and shapes from the inputs' metadata. Two passes run:

1. every family but one, over all blocks (``summary_chunk`` → ``summary_combine``);
2. the histogram of radii about the mean found by pass 1 (``centred_radius_chunk``).

The state of a block is a few MB whatever the block's size, so memory stays bounded
by one block per worker thread plus the states in flight.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr
from dask.delayed import Delayed, delayed

from latentdask.stats.kernels import Counts1D, counts_combine
from latentdask.stats.summary import (
    SummaryParams,
    SummaryState,
    centred_radius_chunk,
    summary_chunk,
    summary_combine,
    summary_finalize,
)

#: states merged per task of the tree
SPLIT_EVERY = 8
#: rows per block when the input is an in-memory array
DEFAULT_BLOCK_ROWS = 65_536


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


def _aligned(values: Any, like: da.Array) -> da.Array | None:
    if values is None:
        return None
    array = values.data if isinstance(values, xr.DataArray) else values
    array = array if isinstance(array, da.Array) else da.from_array(np.asarray(array))
    return array.rechunk({0: like.chunks[0]} | ({1: -1} if array.ndim == 2 else {}))


def _blocks(array: da.Array | None, count: int) -> list[Any]:
    return [None] * count if array is None else list(array.to_delayed().ravel())


def _tree(items: Sequence[Any], merge: Any, name: str) -> Delayed:
    """Merge delayed states in groups of SPLIT_EVERY until one remains."""
    level = list(items)
    depth = 0
    while len(level) > 1:
        level = [
            delayed(merge, pure=True)(
                level[i : i + SPLIT_EVERY], dask_key_name=f"{name}-{depth}-{i}-{_token(level)}"
            )
            for i in range(0, len(level), SPLIT_EVERY)
        ]
        depth += 1
    return level[0]


def _token(items: Sequence[Any]) -> str:
    return dask.base.tokenize(*[getattr(item, "key", item) for item in items])


def summary_graph(
    z: da.Array,
    *,
    valid: da.Array | None = None,
    attributes: da.Array | None = None,
    selected: da.Array | None = None,
    params: SummaryParams,
) -> Delayed:
    """A delayed SummaryState of all rows (pass 1); building it computes nothing."""
    count = len(z.chunks[0])
    chunk = partial(summary_chunk, params=params)
    states = [
        delayed(chunk, pure=True, name=f"summary_chunk-{dask.base.tokenize(b, v, a, s, params)}")(b, v, a, s)
        for b, v, a, s in zip(
            _blocks(z, count),
            _blocks(valid, count),
            _blocks(attributes, count),
            _blocks(selected, count),
            strict=True,
        )
    ]
    if not states:
        states = [delayed(summary_chunk)(np.zeros((0, z.shape[1]), np.float32), params=params)]
    return _tree(states, summary_combine, "summary_combine")


def centred_radius_graph(
    z: da.Array,
    *,
    valid: da.Array | None,
    selected: da.Array | None,
    centre: np.ndarray,
    params: SummaryParams,
) -> Delayed:
    """A delayed histogram of |x - centre| (pass 2)."""
    count = len(z.chunks[0])
    chunk = partial(centred_radius_chunk, centre=centre, params=params)
    states = [
        delayed(chunk, pure=True, name=f"centred_radius_chunk-{dask.base.tokenize(b, v, s, centre, params)}")(
            b, v, s
        )
        for b, v, s in zip(_blocks(z, count), _blocks(valid, count), _blocks(selected, count), strict=True)
    ]
    if not states:
        return delayed(counts_combine)(
            [Counts1D(np.zeros(len(params.radius_edges) - 1, np.int64), 0, 0, 0.0)]
        )
    return _tree(states, counts_combine, "centred_radius_combine")


class Inputs:
    """The z-points and their row-aligned companions, as dask arrays chunked alike."""

    def __init__(self, x: Any, *, valid: Any = None, attributes: Any = None, selected: Any = None) -> None:
        self.z = as_row_blocks(x)
        self.valid = _aligned(valid, self.z)
        self.attributes = _aligned(attributes, self.z)
        self.selected = _aligned(selected, self.z)

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
    return list(dask.compute(*graphs, scheduler=scheduler))


def second_pass(
    inputs: Inputs, state: SummaryState, params: SummaryParams, scheduler: Any = None
) -> Counts1D | None:
    """Compute pass 2 (radii about the mean of ``state``); None when no row was kept."""
    if not state.moments.n:
        return None
    graph = centred_radius_graph(inputs.z, valid=inputs.valid, selected=inputs.selected,
                                 centre=state.moments.mean, params=params)  # fmt: skip
    (centred,) = dask.compute(graph, scheduler=scheduler)
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
