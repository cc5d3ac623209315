"""Image file → RGB → crop → resize → pixels, the same way everywhere.

The :class:`Preprocessing` record is stored with every checkpoint and latent store:
two runs agree on their pixels exactly when their records are equal.

Steps of :func:`decode_image`:

1. Read the header with PIL and refuse an image of more than :func:`pixel_limit`
   pixels (width × height) before a single pixel is decoded: a PNG of a few hundred
   kilobytes can declare 12000 × 12000 pixels and take gigabytes to decode.
2. For JPEG with ``draft=True`` let libjpeg decode at 1/2, 1/4 or 1/8 scale, the
   largest reduction that keeps the kept region at least ``image_size`` pixels wide
   (a DCT-domain downscale: much less work, and within ``DRAFT_TOLERANCE`` of a full
   decode after resizing; see ``tests/test_decode.py``).
3. Convert any mode to RGB: grayscale and CMYK directly, alpha composited over
   white, 16-bit integer samples scaled to 8 bits. Grayscale and 16-bit images are
   cropped and resized before they become RGB (the same pixels, a third of the
   memory), and 16-bit samples are scaled a block of rows at a time.
4. Crop the configured box; an image that does not contain the box is cropped to
   its centred largest square instead, and the returned ``crop`` says so.
5. Resize to ``image_size`` × ``image_size`` and scale to float32 in [0, 1], channels
   first (the layout torch convolutions take).

The pixel limit is not part of :class:`Preprocessing`: it decides which files are
decoded at all, never what a decoded image's pixels are, so it belongs to the machine
that decodes (like its memory), and changing it must not make a store or checkpoint
look different on resume. It is PIL's own bound (``Image.MAX_IMAGE_PIXELS``) unless
the environment variable ``LATENTDASK_MAX_PIXELS`` (read by each worker process) or a
``max_pixels`` argument says otherwise.

Every failure to read an image raises :class:`~latentdask.errors.ImageDecodeError`
with a short reason; nothing else escapes for bad input.
"""

from __future__ import annotations

import io
import struct
import warnings
from typing import Literal, NamedTuple

import numpy as np
from PIL import Image, ImageFile
from pydantic import BaseModel, ConfigDict, Field, field_validator

from latentdask.data.limits import env_limit
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

#: Environment variable holding the largest width × height decoded (a positive integer).
MAX_PIXELS_ENV = "LATENTDASK_MAX_PIXELS"

#: 16-bit samples are scaled to 8 bits this many pixels at a time (8 MB of float64).
_BLOCK_PIXELS = 1 << 20


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


def pixel_limit(max_pixels: int | None = None) -> int | None:
    """The largest width × height decoded: ``max_pixels``, else ``$LATENTDASK_MAX_PIXELS``,
    else PIL's ``Image.MAX_IMAGE_PIXELS`` (``None``: no limit).

    Raises
    ------
    LatentdaskError
        If the environment variable is set but not a positive integer.

    Examples
    --------
    >>> pixel_limit(1000)
    1000
    """
    if max_pixels is not None:
        return max_pixels
    return env_limit(MAX_PIXELS_ENV, "pixels") or Image.MAX_IMAGE_PIXELS


def decode_image(
    data: bytes, prep: Preprocessing, name: str = "<bytes>", *, max_pixels: int | None = None
) -> Decoded:
    """Decode one image file's bytes as ``prep`` says.

    Parameters
    ----------
    data
        The file's content.
    prep
        The preprocessing record.
    name
        Used in the error message only.
    max_pixels
        Refuse images of more pixels than this (default: :func:`pixel_limit`).

    Raises
    ------
    ImageDecodeError
        For empty, truncated, corrupt, unsupported or non-image input, and for images
        above the pixel limit (reason ``image too large (W×H)``, decided from the header).

    Examples
    --------
    >>> from latentdask.data.face_drawing import render_face_jpeg
    >>> decode_image(render_face_jpeg(seed=0, index=0)[0], Preprocessing()).pixels.shape
    (3, 64, 64)
    """
    rgb, crop = decode_rgb(data, prep, name, max_pixels=max_pixels)
    pixels = np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / np.float32(255.0)
    return Decoded(np.ascontiguousarray(pixels), crop)


