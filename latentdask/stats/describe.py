"""A selection's description: what the dashboard's panel shows of the rows a selection holds.

:func:`describe` takes one pass over every z-point: how many rows are selected, their share of the
valid rows and per component the standardized mean difference against the rest, their mean, the
histograms of the components shown on the statistics' bin edges, a seeded sample of their rows and,
where the store has CelebA attributes, each attribute's share among them and among all valid rows
(:class:`AttributeShares`) — chunk → combine → finalize over :class:`Described`, through
:func:`~latentdask.reduction.reduce_blocks`. Given the :class:`Corpus` (every valid row's moments
and attribute counts, from the store's statistics), only the selected rows' values are summed and the
rest's moments are the corpus's less theirs; otherwise each block's two groups are summed
(:func:`latentdask.stats.contrast.profile_block`). :func:`drawn_chunk` finds a drawn view's rows and
sums them in the same read of a block (:func:`latentdask.render.selected.describe_drawn` builds its
graph).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import dask.array as da
import numba
import numpy as np

from latentdask.cluster.watch import compute
from latentdask.reduction import float_block, reduce_blocks, row_blocks, row_starts
from latentdask.stats.contrast import SelectionProfile, profile_block, profile_of
from latentdask.stats.kernels import GroupMoments, groups_combine
from latentdask.stats.scan import histogram_bin
from latentdask.stats.summary import select_rows
from latentdask.store.points import ZPoints
from latentdask.store.selection import View, rows_in_view, tile_in_view, view_test

#: rows of the seeded sample shown as real images
SAMPLE = 12
#: attributes listed in a selection's attribute profile
ATTRIBUTES = 8


class Described(NamedTuple):
    """What :func:`describe` merges: the selected rows' moments (with the rest's, unless the corpus's
    are known), the histograms of the columns asked for, the sample so far, per attribute how many
    rows have it (= 1), selected and valid."""

    groups: GroupMoments  # the selected rows (group 0) and, without a corpus, the rest (group 1)
    hist: np.ndarray  # (columns, bins) int64, np.histogram's bins over the edges, selected rows
    keys: np.ndarray  # (≤ k,) the sample's keys, ascending
    rows: np.ndarray  # (≤ k,) their store rows
    valid: int  # valid, finite rows (counted only without a corpus)
    chosen_with: np.ndarray  # (A,) int64: selected rows with the attribute (A = 0 without attributes)
    valid_with: np.ndarray  # (A,) int64: valid, finite rows with it (counted only without a corpus)


@dataclass(frozen=True)
class Corpus:
    """Every valid, finite row's count, mean and Σ(x − mean)² per component, and per attribute how
    many have it: from the store's statistics of all its valid rows. With them a selection's rest is
    the corpus less the selection, so describing it reads the selected rows only."""

    n: int
    mean: np.ndarray
    m2: np.ndarray
    with_attribute: np.ndarray | None = None  # (A,) rows with each attribute = 1

    @classmethod
    def of(cls, stats: Any, rows: int) -> Corpus | None:
        """From ``stats``, if they are of every valid row of a store of ``rows`` rows (not of a split,
        ``--where`` or ``--rows``, and counting every row as kept, invalid or non-finite)."""
        attrs = stats.attrs
        if attrs.get("split", "all") != "all" or attrs.get("where") or attrs.get("rows"):
            return None
        if int(stats["count"]) + int(stats["invalid"]) + int(stats["nonfinite"]) != rows:
            return None  # of other rows (unfinished shards, another store): the panel sums the rest
        n = int(stats["count"])
        m2 = np.diag(stats["cov"].values) * (n - 1) if n > 1 else np.zeros(stats.sizes["latent"])
        counts = stats.get("attribute_count")
        with_attribute = None if counts is None else np.asarray(counts.sel(group=1).values, dtype=np.int64)
        return cls(n, np.asarray(stats["mean"].values, dtype=np.float64), m2, with_attribute)

    def rest(self, chosen: GroupMoments) -> GroupMoments:
        """The selected rows' moments (one group) and the rest's, the corpus's less theirs."""
        n_s, mean_s, m2_s = int(chosen.n[0, 0]), chosen.mean[0, 0], chosen.m2[0, 0]
        n_r = self.n - n_s
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_r = (self.n * self.mean - n_s * mean_s) / n_r if n_r else np.zeros_like(self.mean)
        # Σ over all = Σ over each group + each group's n (its mean − the mean)²
        m2_r = self.m2 - m2_s - n_s * (mean_s - self.mean) ** 2 - n_r * (mean_r - self.mean) ** 2
        means, m2s = np.stack([mean_s, mean_r]), np.stack([m2_s, np.maximum(m2_r, 0.0)])
        return GroupMoments(np.array([[n_s, n_r]]), means[None], m2s[None])


