"""CelebA's official layout (folder and zip) and plain image folders."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from latentdask.data.celeba_names import ATTRIBUTE_NAMES
from latentdask.data.dataset import open_dataset
from latentdask.data.decode import Preprocessing
from latentdask.errors import DatasetError, ImageDecodeError, LatentdaskError
from tests.helpers import encode, solid_jpeg, write_celeba

A = len(ATTRIBUTE_NAMES)


def attrs(*positive: str) -> list[int]:
    return [1 if name in positive else -1 for name in ATTRIBUTE_NAMES]


@pytest.fixture(params=[False, True], ids=["folder", "zip"])
def as_zip(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def test_rows_splits_and_attributes_from_hand_written_lists(tmp_path: Path, as_zip: bool) -> None:
    images = {f"00000{i}.jpg": solid_jpeg((40 * i, 10, 10)) for i in (1, 2, 3)}
    root = write_celeba(
        tmp_path / "celeba",
        images,
        partition={"000001.jpg": 0, "000002.jpg": 1, "000003.jpg": 2},
        attributes={
            "000001.jpg": attrs("Male", "Smiling"),
            "000002.jpg": attrs(),
            "000003.jpg": attrs("Young", "Eyeglasses"),
        },
        as_zip=as_zip,
    )
    dataset = open_dataset(root)
    m = dataset.manifest
    assert dataset.kind == "celeba"
    assert m.names.tolist() == ["000001.jpg", "000002.jpg", "000003.jpg"]
    assert m.split.tolist() == [0, 1, 2]
    assert m.attribute_names == ATTRIBUTE_NAMES
    male, smiling, young = (ATTRIBUTE_NAMES.index(a) for a in ("Male", "Smiling", "Young"))
    assert m.attributes[0, male] == 1 and m.attributes[0, smiling] == 1
    assert (m.attributes[1] == -1).all()
    assert m.attributes[2, young] == 1 and m.attributes[2, male] == -1
    assert m.report.lines() == []
    # bytes come back unchanged from the folder or the zip
    assert dataset.read(1) == images["000002.jpg"]
    pixels = dataset.load(1, Preprocessing(image_size=16)).pixels * 255
    assert abs(pixels[0].mean() - 80) < 3


def test_missing_and_unlisted_files_are_kept_and_reported(tmp_path: Path, as_zip: bool) -> None:
    images = {"000001.jpg": solid_jpeg(), "000003.jpg": solid_jpeg(), "000004.jpg": solid_jpeg()}
    root = write_celeba(
        tmp_path / "celeba",
        images,
        partition={"000001.jpg": 0, "000002.jpg": 0, "000003.jpg": 1},
        attributes={"000001.jpg": attrs("Male"), "000002.jpg": attrs(), "000003.jpg": attrs()},
        as_zip=as_zip,
    )
    m = open_dataset(root).manifest
    # union in sorted order: 000002 listed but missing, 000004 on disk but unlisted
    assert m.names.tolist() == ["000001.jpg", "000002.jpg", "000003.jpg", "000004.jpg"]
    assert m.present.tolist() == [True, False, True, True]
    assert m.split.tolist() == [0, 0, 1, -1]
    assert (m.attributes[3] == 0).all()  # unknown
    assert m.report.listed_missing == 1 and m.report.examples_missing == ("000002.jpg",)
    assert m.report.unlisted == 1 and m.report.examples_unlisted == ("000004.jpg",)
    assert len(m.report.lines()) == 2
    with pytest.raises(ImageDecodeError, match="listed but missing"):
        open_dataset(root).read(1)


def test_absent_text_files(tmp_path: Path) -> None:
    root = write_celeba(
        tmp_path / "c", {"a.jpg": solid_jpeg(), "b.jpg": solid_jpeg()}, partition=None, attributes=None
    )
    m = open_dataset(root).manifest
    assert m.names.tolist() == ["a.jpg", "b.jpg"]
    assert m.split.tolist() == [-1, -1]
    assert m.attributes.shape == (2, 0)
    assert m.report.unlisted == 0  # nothing to be unlisted from
    assert any("no list_eval_partition.txt" in line for line in m.report.lines())
    with pytest.raises(DatasetError, match="no partition file"):
        open_dataset(root, split="train")


def test_only_partition_file(tmp_path: Path) -> None:
    root = write_celeba(tmp_path / "c", {"a.jpg": solid_jpeg()}, partition={"a.jpg": 2}, attributes=None)
    m = open_dataset(root).manifest
    assert m.split.tolist() == [2] and m.attributes.shape == (1, 0)


def test_split_selection_keeps_original_index(tmp_path: Path) -> None:
    names = [f"{i:06d}.jpg" for i in range(1, 6)]
    root = write_celeba(
        tmp_path / "c",
        dict.fromkeys(names, solid_jpeg()),
        partition=dict(zip(names, [0, 1, 0, 2, 1], strict=True)),
        attributes=None,
    )
    valid = open_dataset(root, split="valid").manifest
    assert valid.names.tolist() == ["000002.jpg", "000005.jpg"]
    assert valid.index.tolist() == [1, 4]
    assert valid.sha256 != open_dataset(root).manifest.sha256
    with pytest.raises(DatasetError, match="unknown split"):
        open_dataset(root, split="training")


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        ("list_eval_partition.txt", "000001.jpg 7\n", r"list_eval_partition.txt:1: expected"),
        ("list_eval_partition.txt", "000001.jpg 0\n000001.jpg 1\n", "listed twice"),
        ("list_attr_celeba.txt", "2\nMale Young\n000001.jpg 1 -1\n", "first line says 2 rows"),
        ("list_attr_celeba.txt", "1\nMale Young\n000001.jpg 1\n", r"list_attr_celeba.txt:3: expected"),
        ("list_attr_celeba.txt", "x\nMale\n", "expected the row count"),
    ],
)
def test_malformed_listing_names_file_and_line(tmp_path: Path, file: str, content: str, message: str) -> None:
    root = write_celeba(tmp_path / "c", {"000001.jpg": solid_jpeg()}, partition=None, attributes=None)
    (root / file).write_text(content)
    with pytest.raises(DatasetError, match=message):
        open_dataset(root)


def test_sha256_ignores_location_and_follows_content(tmp_path: Path) -> None:
    images = {"000001.jpg": solid_jpeg()}
    a = write_celeba(tmp_path / "a", images, partition={"000001.jpg": 0}, attributes=None)
    b = write_celeba(tmp_path / "b", images, partition={"000001.jpg": 0}, attributes=None, as_zip=True)
    c = write_celeba(tmp_path / "c", images, partition={"000001.jpg": 1}, attributes=None)
    assert open_dataset(a).manifest.sha256 == open_dataset(b).manifest.sha256
    assert open_dataset(a).manifest.sha256 != open_dataset(c).manifest.sha256


def test_shards_cover_rows_once(tmp_path: Path) -> None:
    names = [f"{i:06d}.jpg" for i in range(1, 12)]
    root = write_celeba(tmp_path / "c", dict.fromkeys(names, solid_jpeg()), partition=None, attributes=None)
    shards = open_dataset(root).manifest.shards(4)
    assert [(s.number, s.start, s.stop) for s in shards] == [(0, 0, 4), (1, 4, 8), (2, 8, 11)]


def test_image_folder_is_recursive_sorted_and_filters_suffixes(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    (root / "b" / "deep").mkdir(parents=True)
    (root / "a.JPG").write_bytes(solid_jpeg())
    (root / "b" / "c.png").write_bytes(encode(Image.new("RGB", (8, 8)), "PNG"))
    (root / "b" / "deep" / "d.webp").write_bytes(encode(Image.new("RGB", (8, 8)), "WEBP"))
    (root / "b" / "notes.txt").write_text("not an image")
    (root / ".hidden.jpg").write_bytes(solid_jpeg())
    dataset = open_dataset(root)
    assert dataset.kind == "folder"
    assert dataset.manifest.names.tolist() == ["a.JPG", "b/c.png", "b/deep/d.webp"]
    assert (dataset.manifest.split == -1).all()


def test_missing_and_empty_dataset_folders(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="holds no images"):
        open_dataset(tmp_path / "empty")


def test_dataset_pickles_with_zip(tmp_path: Path) -> None:
    import pickle

    root = write_celeba(
        tmp_path / "c", {"000001.jpg": solid_jpeg()}, partition=None, attributes=None, as_zip=True
    )
    dataset = open_dataset(root)
    dataset.read(0)  # opens the zip handle
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone.read(0) == dataset.read(0)
    assert np.array_equal(clone.manifest.names, dataset.manifest.names)


def test_byte_order_mark_makes_no_phantom_row(tmp_path: Path) -> None:
    names = ["000001.jpg", "000002.jpg"]
    root = write_celeba(tmp_path / "c", dict.fromkeys(names, solid_jpeg()), partition=None, attributes=None)
    bom = "\ufeff"
    (root / "list_eval_partition.txt").write_text(f"{bom}000001.jpg 2\n000002.jpg 0\n", encoding="utf-8")
    values = " ".join(["1"] * A)
    (root / "list_attr_celeba.txt").write_text(
        f"{bom}2\n{' '.join(ATTRIBUTE_NAMES)}\n000001.jpg {values}\n000002.jpg {values}\n", encoding="utf-8"
    )
    m = open_dataset(root).manifest
    assert m.names.tolist() == names
    assert m.split.tolist() == [2, 0]
    assert (m.attributes == 1).all()
    assert m.report.lines() == []


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        (
            "list_eval_partition.txt",
            "000001.jpg 0\n00000\xe9.jpg 1\n".encode("latin-1"),
            r"list_eval_partition.txt:2: not UTF-8 text \(byte 0xe9 at offset 18\)",
        ),
        (
            "list_attr_celeba.txt",
            "1\nMale Young\n\xff".encode("latin-1"),
            r"list_attr_celeba.txt:3: not UTF-8",
        ),
        (
            "list_attr_celeba.txt",
            b"1\nMale Young Male Bald Young\n000001.jpg 1 1 1 1 1\n",
            r"list_attr_celeba.txt:2: attribute name\(s\) listed twice: Male, Young$",
        ),
        (
            "list_attr_celeba.txt",
            b"2\nMale Young\n000001.jpg 1 -1\n000002.jpg -1 yes\n",
            r"list_attr_celeba.txt:4: 000002.jpg: Young is 'yes', expected 1 or -1$",
        ),
    ],
    ids=["latin1-partition", "binary-attributes", "duplicate-names", "word-for-value"],
)
def test_unreadable_listing_is_one_line_naming_file_and_line(
    tmp_path: Path, file: str, content: bytes, message: str
) -> None:
    root = write_celeba(tmp_path / "c", {"000001.jpg": solid_jpeg()}, partition=None, attributes=None)
    (root / file).write_bytes(content)
    with pytest.raises(DatasetError, match=message) as info:
        open_dataset(root)
    assert "\n" not in str(info.value)


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_zip_members_outside_the_archive_are_never_used(tmp_path: Path) -> None:
    good, evil = solid_jpeg((10, 20, 30)), solid_jpeg((250, 0, 0))
    write_zip(
        tmp_path / "c" / "img_align_celeba.zip",
        {
            "img_align_celeba/000001.jpg": good,
            "img_align_celeba/000002.jpg": good,
            "../x.jpg": evil,
            "img_align_celeba/../../y.jpg": evil,
            "/etc/z.jpg": evil,
            "..\\w.jpg": evil,
            "README.txt": b"CelebA",
            "__MACOSX/img_align_celeba/._000001.jpg": b"resource fork",
        },
    )
    dataset = open_dataset(tmp_path / "c")
    # the common top folder is still stripped, so the names match CelebA's listing files
    assert dataset.manifest.names.tolist() == ["000001.jpg", "000002.jpg"]
    assert dataset.read(0) == good
    for name in ("../x.jpg", "x.jpg", "/etc/z.jpg", "etc/z.jpg", "../../y.jpg"):
        with pytest.raises(ImageDecodeError, match="listed but missing"):
            dataset.container.read(name)
    (note,) = [line for line in dataset.manifest.report.lines() if "zip member" in line]
    assert note.startswith("4 zip member(s) never used: absolute or '..' path")
    assert "../x.jpg" in note


def test_file_over_the_byte_limit_is_an_invalid_row(
    tmp_path: Path, as_zip: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    small, large = solid_jpeg(size=(8, 8)), encode(Image.new("L", (400, 400), 7), "PNG", compress_level=0)
    assert len(small) < 2000 < len(large)
    root = write_celeba(
        tmp_path / "c",
        {"000001.jpg": small, "000002.png": large},
        partition=None,
        attributes=None,
        as_zip=as_zip,
    )
    monkeypatch.setenv("LATENTDASK_MAX_FILE_BYTES", "2000")
    dataset = open_dataset(root)
    assert dataset.read(0) == small
    with pytest.raises(ImageDecodeError) as info:
        dataset.read(1)
    assert info.value.reason == f"file too large ({len(large)} bytes, limit 2000)"
    monkeypatch.setenv("LATENTDASK_MAX_FILE_BYTES", "lots")
    with pytest.raises(LatentdaskError, match="LATENTDASK_MAX_FILE_BYTES must be a positive number"):
        dataset.read(0)


def test_corrupt_zip_member_is_an_invalid_row(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "c" / "img_align_celeba.zip", {"img_align_celeba/000001.jpg": solid_jpeg()})
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("img_align_celeba/000001.jpg")
    raw = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename)  # the deflate stream
    raw[start + 2 : start + 40] = bytes(b ^ 0x5A for b in raw[start + 2 : start + 40])
    path.write_bytes(bytes(raw))
    with pytest.raises(ImageDecodeError) as caught:
        open_dataset(tmp_path / "c").read(0)
    assert caught.value.reason.startswith("unreadable zip member")
