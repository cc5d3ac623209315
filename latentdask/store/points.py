"""Arrays of random rows written block by block: the same numbers whatever writes them.

Each block of rows is drawn from its own stream ``(seed, block number)`` and is one
Zarr chunk, so the result does not depend on order or parallelism, no two writers
share a chunk, and memory is bounded by one block per thread.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import dask.array as da
import numpy as np
import zarr

#: (rng, rows) → float32 array (rows, dim)
BlockSampler = Callable[[np.random.Generator, int], np.ndarray]


def _block(sampler: BlockSampler, seed: int, block_info: dict | None = None) -> np.ndarray:
    assert block_info is not None
    number = block_info[None]["chunk-location"][0]
    (start, stop), _ = block_info[None]["array-location"]
    return np.asarray(sampler(np.random.default_rng([seed, number]), stop - start), dtype=np.float32)


def write_rows(
    group: zarr.Group,
    name: str,
    sampler: BlockSampler,
    *,
    n: int,
    dim: int,
    seed: int,
    chunk_rows: int,
    dims: list[str],
) -> zarr.Array:
    """Create ``group[name]`` (n, dim) float32 and fill it with ``sampler``'s blocks."""
    target = group.create_array(
        name,
        shape=(n, dim),
        chunks=(chunk_rows, dim),
        dtype="float32",
        compressors=None,
        dimension_names=dims,
    )
    sizes = (chunk_rows,) * (n // chunk_rows) + ((n % chunk_rows,) if n % chunk_rows else ())
    rows = da.map_blocks(partial(_block, sampler, seed), chunks=(sizes, (dim,)), dtype=np.float32,
                         meta=np.empty((0, 0), np.float32))  # fmt: skip
    da.store(rows, target, lock=False)  # type: ignore[arg-type]  # blocks are Zarr chunks: one writer each
    return target
