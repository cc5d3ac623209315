"""Face rate with OpenCV's shipped Haar cascade: faces found in faces, none in noise, honest when blind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from latentdask.data.dataset import open_dataset
from latentdask.data.decode import Preprocessing, decode_image
from latentdask.generate.faces import NOT_MEANINGFUL, face_rates, format_face_rates, has_face
from latentdask.model.autoencoder import Autoencoder
from latentdask.model.checkpoint import load_checkpoint, save_checkpoint
from latentdask.model.config import ModelConfig
from tests.helpers import write_partly_unreadable_celeba


def face_images(root: Path, size: int, n: int) -> np.ndarray:
    data = open_dataset(root)
    pixels = np.stack([data.load(i, Preprocessing(image_size=size)).pixels for i in range(n)])
    return (pixels.clip(0, 1) * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)


def test_detector_finds_synthetic_faces_and_nothing_in_noise(faces: Path) -> None:
    found = has_face(face_images(faces, 64, 60))
    assert 0.1 < found.mean() <= 1.0  # cartoons, not photographs: the cascade finds some of them
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, size=(30, 64, 64, 3), dtype=np.uint8)
    flat = np.full((5, 64, 64, 3), 128, dtype=np.uint8)
    assert not has_face(np.concatenate([noise, flat])).any()


def test_untrained_model_reports_rates_as_not_meaningful(faces: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Autoencoder(ModelConfig(image_size=32, latent_dim=8, channels=(4, 4)))
    checkpoint = load_checkpoint(save_checkpoint(tmp_path / "ckpt", model, Preprocessing(image_size=32)))
    points = tmp_path / "uniform.zarr"
    group = zarr.open_group(str(points), mode="w")
    group.create_array("z", shape=(20, 8), dtype="float32")[:] = np.random.default_rng(1).uniform(
        -1.5, 1.5, (20, 8)
    )
    group.attrs["sampler"] = "uniform"
    result = face_rates(checkpoint, [points], faces, n=40)
    assert result["reference"]["real images"]["images"] == 40
    assert result["reference"]["real images"]["faces"] > 0
    assert result["reference"]["real reconstructions"]["faces"] == 0
    assert not result["meaningful"] and result["note"] == NOT_MEANINGFUL
    (rate,) = result["sets"].values()
    assert rate["images"] == 20 and rate["rate"] is None
    text = format_face_rates(result)
    assert "uniform (uniform.zarr)" in text and NOT_MEANINGFUL in text


def test_face_rate_command_needs_reference_images(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Autoencoder(ModelConfig(image_size=16, latent_dim=4, channels=(4, 4)))
    ckpt = save_checkpoint(tmp_path / "ckpt", model, Preprocessing(image_size=16))
    points = tmp_path / "p.zarr"
    zarr.open_group(str(points), mode="w").create_array("z", shape=(3, 4), dtype="float32")[:] = 0.0
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "latentdask.cli",
            "decode",
            str(ckpt),
            str(points),
            "--out",
            str(tmp_path / "g.png"),
            "--face-rate",
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert "--face-rate needs real images for reference" in result.stderr


def test_face_rate_uses_readable_images_and_counts_the_skipped(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Autoencoder(ModelConfig(image_size=32, latent_dim=8, channels=(4, 4)))
    checkpoint = load_checkpoint(save_checkpoint(tmp_path / "ckpt", model, Preprocessing(image_size=32)))
    root, readable = write_partly_unreadable_celeba(tmp_path / "c")
    result = face_rates(checkpoint, [], root, n=200)
    assert result["real_images"] == {
        "asked": 200,
        "used": 4,
        "skipped": 3,
        "skipped_examples": [
            "000002.jpg: not an image file",
            "000004.jpg: listed but missing",
            "000006.jpg: image too large (20000×20000)",
        ],
    }
    # the detector's verdict on the readable images, decoded one by one from their bytes
    pixels = np.stack([decode_image(data, checkpoint.preprocessing).pixels for data in readable.values()])
    faces_found = has_face((pixels.clip(0, 1) * 255).round().astype(np.uint8).transpose(0, 2, 3, 1))
    assert result["reference"]["real images"] == {
        "images": 4,
        "faces": int(faces_found.sum()),
        "rate": float(faces_found.mean()),
    }
    text = format_face_rates(result)
    assert "note: 3 unreadable real image(s) skipped (e.g. 000002.jpg: not an image file;" in text
    assert "note: 4 real image(s) used of 200 asked for" in text


def test_round_trip_moves_points_the_decoder_cannot_represent(checkpoint: Path) -> None:
    """decode → 8-bit image → encode: the model's own codes of real images move little, points far
    outside (the decoder saturates) move by about their own length."""
    from latentdask.generate.faces import round_trip
    from latentdask.generate.grids import decode_points

    loaded = load_checkpoint(checkpoint)
    model = loaded.model
    rng = np.random.default_rng(0)
    dim = model.config.latent_dim
    pixels = rng.uniform(0, 1, size=(8, 3, model.config.image_size, model.config.image_size)).astype(
        np.float32
    )
    with torch.inference_mode():
        own = model.eval().encode(torch.from_numpy(pixels)).numpy()
        far = 100 * own / np.linalg.norm(own, axis=1, keepdims=True) * np.sqrt(dim)
        expected = np.linalg.norm(
            model.encode(
                torch.from_numpy(decode_points(model, own).transpose(0, 3, 1, 2) / 255).float()
            ).numpy()
            - own,
            axis=1,
        )
    near = round_trip(model, own, decode_points(model, own))
    assert near["round_trip_q50"] == pytest.approx(float(np.median(expected)), rel=1e-5)
    assert round_trip(model, far, decode_points(model, far))["round_trip_q50"] > 10 * near["round_trip_q50"]
