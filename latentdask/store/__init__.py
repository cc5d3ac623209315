"""What latentdask keeps on disk, and how it is read and written (every output through
:mod:`latentdask.output`).

- :mod:`~latentdask.store.layout`: the latent store (create, open, describe, ``open_latents``).
- :mod:`~latentdask.store.lock`: one writer per store.
- :mod:`~latentdask.store.integrity`: per-shard checksums and ``verify``.
- :mod:`~latentdask.store.points`: any (n, N) z-points read (checked) and written (block by block).
- :mod:`~latentdask.store.rows`: which rows a pass reads (``--split``, ``--where``).
- :mod:`~latentdask.store.paths`: the statistics beside a store, a workflow's run folder.

The layout's names are imported lazily, so that writing a small output never imports Zarr.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "RESUME_KEYS",
    "StoreError",
    "check_resumable",
    "create_store",
    "describe_store",
    "open_latents",
    "open_store",
    "shards_done",
    "store_array",
]

if TYPE_CHECKING:
    from latentdask.store.layout import (
        FORMAT,
        FORMAT_VERSION,
        RESUME_KEYS,
        StoreError,
        check_resumable,
        create_store,
        describe_store,
        open_latents,
        open_store,
        shards_done,
        store_array,
    )


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("latentdask.store.layout"), name)
    raise AttributeError(f"module 'latentdask.store' has no attribute {name!r}")
