"""``--decoder opencv``: the JPEG header read from the bytes, the pixels against the PIL path,
every file it does not decode left to PIL with PIL's reasons, and stores that record it."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zarr
from distributed import LocalCluster
from PIL import Image

from latentdask.cluster.spec import ClusterChoice
from latentdask.data.dataset import open_dataset
from latentdask.data.decode import Preprocessing, decode_rgb, draft_reduction
from latentdask.data.face_drawing import render_face_jpeg
from latentdask.data.isolated import IsolatedDecoder
from latentdask.data.jpeg import read_jpeg_header
from latentdask.data.opencv import OPENCV_TOLERANCE, check_opencv, decode_rgb_opencv
from latentdask.encode.options import EncodeOptions
from latentdask.encode.run import encode
from latentdask.errors import ImageDecodeError, LatentdaskError
from latentdask.store import open_latents
from latentdask.store.layout import StoreError
from tests.helpers import banded_image, png_from_idat
from tests.helpers import encode as encode_image

PREP = Preprocessing(image_size=64)


def photo(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """A smooth random picture with edges: something between a photograph and the drawn faces."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(max(height // 12, 2), max(width // 12, 2), 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    pixels = np.asarray(image).copy()
    pixels[height // 3 : height // 2, width // 4 :] = (250, 250, 240)  # a hard edge
    return Image.fromarray(pixels).convert(mode)


def jpegs_of_every_kind(faces: Path) -> dict[str, tuple[bytes, Preprocessing]]:
    """Faces as CelebA stores them, and JPEGs of other sizes, modes and encodings, each with the
    preprocessing it is decoded with."""
    dataset = open_dataset(faces)
    kinds = {f"face {row}": (dataset.read(row), PREP) for row in range(0, 120, 8)}
    kinds |= {
        "odd size 179 x 219": (encode_image(photo(179, 219), "JPEG", quality=90), PREP),
        "odd size 181 x 223 (reduced less than asked)": (encode_image(photo(181, 223), "JPEG"), PREP),
        "large 712 x 872 (1/8 scale)": (encode_image(photo(712, 872, seed=1), "JPEG"), PREP),
        "gray": (encode_image(photo(178, 218, "L", seed=2), "JPEG", quality=90), PREP),
        "progressive": (encode_image(photo(178, 218, seed=3), "JPEG", progressive=True), PREP),
        "4:4:4": (encode_image(photo(178, 218, seed=4), "JPEG", subsampling=0, quality=95), PREP),
        "centre square, shrunk": (encode_image(photo(150, 120, seed=5), "JPEG"), PREP),
        "centre square, enlarged": (encode_image(photo(50, 40, seed=6), "JPEG"), PREP),
        "no crop, enlarged on one axis": (
            encode_image(photo(200, 48, seed=7), "JPEG"),
            Preprocessing(image_size=64, crop=None),
        ),
        "no draft": (dataset.read(3), Preprocessing(image_size=64, draft=False)),
        "32 x 32": (dataset.read(5), Preprocessing(image_size=32)),
        "restart markers": (encode_image(photo(178, 218, seed=8), "JPEG", restart_marker_blocks=4), PREP),
    }
    return kinds


def test_the_header_is_pils_without_pil(faces: Path) -> None:
    """Size and components as PIL reads them, for every kind of JPEG; None where there is no frame."""
    cmyk = encode_image(Image.new("CMYK", (33, 17), (10, 20, 30, 40)), "JPEG")
    for what, (data, _) in [*jpegs_of_every_kind(faces).items(), ("cmyk", (cmyk, PREP))]:
        header = read_jpeg_header(data)
        image = Image.open(io.BytesIO(data))
        assert header is not None, what
        assert (header.width, header.height) == image.size, what
        assert header.components == len(image.getbands()), what
        assert header.decodable == (image.mode in ("RGB", "L")), what
    face = render_face_jpeg(seed=0, index=0)[0]
    sof = face.index(b"\xff\xc0")
    for data in (
        b"",
        face[:2],
        face[: sof + 6],  # the frame header cut short
        encode_image(banded_image(), "PNG"),
        b"\xff\xd8\xff\xda\x00\x02",  # a scan before any frame
        b"\xff\xd8\xff\xd9",  # the end before any frame
        b"\xff\xd8\x00\x00\x00\x00",  # no marker where one belongs
        face[:sof] + b"\xff\xc0\x00\x11\x08\x00\x00" + face[sof + 7 :],  # height 0: set by a DNL marker
    ):
        assert read_jpeg_header(data) is None, data[:16]
    filled = face[:2] + b"\xff\xff\xff" + face[2:]  # fill bytes before a marker
    assert read_jpeg_header(filled) == read_jpeg_header(face)


def test_pixels_equal_the_pil_paths_within_tolerance(faces: Path) -> None:
    worst = 0.0
    for what, (data, prep) in jpegs_of_every_kind(faces).items():
        ours, crop = decode_rgb_opencv(data, prep, what)
        theirs, their_crop = decode_rgb(data, prep, what)
        assert ours.dtype == np.uint8 and ours.shape == theirs.shape == (prep.image_size, prep.image_size, 3)
        assert crop == their_crop, what
        difference = np.abs(ours.astype(np.float64) - theirs).mean() / 255
        print(f"{what}: {difference * 255:.2f}/255")
        assert difference <= OPENCV_TOLERANCE, f"{what}: {difference * 255:.2f}/255"
        worst = max(worst, difference)
    print(f"opencv vs PIL: mean |difference| per image, largest {worst * 255:.3f}/255")


def test_the_reduction_is_the_one_pil_decodes_at() -> None:
    """libjpeg's scaled size as PIL's draft leaves it, for sizes where PIL reduces less than asked."""
    for width, height in [(178, 218), (179, 219), (181, 223), (712, 872), (1001, 999), (64, 64)]:
        image = Image.open(io.BytesIO(encode_image(photo(width, height), "JPEG")))
        box = (0, 0, width, height)
        reduction = draft_reduction((width, height), box, PREP)
        asked = 1
        while asked < 8 and min(width, height) // (asked * 2) >= PREP.image_size:
            asked *= 2
        if asked > 1:
            image.draft("RGB", (-(-width // asked), -(-height // asked)))
        assert image.size == (-(-width // reduction), -(-height // reduction)), (width, height)


def test_exif_orientation_is_ignored_as_pil_ignores_it() -> None:
    """A phone's rotated JPEG is decoded as stored, like the PIL path (and the model's training)."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to show
    data = encode_image(banded_image(), "JPEG", quality=95, exif=exif.tobytes())
    ours, _ = decode_rgb_opencv(data, PREP)
    theirs, _ = decode_rgb(data, PREP)
    assert np.abs(ours.astype(np.float64) - theirs).mean() / 255 <= OPENCV_TOLERANCE


def test_every_other_file_is_the_pil_paths_with_its_reasons(faces: Path) -> None:
    """Truncated, trailing bytes, CMYK, PNG, not an image, too large: PIL's pixels or PIL's refusal."""
    face = open_dataset(faces).read(1)
    cmyk = encode_image(Image.new("CMYK", (178, 218), (10, 20, 30, 40)), "JPEG")
    files = {
        "truncated": face[: len(face) // 2],
        "trailing bytes": face + b"trailing bytes",
        "cmyk": cmyk,
        "png": encode_image(banded_image(), "PNG"),
        "not a jpeg": b"\xff\xd8 not a jpeg \xff\xd9",
        "empty": b"",
        "png bomb": png_from_idat(20000, 20000, 8, 0, zlib.compress(b"")),
        "jpeg bomb": face[:2] + _frame(30000, 30000) + face[2:],
    }
    for what, data in files.items():
        try:
            expected = decode_rgb(data, PREP, what)
        except ImageDecodeError as exc:
            with pytest.raises(ImageDecodeError) as refused:
                decode_rgb_opencv(data, PREP, what)
            assert refused.value.reason == exc.reason, what
        else:
            ours = decode_rgb_opencv(data, PREP, what)
            np.testing.assert_array_equal(ours[0], expected[0], err_msg=what)
            assert ours[1] == expected[1]
    with pytest.raises(ImageDecodeError, match=r"image too large \(178×218\)"):
        decode_rgb_opencv(face, PREP, max_pixels=178 * 218 - 1)


def test_a_file_opencv_refuses_is_the_pil_paths() -> None:
    """OpenCV's own refusals (here its pixel bound, as a user may set it; memory alike) are no errors of
    the encode: the PIL path decodes the file, or refuses it with its reason."""
    probe = (
        "import numpy as np\n"
        "from latentdask.data.decode import Preprocessing, decode_rgb\n"
        "from latentdask.data.face_drawing import render_face_jpeg\n"
        "from latentdask.data.opencv import decode_rgb_opencv\n"
        "face, prep = render_face_jpeg(seed=0, index=0)[0], Preprocessing()\n"
        "print(np.array_equal(decode_rgb_opencv(face, prep)[0], decode_rgb(face, prep)[0]))\n"
    )
    environment = os.environ | {"OPENCV_IO_MAX_IMAGE_PIXELS": "1000"}  # every face is above it
    done = subprocess.run([sys.executable, "-c", probe], env=environment, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"


def _frame(width: int, height: int) -> bytes:
    """A baseline frame header declaring ``width`` × ``height`` (the first frame is the one read)."""
    return b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + bytes(9)


def test_filters_opencv_cannot_reproduce_are_refused() -> None:
    check_opencv(PREP)
    with pytest.raises(LatentdaskError, match="'bicubic': use --decoder pil"):
        check_opencv(PREP.model_copy(update={"resample": "bicubic"}))


def test_the_isolated_retry_decodes_with_the_stores_decoder(faces: Path) -> None:
    """A shard retried in a child process keeps its store's decoder: no store mixes two."""
    dataset = open_dataset(faces)
    container, name = dataset.container, str(dataset.manifest.names[0])
    data = container.read(name)
    with IsolatedDecoder() as isolated:
        for decoder, decode in (("opencv", decode_rgb_opencv), ("pil", decode_rgb)):
            rgb, crop = isolated.load(container, name, PREP, decoder)
            expected, expected_crop = decode(data, PREP, name)
            np.testing.assert_array_equal(rgb, expected)
            assert crop == expected_crop
    assert not np.array_equal(decode_rgb_opencv(data, PREP)[0], decode_rgb(data, PREP)[0])


@pytest.fixture(scope="module")
def two_workers() -> Iterator[ClusterChoice]:
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
    ) as cluster:
        yield ClusterChoice(scheduler=cluster.scheduler_address)


def test_an_opencv_store_records_its_decoder_and_encodes_like_pil(
    faces: Path, checkpoint: Path, tmp_path: Path, two_workers: ClusterChoice
) -> None:
    """Rows valid, refused and cropped alike; the latents within what the pixels' tolerance moves them;
    the store says ``opencv``, and a resume with another decoder is refused before anything runs."""
    folder = tmp_path / "images"
    folder.mkdir()
    dataset = open_dataset(faces)
    for row in range(60):
        (folder / f"{row:03d}.jpg").write_bytes(dataset.read(row))
    face = dataset.read(60)
    (folder / "100-truncated.jpg").write_bytes(face[: len(face) // 2])
    (folder / "101-not-an-image.jpg").write_bytes(b"\xff\xd8 nothing \xff\xd9")
    (folder / "102-gray.jpg").write_bytes(encode_image(photo(178, 218, "L"), "JPEG"))
    (folder / "103-small.jpg").write_bytes(encode_image(photo(150, 120), "JPEG"))
    stores = {}
    for decoder in ("pil", "opencv"):
        stores[decoder] = tmp_path / f"{decoder}.zarr"
        encode(
            folder,
            checkpoint,
            stores[decoder],
            options=EncodeOptions(shard_size=16, batch_size=8, decoder=decoder, decode_threads=2),
            cluster=two_workers,
            progress=False,
        )
    pil, ocv = (open_latents(stores[d]) for d in ("pil", "opencv"))
    for column in ("valid", "error", "crop"):
        np.testing.assert_array_equal(pil[column].values, ocv[column].values)
    valid = pil["valid"].values
    assert int(valid.sum()) == 62
    z_pil, z_ocv = pil.z.values[valid], ocv.z.values[valid]
    difference = np.abs(z_ocv - z_pil).max() / np.abs(z_pil).max()
    print(f"opencv vs pil latents: largest |difference| / largest |latent| = {difference:.4f}")
    assert 0 < difference <= 0.05
    assert zarr.open_group(str(stores["opencv"]), mode="r").attrs["decoder"] == "opencv"
    with pytest.raises(StoreError, match="decoder: store has 'opencv', this run has 'pil'"):
        encode(
            folder,
            checkpoint,
            stores["opencv"],
            options=EncodeOptions(shard_size=16, batch_size=8, decoder="pil", resume=True),
            cluster=two_workers,
            progress=False,
        )
