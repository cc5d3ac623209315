"""The result of a benchmark: measurements, baselines checked against latentdask's answer, bounds.

A row is one of four kinds:

- ``latentdask``: a measurement of latentdask's own code;
- ``baseline``: another way to compute the same figures, timed in the same run on the same
  data. Every baseline carries a check of its figures against latentdask's (``check``,
  figure → difference and tolerance); a ratio to a baseline is withheld unless it agrees;
- ``bound``: an arithmetic limit that computes no answer (a GEMM alone, cores ÷ the time
  per image), so there is nothing to check; a ratio to it is a share of the bound;
- ``detail``: a part of a baseline or a bound (its load time, one of its steps).

Ratios are speed-ups, higher is better: the other row's seconds over this row's, or this
row's rate over the other's.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from rich.table import Table
from rich.text import Text

from latentdask.output import write_json
from latentdask.progress import console

if TYPE_CHECKING:
    from distributed import Client

#: the kind of output a benchmark's JSON is, in its ``latentdask`` record
BENCH_KIND = "benchmark"
#: units where less is better: a ratio to such a row is its value over this row's
TIME_UNITS = ("s",)

Kind = Literal["latentdask", "baseline", "bound", "detail"]


@dataclass(frozen=True)
class Agreement:
    """One figure of a baseline against latentdask's: the largest difference and what is allowed."""

    difference: float
    tolerance: float

    @property
    def agrees(self) -> bool:
        return bool(self.difference <= self.tolerance)  # NaN never agrees


@dataclass
class Measurement:
    name: str
    value: float
    unit: str
    kind: Kind = "latentdask"
    vs: tuple[str, ...] = ()  # the baselines and bounds this row is compared with
    check: dict[str, Agreement] = field(default_factory=dict)  # baselines: figure → agreement

    @property
    def agrees(self) -> bool | None:
        """For a baseline: whether every figure checked agrees (False when none was); else None."""
        if self.kind != "baseline":
            return None
        return bool(self.check) and all(a.agrees for a in self.check.values())


@dataclass
class BenchReport:
    title: str
    setup: dict[str, object] = field(default_factory=dict)
    rows: list[Measurement] = field(default_factory=list)

    def add(
        self, name: str, value: float, unit: str, *, kind: Kind = "latentdask", vs: Sequence[str] = ()
    ) -> Measurement:
        """Record a row; ``vs`` names the baselines or bounds it is compared with."""
        if any(row.name == name for row in self.rows):
            raise ValueError(f"{self.title}: two rows named {name!r}")
        row = Measurement(name, float(value), unit, kind, tuple(vs))
        self.rows.append(row)
        return row

    def row(self, name: str) -> Measurement:
        found = [row for row in self.rows if row.name == name]
        if not found:
            raise KeyError(f"{self.title}: no row named {name!r}")
        return found[0]

    def check(self, baseline: str, figure: str, difference: float, tolerance: float) -> Agreement:
        """Record how far one figure of ``baseline`` is from latentdask's on the same data."""
        row = self.row(baseline)
        if row.kind != "baseline":
            raise ValueError(f"{self.title}: {baseline!r} is a {row.kind} row, not a baseline")
        agreement = Agreement(float(difference), float(tolerance))
        row.check[figure] = agreement
        return agreement

    def ratio(self, row: Measurement, other_name: str) -> float | None:
        """The speed-up of ``row`` over another row; None when that row is a baseline that disagrees."""
        other = self.row(other_name)
        if other.kind not in ("baseline", "bound"):
            raise ValueError(
                f"{self.title}: {row.name!r} is compared with {other_name!r}, a {other.kind} row"
            )
        if other.unit != row.unit:
            raise ValueError(f"{self.title}: {row.name!r} in {row.unit} compared with {other.unit}")
        if other.kind == "baseline" and not other.agrees:
            return None
        low, high = (other.value, row.value) if row.unit in TIME_UNITS else (row.value, other.value)
        return low / high if high else None

    def disagreements(self) -> list[str]:
        """One line per baseline whose figures differ from latentdask's (or were never checked)."""
        lines = []
        for row in self.rows:
            if row.kind == "baseline" and not row.agrees:
                failed = [
                    f"{figure}: {a.difference:.3g} > {a.tolerance:.3g}"
                    for figure, a in row.check.items()
                    if not a.agrees
                ]
                why = "; ".join(failed) if failed else "never checked"
                lines.append(
                    f"{self.title}: baseline {row.name!r} does not compute latentdask's figures ({why})"
                )
        return lines

    def payload(self) -> dict[str, Any]:
        """The report as JSON-ready data (the ``bench all`` file holds one per benchmark)."""
        rows = []
        for row in self.rows:
            rows.append(
                {
                    "name": row.name,
                    "value": row.value,
                    "unit": row.unit,
                    "kind": row.kind,
                    "ratios": {other: self.ratio(row, other) for other in row.vs},
                    "agrees": row.agrees,
                    "check": {
                        figure: {"difference": a.difference, "tolerance": a.tolerance, "agrees": a.agrees}
                        for figure, a in row.check.items()
                    },
                }
            )
        return {
            "title": self.title,
            "setup": self.setup,
            "rows": rows,
            "agrees": not self.disagreements(),
            "ratios": "speed-ups, higher is better (seconds: theirs / ours; rates: ours / theirs); "
            "null where the baseline does not compute latentdask's figures",
        }

    def show(self) -> None:
        table = Table(title=self.title)
        for column in ("#", "measurement", "kind", "value", "unit", "speed-up", "same figures"):
            table.add_column(column, justify="right" if column in ("#", "value") else "left")
        number = {row.name: k for k, row in enumerate(self.rows, 1)}
        for k, row in enumerate(self.rows, 1):
            ratios = []
            for other in row.vs:
                ratio = self.ratio(row, other)
                shown = f"{ratio:.2f}x" if ratio is not None else "withheld"
                ratios.append(f"{shown} vs #{number[other]}")
            same = {None: "", True: "yes", False: "NO"}[row.agrees]
            table.add_row(str(k), row.name, row.kind, f"{row.value:,.3f}", row.unit, ", ".join(ratios), same)
        console.print(table)
        console.print(", ".join(f"{k}={v}" for k, v in self.setup.items()))
        for line in self.disagreements():
            console.print(Text(f"BASELINE DISAGREES: {line}; its ratios are withheld", style="bold red"))

    def save(self, path: str | Path) -> None:
        write_json(path, {"machine": platform.platform(), **self.payload()}, BENCH_KIND)


