"""Where image bytes come from: a folder, or a zip file read in place.

Either may be local or on object storage (an fsspec URL, :mod:`latentdask.location`):
each worker reads the images it decodes itself, and a zip on object storage is read in
place with range requests (its central directory once, then the members a task needs).
A container is picklable (the zip handle is reopened lazily in each process) and
safe to read from several threads.

No file is read past :func:`file_byte_limit` bytes (64 MiB unless
``LATENTDASK_MAX_FILE_BYTES`` says otherwise): a larger one is an invalid row
("file too large"), decided from its size on disk or its declared size in the zip,
and the read itself stops at the limit, whatever a zip declares. Zip members whose
path climbs out of the archive (a ``..`` part) or is absolute are never used: they
are left out of the names and counted in :meth:`ZipContainer.ignored`.
"""

from __future__ import annotations

import threading
import zipfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import IO, Any

from latentdask.data.limits import env_limit
from latentdask.errors import DatasetError, ImageDecodeError
from latentdask.location import Where, is_remote, location, open_size

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})

#: Largest image file read by default; CelebA's are about 10 KB.
MAX_FILE_BYTES = 64 * 2**20

#: Environment variable holding another limit in bytes (a positive integer).
MAX_FILE_BYTES_ENV = "LATENTDASK_MAX_FILE_BYTES"

#: Bytes fetched per range request from a zip on object storage: a few CelebA images
#: (about 10 KB each) per request, read in member order by a shard's task.
ZIP_BLOCK_BYTES = 2**18


def file_byte_limit() -> int:
    """The largest file read: ``$LATENTDASK_MAX_FILE_BYTES``, else :data:`MAX_FILE_BYTES`.

    Examples
    --------
    >>> file_byte_limit() == MAX_FILE_BYTES  # doctest: +SKIP
    True
    """
    return env_limit(MAX_FILE_BYTES_ENV, "bytes") or MAX_FILE_BYTES


def _too_large(name: str, size: int, limit: int) -> ImageDecodeError:
    return ImageDecodeError(name, f"file too large ({size} bytes, limit {limit})")


def is_image_name(name: str) -> bool:
    """True for names with an image suffix (any case) that are not hidden files."""
    path = PurePosixPath(name)
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


class FolderContainer:
    """Images under a folder; names are POSIX paths relative to it."""

    def __init__(self, folder: Where, *, recursive: bool) -> None:
        self.folder = location(folder)
        self.recursive = recursive

    def __repr__(self) -> str:
        return f"FolderContainer({str(self.folder)!r})"

    def __str__(self) -> str:
        return f"the folder {self.folder}"

    def list_names(self) -> list[str]:
        """Image names on disk, sorted."""
        if not self.folder.is_dir():
            raise DatasetError(f"{self.folder} is not a folder")
        if is_remote(self.folder):  # one listing of every object under the prefix
            top = self.folder.path.rstrip("/") + "/"
            found = self.folder.fs.find(top, maxdepth=None if self.recursive else 1)
            names = (path.removeprefix(top) for path in found)
        else:
            pattern = "**/*" if self.recursive else "*"
            names = (
                path.relative_to(self.folder).as_posix()
                for path in self.folder.glob(pattern)
                if path.is_file()
            )
        return sorted(name for name in names if is_image_name(name))

    @property
    def fetches_together(self) -> bool:
        """True on object storage: a batch's files are fetched at once (:meth:`read_many`)."""
        return is_remote(self.folder)

    def read_many(self, names: Sequence[str]) -> list[bytes | ImageDecodeError]:
        """The files' bytes as :meth:`read` gives them, or the error it would raise, per name.

        On object storage every file's request is in flight at once (one range request of
        at most :func:`file_byte_limit` + 1 bytes each), so a batch costs about one round
        trip, not one per image; locally the files are read one by one.
        """
        if not is_remote(self.folder):
            return [_read_or_error(self.read, name) for name in names]
        limit = file_byte_limit()
        paths = [(self.folder / name).path for name in names]
        fetched = self.folder.fs.cat_ranges(
            paths, [0] * len(paths), [limit + 1] * len(paths), on_error="return"
        )
        results: list[bytes | ImageDecodeError] = []
        for name, data in zip(names, fetched, strict=True):
            if isinstance(data, FileNotFoundError):
                results.append(ImageDecodeError(name, "listed but missing"))
            elif isinstance(data, BaseException):
                results.append(ImageDecodeError(name, f"unreadable file ({data})"))
            elif len(data) > limit:
                results.append(_too_large(name, len(data), limit))
            else:
                results.append(bytes(data))
        return results

    def read(self, name: str) -> bytes:
        """The file's bytes, at most :func:`file_byte_limit` of them (else ImageDecodeError)."""
        limit = file_byte_limit()
        try:
            with (self.folder / name).open("rb") as file:
                size = open_size(file)
                if size > limit:
                    raise _too_large(name, size, limit)
                data = file.read(size + 1)  # a buffer of the file's size, not of the limit
                if len(data) > size:  # it grew since: read on, up to the limit
                    data += file.read(limit + 1 - len(data))
        except FileNotFoundError:
            raise ImageDecodeError(name, "listed but missing") from None
        except OSError as exc:
            raise ImageDecodeError(name, f"unreadable file ({exc.strerror})") from None
        if len(data) > limit:
            raise _too_large(name, len(data), limit)
        return data


