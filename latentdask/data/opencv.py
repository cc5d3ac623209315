"""JPEGs decoded, cropped and resized by OpenCV, outside Python's GIL: ``--decoder opencv``.

The PIL path (:func:`~latentdask.data.decode.decode_rgb`) spends much of an image's time in
Python code that holds the GIL (reading the header, the plugin machinery), so threads of
one process decode little faster than one. OpenCV releases the GIL for the whole decode and
resize, so a worker's decode threads scale with its cores (``latentdask bench encode``).

Steps of :func:`decode_rgb_opencv`:

1. Read the frame header from the bytes (:func:`~latentdask.data.jpeg.inspect_jpeg`).
   Anything but an 8-bit gray or colour JPEG that ends with its end-of-image marker and is
   within the pixel limit goes to the PIL path, which decodes it or refuses it with its
   reason (PNG, CMYK, a truncated or corrupt file, an image too large, bytes after the end).
2. Decode at the DCT reduction the PIL path uses (``IMREAD_REDUCED_COLOR_2/4/8``, libjpeg's
   own scaled IDCT, as PIL's ``draft``), ignoring EXIF orientation as PIL does. A file
   OpenCV cannot decode or refuses (its own pixel bound, memory) goes to the PIL path too.
3. Crop the same box, scaled as the PIL path scales it.
4. Resize with pixel-area averaging when the region shrinks on both axes, else bilinear
   (PIL's bilinear filter is antialiased: its support grows with the reduction, as the
   area average's does), and swap BGR to RGB.

The reduced decode is the PIL path's own where both are built on the same libjpeg-turbo
(OpenCV's crop is clipped to the image where the PIL path's box, scaled by the width's
reduction alone, can reach one row past it and pad it black); the resize differs by
rounding and filter shape: within
:data:`OPENCV_TOLERANCE` (mean absolute difference per image, ``tests/test_opencv_decode.py``).
A store records the decoder that made it, so a resume never mixes them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from latentdask.data.decode import DRAFT_TOLERANCE, CropMode, Preprocessing, decode_rgb, draft_reduction
from latentdask.data.jpeg import inspect_jpeg
from latentdask.errors import LatentdaskError

if TYPE_CHECKING:
    from collections.abc import Callable

#: Largest mean absolute difference (in [0, 1] units) between the OpenCV and PIL paths per image.
#: Measured on synthetic faces at 64 × 64: median 0.39/255, largest 0.67/255; other sizes, modes
#: and crops in the tests up to 1.21/255 (an odd size that PIL's draft does not reduce).
OPENCV_TOLERANCE = DRAFT_TOLERANCE

#: the PIL filters the OpenCV path reproduces within the tolerance
RESAMPLE_OPENCV = ("bilinear",)


def check_opencv(prep: Preprocessing) -> None:
    """Refuse, in one line, preprocessing that the OpenCV path cannot reproduce."""
    if prep.resample not in RESAMPLE_OPENCV:
        raise LatentdaskError(
            f"--decoder opencv resizes with the bilinear filter; this checkpoint's preprocessing "
            f"uses {prep.resample!r}: use --decoder pil"
        )


def decode_rgb_opencv(
    data: bytes, prep: Preprocessing, name: str = "<bytes>", *, max_pixels: int | None = None
) -> tuple[np.ndarray, CropMode]:
    """Like :func:`~latentdask.data.decode.decode_rgb` (uint8 (size, size, 3) and the crop made),
    decoded by OpenCV without the GIL where the file is a plain JPEG; see the module's steps.

    Examples
    --------
    >>> from latentdask.data.face_drawing import render_face_jpeg
    >>> decode_rgb_opencv(render_face_jpeg(seed=0, index=0)[0], Preprocessing())[0].shape
    (64, 64, 3)
    """
    import cv2

    jpeg = inspect_jpeg(data, prep, max_pixels=max_pixels)
    if jpeg is None:
        return decode_rgb(data, prep, name, max_pixels=max_pixels)
    reduction = draft_reduction(jpeg.size, jpeg.box, prep)
    reduced = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4}
    flags = reduced.get(reduction, cv2.IMREAD_REDUCED_COLOR_8) | cv2.IMREAD_IGNORE_ORIENTATION  # as PIL
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
        if image is None or image.ndim != 3:
            return decode_rgb(data, prep, name, max_pixels=max_pixels)
        box = jpeg.box
        if reduction != 1:  # the box in the reduced image's pixels, rounded as the PIL path rounds it
            scale = jpeg.size[0] / image.shape[1]
            box = (round(box[0] / scale), round(box[1] / scale), round(box[2] / scale), round(box[3] / scale))
        left, top, right, bottom = box
        region = image[top:bottom, left:right]
        side = prep.image_size
        shrinks = region.shape[0] >= side and region.shape[1] >= side
        interpolation = cv2.INTER_AREA if shrinks else cv2.INTER_LINEAR
        return cv2.cvtColor(
            cv2.resize(region, (side, side), interpolation=interpolation), cv2.COLOR_BGR2RGB
        ), jpeg.crop
    except cv2.error:  # OpenCV's own refusal (its pixel bound, memory): the PIL path gives the reason
        return decode_rgb(data, prep, name, max_pixels=max_pixels)


def cpu_decoder(decoder: str) -> Callable[..., tuple[np.ndarray, CropMode]]:
    """The function that decodes on the CPU for a store's ``decoder``: ``opencv``'s, else the PIL
    path (``nvjpeg`` leaves to it what the GPU does not decode)."""
    return decode_rgb_opencv if decoder == "opencv" else decode_rgb
