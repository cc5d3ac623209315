"""The dashboard's selection: views drawn in the projection, combined, described and exported.

A selection is a sequence of drawn views — a box or a lasso in the pair of components shown,
with the slice condition when a slice is shown — each combined with the rows selected so far:
``new``, ``add``, ``subtract`` or ``intersect`` (:class:`Drawn`). Its rows are evaluated where
they lie, block by block over every z-point, by :func:`latentdask.store.selection.view_rows`:
nothing is sampled and no column reaches the client. :func:`describe_drawn` holds them on the
workers and describes them (:mod:`latentdask.stats.describe`); a single view is found and summed
in one read of each block.

:func:`export` writes ``selection-NAME.zarr`` with :func:`~latentdask.store.selection.write_selection`,
which ``stats --rows``, ``render --rows`` and ``score --rows`` read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from operator import itemgetter
from typing import Any, Literal

import dask.array as da
import numpy as np
from dask.delayed import delayed

from latentdask.cluster.watch import WorkerWatch
from latentdask.errors import LatentdaskError
from latentdask.location import Location, Where, location
from latentdask.reduction import aligned, map_blocks, row_blocks, row_starts, tree_reduce
from latentdask.stats.contrast import SelectionProfile
from latentdask.stats.describe import (
    SAMPLE,
    Corpus,
    Summary,
    describe,
    describe_combine,
    drawn_chunk,
    summary_of,
)
from latentdask.store.points import ZPoints
from latentdask.store.selection import View, view_rows, write_selection

Combine = Literal["new", "add", "subtract", "intersect"]
COMBINE_MODES: tuple[Combine, ...] = ("new", "add", "subtract", "intersect")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class SelectionError(LatentdaskError):
    """A selection that cannot be made, combined or exported as asked."""


@dataclass(frozen=True)
class Combined(View):
    """The record of several drawn views: ``pair``, ``polygon`` and ``slice`` are the first's,
    ``steps`` every view with how it was combined, in order."""

    steps: tuple[tuple[Combine, View], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), "steps": [{"combine": m, **v.as_dict()} for m, v in self.steps]}


@dataclass(frozen=True)
class Drawn:
    """The views drawn so far and how each combines with the rows before it (the first is ``new``)."""

    steps: tuple[tuple[Combine, View], ...] = ()

    def then(self, combine: Combine, view: View) -> Drawn:
        """This selection with ``view`` combined; with nothing selected yet, any mode starts anew."""
        if combine not in COMBINE_MODES:
            raise SelectionError(
                f"a selection combines as one of {', '.join(COMBINE_MODES)}, got {combine!r}"
            )
        if combine == "new" or not self.steps:
            return Drawn((("new", view),))
        return Drawn((*self.steps, (combine, view)))

    def rows(self, points: ZPoints) -> da.Array:
        """The selected rows of ``points`` (lazy, one task per block and view; valid rows only)."""
        if not self.steps:
            raise SelectionError("nothing is selected: draw a box or a lasso in the projection")
        mask: da.Array | None = None
        for combine, view in self.steps:
            inside = view_rows(points.z, view)
            if mask is None:
                mask = inside
            elif combine == "add":
                mask = mask | inside
            elif combine == "subtract":
                mask = mask & ~inside
            else:
                mask = mask & inside
        assert mask is not None
        return mask if points.valid is None else mask & points.valid

    def record(self) -> View:
        """The view written with the selection: the one drawn, or all of them as :class:`Combined`."""
        (_, first), *rest = self.steps
        if not rest:
            return first
        return Combined(first.pair, first.polygon, first.slice, steps=self.steps)


def describe_drawn(
    points: ZPoints,
    drawn: Drawn,
    *,
    edges: np.ndarray,
    columns: Sequence[int],
    corpus: Corpus | None,
    client: Any,
    seed: int = 0,
    sample: int = SAMPLE,
) -> tuple[da.Array, Summary]:
    """The rows ``drawn`` selects, held in the workers' memory, and what the panel shows of them.

    A selection of one view, with the corpus's moments known, is found and summed in one pass
    over the rows inside the polygon (:func:`drawn_chunk`); a combined one is evaluated view by
    view, held, then described (:func:`~latentdask.stats.describe.describe`).
    """
    if (
        len(drawn.steps) != 1
        or corpus is None
        or (points.attributes is not None and corpus.with_attribute is None)
    ):
        held = client.persist(aligned(drawn.rows(points), points.z))
        return held, describe(
            points,
            held,
            edges=edges,
            columns=columns,
            corpus=corpus,
            seed=seed,
            sample=sample,
            scheduler=client,
        )
    ((_, view),) = drawn.steps
    if not all(0 <= j < points.z.shape[1] for j in view.pair):
        raise SelectionError(
            f"the selection's pair {view.pair} is outside the {points.z.shape[1]} components"
        )
    shown = np.asarray(columns, dtype=np.int64)
    chunk = partial(
        drawn_chunk,
        view=view,
        centre=corpus.mean,
        edges=np.asarray(edges, dtype=np.float64),
        columns=shown,
        seed=seed,
        sample=sample,
    )
    blocks = [
        (z, start, valid, attributes)
        for (z, valid, attributes), start in zip(
            row_blocks(points.z, points.valid, points.attributes), row_starts(points.z), strict=True
        )
    ]
    parts = map_blocks(blocks, chunk, name="selection_drawn")
    rows = da.concatenate(
        [
            da.from_delayed(delayed(itemgetter(0))(part), shape=(size,), dtype=bool)
            for part, size in zip(parts, points.z.chunks[0], strict=True)
        ]
    )
    state = tree_reduce(
        [delayed(itemgetter(1))(part) for part in parts],
        partial(describe_combine, sample=sample),
        name="selection_drawn",
    )
    # one graph, not optimized (fusing would rename the block tasks): each block's pass runs once
    held, reduced = client.persist([rows, state], optimize_graph=False)
    described = WorkerWatch(client).result(client.compute(reduced), "the selection's description")
    return held, summary_of(described, points, shown, corpus)


def selection_path(folder: Where, name: str) -> Location:
    """``folder/selection-NAME.zarr``, for a name of letters, digits, ``-``, ``_`` and ``.``."""
    if not _NAME.match(name):
        raise SelectionError(
            f"a selection's name is letters, digits, '-', '_' and '.' (a letter or digit first), got {name!r}"
        )
    return location(folder) / f"selection-{name}.zarr"


def export(
    out: Where,
    drawn: Drawn,
    points: ZPoints,
    contrast: SelectionProfile,
    *,
    rows: da.Array | None = None,
    scheduler: Any,
) -> int:
    """Write the selection to ``out`` (the output rules of :mod:`latentdask.output`); the count.
    ``rows``: the selection's rows already computed (:meth:`Drawn.rows` of ``points`` otherwise)."""
    return write_selection(
        out,
        drawn.rows(points) if rows is None else rows,
        view=drawn.record(),
        source=str(points.path),
        smd=contrast.smd,
        share=contrast.share,
        scheduler=scheduler,
    )
