"""Decoding every kind of input: the right pixels, or ImageDecodeError with its reason."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from latentdask.data.decode import DRAFT_TOLERANCE, Preprocessing, decode_image
from latentdask.data.face_drawing import render_face_jpeg
from latentdask.errors import ImageDecodeError
from tests.helpers import banded_image, encode, png_rgb16

PREP = Preprocessing(image_size=64)


def as_255(pixels: np.ndarray) -> np.ndarray:
    return pixels * 255.0


def test_png_crop_box_keeps_the_face_square() -> None:
    decoded = decode_image(encode(banded_image(), "PNG"), PREP)
    assert decoded.pixels.shape == (3, 64, 64)
    assert decoded.pixels.dtype == np.float32
    assert decoded.crop == "box"
    # Only the green band lies inside the box (0, 20, 178, 198).
    np.testing.assert_allclose(as_255(decoded.pixels[1]), 255.0, atol=1e-4)
    np.testing.assert_allclose(as_255(decoded.pixels[[0, 2]]), 0.0, atol=1e-4)


def test_no_crop_keeps_all_bands_and_resizes_whole_image() -> None:
    decoded = decode_image(encode(banded_image(), "PNG"), Preprocessing(crop=None, image_size=64))
    assert decoded.crop == "none"
    red_top = as_255(decoded.pixels[0, 0])
    blue_bottom = as_255(decoded.pixels[2, -1])
    assert red_top.min() > 200 and blue_bottom.min() > 200


def test_jpeg_matches_pil_reference_without_draft() -> None:
    data = render_face_jpeg(seed=3, index=7)[0]
    reference = Image.open(__import__("io").BytesIO(data)).convert("RGB").crop((0, 20, 178, 198))
    reference = reference.resize((64, 64), Image.Resampling.BILINEAR)
    expected = np.asarray(reference, np.float32).transpose(2, 0, 1) / 255
    got = decode_image(data, PREP.model_copy(update={"draft": False})).pixels
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("image_size", [32, 64])
def test_draft_mode_stays_within_stated_tolerance(image_size: int) -> None:
    prep = Preprocessing(image_size=image_size)
    full = prep.model_copy(update={"draft": False})
    diffs = []
    for index in range(40):
        data = render_face_jpeg(seed=11, index=index)[0]
        diffs.append(np.abs(decode_image(data, prep).pixels - decode_image(data, full).pixels).mean())
    assert max(diffs) <= DRAFT_TOLERANCE
    assert max(diffs) > 0  # draft mode was really used


@pytest.mark.parametrize(
    ("mode", "colour", "expected"),
    [
        ("L", 100, (100, 100, 100)),
        ("CMYK", (0, 0, 0, 0), (255, 255, 255)),
        ("P", None, (0, 255, 0)),
        ("LA", (50, 255), (50, 50, 50)),
    ],
)
def test_modes_become_rgb(mode: str, colour: object, expected: tuple[int, int, int]) -> None:
    image = banded_image(mode) if colour is None else Image.new(mode, (178, 218), colour)  # type: ignore[arg-type]
    pixels = as_255(decode_image(encode(image, "PNG" if mode != "CMYK" else "JPEG"), PREP).pixels)
    np.testing.assert_allclose(pixels.mean(axis=(1, 2)), expected, atol=1.0)


def test_transparent_rgba_is_composited_over_white() -> None:
    image = Image.new("RGBA", (178, 218), (255, 0, 0, 0))
    image.paste((0, 0, 255, 255), (0, 0, 178, 109))  # top half opaque blue
    pixels = as_255(decode_image(encode(image, "PNG"), Preprocessing(crop=None, image_size=64)).pixels)
    np.testing.assert_allclose(pixels[:, :28].mean(axis=(1, 2)), (0, 0, 255), atol=1)
    np.testing.assert_allclose(pixels[:, 36:].mean(axis=(1, 2)), (255, 255, 255), atol=1)


def test_sixteen_bit_grayscale_is_scaled_not_clipped() -> None:
    image = Image.fromarray(np.full((218, 178), 51400, np.uint16))
    pixels = as_255(decode_image(encode(image, "PNG"), PREP).pixels)
    np.testing.assert_allclose(pixels, 51400 / 65535 * 255, atol=0.6)


def test_sixteen_bit_rgb() -> None:
    pixels16 = np.zeros((218, 178, 3), np.uint16)
    pixels16[..., 0] = 65535
    pixels16[..., 2] = 32896  # 128 · 257
    pixels = as_255(decode_image(png_rgb16(pixels16), PREP).pixels)
    np.testing.assert_allclose(pixels.mean(axis=(1, 2)), (255, 0, 128), atol=1)


def test_webp() -> None:
    pixels = as_255(
        decode_image(encode(Image.new("RGB", (178, 218), (30, 60, 90)), "WEBP", lossless=True), PREP).pixels
    )
    np.testing.assert_allclose(pixels.mean(axis=(1, 2)), (30, 60, 90), atol=1)


def test_one_pixel_image_falls_back_to_centre_square() -> None:
    decoded = decode_image(encode(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG"), PREP)
    assert decoded.crop == "centre-square"
    np.testing.assert_allclose(as_255(decoded.pixels).mean(axis=(1, 2)), (10, 200, 30), atol=1e-3)


def test_small_image_centre_square_uses_middle() -> None:
    image = Image.new("RGB", (100, 60), (255, 0, 0))
    image.paste((0, 0, 255), (20, 0, 80, 60))  # the centred 60 × 60 square is blue
    decoded = decode_image(encode(image, "PNG"), PREP)
    assert decoded.crop == "centre-square"
    np.testing.assert_allclose(as_255(decoded.pixels).mean(axis=(1, 2)), (0, 0, 255), atol=1e-3)


def test_very_large_jpeg() -> None:
    image = Image.new("RGB", (4000, 4000), (200, 100, 50))
    decoded = decode_image(encode(image, "JPEG", quality=90), PREP)
    assert decoded.crop == "box"
    np.testing.assert_allclose(as_255(decoded.pixels).mean(axis=(1, 2)), (200, 100, 50), atol=3)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"this is a text file named .jpg\n", "not an image file"),
        (encode(Image.new("RGB", (178, 218), (1, 2, 3)), "JPEG")[:400], "truncated image"),
    ],
    ids=["empty", "text", "truncated-jpeg"],
)
def test_bad_input_raises_with_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, PREP, "000001.jpg")
    assert info.value.reason == reason
    assert info.value.name == "000001.jpg"


def test_truncated_png_raises() -> None:
    data = encode(banded_image(), "PNG")
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data[: len(data) // 2], PREP)
    assert info.value.reason in ("truncated image",) or info.value.reason.startswith("corrupt image")


def test_png_named_jpg_decodes_by_content() -> None:
    # Decoding never trusts the file name; the name only appears in messages.
    decoded = decode_image(encode(banded_image(), "PNG"), PREP, "looks_like.jpg")
    assert decoded.pixels.shape == (3, 64, 64)


def test_preprocessing_rejects_bad_box() -> None:
    with pytest.raises(ValueError, match="crop must be"):
        Preprocessing(crop=(10, 10, 5, 20))
