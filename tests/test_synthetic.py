"""Synthetic faces: byte-identical per seed, CelebA layout, attributes true to the drawing."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest

from latentdask.data.celeba_names import ATTRIBUTE_NAMES
from latentdask.data.dataset import open_dataset
from latentdask.data.face_drawing import (
    CONTROLLED_ATTRIBUTES,
    FaceParams,
    draw_params,
    render_face,
    render_face_jpeg,
)
from latentdask.data.synthetic_faces import celeba_like_splits, read_recipe, synthesize, synthetic_recipe
from latentdask.errors import DatasetError
from latentdask.output import OutputError


def digest_tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    a = digest_tree(synthesize(tmp_path / "a", n=12, seed=5, progress=False))
    b = digest_tree(synthesize(tmp_path / "b", n=12, seed=5, progress=False))
    c = digest_tree(synthesize(tmp_path / "c", n=12, seed=6, progress=False))
    assert a == b
    assert a["img_align_celeba/000001.jpg"] != c["img_align_celeba/000001.jpg"]


def test_an_image_does_not_depend_on_dataset_size(tmp_path: Path) -> None:
    small = synthesize(tmp_path / "s", n=3, seed=1, progress=False)
    large = synthesize(tmp_path / "l", n=9, seed=1, progress=False)
    name = "img_align_celeba/000003.jpg"
    assert (small / name).read_bytes() == (large / name).read_bytes()


def test_layout_is_read_by_the_celeba_reader(tmp_path: Path) -> None:
    root = synthesize(tmp_path / "faces", n=20, seed=2, progress=False)
    dataset = open_dataset(root)
    m = dataset.manifest
    assert dataset.kind == "celeba"
    assert m.names.tolist() == [f"{i:06d}.jpg" for i in range(1, 21)]
    assert m.split.tolist() == celeba_like_splits(20).tolist() == [0] * 16 + [1] * 2 + [2] * 2
    assert m.attribute_names == ATTRIBUTE_NAMES
    assert m.report.lines() == []
    from PIL import Image

    with Image.open(root / "img_align_celeba" / "000001.jpg") as image:
        assert image.format == "JPEG" and image.size == (178, 218)


def test_attribute_file_agrees_with_drawn_parameters(tmp_path: Path) -> None:
    root = synthesize(tmp_path / "faces", n=60, seed=4, progress=False)
    m = open_dataset(root).manifest
    col = {name: ATTRIBUTE_NAMES.index(name) for name in ATTRIBUTE_NAMES}
    for row in range(60):
        p = draw_params(4, row)
        got = dict(zip(ATTRIBUTE_NAMES, m.attributes[row].tolist(), strict=True))
        assert got == p.attributes
        assert (got["Male"] == 1) == p.male
        assert (got["Eyeglasses"] == 1) == p.eyeglasses
        hair_flags = [got[h] for h in ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")]
        assert hair_flags.count(1) <= 1
        assert got["Bald"] != 1 or hair_flags.count(1) == 0
    uncontrolled = [col[name] for name in ATTRIBUTE_NAMES if name not in CONTROLLED_ATTRIBUTES]
    assert (m.attributes[:, uncontrolled] == -1).all()
    # every controlled attribute occurs both ways somewhere in a few hundred faces
    many = np.array([[draw_params(0, i).attributes[a] for a in CONTROLLED_ATTRIBUTES] for i in range(400)])
    assert (many == 1).any(axis=0).all() and (many == -1).any(axis=0).all()


def region_change(params: FaceParams, **change: object) -> tuple[float, float]:
    """Mean absolute pixel change inside and outside the face box when ``change`` is applied."""
    base = np.asarray(render_face(params), np.float64)
    other = np.asarray(render_face(dataclasses.replace(params, **change)), np.float64)
    diff = np.abs(base - other).mean(axis=2)
    return float(diff.max()), float(diff.mean())


@pytest.mark.parametrize(
    "change",
    [
        {"eyeglasses": True},
        {"mouth_open": True},
        {"hat": True},
        {"hair": "Blond_Hair"},
        {"smiling": True},
        {"mustache": True},
    ],
)
def test_each_attribute_is_visible(change: dict[str, object]) -> None:
    # a plain face: no glasses, closed neutral mouth, no hat, black hair, no beard
    base = dataclasses.replace(
        draw_params(0, 0),
        eyeglasses=False,
        mouth_open=False,
        hat=False,
        hair="Black_Hair",
        smiling=False,
        mustache=False,
        goatee=False,
        bald=False,
    )
    largest, mean = region_change(base, **change)
    assert largest > 60  # some pixels change strongly …
    assert mean < 40  # … but not the whole picture


def test_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="at least 1"):
        synthesize(tmp_path / "x", n=0, progress=False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="is not a latentdask output; refusing to replace it"):
        synthesize(tmp_path / "full", n=1, progress=False)
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_same_recipe_again_is_a_no_op_other_recipe_replaces_it(tmp_path: Path) -> None:
    root = synthesize(tmp_path / "f", n=3, seed=1, progress=False)
    before = digest_tree(root)
    mtime = (root / "img_align_celeba" / "000001.jpg").stat().st_mtime_ns
    synthesize(root, n=3, seed=1, progress=False)
    assert digest_tree(root) == before
    assert (root / "img_align_celeba" / "000001.jpg").stat().st_mtime_ns == mtime
    synthesize(root, n=4, seed=1, progress=False)  # synthetic faces made earlier: replaced
    assert read_recipe(root) == synthetic_recipe(4, 1)
    assert len(list((root / "img_align_celeba").iterdir())) == 4


def test_many_faces_are_drawn_on_every_core_with_the_same_bytes(tmp_path: Path) -> None:
    root = synthesize(tmp_path / "faces", n=2500, seed=4, progress=False)  # three tasks of the pool
    for index in (0, 999, 1000, 2499):
        expected = render_face_jpeg(seed=4, index=index)[0]
        assert (root / "img_align_celeba" / f"{index + 1:06d}.jpg").read_bytes() == expected
    assert len((root / "list_attr_celeba.txt").read_text().splitlines()) == 2 + 2500
