"""``latentdask bench all``: every benchmark at one scale, with the machine and versions, in one JSON.

``default`` runs each benchmark at its own defaults (those of ``latentdask bench <name>``,
about 15 minutes in all on a 2-core machine); ``tiny`` runs each in seconds, for tests
(figures that say nothing about speed). The JSON (``BENCH_KIND``) holds::

    {"latentdask": {record}, "scale": "default", "command": "latentdask bench all --scale default",
     "date": "...Z", "seconds": 812.4, "agrees": true,
     "machine": {"cpu": ..., "cores": 2, "ram_gib": 23.4, "gpu": null, "platform": ...},
     "versions": {"python": ..., "numpy": ..., "dask": ..., "distributed": ..., "zarr": ...,
                  "torch": ..., "datashader": ..., "latentdask": ...},
     "benches": {"decode": {"command": "latentdask bench decode --n 2000 ...", "sizes": {...},
                            "seconds": 9.1, "title": ..., "setup": {...}, "rows": [...],
                            "agrees": true, "ratios": ...}, "train": ..., ...}}
"""

from __future__ import annotations

import importlib
import inspect
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from rich.text import Text

from latentdask._version import __version__
from latentdask.bench.report import BENCH_KIND, BenchReport
from latentdask.output import write_json
from latentdask.progress import console

Scale = Literal["default", "tiny"]

#: each benchmark's function, in the order ``bench all`` runs them
BENCHES = {
    "decode": "latentdask.bench.decode:bench_decode",
    "train": "latentdask.bench.train:bench_train",
    "encode": "latentdask.bench.encode:bench_encode",
    "stats": "latentdask.bench.stats:bench_stats",
    "knn": "latentdask.bench.knn:bench_knn",
    "render": "latentdask.bench.render:bench_render",
    "gmm": "latentdask.bench.gmm:bench_gmm",
    "overhead": "latentdask.bench.overhead:bench_overhead",
}
#: ``--scale tiny``: a few seconds each (``default`` is each function's own defaults)
TINY: dict[str, dict[str, Any]] = {
    "decode": {"n": 20},
    "train": {"image_size": 16, "latent_dim": 8, "batch_size": 4, "steps": 2},
    "encode": {
        "n": 64,
        "shard_size": 32,
        "batch_size": 16,
        "image_size": 16,
        "latent_dim": 8,
        "layouts": ((2, 1, 1),),
        "rounds": 1,
    },
    "stats": {"n": 20_000, "dim": 16, "chunk_rows": 4096},
    "knn": {"n": 20_000, "queries": 300, "dim": 16, "chunk_rows": 4096},
    "render": {"n": 20_000, "dim": 16, "chunk_rows": 4096, "width": 200, "repeats": 1},
    "gmm": {"n": 5_000, "dim": 8, "components": 3, "chunk_rows": 1024},
    "overhead": {"rows": 200, "dim": 8, "images": 20, "repeats": 1},
}
#: the packages whose versions the figures depend on
PACKAGES = (
    "numpy",
    "dask",
    "distributed",
    "zarr",
    "torch",
    "datashader",
    "numba",
    "pandas",
    "pillow",
    "opencv-python-headless",
)


def bench_function(name: str) -> Callable[..., BenchReport]:
    module, function = BENCHES[name].split(":")
    return getattr(importlib.import_module(module), function)


def sizes(name: str, scale: Scale) -> dict[str, Any]:
    """The keyword arguments ``bench all`` gives a benchmark at ``scale`` (its defaults, or tiny ones)."""
    defaults = {
        p.name: p.default
        for p in inspect.signature(bench_function(name)).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not None
    }
    return defaults | (TINY[name] if scale == "tiny" else {})


def command(name: str, arguments: dict[str, Any]) -> str:
    """The ``latentdask bench <name>`` command line that runs the benchmark with ``arguments``."""
    words = ["latentdask", "bench", name]
    for key, value in arguments.items():
        option = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            words.append(option if value else option.replace("--", "--no-", 1))
        elif key == "layouts":
            words += [word for layout in value for word in ("--layout", ",".join(map(str, layout)))]
        elif key == "decoders":
            words += [word for decoder in value for word in ("--decoder", decoder)]
        else:
            words += [option, str(value)]
    return " ".join(words)


def machine() -> dict[str, Any]:
    """CPU model, cores, memory and GPU of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        names = [
            line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")
        ]
        cpu = names[0].split(":", 1)[1].strip() if names else cpu
    except OSError:
        pass
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
    import torch

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(ram / 2**30, 1),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "platform": platform.platform(),
    }


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found | {"latentdask": __version__}


@dataclass
class Suite:
    """Every benchmark's report from one ``bench all`` run, and where and when it ran."""

    scale: Scale
    date: str
    machine: dict[str, Any]
    versions: dict[str, str]
    reports: dict[str, BenchReport] = field(default_factory=dict)
    arguments: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def disagreements(self) -> list[str]:
        return [line for report in self.reports.values() for line in report.disagreements()]

    def payload(self) -> dict[str, Any]:
        return {
            "scale": self.scale,
            "command": f"latentdask bench all --scale {self.scale}",
            "date": self.date,
            "seconds": round(sum(self.seconds.values()), 1),
            "agrees": not self.disagreements(),
            "machine": self.machine,
            "versions": self.versions,
            "benches": {
                name: {
                    "command": command(name, self.arguments[name]),
                    "sizes": self.arguments[name],
                    "seconds": round(self.seconds[name], 1),
                    **report.payload(),
                }
                for name, report in self.reports.items()
            },
        }

    def show(self) -> None:
        for report in self.reports.values():
            report.show()
        total = sum(self.seconds.values())
        console.print(
            f"bench all ({self.scale}): {len(self.reports)} benchmarks in {total:,.0f} s on "
            f"{self.machine['cpu']} ({self.machine['cores']} cores)"
        )
        for line in self.disagreements():
            console.print(Text(f"BASELINE DISAGREES: {line}", style="bold red"))

    def save(self, path: str | Path) -> None:
        write_json(path, self.payload(), BENCH_KIND)


def run_all(*, scale: Scale = "default") -> Suite:
    """Run every benchmark at ``scale``, one after the other, in this process."""
    suite = Suite(scale, datetime.now(UTC).isoformat(timespec="seconds"), machine(), versions())
    for k, name in enumerate(BENCHES, 1):
        arguments = sizes(name, scale)
        console.print(f"bench all: {k}/{len(BENCHES)} {command(name, arguments)}")
        started = time.perf_counter()
        suite.reports[name] = bench_function(name)(**arguments)
        suite.seconds[name] = time.perf_counter() - started
        suite.arguments[name] = arguments
    return suite
