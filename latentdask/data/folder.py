"""Any folder of images (jpg, jpeg, png, webp; any case; recursive), sorted by path."""

from __future__ import annotations

import numpy as np

from latentdask.data.container import FolderContainer
from latentdask.data.manifest import Manifest
from latentdask.errors import DatasetError
from latentdask.location import Where


def folder_manifest(container: FolderContainer) -> Manifest:
    """Every image under the folder, in sorted POSIX-path order; split -1, no attributes."""
    names = container.list_names()
    if not names:
        raise DatasetError(
            f"{container.folder} holds no images (looked for .jpg, .jpeg, .png, .webp, recursively)"
        )
    n = len(names)
    return Manifest(
        names=np.array(names, dtype=object),
        index=np.arange(n, dtype=np.int64),
        split=np.full(n, -1, dtype=np.int8),
        attributes=np.zeros((n, 0), dtype=np.int8),
        attribute_names=(),
        present=np.ones(n, dtype=bool),
    )


def folder_container(root: Where) -> FolderContainer:
    return FolderContainer(root, recursive=True)
