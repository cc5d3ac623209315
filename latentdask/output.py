"""Outputs a command owns: written beside under a temporary name, with a record, then moved into place.

The rule every command and workflow step follows (DESIGN.md, "Formats"):

1. An output path that exists (other than an empty folder) is replaced only when it
   carries this kind of output's record — otherwise the command stops, before any
   computing, with one line saying why. There is no flag that overrides this: a folder
   without the record is never deleted.
2. An output never equals or contains one of the command's inputs.
3. The output is written under a temporary name beside its final path (same folder,
   so the final move is a rename) and moved into place only when complete: a reader
   never sees half a result, and a killed run leaves only a temporary name behind.
   Object storage has no rename: there a folder output is copied object by object, its
   record last, with a marker (``.latentdask-moving.json``, holding the record) in place
   first — a move killed half-way leaves an output the next run recognises and replaces
   (:func:`_move_into_place`).
4. Temporary names left by a killed run of this machine are removed by the next
   command that writes the same path; those of a run still alive are left alone.

The record names the kind of output, the command line and the time:

- a folder holds it as ``latentdask.json``;
- a Zarr group (stores, ``stats.zarr``, ``POINTS.zarr``) in its attributes under
  ``latentdask`` (Zarr warns about foreign files in a group);
- a JSON file under its top-level key ``latentdask``; a PNG in a text chunk; an HTML
  page in a ``<meta name="latentdask">`` tag.
"""

from __future__ import annotations

import contextlib
import errno
import html
import json
import os
import re
import shlex
import socket
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from latentdask._version import __version__
from latentdask.errors import LatentdaskError
from latentdask.location import (
    Location,
    Where,
    inside,
    is_remote,
    location,
    move_file,
    move_tree,
    remove_tree,
)

if TYPE_CHECKING:
    from PIL import Image

RECORD_FILE = "latentdask.json"
#: beside the objects of a folder output being copied into place on object storage: its record
MOVING_FILE = ".latentdask-moving.json"
RECORD_KEY = "latentdask"
#: latent stores made before records existed are recognised by their format attribute
_LEGACY_FORMATS = {"latentdask-latents": "latent-store"}
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.latentdask-(?P<host>[^.]+)-(?P<pid>\d+)-[0-9a-f]{8}$")
#: what the operating system says when an output cannot be written: disk or quota full, file
#: size limit, read-only file system, no permission
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM)
_HTML_RECORD = re.compile(r'<meta name="latentdask" content="(?P<content>[^"]*)">')


class OutputError(LatentdaskError):
    """An output path that may not be written: someone else's, an input, or not writable."""


def record(kind: str, **params: Any) -> dict[str, Any]:
    """The record an output of ``kind`` carries: kind, command line, parameters, time, version."""
    return {
        "kind": kind,
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
        "params": params,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "package_version": __version__,
    }


def read_record(path: Where, *, suffix: str | None = None) -> dict[str, Any] | None:
    """The record of the output at ``path``, or None when it carries none (or cannot be read).

    A file's format is told by its suffix (``suffix`` overrides it, for temporary names).
    """
    path = location(path)
    try:
        if path.is_dir():
            if (path / RECORD_FILE).is_file():
                return _as_record(json.loads((path / RECORD_FILE).read_text()))
            if (path / "zarr.json").is_file():
                attributes = json.loads((path / "zarr.json").read_text()).get("attributes", {})
                legacy = _LEGACY_FORMATS.get(attributes.get("format"))
                return _as_record(attributes.get(RECORD_KEY)) or ({"kind": legacy} if legacy else None)
            if is_remote(path) and (path / MOVING_FILE).is_file():  # a move into place cut short
                return _as_record(json.loads((path / MOVING_FILE).read_text()))
            return None
        suffix = (suffix or path.suffix).lower()
        if suffix == ".json":
            return _as_record(json.loads(path.read_text()).get(RECORD_KEY))
        if suffix == ".png":
            from PIL import Image

            with path.open("rb") as file, Image.open(file) as image:
                text = image.info.get(RECORD_KEY)
            return _as_record(json.loads(text)) if isinstance(text, str) else None
        if suffix in (".html", ".htm"):
            with path.open(encoding="utf-8", errors="replace") as page:
                match = _HTML_RECORD.search(page.read(4096))
            return _as_record(json.loads(html.unescape(match["content"]))) if match else None
    except (OSError, ValueError, AttributeError):
        return None
    return None


