"""Statistics of a latent store (or any Zarr array of z-points), written as stats.zarr + stats.json."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
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
from latentdask.store.integrity import CheckedArray, expected_checksums
from latentdask.store.output import check_output, owned_output, write_json
from latentdask.store.paths import stats_json_path


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
    #: what ``z`` is read from, for tasks that read row ranges themselves (reads are checked)
    source: CheckedArray | None = None
    #: shards of a latent store not finished (their rows are left out unless asked for) and in all
    unfinished: int = 0
    shards: int = 0

    def unfinished_note(self) -> str | None:
        """``"2 of 15 shards unfinished: their rows are left out"``, or None when every shard is done."""
        if not self.unfinished:
            return None
        return f"{self.unfinished} of {self.shards} shards of {self.path} unfinished: their rows are left out"


def open_zpoints(
    path: str | Path, *, include_unfinished: bool = False, skip_shards: Sequence[int] = ()
) -> ZPoints:
    """A latentdask store, a Zarr group holding ``z``, or a bare (n, N) Zarr array.

    Reads of ``z`` and ``valid`` are checked against a latent store's per-shard checksums
    (:class:`~latentdask.store.integrity.CheckedArray`). Rows of unfinished shards, and of
    ``skip_shards`` (damaged shards to leave out), are not valid; ``include_unfinished``
    keeps the rows an unfinished shard has already marked valid.
    """
    path = Path(path)
    if not path.exists():
        raise StatsError(f"{path} does not exist")
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:  # zarr raises several types for what is not a store
        raise StatsError(f"{path} is not a Zarr array or group ({exc})") from None
    if isinstance(node, zarr.Array):
        z, source = _checked_z(node, path, None, None)
        return ZPoints(path, z, source=source)
    if "z" not in node:
        raise StatsError(f"{path} is a Zarr group without an array 'z'")
    members = set(node.array_keys())
    shard_size = node.attrs.get("shard_size")
    is_store = isinstance(shard_size, int) and "shard_done" in members
    member = node["z"]
    if not isinstance(member, zarr.Array):
        raise StatsError(f"{path}/z is not an (n, N) array")
    if not is_store:
        array, source = _checked_z(member, path, None, None)
        points = ZPoints(path, array, source=source)
    else:
        assert isinstance(shard_size, int)
        array, source = _checked_z(member, path, expected_checksums(node, "z"), shard_size, skip_shards)
        points = ZPoints(path, array, source=source)
        points.shard_size = shard_size
        done = np.asarray(node["shard_done"][:], dtype=bool)  # type: ignore[index]
        points.shards, points.unfinished = len(done), int((~done).sum())
    if "valid" in members:
        points.valid = (
            _valid_rows(node, points, include_unfinished, skip_shards)
            if is_store
            else da.from_zarr(node["valid"])
        )
    if "split" in members:
        points.split = da.from_zarr(node["split"])
    if "attributes" in members and "attribute" in members:
        names = tuple(str(v) for v in np.asarray(node["attribute"][:], dtype=object))  # type: ignore[index]
        if names:
            points.attributes = da.from_zarr(node["attributes"])
            points.attribute_names = names
    return points


def _checked_z(
    array: zarr.Array, path: Path, expected: list[int | None] | None, shard_size: int | None,
    skip: Sequence[int] = (),
) -> tuple[da.Array, CheckedArray]:  # fmt: skip
    if array.ndim != 2:
        raise StatsError(f"{path} holds z-points of shape {array.shape}; expected (n, N)")
    if array.dtype.kind != "f" or array.dtype.itemsize < 2:
        raise StatsError(f"{path} holds {array.dtype} values; z-points are floating point (float16/32/64)")
    size = shard_size or int(array.chunks[0])
    source = CheckedArray(array, expected, shard_size=size, column="z", store=str(path), skip=skip)
    z = da.from_array(source, chunks=(array.chunks[0], -1), name=f"z-{dask.base.tokenize(source)}")
    if array.dtype == np.float16:  # the kernels compute in float32/float64; float16 converts exactly
        z = z.astype(np.float32)
    return z, source


def _valid_rows(node: Any, points: ZPoints, include_unfinished: bool, skip: Sequence[int]) -> da.Array:
    """``valid``, checked against its checksums, and false for unfinished (unless included) and skipped shards."""
    assert points.shard_size is not None
    size, n = points.shard_size, points.z.shape[0]
    done = np.asarray(node["shard_done"][:], dtype=bool)
    keep = done | include_unfinished
    keep[list(skip)] = False
    expected = expected_checksums(node, "valid")
    source = CheckedArray(
        node["valid"], expected, shard_size=size, column="valid", store=str(points.path), skip=skip
    )
    valid = da.from_array(source, chunks=(size,), name=f"valid-{dask.base.tokenize(source)}")
    if keep.all():
        return valid
    return valid & da.from_array(np.repeat(keep, size)[:n], chunks=(size,))


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
    if not (np.isfinite(state.moments.m2).all() and np.isfinite(state.moments.mean).all()):
        raise StatsError(
            f"{points.path}: the co-moments overflow float64 (values reach {np.abs(state.moments.mean).max():.3g} "
            "and more); z-points this large have no finite covariance: rescale them first"
        )
    centred = second_pass(inputs, state, params, scheduler=scheduler)
    return summary_finalize(state, params, centred_radius=centred, attribute_names=points.attribute_names,
                            selection=selection)  # fmt: skip


STATS_KIND = "stats"
HEADLINE_KIND = "stats-headline"


def check_stats_output(out: str | Path, *, inputs: Sequence[str | Path]) -> None:
    """Refuse ``out`` (and the stats.json beside it) before any computing: see :func:`check_output`."""
    check_output(out, STATS_KIND, inputs=inputs)
    check_output(stats_json_path(out), HEADLINE_KIND, inputs=inputs)


def write_stats(
    stats: xr.Dataset, out: str | Path, *, source: str, inputs: Sequence[str | Path] = ()
) -> dict[str, Any]:
    """Write ``out`` (Zarr) and the headline figures beside it as JSON; return the headline.

    Each is written aside and renamed into place (a reader never sees half a result);
    an existing ``out`` is replaced only if it is latentdask statistics.
    """
    check_stats_output(out, inputs=inputs)
    with owned_output(out, STATS_KIND, inputs=inputs, zarr=True) as staged, warnings.catch_warnings():
        warnings.simplefilter("ignore", ZarrUserWarning)
        stats.assign_attrs(source=source, latentdask=staged.record).to_zarr(
            staged.path, mode="w", consolidated=True
        )
    figures = headline(stats) | {"source": source}
    write_json(stats_json_path(out), figures, HEADLINE_KIND, inputs=inputs)
    return figures


def open_stats(path: str | Path) -> xr.Dataset:
    """Open a ``stats.zarr`` written by :func:`write_stats`."""
    path = Path(path)
    if not path.exists():
        raise StatsError(f"statistics {path} do not exist")
    return xr.open_zarr(path).load()
