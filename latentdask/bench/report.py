"""The result of a benchmark: rows of measurements, each optionally a ratio to a baseline."""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.table import Table

from latentdask.progress import console


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
        Path(path).write_text(json.dumps(payload, indent=2) + "\n")
