"""``latentdask bench decode``: the decode pipeline against a plain PIL loop, one core.

Baseline (what a person writes without thinking about speed)::

    image = Image.open(path).convert("RGB").crop(box).resize((s, s), Image.BILINEAR)
    pixels = np.asarray(image, np.float32).transpose(2, 0, 1) / 255

Both read the same files from disk in the same process, each over the whole set,
alternating twice so that cache warmth favours neither.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from latentdask.bench.report import BenchReport
from latentdask.data.dataset import open_dataset
from latentdask.data.decode import Preprocessing, decode_image
from latentdask.data.synthetic_faces import synthesize


def plain_pil_loop(paths: list[Path], prep: Preprocessing) -> None:
    size = prep.image_size
    for path in paths:
        image = Image.open(path).convert("RGB")
        if prep.crop is not None:
            image = image.crop(prep.crop)
        image = image.resize((size, size), Image.Resampling.BILINEAR)
        np.asarray(image, np.float32).transpose(2, 0, 1) / 255


def pipeline_loop(paths: list[Path], prep: Preprocessing) -> None:
    for path in paths:
        decode_image(path.read_bytes(), prep, path.name)


def bench_decode(*, dataset: str | Path | None = None, n: int = 2000, image_size: int = 64) -> BenchReport:
    """Images/s on one core: ``decode_image`` (draft on and off) against the plain PIL loop."""
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(dataset) if dataset else synthesize(Path(scratch) / "faces", n=n, seed=0, progress=False)
        ds = open_dataset(root)
        folder = getattr(ds.container, "folder", None)
        if folder is None:
            raise ValueError("bench decode reads files from a folder; extract the zip first")
        paths = [folder / name for name in ds.manifest.names[:n]]
        prep = Preprocessing(image_size=image_size)
        loops = {
            "plain PIL loop": (plain_pil_loop, prep),
            "latentdask decode (draft)": (pipeline_loop, prep),
            "latentdask decode (no draft)": (
                pipeline_loop,
                prep.model_copy(update={"draft": False}),
            ),
        }
        best: dict[str, float] = {}
        for _ in range(2):
            for name, (loop, p) in loops.items():
                started = time.perf_counter()
                loop(paths, p)
                rate = len(paths) / (time.perf_counter() - started)
                best[name] = max(best.get(name, 0.0), rate)
    report = BenchReport(
        "decode + preprocess, one core",
        setup={"images": len(paths), "image_size": image_size, "source": str(root)},
    )
    report.add("plain PIL loop", best["plain PIL loop"], "images/s")
    for name in ("latentdask decode (draft)", "latentdask decode (no draft)"):
        report.add(name, best[name], "images/s", baseline="plain PIL loop")
    return report
