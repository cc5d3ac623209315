"""The summary's two passes over the rows, through the one block-reduction driver
(:mod:`latentdask.reduction`): their graphs, and :func:`summarize`, which runs them."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from dask.delayed import Delayed, delayed

from latentdask.cluster.watch import compute
from latentdask.reduction import aligned, as_row_blocks, reduce_blocks, row_blocks
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