def _as_record(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) and isinstance(value.get("kind"), str) else None


def check_output(path: Where, kind: str, *, inputs: Sequence[Where] = ()) -> Location:
    """Refuse ``path`` unless it is free or this kind's own output, no input lies at or under it, and
    it lies under no input.

    Also makes the parent folder (of a local path) and checks that it is writable, so that
    a command fails before its computing, not after. Returns ``path`` as a
    :data:`~latentdask.location.Location`.
    """
    path = location(path)
    if is_remote(path) and "/" not in path.path.strip("/"):
        raise OutputError(f"{path} is a bucket, not an output path; give a path inside it")
    for given in inputs:
        if inside(given, path):
            what = "is" if inside(path, given) else "contains"
            raise OutputError(f"the output {path} {what} the input {given}; choose another output path")
        if inside(path, given):  # written into an input: a store's own folder, a dataset's images
            raise OutputError(f"the output {path} lies inside the input {given}; choose another output path")
    if (path.exists() or path.is_symlink()) and not _empty_folder(path):
        found = read_record(path) if not path.is_symlink() else None
        if found is None or found["kind"] != kind:
            what = f"a latentdask {found['kind']} output" if found else "not a latentdask output"
            raise OutputError(
                f"{path} exists and is {what}; refusing to replace it with a {kind} output "
                "(choose another path, or move it away yourself)"
            )
    _check_writable(path.parent)
    return path


def _empty_folder(path: Location) -> bool:
    """An empty folder holds nothing to lose: it may be replaced like a free path."""
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def _check_writable(folder: Location) -> None:
    try:
        if not is_remote(folder):  # object storage has no folders to make (nor buckets to make here)
            folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".latentdask-probe-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"cannot write in {folder}: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class Staged:
    """Where a command writes an output before it is moved into place, and the record it must carry."""

    path: Location
    record: dict[str, Any]


@contextlib.contextmanager
def owned_output(
    path: Where,
    kind: str,
    *,
    inputs: Sequence[Where] = (),
    params: dict[str, Any] | None = None,
    folder: bool = True,
    zarr: bool = False,
) -> Iterator[Staged]:
    """Check ``path`` (see :func:`check_output`), yield a temporary path beside it, then move it into place.

    A ``folder`` output gets an empty temporary folder; unless it is a ``zarr`` group
    (whose writer puts ``Staged.record`` in the group's attributes under ``latentdask``)
    the record is written into it as ``latentdask.json``. A file output gets a
    temporary file name: its writer embeds the record (see :func:`write_json`,
    :func:`save_png`, :func:`write_html`). If the block raises, the temporary path is
    removed and nothing else is touched; a full disk or a failing write becomes an
    :class:`OutputError`.

    Examples
    --------
    >>> with owned_output("figures", "projections", inputs=["latents.zarr"]) as staged:  # doctest: +SKIP
    ...     (staged.path / "a.png").write_bytes(png)
    """
    path = check_output(path, kind, inputs=inputs)
    remove_leftovers(path)
    staged = Staged(_temporary_name(path), record(kind, **(params or {})))
    try:
        if folder:
            if not is_remote(staged.path):
                staged.path.mkdir()
            if not zarr:
                _write_text(staged.path / RECORD_FILE, json.dumps(staged.record, indent=2) + "\n")
        yield staged
        if not (staged.path.is_dir() if folder else staged.path.is_file()):
            raise OutputError(f"{path}: nothing was written")
        found = read_record(staged.path, suffix=path.suffix)
        if found is None or found["kind"] != kind:
            raise RuntimeError(f"{kind} output written to {staged.path} without its record")
        _move_into_place(staged.path, path, kind)
    except OSError as exc:  # object storage drivers raise OSErrors without an errno: all are one line
        if exc.errno not in WRITE_ERRNOS and not is_remote(path):
            raise
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        remove_tree(staged.path)