def relative_difference(ours: np.ndarray, theirs: np.ndarray) -> float:
    """Largest |ours − theirs| relative to the largest |ours| (NaN where the shapes differ)."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    if ours.shape != theirs.shape:
        return math.nan
    scale = float(np.abs(ours).max()) if ours.size else 0.0
    return float(np.abs(ours - theirs).max() / scale) if scale else float(np.abs(theirs).max(initial=0.0))


def count_difference(ours: np.ndarray, theirs: np.ndarray) -> float:
    """Largest |ours − theirs| of two arrays of counts (NaN where the shapes differ)."""
    ours, theirs = np.asarray(ours, np.int64), np.asarray(theirs, np.int64)
    if ours.shape != theirs.shape:
        return math.nan
    return float(np.abs(ours - theirs).max(initial=0))


class PeakMemory:
    """Samples the resident memory of this process and all its descendants (client,
    scheduler, nannies, workers of a LocalCluster) and keeps the largest sum seen."""

    def __init__(self, interval: float = 0.05) -> None:
        import threading

        self.interval = interval
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import os

        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, sum(_rss(pid) for pid in _tree(os.getpid())))
            self._stop.wait(self.interval)


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo.extend(int(child) for child in (task / "children").read_text().split())
            except OSError:
                continue
    return pids


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@contextmanager
def local_client(workers: int) -> Iterator[Client]:
    """``workers`` single-threaded worker processes on this machine, and a client: every bench's layout,
    with the embedded cluster's settings.

    Dask starts each worker with one BLAS and OpenMP thread, so ``workers`` is also the
    number of cores their numpy and torch use.
    """
    from distributed import Client

    from latentdask.cluster.connect import local_cluster

    with (
        local_cluster(
            n_workers=workers, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def blas_threads() -> int:
    """Threads numpy's BLAS uses in this process (what the knn and stats baselines are given)."""
    from threadpoolctl import threadpool_info

    return max(
        (int(info["num_threads"]) for info in threadpool_info() if info["user_api"] == "blas"), default=1
    )


def warm_up(*modules: str, kernels: bool = True) -> None:
    """Once per worker, untimed: import torch, the model code and ``modules`` (the tasks' own),
    start zarr's I/O (a fresh process pays seconds for these, once in its life), and with
    ``kernels`` compile (or load) every numba kernel of the statistics' two passes, whose row
    filter the search, render and the dashboard use too (an encode's tasks use none)."""
    import importlib

    import torch  # noqa: F401
    import zarr

    import latentdask.model.checkpoint  # noqa: F401

    for module in modules:
        importlib.import_module(module)
    zarr.create_array(zarr.storage.MemoryStore(), shape=(1,), dtype="float32")[:]  # zarr's I/O thread
    if not kernels:
        return
    from latentdask.stats.options import SummaryParams
    from latentdask.stats.summary import centred_radius_chunk, summary_chunk

    params = SummaryParams()
    tiny = np.zeros((4, 3), np.float32)  # float32, as stores hold them: numba compiles per type
    summary_chunk(tiny, params=params)
    centred_radius_chunk(tiny, None, None, centre=np.zeros(3), params=params)
