"""JPEG batches decoded by nvJPEG on a CUDA device, then cropped and resized there.

The optional ``--decoder nvjpeg`` path of ``encode`` on a GPU worker, where decoding on
the CPU cores is the limit. It needs torchvision (``torchvision.io.decode_jpeg``), which
is not a dependency: PyPI's torchvision wheels need a CUDA torch.

Steps, for one batch:

1. On the CPU (the decode threads, a batch ahead): :func:`~latentdask.data.jpeg.inspect_jpeg` reads the
   frame header from the bytes (:func:`~latentdask.data.jpeg.read_jpeg_header`, no PIL), and keeps for the
   GPU the RGB or gray JPEGs that end where they should (with their end-of-image
   marker) and are within the pixel limit. Anything else (PNG, CMYK, a truncated file,
   a corrupt header, an image too large, bytes after the end marker) is decoded, or
   refused with its reason, by the PIL path as before.
2. On the GPU (:func:`decode_on_device`): the batch is decoded by one batched nvJPEG
   call (a file nvJPEG cannot decode falls back to the PIL path), cropped to the same
   box, and resized with torch's antialiased bilinear or bicubic filter (PIL's filters:
   the support grows with the reduction), rounded to uint8.

The pixels are those of a full decode, where the PIL path decodes JPEGs at a reduced
DCT scale (``draft``): the two agree within ``NVJPEG_TOLERANCE`` (mean absolute
difference, checked on the GPU by ``tests/test_gpu.py``). A store records which decoder
made it, so a resume never mixes them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from latentdask.data.decode import DRAFT_TOLERANCE, Preprocessing
from latentdask.data.jpeg import JpegFile
from latentdask.errors import LatentdaskError

if TYPE_CHECKING:
    import torch

#: Largest mean absolute difference (in [0, 1] units) between the nvJPEG path and the PIL
#: path, per image: the draft-mode tolerance (the PIL path's reduced-scale decode is the
#: larger part of the difference; the IDCTs and chroma upsampling differ by a level or so).
NVJPEG_TOLERANCE = DRAFT_TOLERANCE

#: the PIL filters that torch's antialiased interpolation reproduces
RESAMPLE_ON_DEVICE = {"bilinear": "bilinear", "bicubic": "bicubic"}


def check_nvjpeg(prep: Preprocessing) -> None:
    """Refuse, in one line, preprocessing that the GPU path cannot reproduce."""
    if prep.resample not in RESAMPLE_ON_DEVICE:
        raise LatentdaskError(
            f"--decoder nvjpeg resizes with bilinear or bicubic filters; this checkpoint's "
            f"preprocessing uses {prep.resample!r}: use --decoder pil"
        )


def require_torchvision() -> None:
    """Raise a one-line error where torchvision's GPU decoder is missing."""
    try:
        import torchvision.io  # noqa: F401
    except ImportError:
        raise LatentdaskError(
            "--decoder nvjpeg needs torchvision on the GPU workers (install the build matching their torch)"
        ) from None


def decode_on_device(
    files: list[JpegFile], prep: Preprocessing, device: torch.device
) -> tuple[torch.Tensor, list[int]]:
    """Decode, crop and resize ``files`` on ``device``.

    Returns
    -------
    (pixels, failed)
        uint8 (n, 3, size, size) on ``device`` for the files decoded, in order, and the
        indices into ``files`` of those nvJPEG could not decode (their rows are absent
        from ``pixels``; the caller decodes them with PIL).
    """
    import torch
    import torchvision.io as tvio

    encoded = [torch.frombuffer(bytearray(f.data), dtype=torch.uint8) for f in files]
    images: list[torch.Tensor | None]
    try:
        images = list(tvio.decode_jpeg(encoded, mode=tvio.ImageReadMode.RGB, device=device))
    except RuntimeError:  # one bad file fails the batch: decode them one by one
        images = []
        for data in encoded:
            try:
                images.append(tvio.decode_jpeg(data, mode=tvio.ImageReadMode.RGB, device=device))
            except RuntimeError:
                images.append(None)
    failed = [k for k, image in enumerate(images) if image is None]
    side = prep.image_size
    pixels = torch.empty((len(files) - len(failed), 3, side, side), dtype=torch.uint8, device=device)
    # crops of one shape are resized together (a CelebA batch is one group)
    groups: dict[tuple[int, int], list[tuple[int, torch.Tensor]]] = {}
    position = 0
    for image, file in zip(images, files, strict=True):
        if image is None:
            continue
        left, top, right, bottom = file.box
        crop = image[:, top:bottom, left:right]
        groups.setdefault((bottom - top, right - left), []).append((position, crop))
        position += 1
    mode = RESAMPLE_ON_DEVICE[prep.resample]
    for (height, width), members in groups.items():
        crops = torch.stack([crop for _, crop in members]).float()
        if (height, width) != (side, side):
            crops = torch.nn.functional.interpolate(
                crops, size=(side, side), mode=mode, antialias=True, align_corners=False
            )
        where = torch.as_tensor([k for k, _ in members], dtype=torch.long, device=device)
        pixels[where] = crops.round_().clamp_(0, 255).to(torch.uint8)
    return pixels, failed
