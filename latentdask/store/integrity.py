"""Per-shard checksums of a latent store, checked by ``verify``, by ``encode --resume`` and on every read.

When a shard's task has written its rows it records, before setting ``shard_done``, one
CRC-32 per column (``z``, ``valid``, ``error``, ``crop`` and, when kept,
``recon_error``) in the array ``checksum`` (shard, column). A checksum covers the
column's values as the task wrote them (float32 bytes, booleans as bytes, strings
joined by NUL in UTF-8), not the encoded chunk: it holds on any Zarr store and codec,
and it catches a deleted chunk (read back as fill values), garbage bytes and a chunk
that no longer decodes.

Readers check as they read: :class:`CheckedArray` verifies every whole shard it
returns, so the statistics and the projections of a damaged store stop with
:class:`DamagedShardError` at no extra read; ``verify`` reads every finished shard and
lists all damaged ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from latentdask.cluster.watch import WorkerWatch
from latentdask.errors import LatentdaskError
from latentdask.location import Where, identity
from latentdask.store.layout import (
    CHECKSUM_ARRAY,
    UNDECODABLE,
    StoreError,
    open_store,
    shard_rows,
    shards_done,
    store_array,
)


class DamagedShardError(LatentdaskError):
    """A finished shard whose data no longer matches its checksum, or no longer reads."""

    def __init__(self, message: str, shards: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.shards = tuple(shards)


def checksum(values: np.ndarray) -> int:
    """CRC-32 of a column's values: numbers by their bytes, strings joined by NUL in UTF-8."""
    values = np.asarray(values)
    if values.dtype.kind in "OUT":
        return zlib.crc32("\0".join(str(v) for v in values.ravel().tolist()).encode("utf-8"))
    return zlib.crc32(np.ascontiguousarray(values).data)  # the array's own buffer: no copy on the read path


