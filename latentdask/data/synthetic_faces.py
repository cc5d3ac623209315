"""Synthetic faces written in CelebA's official layout, for tests and the demo.

The faces are drawn by :mod:`latentdask.data.face_drawing`; this module writes them as a
dataset: ``img_align_celeba/000001.jpg`` …, ``list_eval_partition.txt`` (80/10/10,
contiguous like CelebA's) and ``list_attr_celeba.txt`` with the 40 official names, the
attributes the generator controls true to the drawn face and the others -1. A
``SYNTHETIC.json`` recipe, written last, marks a complete dataset.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from latentdask.data.celeba_names import ATTRIBUTE_FILE, ATTRIBUTE_NAMES, IMAGE_FOLDER, PARTITION_FILE
from latentdask.data.face_drawing import GENERATOR_VERSION, render_face_jpeg
from latentdask.errors import DatasetError
from latentdask.location import Location, Where, location
from latentdask.output import owned_output
from latentdask.progress import progress_bar

RECIPE_FILE = "SYNTHETIC.json"
#: the kind of output a synthetic dataset is, in its latentdask.json record
SYNTHETIC_FACES_KIND = "synthetic-faces"


def synthesize(out: Where, *, n: int, seed: int = 0, progress: bool = True) -> Location:
    """Write ``n`` synthetic faces in CelebA's official layout under ``out``.

    Parameters
    ----------
    out
        A folder that does not exist yet, is empty, or holds synthetic faces written
        earlier (replaced). If it already holds a complete dataset made with the same
        ``n`` and ``seed``, nothing is written.
    n
        Number of images, named ``000001.jpg`` … like CelebA.
    seed
        Same seed, same bytes.

    Returns
    -------
    Path
        ``out``, ready for :func:`latentdask.open_dataset`.

    Examples
    --------
    >>> root = synthesize(tmp_path / "faces", n=10, seed=1, progress=False)  # doctest: +SKIP
    """
    if n < 1:
        raise DatasetError(f"--n must be at least 1, got {n}")
    root = location(out)
    recipe = synthetic_recipe(n, seed)
    if read_recipe(root) == recipe:
        return root  # the same dataset is already there
    with owned_output(root, SYNTHETIC_FACES_KIND, params=recipe) as staged:
        _write_faces(staged.path, n=n, seed=seed, progress=progress)
        # written last: its presence means the dataset is complete
        (staged.path / RECIPE_FILE).write_text(json.dumps(recipe) + "\n")
    return root


def _write_faces(root: Location, *, n: int, seed: int, progress: bool) -> None:
    images = root / IMAGE_FOLDER
    images.mkdir()
    splits = celeba_like_splits(n)
    attribute_lines = []
    with progress_bar("synthesizing faces", total=n, unit="images", enabled=progress) as bar:
        for index, (data, attributes) in enumerate(_rendered(seed, n)):
            name = f"{index + 1:06d}.jpg"
            (images / name).write_bytes(data)
            values = " ".join(f"{attributes[a]:2d}" for a in ATTRIBUTE_NAMES)
            attribute_lines.append(f"{name} {values}")
            if index % 100 == 99 or index == n - 1:
                bar.advance(index % 100 + 1)
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    (root / PARTITION_FILE).write_text(
        "".join(f"{name} {split}\n" for name, split in zip(names, splits, strict=True))
    )
    header = f"{n}\n{' '.join(ATTRIBUTE_NAMES)}\n"
    (root / ATTRIBUTE_FILE).write_text(header + "\n".join(attribute_lines) + "\n")


#: faces drawn per task of the process pool (a large dataset is drawn on every core)
_FACES_PER_TASK = 1000


def _render_range(seed: int, start: int, stop: int) -> list[tuple[bytes, dict[str, int]]]:
    return [render_face_jpeg(seed, index) for index in range(start, stop)]


def _rendered(seed: int, n: int) -> Iterator[tuple[bytes, dict[str, int]]]:
    """Every face in order; drawn by a process per core when there are several tasks' worth."""
    processes = min(os.cpu_count() or 1, n // _FACES_PER_TASK)
    if processes < 2:
        yield from _render_range(seed, 0, n)
        return
    starts = range(0, n, _FACES_PER_TASK)
    stops = [min(start + _FACES_PER_TASK, n) for start in starts]
    # spawned: forking a process that holds threads (the progress bar's) is unsafe
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        for faces in pool.map(_render_range, [seed] * len(starts), starts, stops):
            yield from faces


def synthetic_recipe(n: int, seed: int) -> dict[str, int]:
    """What ``SYNTHETIC.json`` holds for a dataset of ``n`` faces drawn with ``seed``."""
    return {"generator": GENERATOR_VERSION, "n": n, "seed": seed}


def read_recipe(root: Location) -> dict[str, int] | None:
    """The ``{generator, n, seed}`` a complete synthetic dataset was made with, else None."""
    try:
        return dict(json.loads((root / RECIPE_FILE).read_text()))
    except (OSError, ValueError):
        return None


def celeba_like_splits(n: int) -> np.ndarray:
    """Contiguous train/valid/test blocks of about 80/10/10 %, as CelebA's partition is."""
    n_train = round(0.8 * n)
    n_valid = round(0.1 * n)
    splits = np.full(n, 2, dtype=np.int8)
    splits[:n_train] = 0
    splits[n_train : n_train + n_valid] = 1
    return splits
