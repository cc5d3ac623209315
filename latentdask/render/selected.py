"""The dashboard's selection: views drawn in the projection, combined, described and exported.

A selection is a sequence of drawn views — a box or a lasso in the pair of components shown,
with the slice condition when a slice is shown — each combined with the rows selected so far:
``new``, ``add``, ``subtract`` or ``intersect``. Its rows are evaluated where they lie, block by
block over every z-point, by :func:`latentdask.store.selection.view_rows`: nothing is sampled
and no column reaches the client. What the panel beside the projection shows takes one pass,
:func:`describe`: how many rows, their share of the valid rows and per component the
standardized mean difference against the rest (the moments of
:func:`latentdask.stats.contrast.profile_block`), their mean, per component their histogram on
the statistics' bin edges, a seeded sample of their rows and, where the store has CelebA
attributes, each attribute's share among them and among all valid rows
(:class:`AttributeShares`) — chunk → combine → finalize over :class:`Described`, through
:func:`~latentdask.stats.reduce.reduce_blocks`.

:func:`export` writes ``selection-NAME.zarr`` with :func:`~latentdask.store.selection.write_selection`,
which ``stats --rows`` and ``render --rows`` read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, NamedTuple

import dask
import dask.array as da
import numba
import numpy as np

from latentdask.errors import LatentdaskError
from latentdask.location import Location, Where, location
from latentdask.stats.contrast import SelectionProfile, profile_block, profile_of
from latentdask.stats.kernels import GroupMoments, groups_combine
from latentdask.stats.reduce import reduce_blocks, row_blocks, row_starts
from latentdask.stats.scan import histogram_bin
from latentdask.stats.summary import select_rows
from latentdask.store.points import ZPoints
from latentdask.store.selection import View, view_rows, write_selection

Combine = Literal["new", "add", "subtract", "intersect"]
COMBINE_MODES: tuple[Combine, ...] = ("new", "add", "subtract", "intersect")
#: rows of the seeded sample shown as real images
SAMPLE = 12
#: attributes listed in a selection's attribute profile
ATTRIBUTES = 8
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


class Described(NamedTuple):
    """What :func:`describe` merges: the selected rows' count, sum and histograms, the sample so far,
    per attribute how many rows have it (= 1), selected and valid, and the two groups' moments."""

    n: int
    total: np.ndarray  # (N,) float64: Σ of the selected rows
    hist: np.ndarray  # (N, bins) int64, np.histogram's bins over the edges
    keys: np.ndarray  # (≤ k,) the sample's keys, ascending
    rows: np.ndarray  # (≤ k,) their store rows
    valid: int  # valid, finite rows
    chosen_with: np.ndarray  # (A,) int64: selected rows with the attribute (A = 0 without attributes)
    valid_with: np.ndarray  # (A,) int64: valid, finite rows with it
    groups: GroupMoments  # the selected rows and the rest: the profile (standardized differences)


