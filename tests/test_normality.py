"""Normality checks against scipy and pingouin used directly, and on data known to be (non-)normal."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pingouin
import pytest
import scipy.spatial.distance
import scipy.stats
import zarr

from latentdask.stats import multivariate
from latentdask.stats.io import open_stats, stats_of, write_stats
from latentdask.stats.normality import NormalityError, multivariate_pass, normality
from latentdask.stats.options import SummaryParams
from latentdask.stats.reduce import summarize
from latentdask.stats.reference import Reference
from latentdask.store.points import open_zpoints

DIM = 6


def write_corpus(root: Path, x: np.ndarray, valid: np.ndarray) -> tuple[Path, Path]:
    root.mkdir(parents=True, exist_ok=True)
    group = zarr.open_group(str(root / "store.zarr"), mode="w")
    group.create_array("z", shape=x.shape, chunks=(900, x.shape[1]), dtype="float32")[:] = x
    group.create_array("valid", shape=valid.shape, chunks=(900,), dtype=bool)[:] = valid
    stats = summarize(x, valid=valid, params=SummaryParams(thresholds=(1.5,)))
    write_stats(stats, root / "stats.zarr", source="test")
    return root / "store.zarr", root / "stats.zarr"


@pytest.fixture(scope="module")
def gaussian(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    mixing = np.eye(DIM) + 0.5 * rng.normal(size=(DIM, DIM))
    x = (rng.normal(size=(6000, DIM)) @ mixing + 2.0).astype(np.float32)
    valid = np.ones(len(x), dtype=bool)
    valid[::13] = False
    x[~valid] = np.nan
    store, stats = write_corpus(tmp_path_factory.mktemp("gaussian"), x, valid)
    return store, stats, x, valid


def test_mahalanobis_histogram_against_scipy(gaussian: tuple[Path, Path, np.ndarray, np.ndarray]) -> None:
    store, stats_path, x, valid = gaussian
    reference = Reference.from_stats(open_stats(stats_path))
    result = multivariate_pass(open_zpoints(store), reference, rows=int(valid.sum()), skewness=True)
    histogram = result.histogram
    real = x[valid].astype(np.float64)
    inverse = np.linalg.inv(np.cov(real.T))
    d2 = (
        scipy.spatial.distance.cdist(real, real.mean(axis=0, keepdims=True), "mahalanobis", VI=inverse)[:, 0]
        ** 2
    )
    assert histogram.count == valid.sum()
    # Σ d² over the corpus the covariance came from is exactly N (n − 1)
    assert histogram.total == pytest.approx(DIM * (len(real) - 1), rel=1e-6)
    expected, _ = np.histogram(d2, bins=histogram.edges)
    assert np.abs(histogram.counts - expected).sum() <= 2  # values within rounding of an edge may move
    middle = int(np.searchsorted(histogram.edges, np.quantile(d2, 0.5)))
    assert histogram.quantile(0.5) == pytest.approx(
        np.quantile(d2, 0.5), abs=2 * np.diff(histogram.edges)[middle]
    )
    assert histogram.quantile(0.999) == pytest.approx(np.quantile(d2, 0.999), rel=0.02)
    assert result.sum_d4 == pytest.approx((d2**2).sum(), rel=1e-6)
    # the skewness tensor summed block by block: Mardia's b1 by brute force, O(n² N)
    n = len(real)
    centred = real - real.mean(axis=0)
    gram = centred @ np.linalg.inv(centred.T @ centred / n) @ centred.T
    b1 = (n / (n - 1)) ** 3 * multivariate.skewness_from_tensor(result.tensor, n)
    assert b1 == pytest.approx((gram**3).sum() / n**2, rel=1e-5)


def test_heavy_tails_stay_inside_the_histogram(tmp_path: Path) -> None:
    """Every in-sample d² lies below (n−1)²/n, where the bins end: no quantile is inf."""
    x = np.random.default_rng(5).standard_t(1.5, size=(3000, DIM)).astype(np.float32)
    store, stats_path = write_corpus(tmp_path, x, np.ones(len(x), dtype=bool))
    result = normality(store, stats_path, sample_size=500, hz_size=300)
    qq = result["mahalanobis_qq"]
    assert all(np.isfinite(q["d2"]) for q in qq["quantiles"])
    real = x.astype(np.float64)
    centred = real - real.mean(axis=0)
    d2 = np.einsum("ij,jk,ik->i", centred, np.linalg.inv(np.cov(real.T)), centred)
    assert qq["quantiles"][-1]["d2"] == pytest.approx(np.quantile(d2, 0.999), rel=0.02)
    tests = {t["test"]: t for t in result["multivariate"]}
    assert tests["mardia_kurtosis"]["reject"] and tests["mahalanobis_beta"]["reject"]


def test_gaussian_corpus_passes_and_tests_match_their_libraries(
    gaussian: tuple[Path, Path, np.ndarray, np.ndarray],
) -> None:
    store, stats_path, x, valid = gaussian
    result = normality(store, stats_path, sample_size=3000, hz_size=1000, seed=1)
    tests = {t["test"]: t for t in result["multivariate"]}
    assert all(t["informative"] and not t["reject"] for t in tests.values()), tests
    assert result["shapiro_wilk"]["rejected"] <= 1
    qq = result["mahalanobis_qq"]
    assert qq["mean_d2"] == pytest.approx(qq["expected_mean_d2"], rel=1e-6)
    assert qq["beyond_tail"]["share"] == pytest.approx(0.0027, abs=0.003)
    for row in qq["quantiles"][2:-2]:
        assert row["d2"] == pytest.approx(row["expected"], rel=0.08)
    assert tests["mardia_skewness"]["rows_used"] == "every row"
    # the same sample given to scipy and pingouin directly gives the same figures
    rng = np.random.default_rng(1)
    rows = np.sort(rng.choice(np.flatnonzero(valid), size=3000, replace=False))
    sample = x[rows].astype(np.float64)
    w = [scipy.stats.shapiro(sample[:, j]).statistic for j in range(DIM)]
    assert result["shapiro_wilk"]["w_median"] == pytest.approx(np.median(w), rel=1e-6)
    hz_rows = np.sort(np.random.default_rng(1).permutation(len(sample))[:1000])
    hz = pingouin.multivariate_normality(sample[hz_rows], alpha=0.01)
    assert tests["henze_zirkler"]["statistic"] == pytest.approx(float(hz.hz), rel=1e-6)


def test_non_normal_corpus_is_rejected(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    x = np.concatenate(
        [rng.uniform(-2, 2, size=(4000, DIM // 2)), rng.exponential(size=(4000, DIM // 2))], axis=1
    )
    store, stats_path = write_corpus(tmp_path, x.astype(np.float32), np.ones(len(x), dtype=bool))
    result = normality(store, stats_path, sample_size=2000, hz_size=1000)
    assert all(t["informative"] and t["reject"] for t in result["multivariate"]), result["multivariate"]
    assert result["shapiro_wilk"]["rejected"] == DIM
    most = result["moments"]["most_skewed"][0]
    assert most["latent"] >= DIM // 2  # an exponential component (skewness 2), not a uniform one (0)
    assert most["skewness"] == pytest.approx(scipy.stats.skew(x[:, most["latent"]]), rel=1e-5)
    assert most["excess_kurtosis"] == pytest.approx(scipy.stats.kurtosis(x[:, most["latent"]]), rel=1e-5)


def test_bad_input(gaussian: tuple[Path, Path, np.ndarray, np.ndarray], tmp_path: Path) -> None:
    store, stats_path, _, _ = gaussian
    with pytest.raises(NormalityError, match="3 to 5,000"):
        normality(store, stats_path, sample_size=6000)
    few = normality(store, stats_path, sample_size=100, hz_size=DIM)
    hz = next(t for t in few["multivariate"] if t["test"] == "henze_zirkler")
    assert not hz["informative"] and hz["reason"] == f"needs more points than the {DIM} components"
    other = np.random.default_rng(0).normal(size=(500, DIM + 1)).astype(np.float32)
    _, other_stats = write_corpus(tmp_path / "other", other, np.ones(500, dtype=bool))
    with pytest.raises(NormalityError, match=f"{DIM} components; the statistics .* have {DIM + 1}"):
        normality(store, other_stats)


def test_normality_command(gaussian: tuple[Path, Path, np.ndarray, np.ndarray], tmp_path: Path) -> None:
    store, stats_path, _, _ = gaussian
    out, plot, spec = tmp_path / "normality.json", tmp_path / "qq.png", tmp_path / "one.yaml"
    spec.write_text("kind: local\nworkers: 1\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "latentdask.cli",
            "normality",
            str(store),
            str(stats_path),
            "--out",
            str(out),
            "--plot",
            str(plot),
            "--sample-size",
            "1000",
            "--hz-size",
            "500",
            "--cluster",
            str(spec),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "Mardia kurtosis: statistic" in result.stdout
    assert json.loads(out.read_text())["mahalanobis_qq"]["vectors"] > 5000
    assert plot.stat().st_size > 10_000


@pytest.mark.parametrize("rows", [1, 2, DIM, DIM + 1])
def test_too_few_rows_for_an_invertible_covariance(tmp_path: Path, rows: int) -> None:
    x = np.random.default_rng(rows).normal(size=(rows, DIM)).astype(np.float32)
    if 1 < rows <= DIM:  # numpy's own covariance of these rows cannot be inverted
        assert np.linalg.matrix_rank(np.cov(x.T.astype(np.float64))) < DIM
    store, stats_path = write_corpus(tmp_path, x, np.ones(rows, dtype=bool))
    with pytest.raises(NormalityError, match=f"at least {DIM + 2} rows for {DIM} components.* count {rows}$"):
        normality(store, stats_path)


def test_fewest_rows_that_give_a_result(tmp_path: Path) -> None:
    """N + 2 rows: with N + 1, every in-sample d² is (n−1)²/n whatever the data (Beta(N/2, 0))."""
    x = np.random.default_rng(7).normal(size=(DIM + 2, DIM)).astype(np.float32)
    real = x.astype(np.float64)
    assert np.linalg.matrix_rank(np.cov(real.T)) == DIM
    store, stats_path = write_corpus(tmp_path, x, np.ones(len(x), dtype=bool))
    result = normality(store, stats_path, sample_size=3)
    d2 = (
        scipy.spatial.distance.cdist(
            real, real.mean(axis=0, keepdims=True), "mahalanobis", VI=np.linalg.inv(np.cov(real.T))
        )[:, 0]
        ** 2
    )
    assert result["mahalanobis_qq"]["vectors"] == DIM + 2
    assert result["mahalanobis_qq"]["mean_d2"] == pytest.approx(d2.mean(), rel=1e-4)


def test_rows_are_the_statistics_own(tmp_path: Path) -> None:
    """The tests need the mean and covariance of the rows tested: another selection is refused."""
    x = np.random.default_rng(8).normal(size=(500, DIM)).astype(np.float32)
    store, stats_path = write_corpus(tmp_path, x, np.ones(len(x), dtype=bool))
    split = np.zeros(len(x), dtype=np.int8)
    split[[10, 20]] = 2  # two test rows
    zarr.open_group(str(store), mode="a").create_array(
        "split", shape=split.shape, chunks=(900,), dtype="int8"
    )[:] = split
    with pytest.raises(NormalityError, match=r"describe split=all, where=\[\]; .* split=test"):
        normality(store, stats_path, split="test")
    test_stats = tmp_path / "test-stats.zarr"
    params = SummaryParams(thresholds=(1.5,))
    write_stats(stats_of(open_zpoints(store), params=params, split="test"), test_stats, source="test")
    with pytest.raises(NormalityError, match=f"at least {DIM + 2} rows .* count 2$"):
        normality(store, test_stats)
    train_stats = tmp_path / "train-stats.zarr"
    write_stats(stats_of(open_zpoints(store), params=params, split="train"), train_stats, source="test")
    result = normality(store, train_stats, sample_size=100)  # the statistics' rows by default
    assert result["selection"] == "valid rows; split=train"
    assert result["mahalanobis_qq"]["vectors"] == 498


def test_skewness_on_a_seeded_sample_above_skewness_rows(tmp_path: Path) -> None:
    x = np.random.default_rng(9).normal(size=(60_000, DIM)).astype(np.float32)
    store, stats_path = write_corpus(tmp_path, x, np.ones(len(x), dtype=bool))
    result = normality(store, stats_path, sample_size=100, skewness_rows=50_000, seed=4)
    skewness = next(t for t in result["multivariate"] if t["test"] == "mardia_skewness")
    assert skewness["rows"] == 50_000 and "seeded sample of 50,000 of the 60,000" in skewness["rows_used"]
    assert skewness["multiply_adds"] == 50_000 * DIM * DIM * (DIM + 1) // 2
    rows = np.sort(np.random.default_rng(4).choice(len(x), size=50_000, replace=False))
    sample = x[rows].astype(np.float64)
    centred = sample - sample.mean(axis=0)
    y = np.linalg.solve(np.linalg.cholesky(centred.T @ centred / len(rows)), centred.T).T
    tensor = np.einsum("ij,ik,il->jkl", y, y, y)  # the whole N³ tensor, no symmetry used
    assert skewness["b1"] == pytest.approx((tensor**2).sum() / len(rows) ** 2, rel=1e-6)
