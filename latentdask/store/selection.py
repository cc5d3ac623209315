"""Row selections: a boolean mask over every row of a store, and the view that made it.

A selection drawn by eye (a box or a lasso in a projection, the slice condition when a
slice is shown) becomes a reproducible subset of the pipeline: ``latentdask select`` writes
``selection-NAME.zarr``, which ``latentdask stats --rows`` and ``render --rows`` read. The
test is evaluated where the rows lie, block by block, on every z-point (never a sample).
A selection belongs to its store: it records the store and, for a latent store, a digest
of its finished shards' checksums; a store that changed since, or another store, is refused.

``selection-NAME.zarr`` is a Zarr group (output kind ``selection``)::

    rows      (n,) bool, chunked like the store's z: True for a selected row
    smd       (N,) float64: per component, the standardized mean difference of the selected
              valid rows against the other valid rows (:mod:`latentdask.stats.contrast`)
    attrs     latentdask (the record), source (the store, resolved), shards (the digest of
              its finished shards, or null), n, count, share (of the valid rows),
              view: {pair: [a, b], polygon: [[x, y], ...], slice: t or null}
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numba
import numpy as np
import zarr
from zarr.errors import ZarrUserWarning

from latentdask.cluster.watch import compute
from latentdask.errors import StatsError
from latentdask.location import Location, Where, identity, location
from latentdask.output import owned_output, read_record

SELECTION_KIND = "selection"


@dataclass(frozen=True)
class View:
    """What a selection keeps: rows whose components ``pair`` lie inside ``polygon`` (even–odd
    rule), and with ``slice`` every other component within ±slice."""

    pair: tuple[int, int]
    polygon: tuple[tuple[float, float], ...]
    slice: float | None = None

    def __post_init__(self) -> None:
        if len(self.polygon) < 3:
            raise StatsError(f"a selection's polygon needs 3 vertices or more, got {len(self.polygon)}")
        if not np.isfinite(np.asarray(self.polygon, dtype=np.float64)).all():
            # NaN compares false and ±inf makes the edge test NaN: such a polygon selects by accident
            raise StatsError(f"a selection's polygon needs finite vertices, got {self.polygon}")
        if self.pair[0] == self.pair[1]:
            raise StatsError(f"a selection's pair needs two different components, got {self.pair}")
        if self.slice is not None and not self.slice > 0:
            raise StatsError(f"a selection's slice threshold must be positive, got {self.slice}")

    @classmethod
    def box(cls, pair: tuple[int, int], x: tuple[float, float], y: tuple[float, float], **kw: Any) -> View:
        (x0, x1), (y0, y1) = sorted(x), sorted(y)
        return cls(pair, ((x0, y0), (x1, y0), (x1, y1), (x0, y1)), **kw)

    def as_dict(self) -> dict[str, Any]:
        return {"pair": list(self.pair), "polygon": [list(v) for v in self.polygon], "slice": self.slice}


def polygon_edges(polygon: Sequence[tuple[float, float]]) -> np.ndarray:
    """The polygon's edges that are not horizontal, as rows (x_i, y_i, x_j, y_j) in float64 (a
    horizontal edge crosses no horizontal ray)."""
    start = np.asarray(polygon, dtype=np.float64)
    edges = np.column_stack([start, np.roll(start, -1, axis=0)])
    return np.ascontiguousarray(edges[edges[:, 1] != edges[:, 3]])


@numba.njit(cache=True, nogil=True)
def _inside_each(x: np.ndarray, y: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The even–odd rule: a ray from each (x, y) towards +x crosses an odd number of ``edges``
    (edge by edge over every point, without a branch, so the points run in SIMD lanes)."""
    inside = np.zeros(len(x), dtype=np.bool_)
    for e in range(edges.shape[0]):
        xi, yi, xj, yj = edges[e, 0], edges[e, 1], edges[e, 2], edges[e, 3]
        for i in range(len(x)):
            inside[i] ^= ((yi > y[i]) != (yj > y[i])) & (x[i] < (xj - xi) * (y[i] - yi) / (yj - yi) + xi)
    return inside


def bounds(view: View, dim: int) -> np.ndarray:
    """Per column, what a row's |value| must stay below to be in the view: the slice's t outside the
    pair (no bound without a slice) and none on the pair, so only finiteness there; compared in
    float64, as the view's columns and the statistics compare."""
    bound = np.full(dim, np.inf if view.slice is None else view.slice, dtype=np.float64)
    bound[list(view.pair)] = np.inf
    return bound


#: rows tested at a time: a tile's pair of columns is tested in SIMD lanes, then the tile's rows
#: inside the polygon are read, tested and (by the caller) summed while they are in cache
TILE = 256


