"""Render's one pass over the store, through the block-reduction driver (:mod:`latentdask.reduction`).

Reading two columns of a row-chunked store reads the whole store, so render reads it
**once**: one task per range of whole chunks reads its chunks one at a time, keeps only
the projections' columns of the kept rows, and aggregates every projection once with
datashader (:func:`latentdask.render.columns.aggregate_rows`); a tree of sums
(:func:`latentdask.render.columns.sum_canvases`) merges the canvases. The row filter is
the statistics' own: valid rows, all components finite, and the optional split/attribute
selection. Building the graph computes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import xarray as xr
from dask.delayed import Delayed

from latentdask.cluster.watch import compute
from latentdask.reduction import SPLIT_EVERY, reduce_blocks
from latentdask.render.columns import aggregate_rows, sum_canvases
from latentdask.render.projections import Projection, RenderError
from latentdask.store.points import ZPoints
from latentdask.store.rows import selection_mask

#: rows one task reads and aggregates at most (fewer when that leaves workers idle)
ROWS_PER_TASK = 1_000_000


@dataclass
class Aggregate:
    """A projection's counts over its canvas, (height, width) or (height, width, 2) when coloured."""

    projection: Projection
    counts: np.ndarray
    candidates: int  # selected points that belong to the projection (on the canvas or not)

    @property
    def shown(self) -> int:
        return int(self.counts.sum())


def row_ranges(n: int, chunk: int, scheduler: Any = None) -> list[tuple[int, int]]:
    """Ranges of whole chunks: at most ``ROWS_PER_TASK`` rows, at least two per worker thread."""
    threads = sum(scheduler.nthreads().values()) if hasattr(scheduler, "nthreads") else 2
    chunks = max(math.ceil(n / chunk), 1)
    per_task = max(1, min(ROWS_PER_TASK // chunk, math.ceil(chunks / (2 * max(threads, 1)))))
    return [(c * chunk, min((c + per_task) * chunk, n)) for c in range(0, chunks, per_task)]


def aggregate_graph(
    points: ZPoints,
    projections: Sequence[Projection],
    *,
    stats: xr.Dataset,
    split: str = "all",
    where: Sequence[str] = (),
    scheduler: Any = None,
    split_every: int = SPLIT_EVERY,
) -> Delayed:
    """A delayed list of (counts, candidates), one per projection; building it computes nothing.

    ``scheduler`` only sizes the row ranges (two per worker thread at least); the graph
    is ``reduce_blocks`` with one block per row range, tasks ``render_chunk-…`` and
    ``render_combine-…``. Reading inside the task keeps the columns where they were read
    (nothing but canvases crosses the network) and spends datashader's per-call cost once
    per range rather than once per chunk.
    """
    if points.source is None:
        raise RenderError(f"{points.path}: rendering reads a Zarr array")
    selected, _ = selection_mask(points, split, where)
    keep = points.valid
    if selected is not None:
        keep = selected if keep is None else keep & selected
    coloured = any(p.color_by is not None for p in projections)
    if coloured and points.attributes is None:
        raise RenderError(f"colouring by an attribute asked for, but {points.path} has no attributes")
    attributes = points.attributes if coloured else None
    needs_pcs = any(p.kind == "pc" for p in projections)
    block_rows = int(points.source.chunks[0])
    chunk = partial(
        aggregate_rows,
        block_rows=block_rows,
        projections=list(projections),
        mean=stats["mean"].values if needs_pcs else None,
        vectors=stats["pca_vectors"].values if needs_pcs else None,
    )
    # one block per range: the store read inside the task, its lazy companions sliced alike
    blocks = [
        (
            points.source,
            start,
            stop,
            None if keep is None else keep[start:stop],
            None if attributes is None else attributes[start:stop],
        )
        for start, stop in row_ranges(points.z.shape[0], block_rows, scheduler)
    ]
    return reduce_blocks(blocks, chunk=chunk, combine=sum_canvases, name="render", split_every=split_every)


def aggregate(
    points: ZPoints, projections: Sequence[Projection], *, scheduler: Any = None, **graph_options: Any
) -> list[Aggregate]:
    """All projections over every selected z-point, reading the store once.

    ``graph_options``: ``stats`` and optionally ``split``, ``where``, ``split_every``, as
    :func:`aggregate_graph` takes them.
    """
    graph = aggregate_graph(points, projections, scheduler=scheduler, **graph_options)
    (merged,) = compute(graph, scheduler=scheduler)
    return [
        Aggregate(p, counts, candidates) for p, (counts, candidates) in zip(projections, merged, strict=True)
    ]