@numba.njit(cache=True, nogil=True, inline="always")
def _add_row(
    row: np.ndarray,
    centre: np.ndarray,
    s1: np.ndarray,
    s2: np.ndarray,
    edges: np.ndarray,
    scale: float,
    columns: np.ndarray,
    hist: np.ndarray,
    sums: bool = True,
) -> None:
    """One chosen row into the histograms of ``columns`` and, with ``sums``, the sums about ``centre``."""
    if sums:
        for j in range(len(row)):
            d = np.float64(row[j]) - centre[j]
            s1[j] += d
            s2[j] += d * d
    for c in range(len(columns)):
        k = histogram_bin(np.float64(row[columns[c]]), edges, scale)
        if 0 <= k < len(edges) - 1:
            hist[c, k] += 1


# The two kernels below call kernels of other modules (histogram_bin, tile_in_view). numba's cache
# would not see those change, so they are compiled once per process instead (warm_kernels).


@numba.njit(nogil=True)
def chosen_moments(
    block: np.ndarray,
    chosen: np.ndarray,
    centre: np.ndarray,
    edges: np.ndarray,
    columns: np.ndarray,
    sums: bool = True,
) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """Over the ``chosen`` rows of a float32 block, one pass: their count, per column Σ(x − centre)
    and Σ(x − centre)² in float64 (zeros without ``sums``), and for ``columns`` the counts
    ``np.histogram(column, edges)`` gives (the last bin closed; values outside left out). Unchosen
    rows cost a test each."""
    width, bins = block.shape[1], len(edges) - 1
    scale = bins / (edges[bins] - edges[0])
    n = 0
    s1 = np.zeros(width)
    s2 = np.zeros(width)
    hist = np.zeros((len(columns), bins), dtype=np.int64)
    for i in range(block.shape[0]):
        if chosen[i]:
            n += 1
            _add_row(block[i], centre, s1, s2, edges, scale, columns, hist, sums)
    return n, s1, s2, hist


def _one_group(n: int, s1: np.ndarray, s2: np.ndarray, centre: np.ndarray) -> GroupMoments:
    """The moments of ``n`` rows from their sums about ``centre``, as one group."""
    safe = max(n, 1)
    mean = centre + s1 / safe if n else np.zeros_like(centre)
    m2 = s2 - s1 * s1 / safe if n else np.zeros_like(centre)
    return GroupMoments(np.array([[n]]), mean[None, None], m2[None, None])


def _sampled(chosen: np.ndarray, start: int, seed: int, sample: int) -> tuple[np.ndarray, np.ndarray]:
    """The keys and store rows of the block's ``sample`` chosen rows of smallest key, ascending.

    Every row of the block draws a key from the stream ``(seed, start)`` whether chosen or not,
    so a row's key does not depend on the selection: a row added to a selection leaves the rest
    of its sample in place.
    """
    keys = np.random.default_rng([seed, start]).random(len(chosen))[chosen]
    order = np.argpartition(keys, sample)[:sample] if len(keys) > sample else np.arange(len(keys))
    order = order[np.argsort(keys[order], kind="stable")]
    return keys[order], start + np.flatnonzero(chosen)[order]


def _ones(attributes: np.ndarray | None, rows: int) -> np.ndarray:
    """Which rows have each attribute (= 1), (rows, A); A = 0 without attributes."""
    return np.zeros((rows, 0), dtype=bool) if attributes is None else np.asarray(attributes) == 1


