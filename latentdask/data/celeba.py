"""CelebA in its official layout: a folder holding

- ``img_align_celeba/`` (or ``img_align_celeba.zip``, read in place; the folder wins
  when both exist),
- ``list_eval_partition.txt``: ``000001.jpg 0`` per line (0 train, 1 valid, 2 test),
- ``list_attr_celeba.txt``: the row count, the attribute names, then
  ``000001.jpg -1  1 ...`` per line.

Either text file may be absent: splits are then -1, attributes absent. Rows are the
union of listed and on-disk names in sorted order (CelebA's listing order). A listed
name missing on disk stays a row (its image fails with "listed but missing"); a name
on disk but not listed stays a row with split -1 and attributes 0; both are counted
in the manifest's report, as are zip members never used (absolute or ``..`` paths).

The text files are UTF-8, with or without a byte-order mark; anything they cannot be
read as is a :class:`~latentdask.errors.DatasetError` naming the file (and the line).
"""

from __future__ import annotations

import numpy as np

from latentdask.data.celeba_names import (
    ATTRIBUTE_FILE,
    IMAGE_FOLDER,
    IMAGE_ZIP,
    PARTITION_FILE,
    UNKNOWN_SPLIT,
)
from latentdask.data.container import Container, FolderContainer, ZipContainer
from latentdask.data.manifest import REPORT_EXAMPLES, ListingReport, Manifest
from latentdask.errors import DatasetError
from latentdask.location import Location, Where, location


def is_celeba_root(root: Where) -> bool:
    """True if ``root`` holds CelebA's image folder or zip."""
    root = location(root)
    return (root / IMAGE_FOLDER).is_dir() or (root / IMAGE_ZIP).is_file()


def celeba_container(root: Where) -> Container:
    root = location(root)
    if (root / IMAGE_FOLDER).is_dir():
        return FolderContainer(root / IMAGE_FOLDER, recursive=False)
    if (root / IMAGE_ZIP).is_file():
        return ZipContainer(root / IMAGE_ZIP)
    raise DatasetError(f"{root} holds neither {IMAGE_FOLDER}/ nor {IMAGE_ZIP}")


def read_listing(path: Location) -> list[str]:
    """The lines of a listing file: UTF-8, a leading byte-order mark dropped."""
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise DatasetError(
            f"{path}:{line}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"
        ) from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot be read ({exc.strerror})") from None


def read_partition(path: Location) -> dict[str, int]:
    """``list_eval_partition.txt`` → {name: split}."""
    splits: dict[str, int] = {}
    for number, line in enumerate(read_listing(path), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise DatasetError(f"{path}:{number}: expected '<name> <0|1|2>', got {line.strip()!r}")
        if fields[0] in splits:
            raise DatasetError(f"{path}:{number}: {fields[0]} is listed twice")
        splits[fields[0]] = int(fields[1])
    return splits


def read_attributes(path: Location) -> tuple[tuple[str, ...], dict[str, np.ndarray]]:
    """``list_attr_celeba.txt`` → (attribute names, {name: int8 row of ±1})."""
    lines = read_listing(path)
    if len(lines) < 2:
        raise DatasetError(f"{path}: expected a count line and a names line, file has {len(lines)} line(s)")
    try:
        declared = int(lines[0].strip())
    except ValueError:
        raise DatasetError(f"{path}:1: expected the row count, got {lines[0].strip()!r}") from None
    names = tuple(lines[1].split())
    if not names:
        raise DatasetError(f"{path}:2: expected the attribute names")
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise DatasetError(f"{path}:2: attribute name(s) listed twice: {', '.join(twice)}")
    rows: dict[str, np.ndarray] = {}
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        values = fields[1:]
        if len(values) != len(names):
            raise DatasetError(
                f"{path}:{number}: expected {fields[0]} and {len(names)} values of 1 or -1, "
                f"got {len(values)} value(s)"
            )
        bad = next((k for k, value in enumerate(values) if value not in ("1", "-1")), None)
        if bad is not None:
            raise DatasetError(
                f"{path}:{number}: {fields[0]}: {names[bad]} is {values[bad]!r}, expected 1 or -1"
            )
        if fields[0] in rows:
            raise DatasetError(f"{path}:{number}: {fields[0]} is listed twice")
        rows[fields[0]] = np.array(values, dtype=np.int8)
    if declared != len(rows):
        raise DatasetError(f"{path}: first line says {declared} rows, the file has {len(rows)}")
    return names, rows


def celeba_manifest(root: Where, container: Container) -> Manifest:
    """Build the manifest of a CelebA-layout dataset (see the module docstring)."""
    root = location(root)
    partition_path, attribute_path = root / PARTITION_FILE, root / ATTRIBUTE_FILE
    splits = read_partition(partition_path) if partition_path.is_file() else None
    attribute_names, attribute_rows = (
        read_attributes(attribute_path) if attribute_path.is_file() else ((), {})
    )
    on_disk = set(container.list_names())
    listed: set[str] = set(splits or ()) | set(attribute_rows)
    names = sorted(on_disk | listed)

    notes = []
    ignored = container.ignored() if isinstance(container, ZipContainer) else ()
    if ignored:
        notes.append(
            f"{len(ignored)} zip member(s) never used: absolute or '..' path "
            f"(e.g. {', '.join(ignored[:REPORT_EXAMPLES])})"
        )
    if splits is None:
        notes.append(f"no {PARTITION_FILE}: every split is unknown (-1)")
    if not attribute_names:
        notes.append(f"no {ATTRIBUTE_FILE}: no attributes")
    missing = sorted(listed - on_disk)
    unlisted = sorted(on_disk - listed) if (splits is not None or attribute_rows) else []
    report = ListingReport(
        listed_missing=len(missing),
        unlisted=len(unlisted),
        examples_missing=tuple(missing[:REPORT_EXAMPLES]),
        examples_unlisted=tuple(unlisted[:REPORT_EXAMPLES]),
        notes=tuple(notes),
    )

    unknown_attributes = np.zeros(len(attribute_names), dtype=np.int8)
    attributes = np.zeros((len(names), len(attribute_names)), dtype=np.int8)
    for row, name in enumerate(names):
        attributes[row] = attribute_rows.get(name, unknown_attributes)
    split_of = splits or {}
    return Manifest(
        names=np.array(names, dtype=object),
        index=np.arange(len(names), dtype=np.int64),
        split=np.array([split_of.get(name, UNKNOWN_SPLIT) for name in names], dtype=np.int8),
        attributes=attributes,
        attribute_names=attribute_names,
        present=np.array([name in on_disk for name in names], dtype=bool),
        report=report,
    )
