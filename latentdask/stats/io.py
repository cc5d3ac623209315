"""Statistics of a latent store (or any Zarr array of z-points), written as stats.zarr + stats.json."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
import zarr
from zarr.errors import ZarrUserWarning

from latentdask.data.celeba_names import SPLITS
from latentdask.errors import LatentdaskError
from latentdask.stats.analysis import headline
from latentdask.stats.reduce import Inputs, first_pass, second_pass
from latentdask.stats.summary import SummaryParams, SummaryState, summary_combine, summary_finalize


class StatsError(LatentdaskError):
    """A statistics input or selection that cannot be used as given."""


@dataclass
class ZPoints:
    """What a stats run reads: z and, for latent stores, their row companions."""

    path: Path
    z: da.Array
    valid: da.Array | None = None
    split: da.Array | None = None
    attributes: da.Array | None = None
    attribute_names: tuple[str, ...] = ()
    shard_size: int | None = None
    source: zarr.Array | None = None  # the Zarr array behind ``z``, for tasks that read row ranges themselves


def open_zpoints(path: str | Path) -> ZPoints:
    """A latentdask store, a Zarr group holding ``z``, or a bare (n, N) Zarr array."""
    path = Path(path)
    if not path.exists():
        raise StatsError(f"{path} does not exist")
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:  # zarr raises several types for what is not a store
        raise StatsError(f"{path} is not a Zarr array or group ({exc})") from None
    if isinstance(node, zarr.Array):
        if node.ndim != 2:
            raise StatsError(f"{path} is a Zarr array of shape {node.shape}; expected (n, N) z-points")
        return ZPoints(path, da.from_zarr(node), source=node)
    if "z" not in node:
        raise StatsError(f"{path} is a Zarr group without an array 'z'")
    z = node["z"]
    if not isinstance(z, zarr.Array) or z.ndim != 2:
        raise StatsError(f"{path}/z is not an (n, N) array")
    points = ZPoints(path, da.from_zarr(z), source=z)
    members = set(node.array_keys())
    if "valid" in members:
        points.valid = da.from_zarr(node["valid"])
    if "split" in members:
        points.split = da.from_zarr(node["split"])
    if "attributes" in members and "attribute" in members:
        names = tuple(str(v) for v in np.asarray(node["attribute"][:], dtype=object))  # type: ignore[index]
        if names:
            points.attributes = da.from_zarr(node["attributes"])
            points.attribute_names = names
    shard_size = node.attrs.get("shard_size")
    points.shard_size = int(shard_size) if isinstance(shard_size, int) else None
    return points


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


def stats_of(
    points: ZPoints,
    *,
    params: SummaryParams,
    split: str = "all",
    where: Sequence[str] = (),
    known_states: Mapping[int, SummaryState] | None = None,
    scheduler: Any = None,
) -> xr.Dataset:
    """Summarize ``points``; shards whose state is in ``known_states`` are not read in pass 1.

    ``known_states`` (shard number → state) come from an encode's sidecar; they are only
    used for the default selection (all valid rows), which is what the sidecar saw.
    ``scheduler`` is the Client to run on (None: dask's default).
    """
    mask, selection = selection_mask(points, split, where)
    inputs = Inputs(points.z, valid=points.valid, attributes=points.attributes, selected=mask)
    if known_states and points.shard_size:
        if mask is not None:
            raise StatsError("encode's shard states hold all valid rows; they cannot serve a subset")
        n, size = points.z.shape[0], points.shard_size
        missing = [inputs.rows(start, min(start + size, n)) for start in range(0, n, size)
                   if start // size not in known_states]  # fmt: skip
        state = summary_combine(
            [*known_states.values(), *first_pass(*missing, params=params, scheduler=scheduler)]
        )
    else:
        (state,) = first_pass(inputs, params=params, scheduler=scheduler)
    centred = second_pass(inputs, state, params, scheduler=scheduler)
    return summary_finalize(state, params, centred_radius=centred, attribute_names=points.attribute_names,
                            selection=selection)  # fmt: skip


def json_path(stats_path: str | Path) -> Path:
    """``stats.zarr`` → ``stats.json`` beside it."""
    path = Path(stats_path)
    return path.with_suffix(".json") if path.suffix == ".zarr" else path.with_name(path.name + ".json")


def write_stats(stats: xr.Dataset, out: str | Path, *, source: str) -> dict[str, Any]:
    """Write ``out`` (Zarr) and the headline figures beside it; return the headline."""
    out = Path(out)
    stats = stats.assign_attrs(source=source)
    # Written aside, then renamed into place: a reader never sees half a result, and two
    # runs finishing together (a resumed encode beside the original) do not mix files.
    staging = out.with_name(f".{out.name}.{uuid.uuid4().hex}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ZarrUserWarning)
        stats.to_zarr(staging, mode="w", consolidated=True)
    _replace_folder(staging, out)
    figures = headline(stats) | {"source": source}
    text = json.dumps(figures, indent=2, default=_plain) + "\n"
    staged_json = staging.with_suffix(".json")
    staged_json.write_text(text)
    os.replace(staged_json, json_path(out))
    return figures


def _replace_folder(new: Path, target: Path) -> None:
    old = target.with_name(f".{target.name}.old.{uuid.uuid4().hex}")
    with contextlib.suppress(FileNotFoundError):
        target.rename(old)
    try:
        new.rename(target)
    except OSError:  # another writer put the same result there first
        shutil.rmtree(new, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)


def open_stats(path: str | Path) -> xr.Dataset:
    """Open a ``stats.zarr`` written by :func:`write_stats`."""
    path = Path(path)
    if not path.exists():
        raise StatsError(f"statistics {path} do not exist")
    return xr.open_zarr(path).load()


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
