"""The nvJPEG decoder's CPU half and its guards; the GPU half is in tests/test_gpu.py."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest
from PIL import Image

from latentdask.data.decode import Preprocessing
from latentdask.data.face_drawing import render_face_jpeg
from latentdask.data.jpeg import inspect_jpeg
from latentdask.data.nvjpeg import check_nvjpeg
from latentdask.encode.options import EncodeOptions
from latentdask.encode.run import encode
from latentdask.errors import LatentdaskError
from latentdask.store.layout import RESUME_KEYS, StoreError, check_resumable
from tests.helpers import banded_image, png_from_idat
from tests.helpers import encode as encode_image

PREP = Preprocessing(image_size=64)


def test_plain_jpegs_go_to_the_gpu_with_the_pil_paths_crop() -> None:
    face = inspect_jpeg(render_face_jpeg(seed=0, index=0)[0], PREP)
    assert face is not None and face.box == (0, 20, 178, 198) and face.crop == "box"
    gray = inspect_jpeg(encode_image(banded_image("L").resize((120, 90)), "JPEG"), PREP)
    assert gray is not None and gray.box == (15, 0, 105, 90) and gray.crop == "centre-square"


def test_everything_else_is_left_to_pil() -> None:
    face = render_face_jpeg(seed=0, index=1)[0]
    cmyk = encode_image(Image.new("CMYK", (178, 218), (10, 20, 30, 40)), "JPEG")
    for data in (
        face[: len(face) // 2],  # truncated: no end-of-image marker
        face + b"trailing bytes",
        cmyk,
        encode_image(banded_image(), "PNG"),
        b"\xff\xd8 not a jpeg \xff\xd9",
        png_from_idat(20000, 20000, 8, 0, zlib.compress(b"")),
    ):
        assert inspect_jpeg(data, PREP) is None
    assert inspect_jpeg(face, PREP, max_pixels=178 * 218 - 1) is None  # above the pixel limit


def test_filters_the_gpu_cannot_reproduce_are_refused() -> None:
    check_nvjpeg(PREP.model_copy(update={"resample": "bicubic"}))
    with pytest.raises(LatentdaskError, match="'lanczos': use --decoder pil"):
        check_nvjpeg(PREP.model_copy(update={"resample": "lanczos"}))


def test_nvjpeg_on_the_cpu_is_one_line_before_anything_is_written(
    faces: Path, checkpoint: Path, tmp_path: Path
) -> None:
    with pytest.raises(LatentdaskError, match="needs --device cuda or auto"):
        encode(
            faces,
            checkpoint,
            tmp_path / "z.zarr",
            options=EncodeOptions(device="cpu", decoder="nvjpeg"),
            progress=False,
        )
    assert not (tmp_path / "z.zarr").exists()


def test_a_store_records_its_decoder_and_older_stores_resume_as_pil() -> None:
    import zarr

    assert "decoder" in RESUME_KEYS
    group = zarr.open_group(zarr.storage.MemoryStore(), mode="w")
    expected = {key: 1 for key in RESUME_KEYS} | {"decoder": "pil"}
    group.attrs.update({key: 1 for key in RESUME_KEYS if key != "decoder"})  # written before the key
    check_resumable(group, expected, "old.zarr")
    group.attrs["decoder"] = "nvjpeg"
    with pytest.raises(StoreError, match="decoder: store has 'nvjpeg', this run has 'pil'"):
        check_resumable(group, expected, "new.zarr")
