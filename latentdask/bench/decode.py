"""``latentdask bench decode``: the decode pipeline against a plain PIL loop, one core.

Baseline (what a person writes without thinking about speed)::

    image = Image.open(path).convert("RGB").crop(box).resize((s, s), Image.BILINEAR)
    pixels = np.asarray(image, np.float32).transpose(2, 0, 1) / 255

Both read the same files from disk in the same process, each over the whole set,
alternating twice so that cache warmth favours neither. Untimed, the baseline's pixels
are compared with latentdask's: equal to a full decode, and within
:data:`~latentdask.data.decode.DRAFT_TOLERANCE` (mean |difference| per image) of a draft decode.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from latentdask.bench.report import BenchReport
from latentdask.data.dataset import open_dataset
from latentdask.data.decode import DRAFT_TOLERANCE, Preprocessing, decode_image
from latentdask.data.synthetic_faces import synthesize

BASELINE = "plain PIL loop"
DRAFT = "latentdask decode (draft)"
NO_DRAFT = "latentdask decode (no draft)"


def plain_pil(path: Path, prep: Preprocessing) -> np.ndarray:
    size = prep.image_size
    image = Image.open(path).convert("RGB")
    if prep.crop is not None:
        image = image.crop(prep.crop)
    image = image.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image, np.float32).transpose(2, 0, 1) / 255


def plain_pil_loop(paths: list[Path], prep: Preprocessing) -> None:
    for path in paths:
        plain_pil(path, prep)


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
        full = prep.model_copy(update={"draft": False})
        loops = {
            BASELINE: (plain_pil_loop, prep),
            DRAFT: (pipeline_loop, prep),
            NO_DRAFT: (pipeline_loop, full),
        }
        best: dict[str, float] = {}
        for _ in range(2):
            for name, (loop, p) in loops.items():
                started = time.perf_counter()
                loop(paths, p)
                rate = len(paths) / (time.perf_counter() - started)
                best[name] = max(best.get(name, 0.0), rate)
        # the same pixels? (untimed)
        full_difference = draft_difference = 0.0
        for path in paths:
            theirs = plain_pil(path, prep)
            data = path.read_bytes()
            full_difference = max(
                full_difference, float(np.abs(decode_image(data, full).pixels - theirs).max())
            )
            draft_difference = max(
                draft_difference, float(np.abs(decode_image(data, prep).pixels - theirs).mean())
            )
    report = BenchReport(
        "decode + preprocess, one core",
        setup={
            "images": len(paths),
            "image_size": image_size,
            "source": str(dataset) if dataset else "synthetic faces",
        },
    )
    report.add(BASELINE, best[BASELINE], "images/s", kind="baseline")
    report.check(BASELINE, "pixels against a full decode: largest |difference|", full_difference, 0.0)
    report.check(
        BASELINE,
        "pixels against a draft decode: largest mean |difference| of an image",
        draft_difference,
        DRAFT_TOLERANCE,
    )
    for name in (DRAFT, NO_DRAFT):
        report.add(name, best[name], "images/s", vs=[BASELINE])
    return report
