"""Builders of test inputs: image bytes of every kind, and CelebA-layout folders."""

from __future__ import annotations

import importlib
import io
import os
import resource
import signal
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

from latentdask.data.celeba_names import ATTRIBUTE_NAMES
from latentdask.location import is_remote, location


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_from_idat(width: int, height: int, bit_depth: int, colour_type: int, idat: bytes) -> bytes:
    """A PNG of one IDAT chunk: any declared size, whatever the (compressed) data holds."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def png_rgb16(pixels: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG, written by hand (PIL cannot write one)."""
    height, width, _ = pixels.shape
    raw = b"".join(b"\0" + pixels[y].astype(">u2").tobytes() for y in range(height))
    return png_from_idat(width, height, 16, 2, zlib.compress(raw))


def png_zeros16(width: int, height: int) -> bytes:
    """A black 16-bit grayscale PNG of any size, compressed one row at a time.

    12000 × 12000 pixels (288 MB once decoded) take about 280 KB, and building them
    never holds more than one row: the shape of a decompression bomb.
    """
    row = bytes(1 + 2 * width)  # filter byte 0, then the samples
    packer = zlib.compressobj()
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return png_from_idat(width, height, 16, 0, idat)


def banded_image(mode: str = "RGB") -> Image.Image:
    """178 × 218: red rows 0-19, green rows 20-197 (CelebA's crop box), blue rows 198-217."""
    pixels = np.zeros((218, 178, 3), np.uint8)
    pixels[:20] = (255, 0, 0)
    pixels[20:198] = (0, 255, 0)
    pixels[198:] = (0, 0, 255)
    return Image.fromarray(pixels).convert(mode)


def write_celeba(
    root: Path,
    images: dict[str, bytes],
    *,
    partition: dict[str, int] | None,
    attributes: dict[str, list[int]] | None,
    as_zip: bool = False,
) -> Path:
    """Write a CelebA-layout folder; ``None`` leaves that text file out."""
    root.mkdir(parents=True, exist_ok=True)
    if as_zip:
        with zipfile.ZipFile(root / "img_align_celeba.zip", "w") as archive:
            for name, data in images.items():
                archive.writestr(f"img_align_celeba/{name}", data)
    else:
        folder = root / "img_align_celeba"
        folder.mkdir()
        for name, data in images.items():
            (folder / name).write_bytes(data)
    if partition is not None:
        lines = "".join(f"{name} {split}\n" for name, split in partition.items())
        (root / "list_eval_partition.txt").write_text(lines)
    if attributes is not None:
        body = "".join(
            f"{name} {' '.join(f'{v:2d}' for v in values)}\n" for name, values in attributes.items()
        )
        (root / "list_attr_celeba.txt").write_text(f"{len(attributes)}\n{' '.join(ATTRIBUTE_NAMES)}\n{body}")
    return root


def solid_jpeg(colour: tuple[int, int, int] = (120, 80, 40), size: tuple[int, int] = (178, 218)) -> bytes:
    return encode(Image.new("RGB", size, colour), "JPEG", quality=95)


def write_partly_unreadable_celeba(root: Path) -> tuple[Path, dict[int, bytes]]:
    """Seven CelebA rows, three of them unreadable; returns the root and {row: bytes} of the readable.

    Row 1 is not an image, row 3 is listed but missing, row 5 declares 20000 × 20000
    pixels; rows 0, 2, 4 and 6 are synthetic faces.
    """
    from latentdask.data.face_drawing import render_face_jpeg

    names = [f"{i:06d}.jpg" for i in range(1, 8)]
    readable = {row: render_face_jpeg(seed=5, index=row)[0] for row in (0, 2, 4, 6)}
    images = {names[row]: data for row, data in readable.items()}
    images[names[1]] = b"not an image at all\n"
    images[names[5]] = png_from_idat(20000, 20000, 8, 0, zlib.compress(b""))
    write_celeba(root, images, partition=dict.fromkeys(names, 0), attributes=None)
    return root, readable


def make_checkpoint(path: Path, **fields: object) -> Path:
    """A small seeded autoencoder (32 × 32 input, 16 latents) saved as a checkpoint; ``fields`` override."""
    import torch

    from latentdask.data.decode import Preprocessing
    from latentdask.model.autoencoder import Autoencoder
    from latentdask.model.checkpoint import save_checkpoint
    from latentdask.model.config import ModelConfig

    torch.manual_seed(0)
    config = ModelConfig(**({"image_size": 32, "latent_dim": 16, "channels": (8, 8, 16, 16)} | fields))  # type: ignore[arg-type]
    return save_checkpoint(path, Autoencoder(config), Preprocessing(image_size=config.image_size))


def run_cli(
    *args: str, cwd: Path | None = None, limit_file_bytes: int | None = None
) -> subprocess.CompletedProcess[str]:
    """The ``latentdask`` command as a user runs it, a real subprocess.

    ``limit_file_bytes`` fills the disk as the file-size limit does: writes past it fail with EFBIG.
    """

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_bytes, limit_file_bytes))  # type: ignore[arg-type]

    return subprocess.run(
        [sys.executable, "-m", "latentdask.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        preexec_fn=limit if limit_file_bytes is not None else None,
    )


def run_cli_in_process(*args: str) -> subprocess.CompletedProcess[str]:
    """The ``latentdask`` command in this process (no interpreter start, no imports): for commands
    whose outcome does not depend on a process of their own (errors refused before any work, small
    inputs read on threads). Its exit code and its stdout and stderr apart, as :func:`run_cli`."""
    from typer.testing import CliRunner

    from latentdask.cli import app

    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(["latentdask", *args], result.exit_code, result.stdout, result.stderr)


#: ``latentdask train`` options for a model that trains in a second (one epoch, 16 × 16, 4 latents, CPU)
TINY_TRAIN = (
    "--epochs",
    "1",
    "--image-size",
    "16",
    "--latent-dim",
    "4",
    "--channels",
    "4,4",
    "--device",
    "cpu",
)


def require_extra(module: str) -> ModuleType:
    """``module`` of the ``test`` extra, imported; where it is missing the test is skipped, or fails
    under LATENTDASK_REQUIRE_EXTRAS=1 (set by CI, so that a broken install cannot pass as skips)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = str(exc)
    if os.environ.get("LATENTDASK_REQUIRE_EXTRAS") == "1":
        pytest.fail(f"{module} is required here (pip install -e '.[test]'): {missing}", pytrace=False)
    pytest.skip(f"needs {module} (pip install -e '.[test]')")


def upload(local: Path, url: str) -> str:
    """Copy a local folder or file to ``url``; return the URL."""
    target = location(url)
    assert is_remote(target)
    target.fs.put(str(local), target.path, recursive=local.is_dir())
    return url
