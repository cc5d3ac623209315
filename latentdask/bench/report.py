"""The result of a benchmark: rows of measurements, each optionally a ratio to a baseline."""

from __future__ import annotations

import platform
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from latentdask.progress import console
from latentdask.store.output import write_json

if TYPE_CHECKING:
    from distributed import Client

#: the kind of output a benchmark's JSON is, in its ``latentdask`` record
BENCH_KIND = "benchmark"


@dataclass
class Measurement:
    name: str
    value: float
    unit: str
    baseline: str | None = None  # name of the measurement this one is compared with
    ratio: float | None = None


@dataclass
class BenchReport:
    title: str
    setup: dict[str, object] = field(default_factory=dict)
    rows: list[Measurement] = field(default_factory=list)

    def add(self, name: str, value: float, unit: str, *, baseline: str | None = None) -> Measurement:
        """Record a measurement; with ``baseline``, its ratio value/baseline (higher is better)."""
        ratio = None
        if baseline is not None:
            reference = next(row for row in self.rows if row.name == baseline)
            ratio = value / reference.value if reference.value else None
        row = Measurement(name, value, unit, baseline, ratio)
        self.rows.append(row)
        return row

    def show(self) -> None:
        table = Table(title=self.title)
        for column in ("measurement", "value", "unit", "vs", "ratio"):
            table.add_column(column, justify="right" if column in ("value", "ratio") else "left")
        for row in self.rows:
            ratio = f"{row.ratio:.2f}x" if row.ratio is not None else ""
            table.add_row(row.name, f"{row.value:,.1f}", row.unit, row.baseline or "", ratio)
        console.print(table)
        console.print(", ".join(f"{k}={v}" for k, v in self.setup.items()))

    def save(self, path: str | Path) -> None:
        payload = {
            "title": self.title,
            "machine": platform.platform(),
            "setup": self.setup,
            "rows": [asdict(r) for r in self.rows],
        }
        write_json(path, payload, BENCH_KIND)


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
    """``workers`` single-threaded worker processes on this machine, and a client: every bench's layout."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client
