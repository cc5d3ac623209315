"""Image file → RGB → crop → resize → pixels, the same way everywhere.

The :class:`Preprocessing` record is stored with every checkpoint and latent store:
two runs agree on their pixels exactly when their records are equal.

Steps of :func:`decode_image`:

1. Open the bytes with PIL; for JPEG with ``draft=True`` let libjpeg decode at
   1/2, 1/4 or 1/8 scale, the largest reduction that keeps the kept region at least
   ``image_size`` pixels wide (a DCT-domain downscale: much less work, and within
   ``DRAFT_TOLERANCE`` of a full decode after resizing; see ``tests/test_decode.py``).
2. Convert any mode to RGB: grayscale and CMYK directly, alpha composited over
   white, 16-bit integer samples scaled to 8 bits.
3. Crop the configured box; an image that does not contain the box is cropped to
   its centred largest square instead, and the returned ``crop`` says so.
4. Resize to ``image_size`` × ``image_size`` and scale to float32 in [0, 1], channels
   first (the layout torch convolutions take).

Every failure to read an image raises :class:`~latentdask.errors.ImageDecodeError`
with a short reason; nothing else escapes for bad input.
"""

from __future__ import annotations

import io
import warnings
from typing import Literal, NamedTuple

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, field_validator

from latentdask.errors import ImageDecodeError

CropMode = Literal["box", "centre-square", "none"]

#: Largest mean absolute difference (in [0, 1] units) between draft-mode and full
#: decoding after resizing that the tests allow. Measured on synthetic faces at
#: 64 × 64: median 0.57/255, 99th percentile 0.90/255, largest seen 1.12/255; their
#: hard-edged drawing is a worse case than photographs.
DRAFT_TOLERANCE = 1.5 / 255.0

_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}

#: CelebA's aligned images are 178 × 218; this box keeps the 178 × 178 face square.
CELEBA_CROP = (0, 20, 178, 198)


class Preprocessing(BaseModel):
    """How an image file becomes the model's input; stored with checkpoints and stores.

    Parameters
    ----------
    crop
        ``(left, top, right, bottom)`` in the file's pixels, or ``None`` for the whole
        image. Images that do not contain the box fall back to their centred square.
    image_size
        Side of the square the crop is resized to.
    draft
        Let libjpeg decode JPEGs at a reduced scale where the result stays within
        :data:`DRAFT_TOLERANCE` of a full decode.
    resample
        PIL resampling filter of the resize.

    Examples
    --------
    >>> Preprocessing(image_size=32).crop
    (0, 20, 178, 198)
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    crop: tuple[int, int, int, int] | None = CELEBA_CROP
    image_size: int = Field(default=64, ge=1, le=4096)
    draft: bool = True
    resample: Literal["bilinear", "bicubic", "lanczos", "box"] = "bilinear"

    @field_validator("crop")
    @classmethod
    def _box_is_ordered(cls, box: tuple[int, int, int, int] | None) -> tuple[int, int, int, int] | None:
        if box is not None:
            left, top, right, bottom = box
            if left < 0 or top < 0 or right <= left or bottom <= top:
                raise ValueError(
                    f"crop must be (left, top, right, bottom) with 0 <= left < right and "
                    f"0 <= top < bottom, got {box}"
                )
        return box


class Decoded(NamedTuple):
    """A decoded image: ``pixels`` float32 (3, size, size) in [0, 1], and how it was cropped."""

    pixels: np.ndarray
    crop: CropMode


def decode_image(data: bytes, prep: Preprocessing, name: str = "<bytes>") -> Decoded:
    """Decode one image file's bytes as ``prep`` says.

    Parameters
    ----------
    data
        The file's content.
    prep
        The preprocessing record.
    name
        Used in the error message only.

    Raises
    ------
    ImageDecodeError
        For empty, truncated, corrupt, unsupported or non-image input.

    Examples
    --------
    >>> from latentdask.data.synthetic import render_face_jpeg
    >>> decode_image(render_face_jpeg(seed=0, index=0)[0], Preprocessing()).pixels.shape
    (3, 64, 64)
    """
    rgb, crop = decode_rgb(data, prep, name)
    pixels = np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / np.float32(255.0)
    return Decoded(np.ascontiguousarray(pixels), crop)


def decode_rgb(data: bytes, prep: Preprocessing, name: str = "<bytes>") -> tuple[np.ndarray, CropMode]:
    """Like :func:`decode_image`, but return uint8 (size, size, 3): a quarter of the memory."""
    if not data:
        raise ImageDecodeError(name, "empty file")
    try:
        with warnings.catch_warnings():
            # A decompression-bomb *warning* is only noise here; the error above the
            # limit is caught below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            full_size = image.size
            box, crop = _crop_box(full_size, prep.crop)
            scale = _draft(image, box, prep) if prep.draft else 1.0
            image.load()
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(name, f"image too large ({exc})") from None
    except Image.UnidentifiedImageError:
        raise ImageDecodeError(name, "not an image file") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
        reason = "truncated image" if "truncated" in str(exc).lower() else f"corrupt image ({exc})"
        raise ImageDecodeError(name, reason) from None
    rgb = _to_rgb(image, name)
    if scale != 1.0:
        box = tuple(round(v / scale) for v in box)  # type: ignore[assignment]
    resized = rgb.crop(box).resize((prep.image_size, prep.image_size), _RESAMPLE[prep.resample])
    return np.asarray(resized, dtype=np.uint8), crop


def _crop_box(
    size: tuple[int, int], box: tuple[int, int, int, int] | None
) -> tuple[tuple[int, int, int, int], CropMode]:
    width, height = size
    if box is None:
        return (0, 0, width, height), "none"
    if box[2] <= width and box[3] <= height:
        return box, "box"
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return (left, top, left + side, top + side), "centre-square"


def _draft(image: Image.Image, box: tuple[int, int, int, int], prep: Preprocessing) -> float:
    """Ask libjpeg for the largest DCT reduction that keeps ``box`` ≥ image_size; return the scale."""
    if image.format != "JPEG":
        return 1.0
    region = min(box[2] - box[0], box[3] - box[1])
    reduction = 1
    while reduction < 8 and region // (reduction * 2) >= prep.image_size:
        reduction *= 2
    if reduction == 1:
        return 1.0
    width, height = image.size
    image.draft(image.mode, (-(-width // reduction), -(-height // reduction)))
    return width / image.size[0]


def _to_rgb(image: Image.Image, name: str) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I"):
        # 16-bit (or 32-bit) integer samples: PIL's own conversion clips at 255.
        samples = np.asarray(image, dtype=np.float64)
        top = 65535.0 if samples.max(initial=0) <= 65535 else float(samples.max())
        gray = np.clip(np.rint(samples * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2))
    try:
        if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return image.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageDecodeError(name, f"unsupported image mode {mode} ({exc})") from None
