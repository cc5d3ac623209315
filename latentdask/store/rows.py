"""Which rows a pass reads: the split and attribute conditions (``--split``, ``--where``), as lazy masks.

Besides the dataset's own splits (train, valid, test), every store has two more: ``heldout``, a
seeded share of :data:`HOLDOUT_SHARE` of the rows chosen by a hash of the row number (the same
rows for every store of the same length, whatever its chunks), and ``fit``, the others. They
serve stores whose dataset has no split: fit the statistics on ``fit``, compare with ``heldout``.
:func:`real_sample` draws a seeded sample of the rows a mask keeps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np

from latentdask.cluster.watch import compute
from latentdask.data.celeba_names import SPLITS
from latentdask.errors import StatsError
from latentdask.store.points import ZPoints

#: the share of rows in the ``heldout`` split, and the seed of the hash that picks them
HOLDOUT_SHARE = 0.1
HOLDOUT_SEED = 0
SPLIT_NAMES = ("all", *SPLITS, "fit", "heldout")


def heldout_rows(rows: np.ndarray) -> np.ndarray:
    """Whether each row number is in the seeded held-out share (splitmix64 of the row, below the share)."""
    with np.errstate(over="ignore"):
        h = rows.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15 * (HOLDOUT_SEED + 1) % 2**64)
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        h = h ^ (h >> np.uint64(31))
    return h < np.uint64(HOLDOUT_SHARE * 2**64)


def split_mask(points: ZPoints, split: str) -> da.Array | None:
    """The rows of ``split`` (lazy, chunked like the points); None for all rows."""
    if split == "all":
        return None
    if split in ("fit", "heldout"):
        rows = da.arange(points.z.shape[0], chunks=points.z.chunks[0], dtype=np.int64)
        heldout = rows.map_blocks(heldout_rows, dtype=bool)
        return heldout if split == "heldout" else ~heldout
    if split not in SPLITS:
        raise StatsError(f"unknown split {split!r}; choose one of {', '.join(SPLIT_NAMES)}")
    if points.split is None:
        raise StatsError(
            f"--split {split} asked for, but {points.path} has no split column "
            "(--split fit holds out a seeded 10 % instead)"
        )
    return points.split == SPLITS[split]


def default_fit_split(points: ZPoints) -> str:
    """The rows a fit takes by default: the train split when the store has one, else ``fit``."""
    has_train = points.split is not None and bool((points.split == SPLITS["train"]).any().compute())
    return "train" if has_train else "fit"


def parse_where(conditions: Sequence[str], names: Sequence[str]) -> list[tuple[str, int]]:
    """``["Male=1", "Smiling=-1"]`` → [("Male", 1), ("Smiling", -1)], checked against ``names``."""
    parsed = []
    for condition in conditions:
        name, _, value = condition.partition("=")
        if value not in ("1", "+1", "-1"):
            raise StatsError(f"--where expects ATTRIBUTE=1 or ATTRIBUTE=-1, got {condition!r}")
        if name not in names:
            known = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "") if names else "none"
            raise StatsError(f"--where {condition!r}: unknown attribute {name!r} (this store has: {known})")
        parsed.append((name, int(value)))
    return parsed


def selection_mask(points: ZPoints, split: str, where: Sequence[str]) -> tuple[da.Array | None, str]:
    """Rows chosen by split, attribute conditions and the points' row selection (lazy), and words
    saying which."""
    words = ["valid rows" if points.valid is not None else "all rows"]
    mask = split_mask(points, split)
    if split != "all":
        words.append(f"split={split}")
    if points.selection is not None:
        rows = points.selection.rows
        mask = rows if mask is None else mask & rows
        words.append(points.selection.words())
    for name, value in parse_where(where, points.attribute_names):
        if points.attributes is None:
            raise StatsError(f"--where asked for, but {points.path} has no attributes")
        column = points.attributes[:, points.attribute_names.index(name)] == value
        mask = column if mask is None else mask & column
        words.append(f"{name}={value:+d}")
    return mask, "; ".join(words)


def real_sample(
    corpus: ZPoints, n: int, seed: int, scheduler: Any = None, *, keep: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``n`` valid (and ``keep``-selected) real points, drawn with ``seed``, and their rows."""
    valid = (
        np.ones(corpus.z.shape[0], dtype=bool)
        if corpus.valid is None
        else compute(corpus.valid, scheduler=scheduler)[0]
    )
    if keep is not None:
        valid = valid & np.asarray(compute(keep, scheduler=scheduler)[0], dtype=bool)
    rows = np.flatnonzero(valid)
    rows = np.sort(np.random.default_rng(seed).choice(rows, size=min(n, len(rows)), replace=False))
    return np.asarray(compute(corpus.z[rows], scheduler=scheduler)[0], dtype=np.float32), rows