def describe_chunk(
    block: np.ndarray,
    chosen: np.ndarray,
    start: int,
    valid: np.ndarray | None = None,
    attributes: np.ndarray | None = None,
    *,
    edges: np.ndarray,
    columns: np.ndarray,
    seed: int,
    sample: int,
    corpus_known: bool,
    count_valid: bool,
) -> Described:
    """One block's selected rows (``chosen``: valid and finite already) as a :class:`Described` state;
    with ``attributes`` (rows × A, ±1), how many of them have each. ``corpus_known``: only the
    selected rows' moments; ``count_valid``: also the block's valid rows and how many have each."""
    chosen = np.asarray(chosen, dtype=bool)
    block = np.ascontiguousarray(block)
    picked = np.flatnonzero(chosen)[:1024]  # sums about a point near the data stay accurate far from 0
    centre = np.zeros(block.shape[1])
    if corpus_known and len(picked):
        centre = block[picked].mean(axis=0, dtype=np.float64)
    # without the corpus, profile_block sums both groups: only the histograms are counted here
    n, s1, s2, hist = chosen_moments(block, chosen, centre, edges, columns, corpus_known)
    ones = _ones(attributes, len(chosen))
    groups = _one_group(n, s1, s2, centre) if corpus_known else profile_block(block, valid, chosen)
    valid_count, valid_with = 0, np.zeros(ones.shape[1], dtype=np.int64)
    if count_valid:
        kept, _, _ = select_rows(block, valid, None)
        valid_count, valid_with = int(kept.sum()), ones[kept].sum(axis=0, dtype=np.int64)
    keys, rows = _sampled(chosen, start, seed, sample)
    return Described(
        groups, hist, keys, rows, valid_count, ones[chosen].sum(axis=0, dtype=np.int64), valid_with
    )


