"""Precision, recall, density and coverage against their definitions computed by brute force."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.spatial.distance
import zarr

from latentdask.generate.quality import K, reference_radii, sample_quality
from latentdask.store.points import open_zpoints


def brute_force(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """Kynkäänniemi et al. 2019 and Naeem et al. 2020, straight from their definitions."""
    real_real = scipy.spatial.distance.cdist(real, real)
    fake_fake = scipy.spatial.distance.cdist(fake, fake)
    real_radius = np.sort(real_real, axis=1)[:, k]  # column 0 is the point itself
    fake_radius = np.sort(fake_fake, axis=1)[:, k]
    fake_real = scipy.spatial.distance.cdist(fake, real)
    inside = fake_real <= real_radius[None, :]
    return {
        "precision": float(inside.any(axis=1).mean()),
        "recall": float((fake_real <= fake_radius[:, None]).any(axis=0).mean()),
        "density": float(inside.sum() / (k * len(fake))),
        "coverage": float(inside.any(axis=0).mean()),
    }


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    x = np.random.default_rng(0).normal(size=(3000, 4)).astype(np.float32)
    path = tmp_path_factory.mktemp("quality") / "store.zarr"
    zarr.open_group(str(path), mode="w").create_array("z", shape=x.shape, chunks=(700, 4), dtype="float32")[
        :
    ] = x
    return path, x


def test_against_brute_force(store: tuple[Path, np.ndarray]) -> None:
    path, x = store
    rows = np.sort(np.random.default_rng(1).choice(len(x), size=900, replace=False))
    corpus = open_zpoints(path)
    radii = reference_radii(corpus, rows)
    real = x[rows].astype(np.float64)
    np.testing.assert_allclose(
        radii, np.sort(scipy.spatial.distance.cdist(real, real), axis=1)[:, K], rtol=1e-9
    )
    for fake in (
        np.random.default_rng(2).normal(size=(500, 4)),  # drawn like the real points
        np.random.default_rng(3).normal(0.7, 0.5, size=(400, 4)),  # narrower and shifted
        np.random.default_rng(4).uniform(-1.5, 1.5, size=(300, 4)),  # the study's uniform cube
    ):
        got = sample_quality(corpus, rows, radii, fake)
        expected = brute_force(real, fake, K)
        assert got == pytest.approx(expected, abs=1e-12), (got, expected)


def test_same_distribution_reads_as_such(store: tuple[Path, np.ndarray]) -> None:
    """Points drawn like the real ones: density ≈ 1, coverage ≈ 1 − 2⁻ᵏ (Naeem et al.); a narrow set: not."""
    path, _ = store
    rows = np.arange(0, 3000, 2)
    corpus = open_zpoints(path)
    radii = reference_radii(corpus, rows)
    alike = sample_quality(corpus, rows, radii, np.random.default_rng(5).normal(size=(1500, 4)))
    assert alike["density"] == pytest.approx(1.0, abs=0.1)
    assert alike["coverage"] == pytest.approx(1 - 2.0**-K, abs=0.06)
    narrow = sample_quality(corpus, rows, radii, np.random.default_rng(6).normal(scale=0.3, size=(1500, 4)))
    assert narrow["precision"] > 0.95 and narrow["recall"] < 0.5 and narrow["coverage"] < 0.5
