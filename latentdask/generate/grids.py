"""Decoded image grids: what the decoder makes of z-points, one labelled row per source.

Rows come from point sets (a row per sampler), from real images (originals above
their reconstructions), from an interpolation between two real images, and from a
path in a coordinate plane (a, b) through the real centre or the origin (in the CelebA study
the origin lay at the border of the real z-points). :func:`render_grid` lays them out with
their labels in one PNG.

Real images for reconstructions (and for the face rate's reference) are the readable
ones: :func:`readable_images` skips a row that is listed but missing or fails to
decode, takes the next row in its place, and says what it skipped and why; a dataset
with fewer images than asked gives fewer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import zarr
from PIL import Image, ImageDraw

from latentdask.data.dataset import open_dataset
from latentdask.errors import ImageDecodeError, LatentdaskError
from latentdask.location import Where, location
from latentdask.model.autoencoder import Autoencoder
from latentdask.model.checkpoint import Checkpoint

#: the kind of output a decoded grid (PNG) is, in its ``latentdask`` text chunk
DECODED_GRID_KIND = "decoded-grid"
LABEL_WIDTH = 170

#: Unreadable images :func:`readable_images` skips before it stops looking for more.
MAX_SKIPPED = 1000


class GridError(LatentdaskError):
    """Points or images that this model cannot decode as asked."""


@dataclass(frozen=True)
class Row:
    """A label and its images, uint8 (k, size, size, 3); ``skipped``: ``name: reason`` of
    the source images left out because they could not be read."""

    label: str
    images: np.ndarray
    skipped: tuple[str, ...] = ()


@dataclass(frozen=True)
class RealImages:
    """Decoded real images: ``pixels`` float32 (k, 3, size, size), the manifest ``rows``
    they come from, and ``skipped``, a ``name: reason`` per unreadable row left out."""

    pixels: np.ndarray
    rows: tuple[int, ...]
    skipped: tuple[str, ...]


def decode_points(model: Autoencoder, z: np.ndarray) -> np.ndarray:
    """Decoder images of ``z`` (k, latent_dim) as uint8 (k, size, size, 3)."""
    if z.ndim != 2 or z.shape[1] != model.config.latent_dim:
        raise GridError(
            f"points have shape {z.shape}; this model decodes (k, {model.config.latent_dim}) latents"
        )
    with torch.inference_mode():
        images = model.eval().decode(torch.from_numpy(np.asarray(z, dtype=np.float32)))
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def encode_images(model: Autoencoder, pixels: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model.eval().encode(torch.from_numpy(pixels)).numpy()


def point_rows(model: Autoencoder, paths: Sequence[Where], per_row: int) -> list[Row]:
    """One row per POINTS.zarr: its first ``per_row`` points, decoded."""
    rows = []
    for path in paths:
        group = zarr.open_group(str(location(path)), mode="r")
        z = np.asarray(group["z"][:per_row])  # type: ignore[index]
        label = str(group.attrs.get("sampler", location(path).stem))
        params = group.attrs.get("params")
        if label == "uniform" and isinstance(params, dict):
            label += f" b={params.get('b')}"
        rows.append(Row(label, decode_points(model, z)))
    return rows


def real_pixels(checkpoint: Checkpoint, dataset: Where, rows: Sequence[int]) -> np.ndarray:
    data = open_dataset(dataset)
    if max(rows) >= len(data.manifest):
        raise GridError(f"{dataset} has {len(data.manifest)} images; row {max(rows)} asked for")
    return np.stack([data.load(int(r), checkpoint.preprocessing).pixels for r in rows])


def readable_images(
    checkpoint: Checkpoint, dataset: Where, rows: Sequence[int], *, max_skipped: int = MAX_SKIPPED
) -> RealImages:
    """Up to ``len(rows)`` readable images: ``rows`` first, then the rows after the last of them.

    A row that is listed but missing or fails to decode is skipped and the next row
    taken in its place; rows past the dataset's end do not exist and are not counted as
    skipped, so a small dataset gives fewer images than asked.

    The search stops after ``max_skipped`` unreadable rows, with what it has found.

    Raises
    ------
    GridError
        If rows were asked for and none of those tried is readable.

    Examples
    --------
    >>> real = readable_images(checkpoint, "data/faces", range(12))  # doctest: +SKIP
    >>> len(real.rows), len(real.skipped)  # doctest: +SKIP
    (12, 1)
    """
    data = open_dataset(dataset)
    manifest, prep = data.manifest, checkpoint.preprocessing
    asked = [int(r) for r in rows]
    after = max(asked, default=-1) + 1
    candidates = [r for r in asked if 0 <= r < len(manifest)] + list(range(after, len(manifest)))
    found: dict[int, np.ndarray] = {}
    skipped: list[str] = []
    for row in candidates:
        if len(found) == len(asked) or len(skipped) >= max_skipped:
            break
        if row in found:
            continue
        try:
            if not manifest.present[row]:
                raise ImageDecodeError(str(manifest.names[row]), "listed but missing")
            found[row] = data.load(row, prep).pixels
        except ImageDecodeError as exc:
            skipped.append(f"{exc.name}: {exc.reason}")
    if asked and not found:
        if not skipped:
            raise GridError(f"{dataset} has {len(manifest)} images; none from row {min(asked)} on")
        raise GridError(f"no readable image in {dataset}: {len(skipped)} skipped (e.g. {skipped[0]})")
    size = prep.image_size
    pixels = np.stack(list(found.values())) if found else np.zeros((0, 3, size, size), np.float32)
    return RealImages(pixels, tuple(found), tuple(skipped))


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    return (np.clip(pixels, 0, 1) * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)


def reconstruction_rows(
    checkpoint: Checkpoint, dataset: Where, rows: Sequence[int], *, max_skipped: int = MAX_SKIPPED
) -> list[Row]:
    """Readable real images (see :func:`readable_images`) above what the autoencoder makes of them.

    The originals' row is labelled with the number of unreadable images skipped, and
    carries their names and reasons in ``skipped``.
    """
    real = readable_images(checkpoint, dataset, rows, max_skipped=max_skipped)
    z = encode_images(checkpoint.model, real.pixels)
    label = f"original ({len(real.skipped)} skipped)" if real.skipped else "original"
    return [
        Row(label, to_uint8(real.pixels), real.skipped),
        Row("reconstruction", decode_points(checkpoint.model, z)),
    ]


def interpolation_row(checkpoint: Checkpoint, dataset: Where, first: int, last: int, steps: int) -> Row:
    """Linear interpolation between the latents of two real images."""
    z = encode_images(checkpoint.model, real_pixels(checkpoint, dataset, [first, last]))
    t = np.linspace(0, 1, steps)[:, None]
    return Row(f"images {first} -> {last}", decode_points(checkpoint.model, (1 - t) * z[0] + t * z[1]))


def path_row(
    model: Autoencoder,
    mean: np.ndarray,
    std: np.ndarray,
    a: int,
    b: int,
    *,
    through: Literal["centre", "origin"],
    steps: int,
    extent: float = 3.0,
) -> Row:
    """Points on the diagonal segment of the plane (a, b) through the centre or the origin.

    Every other component stays at the real mean (``centre``) or 0 (``origin``); x_a and
    x_b run together over ±``extent`` standard deviations of each.
    """
    dim = len(mean)
    if not (0 <= a < dim and 0 <= b < dim) or a == b:
        raise GridError(f"a path needs two different components in 0…{dim - 1}, got ({a}, {b})")
    base = mean.copy() if through == "centre" else np.zeros(dim)
    t = np.linspace(-extent, extent, steps)
    z = np.repeat(base[None, :], steps, axis=0)
    z[:, a] = base[a] + t * std[a]
    z[:, b] = base[b] + t * std[b]
    return Row(f"path ({a},{b}) via {through}", decode_points(model, z.astype(np.float32)))


def render_grid(rows: Sequence[Row], *, scale: int = 2, title: str = "") -> Image.Image:
    """Rows of images, each with its label on the left; cells scaled by ``scale``."""
    if not rows:
        raise GridError("nothing to draw: give point sets, --reconstruct, --interpolate or --path")
    size = rows[0].images.shape[1] * scale
    columns = max(len(r.images) for r in rows)
    top = 24 if title else 0
    grid = Image.new("RGB", (LABEL_WIDTH + columns * size, top + len(rows) * size), "white")
    draw = ImageDraw.Draw(grid)
    if title:
        draw.text((6, 6), title, fill="black")
    for i, row in enumerate(rows):
        y = top + i * size
        draw.text((6, y + size // 2 - 6), row.label[:28], fill="black")
        for j, image in enumerate(row.images):
            cell = Image.fromarray(image).resize((size, size), Image.Resampling.NEAREST)
            grid.paste(cell, (LABEL_WIDTH + j * size, y))
    return grid


def skipped_note(rows: Sequence[Row]) -> str | None:
    """``"2 unreadable image(s) skipped (000002.jpg: not an image file, ...)"``, or None."""
    skipped = [entry for row in rows for entry in row.skipped]
    if not skipped:
        return None
    shown = ", ".join(skipped[:2]) + (", ..." if len(skipped) > 2 else "")
    return f"{len(skipped)} unreadable image(s) skipped ({shown})"