def describe_combine(states: Sequence[Described], *, sample: int) -> Described:
    keys = np.concatenate([s.keys for s in states])
    rows = np.concatenate([s.rows for s in states])
    order = np.lexsort((rows, keys))[:sample]
    return Described(
        groups_combine([s.groups for s in states]),
        np.sum([s.hist for s in states], axis=0),
        keys[order],
        rows[order],
        sum(s.valid for s in states),
        np.sum([s.chosen_with for s in states], axis=0),
        np.sum([s.valid_with for s in states], axis=0),
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
    hist: dict[int, np.ndarray]  # component → their histogram on the statistics' edges (those asked for)
    sample: np.ndarray  # store rows of the seeded sample
    attributes: AttributeShares | None = None  # where the store has attributes


def describe(
    points: ZPoints,
    chosen: da.Array,
    *,
    edges: np.ndarray,
    columns: Sequence[int] | None = None,
    corpus: Corpus | None = None,
    seed: int = 0,
    sample: int = SAMPLE,
    scheduler: Any,
) -> Summary:
    """The profile of the rows ``chosen`` (a selection's rows, lazy), their mean, the histograms of
    ``columns`` (default: every component), sample and, where ``points`` has attributes, their
    attribute shares. With the ``corpus``'s moments (:meth:`Corpus.of` the store's statistics),
    only the selected rows' values are summed: the rest's are the corpus's less theirs."""
    blocks = [
        (z, rows, start, valid, attributes)
        for (z, rows, valid, attributes), start in zip(
            row_blocks(points.z, chosen, points.valid, points.attributes), row_starts(points.z), strict=True
        )
    ]
    shown = np.arange(points.z.shape[1]) if columns is None else np.asarray(columns, dtype=np.int64)
    chunk = partial(
        describe_chunk,
        edges=np.asarray(edges, dtype=np.float64),
        columns=shown,
        seed=seed,
        sample=sample,
        corpus_known=corpus is not None,
        count_valid=corpus is None or (points.attributes is not None and corpus.with_attribute is None),
    )
    graph = reduce_blocks(
        blocks, chunk=chunk, combine=partial(describe_combine, sample=sample), name="selection_describe"
    )
    (state,) = compute(graph, scheduler=scheduler)
    return summary_of(state, points, shown, corpus)


def summary_of(state: Described, points: ZPoints, shown: np.ndarray, corpus: Corpus | None) -> Summary:
    """What the panel shows, from the merged state (and the corpus's moments, if known)."""
    groups = state.groups if corpus is None else corpus.rest(state.groups)
    profile = profile_of(groups)
    mean = groups.mean[0, 0] if profile.selected else None
    valid = state.valid if corpus is None else corpus.n
    valid_with = state.valid_with
    if corpus is not None and corpus.with_attribute is not None:
        valid_with = corpus.with_attribute
    shares = None
    if points.attributes is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            shares = AttributeShares(
                tuple(points.attribute_names),
                state.chosen_with / profile.selected,
                valid_with / max(valid, 1),
            )
    histograms = {int(j): counts for j, counts in zip(shown, state.hist, strict=True)}
    return Summary(profile, mean, histograms, state.rows, shares)


@numba.njit(nogil=True)
def _chosen_in_one_pass(
    block: np.ndarray,
    keep: np.ndarray,
    a: int,
    b: int,
    sides: np.ndarray,
    bound: np.ndarray,
    centre: np.ndarray,
    edges: np.ndarray,
    columns: np.ndarray,
) -> tuple[np.ndarray, int, np.ndarray, np.ndarray, np.ndarray]:
    """The rows among ``keep`` in the view (columns ``a`` and ``b`` inside the polygon of ``sides``,
    :func:`~latentdask.store.selection.polygon_edges`, every |value| below ``bound``) and
    :func:`chosen_moments`' sums of them, in one read of the block: tile by tile
    (:func:`~latentdask.store.selection.tile_in_view`), the rows inside the polygon are tested and
    summed while they are in cache; the other rows' other columns are never read."""
    width, bins = block.shape[1], len(edges) - 1
    scale = bins / (edges[bins] - edges[0])
    chosen = np.zeros(block.shape[0], dtype=np.bool_)
    n = 0
    s1 = np.zeros(width)
    s2 = np.zeros(width)
    hist = np.zeros((len(columns), bins), dtype=np.int64)
    start = 0
    while start < block.shape[0]:
        stop = tile_in_view(block, keep, start, a, b, sides, bound, chosen)
        for i in range(start, stop):
            if chosen[i]:
                n += 1
                _add_row(block[i], centre, s1, s2, edges, scale, columns, hist)
        start = stop
    return chosen, n, s1, s2, hist


def drawn_chunk(
    block: np.ndarray,
    start: int,
    valid: np.ndarray | None = None,
    attributes: np.ndarray | None = None,
    *,
    view: View,
    centre: np.ndarray,
    edges: np.ndarray,
    columns: np.ndarray,
    seed: int,
    sample: int,
) -> tuple[np.ndarray, Described]:
    """One block of a selection drawn as one view: its rows (as :func:`rows_in_view` and ``valid``
    give them) and their :class:`Described` state (the corpus's moments known), in one pass."""
    block = float_block(block)
    keep = np.ones(block.shape[0], dtype=np.bool_) if valid is None else np.asarray(valid, dtype=np.bool_)
    chosen, n, s1, s2, hist = _chosen_in_one_pass(
        block, keep, *view_test(view, block.shape[1]), centre, edges, columns
    )
    ones = _ones(attributes, len(chosen))
    keys, rows = _sampled(chosen, start, seed, sample)
    state = Described(
        _one_group(n, s1, s2, centre),
        hist,
        keys,
        rows,
        0,
        ones[chosen].sum(axis=0, dtype=np.int64),
        np.zeros(ones.shape[1], dtype=np.int64),
    )
    return chosen, state


def warm_kernels() -> None:
    """Compile (or load from numba's cache) the kernels a selection runs, on tiny data: run once per
    worker when a dashboard starts (about 2 s), so that the first selection does not wait for them."""
    block = np.zeros((4, 3), dtype=np.float32)
    view = View((0, 1), ((-1.0, -1.0), (1.0, -1.0), (0.0, 1.0)), slice=1.0)
    drawn_chunk(
        block,
        0,
        view=view,
        centre=np.zeros(3),
        edges=np.linspace(-1.0, 1.0, 3),
        columns=np.array([0]),
        seed=0,
        sample=2,
    )
    chosen = rows_in_view(block, view)
    describe_chunk(
        block,
        chosen,
        0,
        edges=np.linspace(-1.0, 1.0, 3),
        columns=np.array([0, 1]),
        seed=0,
        sample=2,
        corpus_known=False,
        count_valid=True,
    )
