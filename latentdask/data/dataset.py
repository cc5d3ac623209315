"""Open a dataset folder: CelebA's official layout, or any image folder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from latentdask.data.celeba import celeba_container, celeba_manifest, is_celeba_root
from latentdask.data.container import Container
from latentdask.data.decode import Decoded, Preprocessing, decode_image
from latentdask.data.folder import folder_container, folder_manifest
from latentdask.data.manifest import Manifest
from latentdask.errors import DatasetError
from latentdask.location import Location, Where, location


@dataclass(frozen=True)
class ImageDataset:
    """A dataset's manifest and the container its bytes come from; picklable."""

    root: Location
    kind: Literal["celeba", "folder"]
    container: Container
    manifest: Manifest

    def read(self, row: int) -> bytes:
        """The file bytes of manifest row ``row`` (raises ImageDecodeError if unreadable)."""
        return self.container.read(self.manifest.names[row])

    def load(self, row: int, prep: Preprocessing) -> Decoded:
        """Read and decode manifest row ``row``."""
        name = self.manifest.names[row]
        return decode_image(self.container.read(name), prep, name)

    def with_manifest(self, manifest: Manifest) -> ImageDataset:
        return ImageDataset(self.root, self.kind, self.container, manifest)

    def describe(self) -> list[str]:
        """Lines for ``latentdask info``."""
        m = self.manifest
        splits = ", ".join(f"{k} {v}" for k, v in m.split_counts().items())
        lines = [
            f"dataset     {self.root} ({self.kind}, images in {self.container})",
            f"images      {len(m)} ({splits})",
            f"attributes  {len(m.attribute_names)}"
            + (f": {', '.join(m.attribute_names[:6])}, ..." if m.attribute_names else ""),
            f"manifest    sha256 {m.sha256}",
        ]
        return lines + [f"note        {line}" for line in m.report.lines()]


def open_dataset(root: Where, *, split: str = "all") -> ImageDataset:
    """Open ``root`` as CelebA (if it holds ``img_align_celeba/`` or its zip) or as an image folder.

    Parameters
    ----------
    root
        The dataset folder.
    split
        ``all``, ``train``, ``valid`` or ``test``: restrict the manifest to those rows.

    Examples
    --------
    >>> ds = open_dataset("data/celeba", split="train")  # doctest: +SKIP
    >>> len(ds.manifest), ds.manifest.sha256[:8]  # doctest: +SKIP
    (162770, '...')
    """
    root = location(root)
    if not root.exists():
        raise DatasetError(f"dataset folder {root} does not exist")
    if not root.is_dir():
        raise DatasetError(f"dataset {root} is not a folder")
    if is_celeba_root(root):
        container: Container = celeba_container(root)
        dataset = ImageDataset(root, "celeba", container, celeba_manifest(root, container))
    else:
        folder = folder_container(root)
        dataset = ImageDataset(root, "folder", folder, folder_manifest(folder))
    return dataset.with_manifest(dataset.manifest.select_split(split))