@numba.njit(cache=True, nogil=True, inline="always")
def _within(row: np.ndarray, bound: np.ndarray) -> bool:
    """Every |value| of ``row`` below its column's ``bound`` (so none is NaN or ±inf); branch-free."""
    outside = 0
    for j in range(len(row)):
        outside += not abs(np.float64(row[j])) < bound[j]
    return outside == 0


@numba.njit(cache=True, nogil=True)
def tile_in_view(
    block: np.ndarray,
    keep: np.ndarray,
    start: int,
    a: int,
    b: int,
    edges: np.ndarray,
    bound: np.ndarray,
    chosen: np.ndarray,
) -> int:
    """Sets ``chosen`` for the rows ``start`` … ``start + TILE`` of a float block (those left):
    among ``keep``, inside the polygon ``edges`` in columns ``a`` and ``b``, with every |value|
    below its column's ``bound``. A row's other columns are read only when it is inside the
    polygon. Returns where the tile stops."""
    stop = min(start + TILE, block.shape[0])
    x = np.empty(stop - start)
    y = np.empty(stop - start)
    for i in range(start, stop):
        x[i - start], y[i - start] = block[i, a], block[i, b]
    inside = _inside_each(x, y, edges)
    for i in range(start, stop):
        chosen[i] = keep[i] and inside[i - start] and _within(block[i], bound)
    return stop


@numba.njit(cache=True, nogil=True)
def _rows_in_view(
    block: np.ndarray, keep: np.ndarray, a: int, b: int, edges: np.ndarray, bound: np.ndarray
) -> np.ndarray:
    chosen = np.zeros(block.shape[0], dtype=np.bool_)
    start = 0
    while start < block.shape[0]:
        start = tile_in_view(block, keep, start, a, b, edges, bound, chosen)
    return chosen


def view_test(view: View, dim: int) -> tuple[int, int, np.ndarray, np.ndarray]:
    """What the kernels take of a view over ``dim`` components: its pair, its polygon's edges
    (:func:`polygon_edges`) and its :func:`bounds`."""
    a, b = view.pair
    return a, b, polygon_edges(view.polygon), bounds(view, dim)


def rows_in_view(block: np.ndarray, view: View) -> np.ndarray:
    """The rows of a block inside the view's polygon (even–odd rule; on a box's edges, the lower
    and left ones are inside, the upper and right ones outside, so boxes that tile a plane share
    no point), finite, and within the slice when it has one; only the rows inside the polygon are
    read beyond the pair's two columns."""
    from latentdask.reduction import float_block

    block = float_block(block)
    keep = np.ones(block.shape[0], dtype=np.bool_)
    return _rows_in_view(block, keep, *view_test(view, block.shape[1]))


def view_rows(z: da.Array, view: View) -> da.Array:
    """The rows of ``z`` the view keeps (lazy, one task per block; non-finite rows are not kept)."""
    dim = z.shape[1]
    if not all(0 <= j < dim for j in view.pair):
        raise StatsError(f"the selection's pair {view.pair} is outside the {dim} components (0 … {dim - 1})")
    return da.map_blocks(rows_in_view, z, view=view, drop_axis=1, dtype=bool)


def write_selection(
    out: Where,
    rows: da.Array,
    *,
    view: View,
    source: str,
    smd: np.ndarray,
    share: float,
    scheduler: Any = None,
) -> int:
    """Compute ``rows`` and write them with ``view`` and their contrast as ``selection-NAME.zarr``;
    the count selected. ``source``: the store the rows are of."""
    size = max(rows.chunks[0])
    rows = rows.rechunk(size)  # regular: each block writes whole chunks of its own
    with owned_output(out, SELECTION_KIND, inputs=[source], zarr=True) as staged, warnings.catch_warnings():
        warnings.simplefilter("ignore", ZarrUserWarning)
        group = zarr.open_group(str(staged.path), mode="w")
        target = group.create_array(
            "rows", shape=rows.shape, chunks=(size,), dtype=bool, dimension_names=["image"]
        )
        stored = da.store(rows, target, lock=False, compute=False, return_stored=True)  # type: ignore[arg-type]
        (count,) = compute(stored.sum(), scheduler=scheduler)
        group.create_array("smd", shape=smd.shape, dtype="float64", dimension_names=["latent"])[:] = smd
        group.attrs.update(
            {
                "source": identity(source),
                "shards": _shards_digest(source),
                "n": int(rows.shape[0]),
                "count": int(count),
                "share": float(share),
                "view": view.as_dict(),
                "latentdask": staged.record,
            }
        )
    return int(count)


