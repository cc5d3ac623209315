"""Samplers against their targets, radius theory against sampling, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.spatial.distance
import zarr

from latentdask.generate.options import GenerateError, sampler_spec
from latentdask.generate.samplers import Fitted, RadiusTheory, b_scan, core_radius, generate
from latentdask.output import OutputError
from latentdask.stats.io import open_stats, write_stats
from latentdask.stats.options import SummaryParams
from latentdask.stats.reduce import summarize


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """Statistics of correlated, off-centre 'real' points, written as stats.zarr."""
    rng = np.random.default_rng(0)
    dim = 6
    mixing = np.eye(dim) + 0.5 * rng.normal(size=(dim, dim))
    x = (rng.normal(size=(40_000, dim)) @ mixing.T + rng.normal(0, 1, dim)).astype(np.float32)
    path = tmp_path_factory.mktemp("stats") / "stats.zarr"
    write_stats(summarize(x, params=SummaryParams()), path, source="test")
    return path, x


def points(
    real: tuple[Path, np.ndarray], tmp_path: Path, name: str, n: int = 50_000, **params: float
) -> np.ndarray:
    out = generate(
        real[0], tmp_path / f"{name}.zarr", spec=sampler_spec(name, **params), n=n, seed=3, chunk_rows=7000
    )
    return np.asarray(zarr.open_array(str(out / "z"))[:], dtype=np.float64)


def test_uniform(real: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    z = points(real, tmp_path, "uniform", b=1.5)
    assert np.abs(z).max() <= 1.5
    np.testing.assert_allclose(z.var(axis=0), 1.5**2 / 3, rtol=0.03)


def test_gaussian_matches_fitted_mean_and_std(real: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    z = points(real, tmp_path, "gaussian")
    x = real[1].astype(np.float64)
    sd = x.std(axis=0, ddof=1)
    np.testing.assert_array_less(np.abs(z.mean(axis=0) - x.mean(axis=0)), 5 * sd / np.sqrt(len(z)))
    np.testing.assert_allclose(z.std(axis=0), sd, rtol=0.02)
    assert np.abs(np.corrcoef(z.T) - np.eye(z.shape[1])).max() < 0.03  # independent components


def test_mvn_matches_fitted_covariance(real: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    z = points(real, tmp_path, "mvn")
    cov = np.cov(real[1].astype(np.float64).T)
    sd = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / len(z))
    np.testing.assert_array_less(np.abs(np.cov(z.T) - cov), 5 * sd)


def test_mvn_core_stays_inside_its_mahalanobis_radius(real: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    z = points(real, tmp_path, "mvn-core", n=5000, quantile=0.5)
    fitted = Fitted.from_stats(open_stats(real[0]))
    inverse = np.linalg.inv(fitted.cov)
    distances = np.array([scipy.spatial.distance.mahalanobis(p, fitted.mean, inverse) for p in z])
    radius = core_radius(z.shape[1], 0.5)
    assert distances.max() <= radius * (1 + 1e-9)
    assert distances.max() > 0.9 * radius  # the core is filled to its edge
    assert core_radius(256, 0.9973) == pytest.approx(17.98, abs=0.01)


def test_empirical_follows_each_histogram(real: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    z = points(real, tmp_path, "empirical")
    stats = open_stats(real[0])
    edges = stats["bin_edges"].values
    for j in range(z.shape[1]):
        sampled = np.histogram(z[:, j], bins=edges)[0] / len(z)
        target = stats["hist"].values[j] / stats["hist"].values[j].sum()
        assert np.abs(np.cumsum(sampled) - np.cumsum(target)).max() < 0.01  # Kolmogorov distance


def test_same_seed_same_points_other_seed_other_points(real: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    spec = sampler_spec("mvn")
    a = generate(real[0], tmp_path / "a.zarr", spec=spec, n=3000, seed=1, chunk_rows=1000)
    b = generate(real[0], tmp_path / "b.zarr", spec=spec, n=3000, seed=1, chunk_rows=1000)
    c = generate(real[0], tmp_path / "c.zarr", spec=spec, n=3000, seed=2, chunk_rows=1000)
    za, zb, zc = (zarr.open_array(str(p / "z"))[:] for p in (a, b, c))
    assert za.tobytes() == zb.tobytes() and za.tobytes() != zc.tobytes()
    assert zarr.open_group(str(a)).attrs["sampler"] == "mvn"


def test_radius_theory_against_sampling() -> None:
    theory = RadiusTheory(256, 1.5)
    assert theory.rms == pytest.approx(13.856, abs=1e-3)
    assert theory.mean == pytest.approx(13.851, abs=1e-3)
    assert theory.std == pytest.approx(0.387, abs=1e-3)
    x = np.random.default_rng(0).uniform(-1.5, 1.5, size=(40_000, 256))
    radii = np.sqrt((x * x).sum(axis=1))
    assert radii.mean() == pytest.approx(theory.mean, abs=0.01)
    assert radii.std() == pytest.approx(theory.std, rel=0.03)


def test_b_scan_finds_the_b_of_uniform_points() -> None:
    x = np.random.default_rng(1).uniform(-1.2, 1.2, size=(20_000, 64))
    stats = summarize(x, params=SummaryParams())
    assert b_scan(stats)["best_b"] == pytest.approx(1.2, abs=0.051)


def test_bad_input_is_a_clear_error(real: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    with pytest.raises(GenerateError, match="field 'name'"):
        sampler_spec("normal")
    with pytest.raises(GenerateError, match="field 'b': Input should be greater than 0"):
        sampler_spec("uniform", b=0)
    with pytest.raises(GenerateError, match="at least 1"):
        generate(real[0], tmp_path / "x.zarr", spec=sampler_spec("uniform"), n=0)
    generate(real[0], tmp_path / "y.zarr", spec=sampler_spec("uniform"), n=5)
    generate(real[0], tmp_path / "y.zarr", spec=sampler_spec("uniform"), n=7)  # its own output: replaced
    assert zarr.open_array(str(tmp_path / "y.zarr" / "z"), mode="r").shape[0] == 7
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    with pytest.raises(OutputError, match="is not a latentdask output; refusing to replace it"):
        generate(real[0], tmp_path / "mine", spec=sampler_spec("uniform"), n=5)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "x"
    with pytest.raises(OutputError, match="is the input"):
        generate(real[0], real[0], spec=sampler_spec("uniform"), n=5)
