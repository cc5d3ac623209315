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
import shutil
import socket
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latentdask._version import __version__
from latentdask.errors import LatentdaskError

if TYPE_CHECKING:
    from PIL import Image

RECORD_FILE = "latentdask.json"
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


def read_record(path: str | Path, *, suffix: str | None = None) -> dict[str, Any] | None:
    """The record of the output at ``path``, or None when it carries none (or cannot be read).

    A file's format is told by its suffix (``suffix`` overrides it, for temporary names).
    """
    path = Path(path)
    try:
        if path.is_dir():
            if (path / RECORD_FILE).is_file():
                return _as_record(json.loads((path / RECORD_FILE).read_text()))
            if (path / "zarr.json").is_file():
                attributes = json.loads((path / "zarr.json").read_text()).get("attributes", {})
                legacy = _LEGACY_FORMATS.get(attributes.get("format"))
                return _as_record(attributes.get(RECORD_KEY)) or ({"kind": legacy} if legacy else None)
            return None
        suffix = (suffix or path.suffix).lower()
        if suffix == ".json":
            return _as_record(json.loads(path.read_text()).get(RECORD_KEY))
        if suffix == ".png":
            from PIL import Image

            with Image.open(path) as image:
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


def check_output(path: str | Path, kind: str, *, inputs: Sequence[str | Path] = ()) -> Path:
    """Refuse ``path`` unless it is free or this kind's own output, and no input lies at or under it.

    Also makes the parent folder and checks that it is writable, so that a command fails
    before its computing, not after. Returns ``path`` as a Path.
    """
    path = Path(path)
    target = path.resolve()
    for given in inputs:
        source = Path(given).resolve()
        if source == target or target in source.parents:
            what = "is" if source == target else "contains"
            raise OutputError(f"the output {path} {what} the input {given}; choose another output path")
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


def _empty_folder(path: Path) -> bool:
    """An empty folder holds nothing to lose: it may be replaced like a free path."""
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".latentdask-probe-{uuid.uuid4().hex[:8]}"
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"cannot write in {folder}: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class Staged:
    """Where a command writes an output before it is moved into place, and the record it must carry."""

    path: Path
    record: dict[str, Any]


@contextlib.contextmanager
def owned_output(
    path: str | Path,
    kind: str,
    *,
    inputs: Sequence[str | Path] = (),
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
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        _remove(staged.path)


def write_json(
    path: str | Path, payload: dict[str, Any], kind: str, *, inputs: Sequence[str | Path] = ()
) -> Path:
    """Write ``payload`` as JSON with its record under ``latentdask``, replacing only its own kind."""
    with owned_output(path, kind, inputs=inputs, folder=False) as staged:
        text = json.dumps({RECORD_KEY: staged.record, **payload}, indent=2, default=_plain) + "\n"
        _write_text(staged.path, text)
    return Path(path)


def save_png(image: Image.Image, path: str | Path, kind: str, *, inputs: Sequence[str | Path] = ()) -> Path:
    """Save ``image`` as PNG with its record in a text chunk, replacing only its own kind."""
    from PIL.PngImagePlugin import PngInfo

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise OutputError(f"{path}: images are written as PNG; give a path ending in .png")
    with owned_output(path, kind, inputs=inputs, folder=False) as staged:
        info = PngInfo()
        info.add_text(RECORD_KEY, json.dumps(staged.record))
        image.save(staged.path, format="PNG", pnginfo=info)
    return path


def save_figure(figure: Any, path: str | Path, kind: str, *, inputs: Sequence[str | Path] = ()) -> Path:
    """Save a matplotlib figure as PNG with its record in a text chunk, replacing only its own kind."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise OutputError(f"{path}: figures are written as PNG; give a path ending in .png")
    with owned_output(path, kind, inputs=inputs, folder=False) as staged:
        figure.savefig(staged.path, format="png", metadata={RECORD_KEY: json.dumps(staged.record)})
    return path


def write_html(path: str | Path, page: str, kind: str, *, inputs: Sequence[str | Path] = ()) -> Path:
    """Write an HTML page, its record in a ``<meta>`` tag after ``<head>``, replacing only its own kind."""
    with owned_output(path, kind, inputs=inputs, folder=False) as staged:
        meta = f'<meta name="latentdask" content="{html.escape(json.dumps(staged.record), quote=True)}">'
        head, sep, rest = page.partition("<head>")
        if not sep:
            raise RuntimeError("an HTML output needs a <head> to hold its record")
        _write_text(staged.path, f"{head}<head>\n{meta}{rest}")
    return Path(path)


def remove_leftovers(path: Path) -> list[Path]:
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
                _remove(entry)
                removed.append(entry)
    return removed


def _temporary_name(path: Path) -> Path:
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


def _move_into_place(staged: Path, path: Path, kind: str) -> None:
    """Rename ``staged`` to ``path``; an existing ``path`` (checked again: ``kind``) goes aside first."""
    if not (path.exists() or path.is_symlink()):
        os.replace(staged, path) if staged.is_file() else staged.rename(path)
        return
    check_output(path, kind)  # it may have changed while the command ran
    if staged.is_file():
        os.replace(staged, path)
        return
    old = _temporary_name(path)
    path.rename(old)
    try:
        staged.rename(path)
    except OSError:
        old.rename(path)
        raise
    _remove(old)


def _write_text(path: Path, text: str) -> None:
    with path.open("x", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _plain(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
