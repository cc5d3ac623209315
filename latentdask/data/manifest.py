"""The ordered list of a dataset's images, and its division into shards.

A :class:`Manifest` is what every later step agrees on: row ``i`` of the latent
store is row ``i`` of the manifest. Its :attr:`~Manifest.sha256` covers the names,
splits and attributes (not the folder the dataset lies in, so a moved dataset still
resumes), and stores check it on resume.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from latentdask.data.celeba_names import SPLITS
from latentdask.errors import DatasetError

#: how many example names a report lists for each kind of discrepancy
REPORT_EXAMPLES = 5


class Shard(NamedTuple):
    """Rows ``start:stop`` of a manifest; ``number`` counts shards from 0."""

    number: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class ListingReport:
    """What the listing files and the disk disagreed on; nothing here is dropped.

    ``listed_missing`` names are kept as rows (their images fail with "listed but
    missing"); ``unlisted`` names, on disk but in no listing file, are kept as rows
    with split -1 and attributes 0 (unknown).
    """

    listed_missing: int = 0
    unlisted: int = 0
    examples_missing: tuple[str, ...] = ()
    examples_unlisted: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        """Human-readable lines; empty when the listing and the disk agree."""
        out = []
        if self.listed_missing:
            out.append(
                f"{self.listed_missing} listed image(s) missing on disk, kept as invalid rows "
                f"(e.g. {', '.join(self.examples_missing)})"
            )
        if self.unlisted:
            out.append(
                f"{self.unlisted} image(s) on disk but not listed, kept with split -1 and "
                f"unknown attributes (e.g. {', '.join(self.examples_unlisted)})"
            )
        return out + list(self.notes)


@dataclass(frozen=True)
class Manifest:
    """Ordered rows of a dataset.

    Attributes
    ----------
    names
        File names relative to the dataset's image container, one per row.
    index
        Row number in the dataset's full listing (differs from the position once a
        split is selected).
    split
        int8: 0 train, 1 valid, 2 test, -1 unknown.
    attributes
        int8 (rows, attributes) of ±1, 0 where unknown; shape (rows, 0) when the
        dataset has none.
    attribute_names
        Column names of ``attributes``.
    present
        False for rows listed in a text file but missing on disk.
    report
        The discrepancies found while listing.
    """

    names: np.ndarray
    index: np.ndarray
    split: np.ndarray
    attributes: np.ndarray
    attribute_names: tuple[str, ...]
    present: np.ndarray
    report: ListingReport = field(default_factory=ListingReport)

    def __post_init__(self) -> None:
        n = len(self.names)
        for name in ("index", "split", "present"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"manifest column {name} has {len(getattr(self, name))} rows, not {n}")
        if self.attributes.shape != (n, len(self.attribute_names)):
            raise ValueError(
                f"attributes have shape {self.attributes.shape}, expected {(n, len(self.attribute_names))}"
            )

    def __len__(self) -> int:
        return len(self.names)

    @property
    def sha256(self) -> str:
        """A digest of names, splits, attributes and attribute names, in row order."""
        digest = hashlib.sha256()
        digest.update("\n".join(self.names.tolist()).encode())
        digest.update(b"\0index\0" + np.ascontiguousarray(self.index, dtype="<i8").tobytes())
        digest.update(b"\0split\0" + self.split.astype(np.int8).tobytes())
        digest.update(b"\0attributes\0" + "\n".join(self.attribute_names).encode())
        digest.update(self.attributes.astype(np.int8).tobytes())
        return digest.hexdigest()

    def shards(self, shard_size: int) -> list[Shard]:
        """Consecutive row ranges of ``shard_size`` rows (the last may be shorter)."""
        if shard_size < 1:
            raise ValueError(f"shard_size must be at least 1, got {shard_size}")
        return [
            Shard(k, start, min(start + shard_size, len(self)))
            for k, start in enumerate(range(0, len(self), shard_size))
        ]

    def split_rows(self, split: str) -> np.ndarray:
        """Positions of the rows of one split (``train``, ``valid``, ``test``) or of ``all``."""
        if split == "all":
            return np.arange(len(self))
        if split not in SPLITS:
            raise DatasetError(f"unknown split {split!r}; choose one of all, {', '.join(SPLITS)}")
        if (self.split == -1).all():
            raise DatasetError(
                f"split {split!r} asked for, but this dataset has no partition file "
                "(every row's split is unknown)"
            )
        return np.flatnonzero(self.split == SPLITS[split])

    def select_split(self, split: str) -> Manifest:
        """The manifest of one split's rows, or ``self`` for ``all``."""
        return self if split == "all" else self.take(self.split_rows(split))

    def take(self, rows: np.ndarray) -> Manifest:
        """A manifest of the given row positions, in the given order."""
        return Manifest(
            names=self.names[rows],
            index=self.index[rows],
            split=self.split[rows],
            attributes=self.attributes[rows],
            attribute_names=self.attribute_names,
            present=self.present[rows],
            report=self.report,
        )

    def split_counts(self) -> dict[str, int]:
        """Rows per split name, ``unknown`` for -1."""
        labels = {code: name for name, code in SPLITS.items()} | {-1: "unknown"}
        codes, counts = np.unique(self.split, return_counts=True)
        return {labels[int(c)]: int(k) for c, k in zip(codes, counts, strict=True)}
