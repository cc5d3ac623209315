"""Which rows a pass reads: the split and attribute conditions (``--split``, ``--where``), as lazy masks."""

from __future__ import annotations

from collections.abc import Sequence

import dask.array as da

from latentdask.data.celeba_names import SPLITS
from latentdask.errors import StatsError
from latentdask.store.points import ZPoints


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
    """Rows chosen by split and attribute conditions (lazy), and words saying which."""
    words = ["valid rows" if points.valid is not None else "all rows"]
    mask: da.Array | None = None
    if split != "all":
        if split not in SPLITS:
            raise StatsError(f"unknown split {split!r}; choose one of all, {', '.join(SPLITS)}")
        if points.split is None:
            raise StatsError(f"--split {split} asked for, but {points.path} has no split column")
        mask = points.split == SPLITS[split]
        words.append(f"split={split}")
    for name, value in parse_where(where, points.attribute_names):
        if points.attributes is None:
            raise StatsError(f"--where asked for, but {points.path} has no attributes")
        column = points.attributes[:, points.attribute_names.index(name)] == value
        mask = column if mask is None else mask & column
        words.append(f"{name}={value:+d}")
    return mask, "; ".join(words)
