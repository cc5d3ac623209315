"""Images built to hurt: tiny files declaring huge sizes are refused from their header,
in little memory; large but allowed ones decode without float copies of the whole image."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from latentdask.data.decode import MAX_PIXELS_ENV, Preprocessing, decode_image
from latentdask.errors import ImageDecodeError, LatentdaskError
from tests.helpers import banded_image, encode, png_from_idat, png_zeros16

PREP = Preprocessing(image_size=64)

#: Run in a fresh interpreter: decode the file named by argv[1] once and print the outcome
#: and how far the process's peak resident memory rose during that one decode.
MEASURE = """
import json, resource, sys
from PIL import Image
from latentdask.data.decode import Preprocessing, decode_rgb
from latentdask.errors import ImageDecodeError
from tests.helpers import encode

prep = Preprocessing(crop=None, image_size=64)
decode_rgb(encode(Image.new("I;16", (64, 64)), "PNG"), prep)  # imports and PIL plugins loaded
data = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    rgb, _ = decode_rgb(data, prep, "x.png")
    outcome = {"max": int(rgb.max()), "shape": list(rgb.shape)}
except ImageDecodeError as exc:
    outcome = {"reason": exc.reason}
grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before  # KiB on Linux
print(json.dumps(outcome | {"grew_bytes": grew * 1024}))
"""


def decode_in_fresh_process(path: Path) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parent.parent,
    )
    assert result.returncode == 0, result.stderr
    outcome: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return outcome


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux")
def test_png_bomb_is_refused_by_its_header_in_little_memory(tmp_path: Path) -> None:
    # 12000 × 12000 16-bit gray: 280 KB on disk, 288 MB decoded; its 144 M pixels lie
    # between PIL's warning bound (89 M) and its error bound (179 M).
    path = tmp_path / "bomb.png"
    path.write_bytes(png_zeros16(12000, 12000))
    assert path.stat().st_size < 1_000_000
    outcome = decode_in_fresh_process(path)
    assert outcome["reason"] == "image too large (12000×12000)"
    assert outcome["grew_bytes"] < 16 * 2**20  # far below the 288 MB its pixels would take


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux")
def test_large_sixteen_bit_image_converts_in_bounded_memory(tmp_path: Path) -> None:
    # 6000 × 6000 16-bit gray is under the limit and decodes; PIL holds it in 2 bytes a
    # pixel, its 8-bit version takes 1. A float64 copy of the whole image alone would be 8.
    width = 6000
    path = tmp_path / "large.png"
    path.write_bytes(png_zeros16(width, width))
    outcome = decode_in_fresh_process(path)
    assert outcome.get("reason") is None
    assert outcome["shape"] == [64, 64, 3] and outcome["max"] == 0  # black, as written
    assert outcome["grew_bytes"] < 5 * width * width


def header_only_png(width: int, height: int) -> bytes:
    """A PNG that declares its size and holds no pixel data: only the header can be read."""
    return png_from_idat(width, height, 8, 0, zlib.compress(b""))


def header_only_jpeg(width: int, height: int) -> bytes:
    """A small JPEG whose start-of-frame marker is rewritten to declare another size."""
    data = bytearray(encode(Image.new("RGB", (16, 16)), "JPEG"))
    frame = data.index(b"\xff\xc0")
    data[frame + 5 : frame + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def header_only_gif(width: int, height: int) -> bytes:
    """A small GIF whose logical screen declares another size."""
    data = bytearray(encode(Image.new("L", (16, 16)), "GIF"))
    data[6:10] = width.to_bytes(2, "little") + height.to_bytes(2, "little")
    return bytes(data)


@pytest.mark.parametrize("build", [header_only_png, header_only_jpeg, header_only_gif])
@pytest.mark.parametrize(("width", "height"), [(12000, 12000), (60000, 60000)], ids=["warned", "refused"])
def test_declared_size_alone_decides_and_names_the_size(build: object, width: int, height: int) -> None:
    # Sizes over PIL's warning bound and over its error bound: both refused from the header,
    # with the same reason, and PIL's DecompressionBombWarning never escapes as a warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageDecodeError) as info:
            decode_image(build(width, height), PREP, "bomb")  # type: ignore[operator]
    assert info.value.reason == f"image too large ({width}×{height})"


def test_limit_is_pils_bound_unless_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encode(banded_image(), "PNG")  # 178 × 218 = 38804 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 38803)
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, PREP)
    assert info.value.reason == "image too large (178×218)"
    # a larger limit than PIL's own is honoured, by argument or by the environment
    green = decode_image(data, PREP, max_pixels=38804).pixels[1]
    np.testing.assert_allclose(green, 1.0)
    monkeypatch.setenv(MAX_PIXELS_ENV, "38804")
    np.testing.assert_allclose(decode_image(data, PREP).pixels[1], 1.0)
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")
    with pytest.raises(ImageDecodeError, match=r"image too large \(178×218\)"):
        decode_image(data, PREP)
    # the argument wins over the environment
    np.testing.assert_allclose(decode_image(data, PREP, max_pixels=10**6).pixels[1], 1.0)


@pytest.mark.parametrize("value", ["many", "0", "-5"])
def test_bad_limit_in_the_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(MAX_PIXELS_ENV, value)
    with pytest.raises(LatentdaskError, match=f"{MAX_PIXELS_ENV} must be a positive number"):
        decode_image(encode(banded_image(), "PNG"), PREP)
