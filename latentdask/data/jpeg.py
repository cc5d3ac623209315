"""A JPEG's size and layout from its bytes alone (no decoder, no PIL, a few microseconds), and
whether a GIL-free decoder may decode it as the PIL path would (:func:`inspect_jpeg`).

The GIL-free decoders (:mod:`latentdask.data.opencv`, :mod:`latentdask.data.nvjpeg`) must
decide before decoding whether a file is theirs (an 8-bit gray or colour JPEG that ends
where it should, within the pixel limit) and which box to keep. PIL's ``Image.open``
answers that too, but in Python code that holds the GIL for longer than OpenCV takes to
decode a CelebA image; this reader walks the marker segments up to the frame header.

Steps of :func:`read_jpeg_header`:

1. The file starts with SOI (``FF D8``).
2. Each segment is a marker (``FF`` and a code, after any fill ``FF`` bytes) and, except
   for the stand-alone markers, a big-endian length that counts itself: skip it.
3. The first start-of-frame marker (``C0``–``CF`` less ``C4`` DHT, ``C8`` JPG and ``CC``
   DAC) holds the sample precision, height, width and component count. A scan (``DA``)
   or the end (``D9``) before it, a length that runs past the file, or a height of 0
   (set later by a DNL marker) gives None: PIL's path decides what such a file is.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

from latentdask.data.decode import CropMode, Preprocessing, crop_box, pixel_limit

#: start-of-frame codes: every C0–CF but DHT (C4), JPG (C8) and DAC (CC)
_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: markers without a length: TEM, RST0–7, SOI, EOI
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8), 0xD8, 0xD9})
#: the frame types libjpeg decodes: baseline, extended and progressive, Huffman or arithmetic
_DECODED = frozenset({0xC0, 0xC1, 0xC2, 0xC9, 0xCA})


class JpegHeader(NamedTuple):
    """What a JPEG's frame header says."""

    width: int
    height: int
    components: int  # 1 gray, 3 YCbCr or RGB, 4 CMYK or YCCK
    precision: int  # bits per sample
    frame: int  # the start-of-frame code, 0xC0 baseline … 0xCF

    @property
    def decodable(self) -> bool:
        """An 8-bit gray or colour image of a frame type that libjpeg decodes."""
        return self.precision == 8 and self.components in (1, 3) and self.frame in _DECODED


def read_jpeg_header(data: bytes) -> JpegHeader | None:
    """The frame header of the JPEG ``data``, or None where there is none to read (see the module).

    Examples
    --------
    >>> from latentdask.data.face_drawing import render_face_jpeg
    >>> read_jpeg_header(render_face_jpeg(seed=0, index=0)[0])[:3]
    (178, 218, 3)
    """
    if data[:2] != b"\xff\xd8":
        return None
    at, end = 2, len(data)
    while at + 4 <= end:
        if data[at] != 0xFF:
            return None
        code = data[at + 1]
        if code == 0xFF:  # a fill byte before the marker's code
            at += 1
            continue
        if code in _STANDALONE:
            if code == 0xD9:
                return None
            at += 2
            continue
        (length,) = struct.unpack_from(">H", data, at + 2)
        if length < 2 or at + 2 + length > end:
            return None
        if code in _FRAMES:
            if length < 8:
                return None
            precision, height, width, components = struct.unpack_from(">BHHB", data, at + 4)
            if height == 0 or width == 0:
                return None
            return JpegHeader(width, height, components, precision, code)
        if code == 0xDA:  # a scan before any frame
            return None
        at += 2 + length
    return None


@dataclass(frozen=True)
class JpegFile:
    """A JPEG that a GIL-free decoder (OpenCV, nvJPEG) decodes: its bytes, its size, and the box
    to crop from the full-size image."""

    data: bytes
    size: tuple[int, int]
    box: tuple[int, int, int, int]
    crop: CropMode


def inspect_jpeg(data: bytes, prep: Preprocessing, *, max_pixels: int | None = None) -> JpegFile | None:
    """The file as a :class:`JpegFile` if it is an 8-bit gray or colour JPEG that ends with its
    end-of-image marker and is within the pixel limit, else None.

    None leaves the file to :func:`~latentdask.data.decode.decode_rgb`, which decodes it
    or refuses it with its reason (not a JPEG, CMYK, truncated, corrupt, too large).
    """
    if data[-2:] != b"\xff\xd9":  # a truncated file, or bytes after its end: PIL's to judge
        return None
    header = read_jpeg_header(data)
    if header is None or not header.decodable:
        return None
    limit = pixel_limit(max_pixels)
    if limit is not None and header.width * header.height > limit:
        return None
    size = (header.width, header.height)
    box, crop = crop_box(size, prep.crop)
    return JpegFile(data, size, box, crop)
