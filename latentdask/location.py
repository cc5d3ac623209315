"""Where data lies: a local path or an fsspec URL, alike.

Every path latentdask reads or writes may be a local path or an fsspec URL:
``s3://bucket/runs/celeba``, ``gs://…``, ``abfs://…``, ``memory://…`` (one process's
memory: for tests). :func:`location` turns either into an object with pathlib's
interface — a :class:`pathlib.Path` for a local path or a ``file://`` URL, else a
``upath.UPath`` over the URL's fsspec file system — so the code that reads a dataset or
writes a store is the same for both. What pathlib cannot say for object storage lives
here: a location's identity (:func:`identity`), whether one lies inside another, a
file's size, exclusive creation and moving a tree of objects (:func:`move_tree`).

Credentials come from the usual places only, on the client and on every worker alike:
the environment (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``,
``GOOGLE_APPLICATION_CREDENTIALS``, ``AZURE_STORAGE_ACCOUNT_NAME``, …), the provider's
own configuration files, fsspec's configuration (``~/.config/fsspec/*.json`` or
``FSSPEC_<PROTOCOL>_<OPTION>`` variables, e.g. ``FSSPEC_S3_ENDPOINT_URL``), and a
workflow's ``storage_options`` (:func:`use_storage_options`). A URL never carries them,
so nothing latentdask prints or records (``run.json``, a store's attributes) can hold one.

Object storage lists lazily and caches listings; latentdask's file systems are opened
without the listings cache (``use_listings_cache=False``), because a store written by
the workers must be seen by the client at once.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeAlias

from latentdask.errors import LatentdaskError

if TYPE_CHECKING:  # upath (and fsspec) are imported only when a URL is met
    from typing_extensions import TypeIs
    from upath import UPath

#: a local path or a path on an fsspec file system; both have pathlib's interface
Location: TypeAlias = "Path | UPath"
#: what a location may be given as: a local path (str or path-like) or an fsspec URL
Where: TypeAlias = "str | os.PathLike[str] | UPath"

_LOCAL_PROTOCOLS = frozenset({"", "file", "local"})
#: file systems whose ``xb`` mode creates a file only if it is absent, in one request
_EXCLUSIVE_PROTOCOLS = frozenset({"s3", "s3a", "memory"})
#: the optional extra that installs the driver of a protocol
_EXTRAS = {
    "s3": "s3",
    "s3a": "s3",
    "gs": "gcs",
    "gcs": "gcs",
    "abfs": "azure",
    "abfss": "azure",
    "az": "azure",
}


class LocationError(LatentdaskError):
    """A URL whose file system is unknown here, or whose driver is not installed."""


def use_storage_options(options: Mapping[str, Mapping[str, Any]]) -> None:
    """Give this process's new fsspec file systems ``options`` per protocol (``{"s3": {"key": …}}``),
    through fsspec's configuration, as ``~/.config/fsspec/*.json`` would; a workflow's
    ``storage_options``, set on the client and, by a worker plugin, on every worker."""
    import fsspec.config

    for protocol, values in options.items():
        fsspec.config.conf.setdefault(protocol, {}).update(values)


def location(value: Where) -> Location:
    """A local path (``~`` expanded) or an fsspec URL as a pathlib-like object.

    Examples
    --------
    >>> location("runs/demo")
    PosixPath('runs/demo')
    >>> str(location("memory://bucket/latents.zarr"))
    'memory://bucket/latents.zarr'
    """
    if isinstance(value, Path):
        return value
    text = str(value) if hasattr(value, "protocol") else os.fspath(value)  # a UPath, or path-like
    protocol = _protocol(text)
    if protocol in _LOCAL_PROTOCOLS:
        return Path(text.removeprefix(f"{protocol}://") if protocol else text).expanduser()
    if hasattr(value, "protocol"):
        return value  # type: ignore[return-value]  # a UPath on a remote file system
    from fsspec import get_filesystem_class
    from upath import UPath

    try:  # the driver is imported (and refused) here, not mid-run; the file system is made on first use
        get_filesystem_class(protocol)
        path = UPath(text, use_listings_cache=False)
    except (ImportError, ValueError) as exc:
        extra = _EXTRAS.get(protocol)
        hint = f"pip install 'latentdask[{extra}]'" if extra else "is its fsspec driver installed?"
        raise LocationError(f"{text}: no file system for {protocol}:// here ({exc}); {hint}") from None
    return path


def is_remote(path: Location) -> TypeIs[UPath]:
    """True for a location on an fsspec file system other than the local one."""
    return getattr(path, "protocol", "") not in _LOCAL_PROTOCOLS


def identity(path: Where) -> str:
    """What names a location everywhere: an absolute local path, or the URL without a trailing slash."""
    where = location(path)
    return str(where).rstrip("/") if is_remote(where) else str(where.resolve())


def inside(inner: Where, outer: Where) -> bool:
    """True when ``inner`` is ``outer`` or lies under it."""
    a, b = identity(inner), identity(outer)
    return a == b or a.startswith(b.rstrip("/") + "/")


def relative(inner: Where, outer: Where) -> str:
    """The POSIX path of ``inner`` relative to ``outer``, which holds it (ValueError otherwise)."""
    if not inside(inner, outer):
        raise ValueError(f"{inner} does not lie in {outer}")
    return identity(inner)[len(identity(outer).rstrip("/")) + 1 :]


def open_size(handle: IO[bytes]) -> int:
    """The size of an open file: from the descriptor for a local file, from the object otherwise."""
    size = getattr(handle, "size", None)
    return int(size) if size is not None else os.fstat(handle.fileno()).st_size


def modified(path: Location) -> float:
    """The time ``path`` was last written, in seconds since the epoch."""
    if is_remote(path):
        return float(path.fs.modified(path.path).timestamp())
    return path.stat().st_mtime


def create_exclusive(path: Location, data: bytes) -> None:
    """Write ``data`` to a new file at ``path``; FileExistsError if it exists.

    Atomic on local and NFSv3+ file systems (``O_CREAT | O_EXCL``) and on S3 (s3fs writes
    ``xb`` files with a conditional write, ``If-None-Match``; on S3-compatible servers
    without it every creation fails, and says so). Elsewhere on object storage it checks
    for the file then writes it: two writers starting within the same instant could both
    succeed.
    """
    if not is_remote(path):
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        return
    if path.protocol not in _EXCLUSIVE_PROTOCOLS and path.fs.exists(path.path):
        raise FileExistsError(str(path))
    mode = "xb" if path.protocol in _EXCLUSIVE_PROTOCOLS else "wb"
    with path.fs.open(path.path, mode) as handle:
        handle.write(data)


def remove_tree(path: Location) -> None:
    """Remove a file or a folder (every object under the prefix); nothing when it is absent.

    On object storage each object is listed, then removed by its exact key: no key is
    read as a glob pattern (a ``[`` or ``*`` in a name matches nothing else).
    """
    if is_remote(path):
        keys = [path.path] if path.fs.isfile(path.path) else path.fs.find(path.path)
        for key in keys:
            path.fs.rm_file(key)
    elif path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def move_file(source: Location, target: Location) -> None:
    """Move a file (or a local folder, onto a free name): a rename on a local file system; on
    object storage a copy then a delete (one object appears whole: a reader sees the old file
    or the new one)."""
    if is_remote(source) and is_remote(target):
        source.fs.cp_file(source.path, target.path)
        source.fs.rm_file(source.path)
    elif not (is_remote(source) or is_remote(target)):
        os.replace(source, target)
    else:
        raise ValueError(f"cannot move {source} to {target}: another file system")


def move_tree(source: UPath, target: UPath, *, last: Iterable[str] = ()) -> None:
    """Move the objects under ``source`` to ``target`` (object storage has no rename).

    Objects are copied one by one, each by its exact key. The relative names in ``last``
    (the files that carry an output's record: ``zarr.json``, ``latentdask.json``) are
    copied after every other object, so a reader never finds the record of an output
    whose objects are not all in place. Then objects of an earlier ``target`` that the new
    one does not have are removed, and ``source`` last. Not atomic: a reader during the
    move may see old and new objects side by side.
    """
    fs = source.fs
    start, end = source.path.rstrip("/"), target.path.rstrip("/")
    names = [key[len(start) + 1 :] for key in fs.find(start)]
    before = {key[len(end) + 1 :] for key in fs.find(end)}
    final = [name for name in last if name in names]
    for name in [name for name in names if name not in final] + final:
        fs.cp_file(f"{start}/{name}", f"{end}/{name}")
    for name in sorted(before - set(names)):
        fs.rm_file(f"{end}/{name}")
    for name in names:
        fs.rm_file(f"{start}/{name}")


def _protocol(text: str) -> str:
    """The URL's protocol (of its first layer in a chained URL, ``simplecache::s3://…``), or ""."""
    head, sep, _ = text.split("::", 1)[0].partition("://")
    if not sep and "::" in text:
        head, sep = text.split("::", 1)[0], "::"
    return head.lower() if sep and head.isidentifier() else ""
