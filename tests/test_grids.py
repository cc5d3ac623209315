"""Decoded grids: sizes, labels, and the decoder's own pixels in the cells."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from latentdask.data.decode import Preprocessing, decode_image
from latentdask.generate.grids import (
    LABEL_WIDTH,
    GridError,
    decode_points,
    encode_images,
    interpolation_row,
    path_row,
    point_rows,
    reconstruction_rows,
    render_grid,
)
from latentdask.model.autoencoder import Autoencoder
from latentdask.model.checkpoint import load_checkpoint, save_checkpoint
from latentdask.model.config import ModelConfig
from tests.helpers import write_celeba, write_partly_unreadable_celeba


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = Autoencoder(ModelConfig(image_size=16, latent_dim=6, channels=(4, 4)))
    return save_checkpoint(tmp_path_factory.mktemp("m") / "ckpt", model, Preprocessing(image_size=16))


def points_group(path: Path, z: np.ndarray, sampler: str) -> Path:
    group = zarr.open_group(str(path), mode="w")
    group.create_array("z", shape=z.shape, dtype="float32")[:] = z
    group.attrs.update({"sampler": sampler, "params": {"name": sampler, "b": 1.5}})
    return path


def test_grid_layout_labels_and_cells(checkpoint: Path, tmp_path: Path) -> None:
    model = load_checkpoint(checkpoint).model
    z = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)
    uniform = points_group(tmp_path / "u.zarr", z, "uniform")
    mvn = points_group(tmp_path / "m.zarr", z[::-1].copy(), "mvn")
    rows = point_rows(model, [uniform, mvn], per_row=4)
    assert [r.label for r in rows] == ["uniform b=1.5", "mvn"]
    grid = np.asarray(render_grid(rows, scale=2))
    assert grid.shape == (2 * 32, LABEL_WIDTH + 4 * 32, 3)
    assert (grid[:, :LABEL_WIDTH] < 128).any()  # label text drawn
    expected = decode_points(model, z[:4])
    np.testing.assert_array_equal(grid[0:32:2, LABEL_WIDTH : LABEL_WIDTH + 32 : 2], expected[0])


def test_reconstruction_interpolation_and_path(checkpoint: Path, faces: Path) -> None:
    ckpt = load_checkpoint(checkpoint)
    original, rebuilt = reconstruction_rows(ckpt, faces, [0, 1, 2])
    assert original.images.shape == rebuilt.images.shape == (3, 16, 16, 3)
    row = interpolation_row(ckpt, faces, 0, 2, steps=5)
    np.testing.assert_array_equal(row.images[0], rebuilt.images[0])  # the ends are the reconstructions
    np.testing.assert_array_equal(row.images[-1], rebuilt.images[2])
    mean, std = np.zeros(6), np.ones(6)
    path = path_row(ckpt.model, mean, std, 1, 4, through="origin", steps=7)
    assert path.images.shape == (7, 16, 16, 3) and path.label == "path (1,4) via origin"


def test_clear_errors(checkpoint: Path, tmp_path: Path) -> None:
    model = load_checkpoint(checkpoint).model
    wrong = points_group(tmp_path / "w.zarr", np.zeros((3, 9), np.float32), "mvn")
    with pytest.raises(GridError, match=r"this model decodes \(k, 6\) latents"):
        point_rows(model, [wrong], per_row=3)
    with pytest.raises(GridError, match="two different components"):
        path_row(model, np.zeros(6), np.ones(6), 2, 2, through="centre", steps=3)
    with pytest.raises(GridError, match="nothing to draw"):
        render_grid([])


def test_reconstructions_skip_unreadable_images_and_take_the_next(checkpoint: Path, tmp_path: Path) -> None:
    ckpt = load_checkpoint(checkpoint)
    root, readable = write_partly_unreadable_celeba(tmp_path / "c")
    # the images decoded one by one, straight from their bytes
    expected = {row: decode_image(data, ckpt.preprocessing).pixels for row, data in readable.items()}
    original, rebuilt = reconstruction_rows(ckpt, root, [0, 1, 2])
    wanted = np.stack([expected[0], expected[2], expected[4]])  # rows 1 and 3 skipped, row 4 taken
    np.testing.assert_array_equal(
        original.images, (wanted.clip(0, 1) * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
    )
    np.testing.assert_array_equal(
        rebuilt.images, decode_points(ckpt.model, encode_images(ckpt.model, wanted))
    )
    assert original.label == "original (2 skipped)"
    assert original.skipped == ("000002.jpg: not an image file", "000004.jpg: listed but missing")
    # more asked for than the dataset holds: every readable image, nothing else
    original, rebuilt = reconstruction_rows(ckpt, root, list(range(12)))
    everything = np.stack([expected[row] for row in (0, 2, 4, 6)])
    assert len(original.images) == len(rebuilt.images) == 4
    np.testing.assert_array_equal(original.images[:, :, :, 0], (everything[:, 0].clip(0, 1) * 255).round())
    assert original.skipped[-1] == "000006.jpg: image too large (20000×20000)"
    assert original.label == "original (3 skipped)"
    # all readable: the label says nothing
    assert reconstruction_rows(ckpt, root, [0])[0].label == "original"


def test_no_readable_image_is_a_clear_error(checkpoint: Path, tmp_path: Path) -> None:
    ckpt = load_checkpoint(checkpoint)
    root = write_celeba(tmp_path / "c", {"a.jpg": b"", "b.jpg": b"x"}, partition=None, attributes=None)
    with pytest.raises(GridError, match=r"no readable image in .*: 2 skipped \(e.g. a.jpg: empty file\)"):
        reconstruction_rows(ckpt, root, list(range(12)))