@dataclass(frozen=True)
class RowSelection:
    """A selection read back: its mask (lazy), how many rows it holds, and where it came from."""

    path: Location
    rows: da.Array
    count: int
    view: dict[str, Any]

    def words(self) -> str:
        return f"{self.count:,} rows of the selection {self.path}"

    def fingerprint(self, scheduler: Any = None) -> str:
        """Which rows the selection holds, as :func:`rows_fingerprint` (one read of its mask)."""
        return rows_fingerprint(self.rows, scheduler=scheduler)


#: the seeds of the two 64-bit row hashes whose sums over the selected rows name a set of rows
_FINGERPRINT_SEEDS = (0x243F6A8885A308D3, 0x13198A2E03707344)


def _row_hash(rows: np.ndarray, seed: int) -> np.ndarray:
    """splitmix64 of each row number, seeded: a well-mixed 64-bit value per row."""
    with np.errstate(over="ignore"):
        h = rows.astype(np.uint64) + np.uint64(seed)
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def fingerprint_chunk(block: np.ndarray, start: int) -> np.ndarray:
    """Per seed, the sum (mod 2⁶⁴) of the hashes of the selected rows of a block whose first row is
    ``start``."""
    rows = start + np.flatnonzero(np.asarray(block, dtype=bool))
    return np.array([_row_hash(rows, seed).sum(dtype=np.uint64) for seed in _FINGERPRINT_SEEDS])


def fingerprint_combine(states: Sequence[np.ndarray]) -> np.ndarray:
    """The blocks' sums added (mod 2⁶⁴): associative and commutative, so any chunking gives one answer."""
    total = np.zeros(len(_FINGERPRINT_SEEDS), dtype=np.uint64)
    for state in states:
        total += state  # wraps around, as the sums are meant to
    return total


def rows_fingerprint(rows: da.Array, *, scheduler: Any = None) -> str:
    """Which rows a boolean mask selects, in 32 hex digits: per seed, the sum of a 64-bit hash of
    each selected row number.

    Equal sets of rows give equal fingerprints whatever the chunks and wherever the mask is
    stored (a copy of a selection is the same selection); two different sets share one with a
    chance of about 2⁻¹²⁸. One task per block, through the rows' one driver.

    Examples
    --------
    >>> mask = da.from_array(np.array([True, False, True, True]), chunks=3)
    >>> rows_fingerprint(mask) == rows_fingerprint(mask.rechunk(1))
    True
    """
    from latentdask.reduction import reduce_blocks, row_starts

    blocks = [
        (block, start) for block, start in zip(rows.to_delayed().ravel(), row_starts(rows), strict=True)
    ]
    graph = reduce_blocks(
        blocks, chunk=fingerprint_chunk, combine=fingerprint_combine, name="rows_fingerprint"
    )
    (total,) = compute(graph, scheduler=scheduler) if blocks else (fingerprint_combine([]),)
    return "".join(f"{int(value):016x}" for value in total)


def _shards_digest(store: Where) -> str | None:
    """The digest of a latent store's finished shards (None for an array without checksums)."""
    from latentdask.store.integrity import finished_fingerprint

    try:
        node = zarr.open(str(location(store)), mode="r")
    except Exception:  # not a store: nothing to tie the selection to but its path
        return None
    return finished_fingerprint(node) if isinstance(node, zarr.Group) else None


def open_selection(path: Where, store: Where, rows: int, chunks: tuple[int, ...]) -> RowSelection:
    """The selection at ``path``, checked to be one of ``store`` (``rows`` rows, z chunked as
    ``chunks``) as it is now."""
    path = location(path)
    found = read_record(path)
    if found is None or found["kind"] != SELECTION_KIND:
        raise StatsError(f"{path} is not a latentdask selection (latentdask select writes one)")
    try:
        group = zarr.open_group(str(path), mode="r")
        mask = group["rows"]
        attrs: dict[str, Any] = group.attrs.asdict()
        count, view, source, shards = (
            int(attrs["count"]),
            dict(attrs["view"]),
            attrs["source"],
            attrs["shards"],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise StatsError(
            f"{path}: an incomplete selection ({exc}); make it again with latentdask select"
        ) from None
    assert isinstance(mask, zarr.Array)
    if mask.shape != (rows,):
        raise StatsError(f"the selection {path} holds {mask.shape[0]:,} rows; the store has {rows:,}")
    now = _shards_digest(store)
    if shards is not None and now is not None:
        if shards != now:
            raise StatsError(
                f"the selection {path} was made when {store} held other finished shards; select again"
            )
    elif source != identity(store):
        raise StatsError(f"the selection {path} was made on {source}, not on {store}; select again")
    return RowSelection(path, da.from_zarr(mask).rechunk((chunks,)), count, view)