def decode_rgb(
    data: bytes, prep: Preprocessing, name: str = "<bytes>", *, max_pixels: int | None = None
) -> tuple[np.ndarray, CropMode]:
    """Like :func:`decode_image`, but return uint8 (size, size, 3): a quarter of the memory."""
    if not data:
        raise ImageDecodeError(name, "empty file")
    limit = pixel_limit(max_pixels)
    size: tuple[int, int] | None = None
    try:
        with warnings.catch_warnings():
            # PIL checks some sizes itself while reading (GIF frames, ...); its warning is a
            # refusal here. The filters are process-wide, but every decoding thread installs
            # this same one, so an interleaving can only leave it in place.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = open_header(data)
            size = image.size
            if limit is not None and size[0] * size[1] > limit:  # refused like PIL's own bound
                raise Image.DecompressionBombError(f"{size[0] * size[1]} pixels")
            box, crop = crop_box(size, prep.crop)
            scale = _draft(image, box, prep) if prep.draft else 1.0
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # named by the header's size; a GIF frame PIL refuses while the header is read has none
        dimensions = f" ({size[0]}×{size[1]})" if size is not None else ""
        raise ImageDecodeError(name, f"image too large{dimensions}") from None
    except Image.UnidentifiedImageError:
        raise ImageDecodeError(name, "not an image file") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as exc:
        reason = "truncated image" if "truncated" in str(exc).lower() else f"corrupt image ({exc})"
        raise ImageDecodeError(name, reason) from None
    if scale != 1.0:
        box = tuple(round(v / scale) for v in box)  # type: ignore[assignment]
    side, resample = (prep.image_size, prep.image_size), _RESAMPLE[prep.resample]
    if image.mode == "L" or image.mode.startswith("I"):
        # Gray: crop and resize one channel, then repeat it (the same pixels as resizing
        # the RGB image, a third of the memory).
        gray = _to_gray8(image, box) if image.mode != "L" else _crop(image, box)
        return np.asarray(gray.resize(side, resample).convert("RGB"), dtype=np.uint8), crop
    resized = _crop(_to_rgb(image, name), box).resize(side, resample)
    return np.asarray(resized, dtype=np.uint8), crop


def open_header(data: bytes) -> ImageFile.ImageFile:
    """``Image.open`` without its decompression-bomb check: the header is read, no pixel decoded.

    ``Image.open`` compares width × height with PIL's own bound before it returns, so an
    image above that bound could neither be named by its size nor allowed by a larger
    configured limit. The formats, their order and the errors skipped are ``Image.open``'s.
    """
    fp = io.BytesIO(data)
    prefix = data[:16]
    checked: set[str] = set()
    for load_plugins in (Image.preinit, Image.init):
        load_plugins()
        for fmt in [f for f in Image.ID if f not in checked]:
            checked.add(fmt)
            factory, accept = Image.OPEN[fmt]
            accepted = accept(prefix) if accept else True
            if not accepted or isinstance(accepted, str):
                continue
            try:
                fp.seek(0)
                return factory(fp, "")
            except (SyntaxError, IndexError, TypeError, struct.error):
                continue
    raise Image.UnidentifiedImageError("cannot identify image file")


def _crop(image: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    """``image.crop(box)``, without copying the whole image when the box is all of it."""
    return image if box == (0, 0, *image.size) else image.crop(box)


def crop_box(
    size: tuple[int, int], box: tuple[int, int, int, int] | None
) -> tuple[tuple[int, int, int, int], CropMode]:
    """The region of an image of ``size`` to keep: ``box``, else its centred largest square."""
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
    reduction = _requested_reduction(box, prep.image_size)
    if reduction == 1:
        return 1.0
    width, height = image.size
    image.draft(image.mode, (-(-width // reduction), -(-height // reduction)))
    return width / image.size[0]


def _requested_reduction(box: tuple[int, int, int, int], image_size: int) -> int:
    """The largest of 1, 2, 4, 8 that keeps the region ``box`` at least ``image_size`` wide."""
    region = min(box[2] - box[0], box[3] - box[1])
    reduction = 1
    while reduction < 8 and region // (reduction * 2) >= image_size:
        reduction *= 2
    return reduction


def draft_reduction(size: tuple[int, int], box: tuple[int, int, int, int], prep: Preprocessing) -> int:
    """The DCT reduction (1, 2, 4 or 8) that :func:`decode_rgb` decodes a JPEG of ``size`` at.

    PIL's ``draft`` turns the size asked for back into a reduction, the largest of 8, 4, 2, 1
    that fits ``min(width // asked_width, height // asked_height)``: for odd sizes that can
    be less than the reduction asked for. Other decoders take this one to see the same pixels.
    """
    reduction = _requested_reduction(box, prep.image_size) if prep.draft else 1
    if reduction == 1:
        return 1
    width, height = size
    fits = min(width // -(-width // reduction), height // -(-height // reduction))
    return next(a for a in (8, 4, 2, 1) if fits >= a)


def _to_gray8(image: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    """16- or 32-bit integer samples of ``box`` scaled to 8 bits (PIL's own conversion clips at 255).

    Samples scale by 255/65535, or by 255/max when the image holds larger values; a block
    of rows at a time, so that no float copy of the whole image is ever made.
    """
    _, highest = image.getextrema()
    top = 65535.0 if float(highest) <= 65535 else float(highest)  # type: ignore[arg-type]
    region = _crop(image, box)
    width, height = region.size
    gray = np.empty((height, width), dtype=np.uint8)
    step = max(1, _BLOCK_PIXELS // max(width, 1))
    for y in range(0, height, step):
        rows = region.crop((0, y, width, min(y + step, height)))
        gray[y : y + step] = np.clip(np.rint(np.asarray(rows, dtype=np.float64) * (255.0 / top)), 0, 255)
    return Image.fromarray(gray)


def _to_rgb(image: Image.Image, name: str) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    try:
        if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return image.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageDecodeError(name, f"unsupported image mode {mode} ({exc})") from None
