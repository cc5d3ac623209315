"""``latentdask bench overhead``: what a tiny run costs beside the imports no run can avoid.

Whole commands, as a user starts them (one process each, start-up included), against
``python -c "import latentdask, dask.array, zarr"``: ``latentdask stats`` of a small store
and ``latentdask encode --resume`` of a finished one (nothing to encode). The commands run
in turn, once each to warm the file cache, then ``repeats`` times; the medians are reported.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from latentdask.bench.report import BenchReport
from latentdask.location import Location

#: the floor: what every latentdask command imports before it can do anything
IMPORTS = "import latentdask, dask.array, zarr"


def bench_overhead(*, rows: int = 1000, dim: int = 256, images: int = 200, repeats: int = 5) -> BenchReport:
    """Median seconds of a tiny ``stats`` and of a resume with nothing to do, beside the imports."""
    from latentdask.generate.synthetic import synthesize_latents

    cli = [sys.executable, "-m", "latentdask.cli"]
    with tempfile.TemporaryDirectory(prefix="latentdask-bench-overhead-") as tmp:
        folder = Path(tmp)
        store = folder / "small.zarr"
        synthesize_latents(store, n=rows, dim=dim, seed=0, chunk_rows=rows)
        faces, model = _faces_and_model(folder, images, dim)
        latents = folder / "latents.zarr"
        encode = [
            *cli,
            "encode",
            str(faces),
            "--model",
            str(model),
            "--out",
            str(latents),
            "--shard-size",
            "100",
        ]
        _timed(encode)  # the finished store the resume finds
        commands = {
            "imports": [sys.executable, "-c", IMPORTS],
            "stats": [*cli, "stats", str(store), "--out", str(folder / "stats.zarr")],
            "resume": [*encode, "--resume"],
        }
        seconds: dict[str, list[float]] = {name: [] for name in commands}
        for round_ in range(repeats + 1):
            for name, command in commands.items():
                took = _timed(command)
                if round_:  # the first round warms the file cache
                    seconds[name].append(took)
    median = {name: statistics.median(times) for name, times in seconds.items()}
    report = BenchReport(
        "the cost of a tiny run",
        setup={"rows": rows, "dim": dim, "images": images, "repeats": repeats, "floor": IMPORTS},
    )
    report.add(f'python -c "{IMPORTS}" (no answer)', median["imports"], "s", kind="bound")
    floor = report.rows[0].name
    report.add(f"latentdask stats of {rows:,} x {dim}, whole command", median["stats"], "s", vs=[floor])
    report.add(
        f"latentdask encode --resume, {images} images all done, whole command",
        median["resume"],
        "s",
        vs=[floor],
    )
    return report


def _faces_and_model(folder: Path, images: int, dim: int) -> tuple[Location, Location]:
    """Synthetic faces and an untrained seeded checkpoint (the time to encode is not measured)."""
    import torch

    from latentdask.data.decode import Preprocessing
    from latentdask.data.synthetic_faces import synthesize
    from latentdask.model.autoencoder import Autoencoder
    from latentdask.model.checkpoint import save_checkpoint
    from latentdask.model.config import ModelConfig

    faces = synthesize(folder / "faces", n=images, seed=0, progress=False)
    torch.manual_seed(0)
    config = ModelConfig(image_size=32, latent_dim=dim, channels=(8, 8, 16, 16))
    model = save_checkpoint(folder / "model", Autoencoder(config), Preprocessing(image_size=32))
    return faces, model


def _timed(command: Sequence[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return took