class ZipContainer:
    """Images inside a zip file, read without extracting; names drop the zip's top folder.

    CelebA's ``img_align_celeba.zip`` holds ``img_align_celeba/000001.jpg`` …; the
    names are ``000001.jpg`` …, the same as for the extracted folder. The top folder is
    the one that holds every image; other files (a README beside it, macOS's
    ``__MACOSX/`` copies) do not change it.
    """

    def __init__(self, path: Where) -> None:
        self.path = location(path)
        self._lock = threading.Lock()
        self._zip: zipfile.ZipFile | None = None
        self._members: dict[str, zipfile.ZipInfo] | None = None
        self._ignored: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"ZipContainer({str(self.path)!r})"

    def __str__(self) -> str:
        return f"the zip archive {self.path}"

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])  # type: ignore[misc]

    def _open(self) -> tuple[zipfile.ZipFile, dict[str, zipfile.ZipInfo]]:
        with self._lock:
            if self._zip is None or self._members is None:
                try:
                    archive = zipfile.ZipFile(self._file())
                except (OSError, zipfile.BadZipFile) as exc:
                    raise DatasetError(f"{self.path}: cannot open as a zip file ({exc})") from None
                files = {info.filename: info for info in archive.infolist() if not info.is_dir()}
                names, ignored = member_names(list(files))
                self._members = {name: files[member] for name, member in names.items()}
                self._ignored = tuple(ignored)
                self._zip = archive
            return self._zip, self._members

    def _file(self) -> IO[bytes] | Path:
        """A local zip by its path; one on object storage through a file read in ranges."""
        if is_remote(self.path):
            handle: IO[bytes] = self.path.fs.open(self.path.path, "rb", block_size=ZIP_BLOCK_BYTES)
            return handle
        return self.path

    #: members are ranges of one object, read through its block cache: one request per block
    fetches_together = False

    def read_many(self, names: Sequence[str]) -> list[bytes | ImageDecodeError]:
        """The members' bytes as :meth:`read` gives them, or the error it would raise, per name."""
        return [_read_or_error(self.read, name) for name in names]

    def list_names(self) -> list[str]:
        _, members = self._open()
        return sorted(name for name in members if is_image_name(name))

    def ignored(self) -> tuple[str, ...]:
        """Member names never used: ``..`` parts or absolute paths."""
        self._open()
        return self._ignored

    def read(self, name: str) -> bytes:
        """The member's bytes, at most :func:`file_byte_limit` of them (else ImageDecodeError)."""
        archive, members = self._open()
        info = members.get(name)
        if info is None:
            raise ImageDecodeError(name, "listed but missing")
        limit = file_byte_limit()
        if info.file_size > limit:
            raise _too_large(name, info.file_size, limit)
        try:
            # the declared size is only a claim: the read stops past the limit whatever it says
            with archive.open(info) as member:
                data = member.read(limit + 1)
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise ImageDecodeError(name, f"unreadable zip member ({exc})") from None
        except (RuntimeError, NotImplementedError) as exc:  # encrypted; unknown compression
            raise ImageDecodeError(name, f"unsupported zip member ({exc})") from None
        if len(data) > limit:
            raise _too_large(name, len(data), limit)
        return data


def _read_or_error(read: Callable[[str], bytes], name: str) -> bytes | ImageDecodeError:
    try:
        return read(name)
    except ImageDecodeError as exc:
        return exc


def is_unsafe_member(member: str) -> bool:
    """True for a zip member path that is absolute or climbs with ``..`` (either slash)."""
    path = member.replace("\\", "/")
    parts = path.split("/")
    return path.startswith("/") or ".." in parts or (len(parts[0]) == 2 and parts[0][1] == ":")


def member_names(members: list[str]) -> tuple[dict[str, str], list[str]]:
    """Names (without the images' common top folder) → member names, and the unsafe members.

    Unsafe members (:func:`is_unsafe_member`) and macOS's ``__MACOSX/`` copies take no
    part: neither in the names nor in finding the top folder, which is the single first
    path part of every image member, if they have one.
    """
    ignored = [member for member in members if is_unsafe_member(member)]
    usable = [m for m in members if not is_unsafe_member(m) and not m.startswith("__MACOSX/")]
    images = [member for member in usable if is_image_name(member)]
    tops = {member.split("/", 1)[0] for member in images}
    if len(tops) != 1 or not all("/" in member for member in images):
        return {member: member for member in usable}, ignored
    top = f"{tops.pop()}/"
    return {member.removeprefix(top): member for member in usable}, ignored


Container = FolderContainer | ZipContainer
