"""One writer per latent store: an exclusive lock file beside it, naming the writer.

``latents.zarr.lock`` is created exclusively (:func:`~latentdask.location.create_exclusive`:
``O_CREAT | O_EXCL`` on local and NFSv3+ file systems, a conditional write on S3 and
stores like it; elsewhere on object storage, a check then a write) and holds the
writer's host, process id, process start time, run id and command line. A second
writer is refused with one line naming the first. A lock whose writer is gone is stale
and taken over: on the same host, when its process no longer exists or is another
process under a reused id (its start time differs). A lock from another host cannot be
checked from here; the message says so and which file to remove once that run is known
to be gone. On object storage, breaking a stale lock is a copy then a delete, not a
rename: two runs breaking the same stale lock in the same instant could both go on (the
store's ``writer_run`` still keeps the first one's tasks from writing).

The run id is also written into the store's attributes (``writer_run``): a shard's task
writes only while it still matches (see ``latentdask.encode.run``), so tasks left running
by a killed client never write into a store another run has taken over.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from latentdask.errors import LatentdaskError
from latentdask.location import Location, Where, create_exclusive, location, modified, move_file

#: a lock file that stays empty or unreadable this long was left by a writer killed while creating it
UNREADABLE_GRACE_SECONDS = 30.0


class StoreLockedError(LatentdaskError):
    """Another run is writing the store."""


@dataclass(frozen=True)
class WriterLock:
    """A held lock: its file and the run id this writer stamps on the store."""

    path: Location
    run_id: str


def lock_path(store: Where) -> Location:
    """``latents.zarr`` → ``latents.zarr.lock`` beside it."""
    store = location(store)
    return store.with_name(store.name + ".lock")


@contextlib.contextmanager
def writer_lock(store: Where) -> Iterator[WriterLock]:
    """Hold the store's writer lock for the block; refuse (StoreLockedError) if another run holds it."""
    lock = acquire(store)
    try:
        yield lock
    finally:
        release(lock)


def acquire(store: Where) -> WriterLock:
    path = lock_path(store)
    owner = _me()
    for _ in range(3):
        try:
            create_exclusive(path, json.dumps(owner).encode())
        except FileExistsError:
            holder = _read(path)
            if not _stale(holder, path):
                raise StoreLockedError(_describe(store, path, holder)) from None
            _break(path)
            continue
        return WriterLock(path, owner["run_id"])
    raise StoreLockedError(f"{store}: could not take the writer lock {path}; try again")


def release(lock: WriterLock) -> None:
    """Remove the lock file if it is still this run's."""
    holder = _read(lock.path)
    if holder is not None and holder.get("run_id") == lock.run_id:
        with contextlib.suppress(FileNotFoundError):
            lock.path.unlink()


def _me() -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "process_started": _process_started(os.getpid()),
        "run_id": uuid.uuid4().hex,
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _process_started(pid: int) -> float | None:
    try:
        import psutil

        return round(psutil.Process(pid).create_time(), 2)
    except Exception:  # psutil missing, or no such process
        return None


def _read(path: Location) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _stale(holder: dict[str, Any] | None, path: Location) -> bool:
    if holder is None:  # being written right now, or left half-written by a killed writer
        try:
            return time.time() - modified(path) > UNREADABLE_GRACE_SECONDS
        except FileNotFoundError:
            return True
    if holder.get("host") != socket.gethostname():
        return False
    pid = holder.get("pid")
    if not isinstance(pid, int):
        return False
    started = _process_started(pid)
    return started is None or (holder.get("process_started") not in (None, started))


def _break(path: Location) -> None:
    """Move a stale lock aside (on a local file system, one contender wins the rename) and remove it."""
    aside = path.with_name(f".{path.name}.stale-{uuid.uuid4().hex[:8]}")
    with contextlib.suppress(FileNotFoundError):
        move_file(path, aside)
        aside.unlink()


def _describe(store: Where, path: Location, holder: dict[str, Any] | None) -> str:
    if holder is None:
        return (
            f"{store} is being written by another run (its lock {path} is being created); try again shortly"
        )
    where = "this machine" if holder.get("host") == socket.gethostname() else f"host {holder.get('host')}"
    text = (
        f"{store} is being written by another run: process {holder.get('pid')} on {where} since "
        f"{holder.get('since')} ({holder.get('command')!s}); wait for it to finish or stop it"
    )
    if holder.get("host") != socket.gethostname():
        text += f" (if that run is gone, delete {path})"
    return text
