"""Where image bytes come from: a folder, or a zip file read in place.

A container is picklable (the zip handle is reopened lazily in each process) and
safe to read from several threads.
"""

from __future__ import annotations

import threading
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from latentdask.errors import DatasetError, ImageDecodeError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})


def is_image_name(name: str) -> bool:
    """True for names with an image suffix (any case) that are not hidden files."""
    path = PurePosixPath(name)
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


class FolderContainer:
    """Images under a folder; names are POSIX paths relative to it."""

    def __init__(self, folder: str | Path, *, recursive: bool) -> None:
        self.folder = Path(folder)
        self.recursive = recursive

    def __repr__(self) -> str:
        return f"FolderContainer({str(self.folder)!r})"

    def list_names(self) -> list[str]:
        """Image names on disk, sorted."""
        if not self.folder.is_dir():
            raise DatasetError(f"{self.folder} is not a folder")
        pattern = "**/*" if self.recursive else "*"
        names = (
            path.relative_to(self.folder).as_posix() for path in self.folder.glob(pattern) if path.is_file()
        )
        return sorted(name for name in names if is_image_name(name))

    def read(self, name: str) -> bytes:
        try:
            return (self.folder / name).read_bytes()
        except FileNotFoundError:
            raise ImageDecodeError(name, "listed but missing") from None
        except OSError as exc:
            raise ImageDecodeError(name, f"unreadable file ({exc.strerror})") from None


class ZipContainer:
    """Images inside a zip file, read without extracting; names drop the zip's top folder.

    CelebA's ``img_align_celeba.zip`` holds ``img_align_celeba/000001.jpg`` …; the
    names are ``000001.jpg`` …, the same as for the extracted folder.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._zip: zipfile.ZipFile | None = None
        self._members: dict[str, str] | None = None

    def __repr__(self) -> str:
        return f"ZipContainer({str(self.path)!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])  # type: ignore[misc]

    def _open(self) -> tuple[zipfile.ZipFile, dict[str, str]]:
        with self._lock:
            if self._zip is None or self._members is None:
                try:
                    archive = zipfile.ZipFile(self.path)
                except (OSError, zipfile.BadZipFile) as exc:
                    raise DatasetError(f"{self.path}: cannot open as a zip file ({exc})") from None
                self._members = _strip_top_folder(
                    [info.filename for info in archive.infolist() if not info.is_dir()]
                )
                self._zip = archive
            return self._zip, self._members

    def list_names(self) -> list[str]:
        _, members = self._open()
        return sorted(name for name in members if is_image_name(name))

    def read(self, name: str) -> bytes:
        archive, members = self._open()
        member = members.get(name)
        if member is None:
            raise ImageDecodeError(name, "listed but missing")
        try:
            return archive.read(member)
        except (OSError, zipfile.BadZipFile, EOFError) as exc:
            raise ImageDecodeError(name, f"unreadable zip member ({exc})") from None


def _strip_top_folder(members: list[str]) -> dict[str, str]:
    """Map names without a common top folder to the zip's member names."""
    tops = {member.split("/", 1)[0] for member in members}
    if len(tops) == 1 and all("/" in member for member in members):
        return {member.split("/", 1)[1]: member for member in members}
    return {member: member for member in members}


Container = FolderContainer | ZipContainer