@numba.njit(cache=True, nogil=True)
def chosen_sums(block: np.ndarray, chosen: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Over the ``chosen`` rows of a float32 block, one pass: per column the float64 sum, and the
    counts ``np.histogram(column, edges)`` gives (the last bin closed; values outside left out)."""
    width, bins = block.shape[1], len(edges) - 1
    scale = bins / (edges[bins] - edges[0])
    total = np.zeros(width)
    hist = np.zeros((width, bins), dtype=np.int64)
    for i in range(block.shape[0]):
        if chosen[i]:
            for j in range(width):
                v = np.float64(block[i, j])
                total[j] += v
                k = histogram_bin(v, edges, scale)
                if 0 <= k < bins:
                    hist[j, k] += 1
    return total, hist


def describe_chunk(
    block: np.ndarray,
    chosen: np.ndarray,
    start: int,
    valid: np.ndarray | None = None,
    attributes: np.ndarray | None = None,
    *,
    edges: np.ndarray,
    seed: int,
    sample: int,
) -> Described:
    """One block's selected rows (``chosen``: valid and finite already) as a :class:`Described` state;
    with ``attributes`` (rows × A, ±1), how many of them and of the block's valid rows have each.

    Every row of the block draws a key from the stream ``(seed, start)`` whether selected or
    not, so a row's key does not depend on the selection: the sample is the selected rows of
    smallest key, and a row added to a selection leaves the rest of its sample in place.
    """
    chosen = np.asarray(chosen, dtype=bool)
    total, hist = chosen_sums(np.ascontiguousarray(block), chosen, edges)
    keys = np.random.default_rng([seed, start]).random(len(chosen))[chosen]
    order = np.argsort(keys, kind="stable")[:sample]
    kept, _, _ = select_rows(block, valid, None)
    ones = np.zeros((len(chosen), 0), dtype=bool) if attributes is None else np.asarray(attributes) == 1
    return Described(
        int(chosen.sum()),
        total,
        hist,
        keys[order],
        start + np.flatnonzero(chosen)[order],
        int(kept.sum()),
        ones[chosen].sum(axis=0, dtype=np.int64),
        ones[kept].sum(axis=0, dtype=np.int64),
        profile_block(block, valid, chosen),
    )


def describe_combine(states: Sequence[Described], *, sample: int) -> Described:
    keys = np.concatenate([s.keys for s in states])
    rows = np.concatenate([s.rows for s in states])
    order = np.lexsort((rows, keys))[:sample]
    return Described(
        sum(s.n for s in states),
        np.sum([s.total for s in states], axis=0),
        np.sum([s.hist for s in states], axis=0),
        keys[order],
        rows[order],
        sum(s.valid for s in states),
        np.sum([s.chosen_with for s in states], axis=0),
        np.sum([s.valid_with for s in states], axis=0),
        groups_combine([s.groups for s in states]),
    )


@dataclass(frozen=True)
class AttributeShares:
    """Per CelebA attribute, its share (= 1) among the selected rows and among all valid rows."""

    names: tuple[str, ...]
    chosen: np.ndarray  # (A,) share among the selected rows (NaN when none is selected)
    corpus: np.ndarray  # (A,) share among the valid, finite rows

    def ranked(self, count: int = ATTRIBUTES) -> list[tuple[str, float, float]]:
        """The ``count`` attributes whose share differs most, largest difference first:
        (name, share selected, share overall); none when nothing is selected."""
        difference = np.abs(self.chosen - self.corpus)
        if not np.isfinite(difference).any():
            return []
        order = np.argsort(-difference, kind="stable")[:count]
        return [(self.names[j], float(self.chosen[j]), float(self.corpus[j])) for j in order]


@dataclass(frozen=True)
class Summary:
    """What the panel shows of a selection."""

    profile: SelectionProfile  # count, share, standardized mean differences
    mean: np.ndarray | None  # (N,) the selected rows' mean; None when none is selected
    hist: np.ndarray  # (N, bins) their histograms on the statistics' edges
    sample: np.ndarray  # store rows of the seeded sample
    attributes: AttributeShares | None = None  # where the store has attributes


def describe(
    points: ZPoints,
    chosen: da.Array,
    *,
    edges: np.ndarray,
    seed: int = 0,
    sample: int = SAMPLE,
    scheduler: Any,
) -> Summary:
    """The profile of the rows ``chosen`` (from :meth:`Drawn.rows`), their mean, histograms, sample
    and, where ``points`` has attributes, their attribute shares."""
    blocks = [
        (z, rows, start, valid, attributes)
        for (z, rows, valid, attributes), start in zip(
            row_blocks(points.z, chosen, points.valid, points.attributes), row_starts(points.z), strict=True
        )
    ]
    graph = reduce_blocks(
        blocks,
        chunk=partial(describe_chunk, edges=np.asarray(edges, dtype=np.float64), seed=seed, sample=sample),
        combine=partial(describe_combine, sample=sample),
        name="selection_describe",
    )
    (state,) = dask.compute(graph, scheduler=scheduler)
    mean = state.total / state.n if state.n else None
    shares = None
    if points.attributes is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            shares = AttributeShares(
                tuple(points.attribute_names),
                state.chosen_with / state.n,
                state.valid_with / max(state.valid, 1),
            )
    return Summary(profile_of(state.groups), mean, state.hist, state.rows, shares)


def selection_path(folder: Where, name: str) -> Location:
    """``folder/selection-NAME.zarr``, for a name of letters, digits, ``-``, ``_`` and ``.``."""
    if not _NAME.match(name):
        raise SelectionError(
            f"a selection's name is letters, digits, '-', '_' and '.' (a letter or digit first), got {name!r}"
        )
    return location(folder) / f"selection-{name}.zarr"


def export(out: Where, drawn: Drawn, points: ZPoints, contrast: SelectionProfile, *, scheduler: Any) -> int:
    """Write the selection to ``out`` (the output rules of :mod:`latentdask.store.output`); the count."""
    return write_selection(
        out,
        drawn.rows(points),
        view=drawn.record(),
        source=str(points.path),
        smd=contrast.smd,
        share=contrast.share,
        scheduler=scheduler,
    )
