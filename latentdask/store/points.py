"""z-points on disk: any (n, N) Zarr array, a group holding ``z`` (POINTS.zarr), or a latent store.

Reading: :func:`open_zpoints` gives the lazy z and its row companions (valid, split,
attributes), with every read of a latent store checked against its shards' checksums
and unfinished or damaged shards left out. Writing: :func:`write_rows` fills an (n, N)
array block by block, each block drawn from its own stream ``(seed, block number)`` and
one Zarr chunk, so the result does not depend on order or parallelism, no two writers
share a chunk, and memory is bounded by one block per thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import dask
import dask.array as da
import numpy as np
import zarr

from latentdask.errors import StatsError
from latentdask.location import Location, Where, location
from latentdask.store.integrity import CheckedArray, DamagedShardError, expected_checksums
from latentdask.store.layout import check_layout, shard_rows, shards_done

if TYPE_CHECKING:
    from latentdask.store.selection import RowSelection

#: (rng, rows) → float32 array (rows, dim)
BlockSampler = Callable[[np.random.Generator, int], np.ndarray]


def _block(sampler: BlockSampler, seed: int, block_info: dict | None = None) -> np.ndarray:
    assert block_info is not None
    number = block_info[None]["chunk-location"][0]
    (start, stop), _ = block_info[None]["array-location"]
    return np.asarray(sampler(np.random.default_rng([seed, number]), stop - start), dtype=np.float32)


def write_rows(
    group: zarr.Group,
    name: str,
    sampler: BlockSampler,
    *,
    n: int,
    dim: int,
    seed: int,
    chunk_rows: int,
    dims: list[str],
) -> zarr.Array:
    """Create ``group[name]`` (n, dim) float32 and fill it with ``sampler``'s blocks."""
    target = group.create_array(
        name,
        shape=(n, dim),
        chunks=(chunk_rows, dim),
        dtype="float32",
        compressors=None,
        dimension_names=dims,
    )
    sizes = (chunk_rows,) * (n // chunk_rows) + ((n % chunk_rows,) if n % chunk_rows else ())
    rows = da.map_blocks(
        partial(_block, sampler, seed),
        chunks=(sizes, (dim,)),
        dtype=np.float32,
        meta=np.empty((0, 0), np.float32),
    )
    da.store(rows, target, lock=False)  # type: ignore[arg-type]  # blocks are Zarr chunks: one writer each
    return target


@dataclass
class ZPoints:
    """What a stats run reads: z and, for latent stores, their row companions."""

    path: Location
    z: da.Array
    valid: da.Array | None = None
    split: da.Array | None = None
    attributes: da.Array | None = None
    attribute_names: tuple[str, ...] = ()
    shard_size: int | None = None
    #: what ``z`` is read from, for tasks that read row ranges themselves (reads are checked)
    source: CheckedArray | None = None
    #: shards of a latent store not finished (their rows are left out unless asked for) and in all
    unfinished: int = 0
    shards: int = 0
    #: a row selection (``--rows selection.zarr``) every reading of these points keeps to
    selection: RowSelection | None = None

    def unfinished_note(self) -> str | None:
        """``"2 of 15 shards unfinished: their rows are left out"``, or None when every shard is done."""
        if not self.unfinished:
            return None
        return f"{self.unfinished} of {self.shards} shards of {self.path} unfinished: their rows are left out"


def zpoint_bytes(path: Where) -> int | None:
    """The size of the z-points at ``path`` as read (uncompressed), or None when it cannot be told."""
    try:
        node = zarr.open(str(location(path)), mode="r")
        array = node if isinstance(node, zarr.Array) else node["z"]
        return int(array.nbytes)  # type: ignore[union-attr]
    except Exception:  # not a store: the command that opens it says why, in its own words
        return None


def open_zpoints(
    path: Where, *, include_unfinished: bool = False, skip_shards: Sequence[int] = ()
) -> ZPoints:
    """A latentdask store, a Zarr group holding ``z``, or a bare (n, N) Zarr array.

    Reads of ``z`` and ``valid`` are checked against a latent store's per-shard checksums
    (:class:`~latentdask.store.integrity.CheckedArray`). Rows of unfinished shards, and of
    ``skip_shards`` (damaged shards to leave out), are not valid; ``include_unfinished``
    keeps the rows an unfinished shard has already marked valid.
    """
    path = location(path)
    if not path.exists():
        raise StatsError(f"{path} does not exist")
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:  # zarr raises several types for what is not a store
        raise StatsError(f"{path} is not a Zarr array or group ({exc})") from None
    if isinstance(node, zarr.Array):
        z, source = _checked_z(node, path, None, None)
        return ZPoints(path, z, source=source)
    if "z" not in node:
        raise StatsError(f"{path} is a Zarr group without an array 'z'")
    members = set(node.array_keys())
    if "shard_done" in members:  # a latent store: its layout attributes are read as input
        check_layout(path, node)
    shard_size = node.attrs.get("shard_size")
    is_store = isinstance(shard_size, int) and "shard_done" in members
    member = node["z"]
    if not isinstance(member, zarr.Array):
        raise StatsError(f"{path}/z is not an (n, N) array")
    if not is_store:
        array, source = _checked_z(member, path, None, None)
        points = ZPoints(path, array, source=source)
    else:
        assert isinstance(shard_size, int)
        array, source = _checked_z(member, path, expected_checksums(node, "z"), shard_size, skip_shards)
        points = ZPoints(path, array, source=source)
        points.shard_size = shard_size
        flags, readable = shard_rows(node["shard_done"])  # type: ignore[arg-type]
        unreadable = [int(n) for n in np.flatnonzero(~readable) if int(n) not in skip_shards]
        if unreadable:  # finished or not, nobody knows: damage, as a checksum that does not match
            raise DamagedShardError(
                f"{path}: the shard_done flag of shard(s) {', '.join(map(str, unreadable))} does not decode; "
                "'latentdask encode --resume' encodes them again (stats, select and render can leave them "
                "out with --skip-damaged)",
                shards=unreadable,
            )
        done = np.asarray(flags, dtype=bool) & readable
        points.shards, points.unfinished = len(done), int((~done).sum())
    if "valid" in members:
        points.valid = (
            _valid_rows(node, points, include_unfinished, skip_shards)
            if is_store
            else da.from_zarr(node["valid"])
        )
    if "split" in members:
        points.split = da.from_zarr(node["split"])
    if "attributes" in members and "attribute" in members:
        names = tuple(str(v) for v in np.asarray(node["attribute"][:], dtype=object))  # type: ignore[index]
        if names:
            points.attributes = da.from_zarr(node["attributes"])
            points.attribute_names = names
    return points


def _checked_z(
    array: zarr.Array,
    path: Location,
    expected: list[int | None] | None,
    shard_size: int | None,
    skip: Sequence[int] = (),
) -> tuple[da.Array, CheckedArray]:
    if array.ndim != 2:
        raise StatsError(f"{path} holds z-points of shape {array.shape}; expected (n, N)")
    if array.dtype.kind != "f" or array.dtype.itemsize < 2:
        raise StatsError(f"{path} holds {array.dtype} values; z-points are floating point (float16/32/64)")
    size = shard_size or int(array.chunks[0])
    source = CheckedArray(array, expected, shard_size=size, column="z", store=str(path), skip=skip)
    z = da.from_array(source, chunks=(array.chunks[0], -1), name=f"z-{dask.base.tokenize(source)}")
    if array.dtype == np.float16:  # the kernels compute in float32/float64; float16 converts exactly
        z = z.astype(np.float32)
    return z, source


def _valid_rows(node: Any, points: ZPoints, include_unfinished: bool, skip: Sequence[int]) -> da.Array:
    """``valid``, checked against its checksums; false for unfinished (unless included) and skipped shards."""
    assert points.shard_size is not None
    size = points.shard_size
    done = shards_done(node)
    keep = done | include_unfinished
    keep[list(skip)] = False
    expected = expected_checksums(node, "valid")
    source = CheckedArray(
        node["valid"], expected, shard_size=size, column="valid", store=str(points.path), skip=skip
    )
    valid = da.from_array(source, chunks=(size,), name=f"valid-{dask.base.tokenize(source)}")
    if keep.all():
        return valid
    # one flag per shard, spread over its rows block by block (never n booleans in the client)
    return valid.map_blocks(_in_kept_shard, keep=keep, size=size, dtype=bool)


def _in_kept_shard(
    block: np.ndarray, *, keep: np.ndarray, size: int, block_info: dict | None = None
) -> np.ndarray:
    assert block_info is not None
    ((start, _),) = block_info[0]["array-location"]
    return block & keep[start // size]