def write_json(path: Where, payload: dict[str, Any], kind: str, *, inputs: Sequence[Where] = ()) -> Location:
    """Write ``payload`` as JSON with its record under ``latentdask``, replacing only its own kind."""
    with owned_output(path, kind, inputs=inputs, folder=False) as staged:
        text = json.dumps({RECORD_KEY: staged.record, **payload}, indent=2, default=_plain) + "\n"
        _write_text(staged.path, text)
    return location(path)


def save_png(image: Image.Image, path: Where, kind: str, *, inputs: Sequence[Where] = ()) -> Location:
    """Save ``image`` as PNG with its record in a text chunk, replacing only its own kind."""
    from PIL.PngImagePlugin import PngInfo

    path = location(path)
    if path.suffix.lower() != ".png":
        raise OutputError(f"{path}: images are written as PNG; give a path ending in .png")
    with owned_output(path, kind, inputs=inputs, folder=False) as staged, _new_file(staged.path) as file:
        info = PngInfo()
        info.add_text(RECORD_KEY, json.dumps(staged.record))
        image.save(file, format="PNG", pnginfo=info)
    return path


def save_figure(figure: Any, path: Where, kind: str, *, inputs: Sequence[Where] = ()) -> Location:
    """Save a matplotlib figure as PNG with its record in a text chunk, replacing only its own kind."""
    path = location(path)
    if path.suffix.lower() != ".png":
        raise OutputError(f"{path}: figures are written as PNG; give a path ending in .png")
    with owned_output(path, kind, inputs=inputs, folder=False) as staged, _new_file(staged.path) as file:
        figure.savefig(file, format="png", metadata={RECORD_KEY: json.dumps(staged.record)})
    return path


def write_html(path: Where, page: str, kind: str, *, inputs: Sequence[Where] = ()) -> Location:
    """Write an HTML page, its record in a ``<meta>`` tag after ``<head>``, replacing only its own kind."""
    with owned_output(path, kind, inputs=inputs, folder=False) as staged:
        meta = f'<meta name="latentdask" content="{html.escape(json.dumps(staged.record), quote=True)}">'
        head, sep, rest = page.partition("<head>")
        if not sep:
            raise RuntimeError("an HTML output needs a <head> to hold its record")
        _write_text(staged.path, f"{head}<head>\n{meta}{rest}")
    return location(path)


def remove_leftovers(path: Location) -> list[Location]:
    """Remove temporary names of ``path`` left by killed runs on this machine; return them."""
    removed = []
    host = _host()
    with contextlib.suppress(OSError):
        for entry in path.parent.iterdir():
            match = _TEMPORARY.match(entry.name)
            if (
                match
                and match["name"] == path.name
                and match["host"] == host
                and not _alive(int(match["pid"]))
            ):
                remove_tree(entry)
                removed.append(entry)
    return removed


def _temporary_name(path: Location) -> Location:
    return path.with_name(f".{path.name}.latentdask-{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname()) or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _move_into_place(staged: Location, path: Location, kind: str) -> None:
    """Rename ``staged`` to ``path``; an existing ``path`` (checked again: ``kind``) goes aside first.

    Object storage has no rename: a file is copied (one object: atomic), a folder is
    moved object by object with its record last (:func:`~latentdask.location.move_tree`).
    """
    exists = path.exists() or path.is_symlink()
    if exists:
        check_output(path, kind)  # it may have changed while the command ran
    if staged.is_file() or not (exists or is_remote(path)):
        move_file(staged, path)
        return
    if is_remote(staged) and is_remote(path):
        # the marker says whose objects these are until the record is copied; the move removes it
        (path / MOVING_FILE).write_text(json.dumps(read_record(staged)))
        move_tree(staged, path, last=("zarr.json", RECORD_FILE))
        return
    old = _temporary_name(path)
    move_file(path, old)
    try:
        move_file(staged, path)
    except OSError:
        move_file(old, path)
        raise
    remove_tree(old)


def _new_file(path: Location) -> IO[bytes]:
    """A temporary name opened for writing: exclusively on a local file system; on object storage
    plainly (the name is unique, and not every S3-compatible server does conditional writes)."""
    handle: IO[bytes] = path.open("wb") if is_remote(path) else path.open("xb")
    return handle


def _write_text(path: Location, text: str) -> None:
    if is_remote(path):
        with _new_file(path) as handle:
            handle.write(text.encode())
        return
    with path.open("x", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _plain(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