def shard_checksums(values: Mapping[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
    """One uint32 per column, in the order of ``names``."""
    return np.array([checksum(values[name]) for name in names], dtype=np.uint32)


class CheckedArray:
    """A Zarr array whose reads verify each whole shard against its recorded checksum.

    ``expected`` holds one checksum per shard (None: not finished or not recorded,
    nothing to check). Reads that cover only part of a shard are not checked.
    Reading errors (a truncated or garbled chunk) become :class:`DamagedShardError` too.
    It is what dask's ``from_array`` and render's row-range tasks read from.
    """

    def __init__(
        self,
        array: Any,
        expected: Sequence[int | None] | None,
        *,
        shard_size: int,
        column: str,
        store: str,
        skip: Sequence[int] = (),
    ) -> None:
        self.array = array
        self.expected = list(expected) if expected is not None else None
        self.shard_size = shard_size
        self.column = column
        self.store = store
        self.skip = frozenset(skip)
        self.shape = array.shape
        self.dtype = array.dtype
        self.ndim = array.ndim
        self.chunks = array.chunks

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        return (self.store, self.column, self.shape, tuple(self.expected or ()), tuple(sorted(self.skip)))

    def __getitem__(self, key: Any) -> np.ndarray:
        rows = key[0] if isinstance(key, tuple) else key
        if self.skip and isinstance(rows, slice) and rows.step in (None, 1):
            return self._read_around_skipped(key, rows)
        values = self._read(key)
        if self.expected is not None:
            self._check(key, values)
        return values

    def _read(self, key: Any) -> np.ndarray:
        try:
            return np.asarray(self.array[key])
        except Exception as exc:  # zarr and the codecs raise many types for a chunk that does not decode
            hint = (
                f"; run 'latentdask verify {self.store}' to list the damaged shards" if self.expected else ""
            )
            raise DamagedShardError(
                f"{self.store}: cannot read {self.column} ({type(exc).__name__}: {exc}){hint}"
            ) from None

    def _read_around_skipped(self, key: Any, rows: slice) -> np.ndarray:
        """Rows ``rows``, with the fill value in place of skipped shards, which are never read."""
        rest = key[1:] if isinstance(key, tuple) else ()
        start, stop, _ = rows.indices(self.shape[0])
        parts = []
        for number in range(start // self.shard_size, -(-stop // self.shard_size)):
            first = max(start, number * self.shard_size)
            last = min(stop, (number + 1) * self.shard_size)
            part_key = (slice(first, last), *rest)
            if number in self.skip:
                parts.append(
                    np.full(self._shape(last - first, rest), self.array.fill_value, dtype=self.dtype)
                )
            else:
                values = self._read(part_key)
                if self.expected is not None:
                    self._check(part_key, values)
                parts.append(values)
        return np.concatenate(parts) if parts else self._read(key)

    def _shape(self, rows: int, rest: tuple[Any, ...]) -> tuple[int, ...]:
        """The shape ``self[a:a+rows, *rest]`` has, for slices and integers in ``rest``."""
        dims = [rows]
        for axis, index in enumerate(rest, start=1):
            if isinstance(index, slice):
                dims.append(len(range(*index.indices(self.shape[axis]))))
        return (*dims, *self.shape[1 + len(rest) :])

    def _check(self, key: Any, values: np.ndarray) -> None:
        rows = key[0] if isinstance(key, tuple) else key
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            return
        start, stop, _ = rows.indices(self.shape[0])
        size, expected = self.shard_size, self.expected or []
        for number in range(start // size, min(-(-stop // size), len(expected))):
            first, last = number * size, min((number + 1) * size, self.shape[0])
            if first < start or last > stop:  # only part of this shard was read
                continue
            wanted = expected[number]
            if wanted is not None and checksum(values[first - start : last - start]) != wanted:
                raise DamagedShardError(
                    f"{self.store}: shard {number} ({self.column}) does not match its checksum; run "
                    f"'latentdask verify {self.store}' to list the damaged shards, 'latentdask encode "
                    "--resume' to re-encode them (stats, select and render can leave them out with "
                    "--skip-damaged)",
                    shards=[number],
                )


#: the expected checksum of a finished shard whose checksums do not decode: no uint32 equals it
UNREADABLE = -1


def expected_checksums(group: Any, column: str) -> list[int | None] | None:
    """The recorded checksum of ``column`` per shard (None where not finished, :data:`UNREADABLE`
    where its checksums do not decode), or None without checksums."""
    if CHECKSUM_ARRAY not in set(group.array_keys()):
        return None
    names = list(group[CHECKSUM_ARRAY].attrs.get("columns", []))
    if column not in names:
        return None
    done = shards_done(group)
    recorded, readable = shard_rows(group[CHECKSUM_ARRAY])
    values = np.where(readable, recorded[:, names.index(column)].astype(np.int64), UNREADABLE)
    return [int(v) if finished else None for v, finished in zip(values.tolist(), done.tolist(), strict=True)]


def finished_fingerprint(group: Any) -> str | None:
    """A digest of which shards are finished and their recorded checksums (None without checksums).

    Equal digests mean the finished shards hold the same values: what was computed from
    them (the sidecar statistics) still describes them.
    """
    if CHECKSUM_ARRAY not in set(group.array_keys()):
        return None
    done = shards_done(group)
    recorded, readable = shard_rows(group[CHECKSUM_ARRAY])
    digest = hashlib.sha256(done.tobytes())
    if not readable.all():  # only then: the digests of whole stores stay those made before
        digest.update(readable.tobytes())
    digest.update(np.where(done[:, None], recorded, 0).astype("<u4").tobytes())
    return digest.hexdigest()


def verify_shard(store: str, number: int) -> str | None:
    """Why a finished shard is damaged (a column whose checksum differs, or that does not read), or None."""
    import zarr

    group: Any = zarr.open_group(store, mode="r")  # members are arrays, by the store's layout
    names = list(group[CHECKSUM_ARRAY].attrs["columns"])
    try:
        recorded = np.asarray(group[CHECKSUM_ARRAY][number])
    except UNDECODABLE as exc:  # its checksums' chunk does not decode: the shard cannot be trusted
        return f"checksums unreadable ({type(exc).__name__})"
    size = int(group.attrs["shard_size"])
    region = slice(number * size, min((number + 1) * size, int(group.attrs["n_images"])))
    for i, name in enumerate(names):
        try:
            values = np.asarray(group[name][region])
        except Exception as exc:  # a chunk that does not decode
            return f"{name} unreadable ({type(exc).__name__})"
        if checksum(values) != int(recorded[i]):
            return f"{name} does not match its checksum"
    return None


@dataclass
class Verification:
    """What ``verify`` found: damaged shards with their reason, how many were checked."""

    store: str
    checked: int
    unfinished: int
    damaged: dict[int, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        if not self.damaged:
            return [
                f"{self.store}: all {self.checked} finished shard(s) match their checksums"
                + (f"; {self.unfinished} unfinished" if self.unfinished else "")
            ]
        return [f"{self.store}: {len(self.damaged)} of {self.checked} finished shard(s) damaged"] + [
            f"  shard {number}: {reason}" for number, reason in sorted(self.damaged.items())
        ]


def verify_store(store: Where, *, client: Any = None) -> Verification:
    """Check every finished shard of a latent store against its checksums (on ``client``'s workers)."""
    group = open_store(store)
    if CHECKSUM_ARRAY not in set(group.array_keys()):
        raise StoreError(f"{store} records no checksums (made before latentdask stores kept them)")
    flags, readable = shard_rows(store_array(group, "shard_done"))
    done = np.asarray(flags, dtype=bool) & readable
    finished = [int(n) for n in np.flatnonzero(done)]
    path = identity(store)
    if client is not None:
        futures = client.map(
            verify_shard,
            [path] * len(finished),
            finished,
            key=[f"verify-shard-{number:06d}-{path}" for number in finished],
            pure=False,
        )
        reasons = WorkerWatch(client).results(futures, f"{len(finished)} shard(s) to verify")
    else:
        reasons = [verify_shard(path, number) for number in finished]
    damaged = {n: r for n, r in zip(finished, reasons, strict=True) if r is not None}
    damaged |= {
        int(n): "shard_done unreadable" for n in np.flatnonzero(~readable)
    }  # finished or not: unknown
    unfinished = int((~done & readable).sum())
    return Verification(str(store), checked=len(finished), unfinished=unfinished, damaged=damaged)


@contextlib.contextmanager
def listing_damaged(store: Where, *, client: Any = None) -> Iterator[None]:
    """Turn the first damaged shard a reading pass meets into one error listing every damaged shard."""
    try:
        yield
    except DamagedShardError as first:
        try:
            found = verify_store(store, client=client)
        except StoreError:  # not a latent store with checksums: the first error says all there is
            raise first from None
        if not found.damaged:
            raise
        listed = ", ".join(f"{number} ({reason})" for number, reason in sorted(found.damaged.items()))
        raise DamagedShardError(
            f"{store}: {len(found.damaged)} damaged shard(s): {listed}; 'latentdask encode --resume' encodes "
            "them again (stats, select and render can leave them out with --skip-damaged)",
            shards=sorted(found.damaged),
        ) from None
