"""Statistics of a latent store (or any Zarr array of z-points), written as stats.zarr + stats.json."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr
from zarr.errors import ZarrUserWarning

from latentdask.errors import StatsError
from latentdask.location import Where, location
from latentdask.output import check_output, owned_output, write_json
from latentdask.stats.analysis import headline
from latentdask.stats.options import SummaryParams
from latentdask.stats.reduce import Inputs, first_pass, second_pass
from latentdask.stats.summary import SummaryState, summary_combine, summary_finalize
from latentdask.store.paths import stats_json_path
from latentdask.store.points import ZPoints
from latentdask.store.rows import selection_mask

#: the attributes naming the row selection (``--rows``) statistics describe: its path ("" for
#: none), and which rows it held (:func:`~latentdask.store.selection.rows_fingerprint`)
ROWS_ATTR = "rows"
ROWS_FINGERPRINT_ATTR = "rows_fingerprint"


@dataclass
class KnownStates:
    """Shard states computed elsewhere (an encode's tasks), merged as they arrive: the memory of
    one state whatever the number of shards."""

    shards: set[int] = field(default_factory=set)
    state: SummaryState | None = None

    def add(self, shard: int, state: SummaryState) -> None:
        self.state = state if self.state is None else summary_combine([self.state, state])
        self.shards.add(shard)


def stats_of(
    points: ZPoints,
    *,
    params: SummaryParams,
    split: str = "all",
    where: Sequence[str] = (),
    known: KnownStates | None = None,
    scheduler: Any = None,
) -> xr.Dataset:
    """Summarize ``points``; shards whose state is ``known`` are not read in pass 1.

    ``known`` states come from an encode's sidecar; they are only used for the default
    selection (all valid rows), which is what the sidecar saw, and then pass 2 runs on torch,
    as the encode's tasks did: its workers never load numba. ``scheduler`` is the Client to
    run on (None: dask's default).
    """
    mask, selection = selection_mask(points, split, where)
    inputs = Inputs(points.z, valid=points.valid, attributes=points.attributes, selected=mask)
    if known is not None and known.state is not None and points.shard_size:
        if mask is not None:
            raise StatsError("encode's shard states hold all valid rows; they cannot serve a subset")
        n, size = points.z.shape[0], points.shard_size
        missing = [
            inputs.rows(start, min(start + size, n))
            for start in range(0, n, size)
            if start // size not in known.shards
        ]
        state = summary_combine([known.state, *first_pass(*missing, params=params, scheduler=scheduler)])
    else:
        (state,) = first_pass(inputs, params=params, scheduler=scheduler)
    if not (np.isfinite(state.moments.m2).all() and np.isfinite(state.moments.mean).all()):
        raise StatsError(
            f"{points.path}: the co-moments overflow float64 "
            f"(values reach {np.abs(state.moments.mean).max():.3g} "
            "and more); z-points this large have no finite covariance: rescale them first"
        )
    centred = second_pass(inputs, state, params, scheduler=scheduler, on_torch=known is not None)
    chosen = points.selection
    return summary_finalize(
        state, params, centred_radius=centred, attribute_names=points.attribute_names, selection=selection
    ).assign_attrs(
        split=split,
        where=list(where),
        **{
            ROWS_ATTR: "" if chosen is None else str(chosen.path),
            ROWS_FINGERPRINT_ATTR: "" if chosen is None else chosen.fingerprint(scheduler),
        },
    )


@dataclass(frozen=True)
class FittedSelection:
    """The row selection statistics describe: its path then, and the fingerprint of its rows
    (None for statistics written before they recorded it)."""

    path: str
    fingerprint: str | None


def fitted_selection(stats: xr.Dataset) -> FittedSelection | None:
    """The row selection ``stats`` describe, or None (statistics written before they recorded
    one describe no selection)."""
    path = stats.attrs.get(ROWS_ATTR)
    if not path:
        return None
    return FittedSelection(str(path), stats.attrs.get(ROWS_FINGERPRINT_ATTR) or None)


def fitted_rows(stats: xr.Dataset, *, selection_checked: bool = False) -> tuple[str, tuple[str, ...]]:
    """The split and attribute conditions of the rows ``stats`` describe (the rows a fit saw).

    Statistics written before they recorded it describe all valid rows. Statistics of a row
    selection (``--rows``) are refused unless ``selection_checked`` (the caller reads the same
    selection, as ``score --rows`` does): its rows are not a split, so nothing else would say
    which rows are held out of them.
    """
    if stats.attrs.get(ROWS_ATTR) and not selection_checked:
        raise StatsError(
            f"these statistics describe the row selection {stats.attrs[ROWS_ATTR]}; normality and "
            "fits need statistics of a split (and conditions): compute them without --rows"
        )
    return str(stats.attrs.get("split", "all")), tuple(stats.attrs.get("where", ()))


STATS_KIND = "stats"
HEADLINE_KIND = "stats-headline"
#: the attribute of an encode's statistics that says which finished shards and parameters they describe
FINGERPRINT_ATTR = "store_fingerprint"


def store_fingerprint(store: Where, params: SummaryParams) -> str | None:
    """What an encode's statistics of ``store`` depend on: its finished shards' checksums, ``params``
    and latentdask's version."""
    import hashlib

    import zarr

    from latentdask.store.integrity import finished_fingerprint

    shards = finished_fingerprint(zarr.open_group(str(location(store)), mode="r"))
    if shards is None:
        return None
    from latentdask._version import __version__

    # the version too: a release may change what the statistics hold
    return hashlib.sha256(f"{shards} {params.model_dump_json()} {__version__}".encode()).hexdigest()


def stats_fingerprint(stats: Where) -> str | None:
    """The :data:`FINGERPRINT_ATTR` of the statistics at ``stats`` (None: none, or not readable)."""
    import zarr

    try:
        return zarr.open_group(str(location(stats)), mode="r").attrs.get(FINGERPRINT_ATTR)  # type: ignore[return-value]
    except Exception:  # missing or not statistics: they are written again
        return None


def check_stats_output(out: Where, *, inputs: Sequence[Where]) -> None:
    """Refuse ``out`` (and the stats.json beside it) before any computing: see :func:`check_output`."""
    check_output(out, STATS_KIND, inputs=inputs)
    check_output(stats_json_path(out), HEADLINE_KIND, inputs=inputs)


def write_stats(
    stats: xr.Dataset, out: Where, *, source: str, inputs: Sequence[Where] = ()
) -> dict[str, Any]:
    """Write ``out`` (Zarr) and the headline figures beside it as JSON; return the headline.

    Each is written aside and renamed into place (a reader never sees half a result);
    an existing ``out`` is replaced only if it is latentdask statistics.
    """
    check_stats_output(out, inputs=inputs)
    with owned_output(out, STATS_KIND, inputs=inputs, zarr=True) as staged, warnings.catch_warnings():
        warnings.simplefilter("ignore", ZarrUserWarning)
        stats.assign_attrs(source=source, latentdask=staged.record).to_zarr(
            str(staged.path), mode="w", consolidated=True
        )
    figures = headline(stats) | {"source": source}
    write_json(stats_json_path(out), figures, HEADLINE_KIND, inputs=inputs)
    return figures


def open_stats(path: Where) -> xr.Dataset:
    """Open a ``stats.zarr`` written by :func:`write_stats`."""
    path = location(path)
    if not path.exists():
        raise StatsError(f"statistics {path} do not exist")
    try:
        stats = xr.open_zarr(str(path), consolidated=True)  # write_stats consolidates; others are not stats
        missing = [name for name in ("count", "mean", "cov") if name not in stats]
    except (KeyError, ValueError, OSError):  # not an xarray group at all (z-points, another folder)
        missing = ["count", "mean", "cov"]
    if missing:  # a latent store or z-points given where statistics belong
        raise StatsError(
            f"{path} holds no statistics (no {', '.join(missing)}): give what `latentdask stats` writes, "
            "or the STORE-stats.zarr that encode writes beside its store"
        )
    return stats.load()
