"""Scores against independent references: scipy's Mahalanobis, a numpy brute-force neighbour search."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.spatial.distance
import torch
import zarr

from latentdask.errors import StatsError
from latentdask.generate.options import sampler_spec
from latentdask.generate.samplers import generate
from latentdask.generate.score import ScoreError, score
from latentdask.stats.io import open_stats, stats_of, write_stats
from latentdask.stats.nearest import _nearest_numpy, _nearest_torch, nearest_real_distance
from latentdask.stats.options import SummaryParams
from latentdask.stats.reduce import summarize
from latentdask.stats.reference import Reference, histogram_quantiles, mahalanobis, outside_counts
from latentdask.store.points import open_zpoints
from latentdask.store.rows import heldout_rows, selection_mask


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """A latent-store-like group (z, valid, split) with its statistics."""
    rng = np.random.default_rng(0)
    dim = 5
    x = (rng.normal(size=(3000, dim)) @ (np.eye(dim) + 0.4 * rng.normal(size=(dim, dim))) + 1.0).astype(
        np.float32
    )
    valid = np.ones(3000, dtype=bool)
    valid[::17] = False
    x[~valid] = np.nan
    split = np.where(np.arange(3000) < 2400, 0, 2).astype(np.int8)
    root = tmp_path_factory.mktemp("corpus")
    group = zarr.open_group(str(root / "store.zarr"), mode="w")
    group.create_array("z", shape=x.shape, chunks=(700, dim), dtype="float32")[:] = x
    group.create_array("valid", shape=(3000,), chunks=(700,), dtype=bool)[:] = valid
    group.create_array("split", shape=(3000,), chunks=(700,), dtype="int8")[:] = split
    write_stats(
        summarize(x, valid=valid, params=SummaryParams(thresholds=(1.5,))), root / "stats.zarr", source="t"
    )
    return root / "store.zarr", root / "stats.zarr", x, valid


def test_mahalanobis_against_scipy(corpus: tuple[Path, Path, np.ndarray, np.ndarray]) -> None:
    _, stats_path, x, valid = corpus
    reference = Reference.from_stats(open_stats(stats_path))
    real = x[valid].astype(np.float64)
    inverse = np.linalg.inv(np.cov(real.T))
    expected = [scipy.spatial.distance.mahalanobis(p, real.mean(axis=0), inverse) for p in real[:200]]
    np.testing.assert_allclose(mahalanobis(real[:200], reference), expected, rtol=1e-6)


def test_nearest_real_neighbour_against_brute_force(
    corpus: tuple[Path, Path, np.ndarray, np.ndarray],
) -> None:
    store, _, x, valid = corpus
    rng = np.random.default_rng(1)
    queries = rng.normal(1.0, 1.5, size=(300, x.shape[1])).astype(np.float32)
    got = nearest_real_distance(open_zpoints(store), queries)
    real = x[valid].astype(np.float64)
    expected = np.sqrt(((queries[:, None, :] - real[None, :, :]) ** 2).sum(axis=2).min(axis=1))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # real queries do not find themselves
    rows = np.flatnonzero(valid)[:50]
    own = nearest_real_distance(open_zpoints(store), x[rows], query_rows=rows)
    distances = np.sqrt(((x[rows][:, None, :] - real[None, :, :]) ** 2).sum(axis=2))
    distances[distances == 0] = np.inf
    np.testing.assert_allclose(own, distances.min(axis=1), rtol=1e-4, atol=1e-4)


def test_torch_search_path_equals_numpy_path(corpus: tuple[Path, Path, np.ndarray, np.ndarray]) -> None:
    """The GPU kernel's code, run on the CPU here, finds the same neighbours as the numpy kernel."""
    _, _, x, valid = corpus
    block, keep = np.where(valid[:, None], x, 0.0).astype(np.float32), valid.copy()
    rows = np.arange(len(x))
    queries, own = x[valid][:300], rows[valid][:300]
    got = _nearest_torch(block, keep, rows, queries, own, torch.device("cpu"))
    expected = _nearest_numpy(block, keep, rows, queries, own)
    assert np.isfinite(expected).all()
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_outside_range_uses_full_corpus_quantiles(corpus: tuple[Path, Path, np.ndarray, np.ndarray]) -> None:
    _, stats_path, x, valid = corpus
    stats = open_stats(stats_path)
    real = x[valid]
    low = histogram_quantiles(stats, 0.005)
    np.testing.assert_allclose(low, np.quantile(real, 0.005, axis=0), atol=0.125)  # within a bin
    reference = Reference.from_stats(stats)
    counts = outside_counts(real, reference)
    assert counts.mean() == pytest.approx(x.shape[1] * 0.01, rel=0.35)  # 1 % of each component


def test_scores_side_by_side(corpus: tuple[Path, Path, np.ndarray, np.ndarray], tmp_path: Path) -> None:
    store, all_rows, _, valid = corpus
    stats_path = tmp_path / "train-stats.zarr"  # the fit: the train split only
    params = SummaryParams(thresholds=(1.5,))
    write_stats(stats_of(open_zpoints(store), params=params, split="train"), stats_path, source="t")
    uniform = generate(stats_path, tmp_path / "uniform.zarr", spec=sampler_spec("uniform", b=1.5), n=500)
    mvn = generate(stats_path, tmp_path / "mvn.zarr", spec=sampler_spec("mvn"), n=500)
    results = score(store, stats_path, [uniform, mvn], reference_size=400)
    assert results["fit"] == "valid rows; split=train"
    assert results["fit_rows"] == valid[:2400].sum()
    assert results["heldout_rows"] == 400 and results["heldout_rows_in_fit"] == 0
    sets = results["sets"]
    real, fitted = sets["real (held out)"], sets["mvn (mvn.zarr)"]
    assert real["points"] == 400
    uniform_set = sets["uniform (uniform.zarr)"]
    assert fitted["quality"]["recall"] > uniform_set["quality"]["recall"]
    assert fitted["quality"]["density"] > uniform_set["quality"]["density"]
    assert "quality" not in real  # the reference itself
    # under the fitted normal, its own samples score like held-out real points, the uniform cube lower
    loglik = {name: s["log_likelihood"]["mvn"] for name, s in sets.items()}
    assert loglik["mvn (mvn.zarr)"] == pytest.approx(loglik["real (held out)"], abs=0.3)
    assert loglik["uniform (uniform.zarr)"] < loglik["real (held out)"] - 1
    with pytest.raises(ScoreError, match="no real point is held out of the fit"):
        score(store, all_rows, [mvn])
    # the fitted normal lands where the real points are; the uniform cube near the origin does not
    assert abs(fitted["mahalanobis"]["q50"] - real["mahalanobis"]["q50"]) < 0.5
    assert sets["uniform (uniform.zarr)"]["mahalanobis"]["q50"] > real["mahalanobis"]["q50"] + 0.5
    with pytest.raises(ScoreError, match="not among the statistics"):
        score(store, stats_path, [mvn], threshold=0.7)
    for pair in ((999, 1000), (2, 2), (-1, 3)):
        with pytest.raises(ScoreError, match=r"needs two different components of 0 … \d+"):
            score(store, stats_path, [mvn], pair=pair)
    # a latent store or z-points where the statistics belong: one line, not a KeyError
    for wrong in (store, mvn):
        with pytest.raises(StatsError, match="holds no statistics"):
            score(store, wrong, [mvn])


def test_held_out_share_without_a_split(corpus: tuple[Path, Path, np.ndarray, np.ndarray]) -> None:
    """split=heldout: a seeded 10 % of the rows, the same whatever the chunks; split=fit: the others."""
    store, _, _, _ = corpus
    points = open_zpoints(store)
    heldout, words = selection_mask(points, "heldout", [])
    fit, _ = selection_mask(points, "fit", [])
    held = np.asarray(heldout.compute())
    assert words.endswith("split=heldout")
    assert (held ^ np.asarray(fit.compute())).all()
    assert held.mean() == pytest.approx(0.1, abs=0.02)
    assert np.array_equal(held, heldout_rows(np.arange(len(held))))
    assert np.array_equal(held[1000:1500], heldout_rows(np.arange(1000, 1500)))  # by row number alone


def test_held_out_rows_keep_the_fit_conditions(
    corpus: tuple[Path, Path, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    """Statistics of --split train --where Male=1: the reference is the men of the other splits."""
    store, _, x, valid = corpus
    copy = tmp_path / "store.zarr"
    shutil.copytree(store, copy)
    male = np.where(np.arange(len(x)) % 3 == 0, 1, -1).astype(np.int8)[:, None]
    group = zarr.open_group(str(copy), mode="a")
    group.create_array("attributes", shape=male.shape, chunks=(700, 1), dtype="int8")[:] = male
    group.create_array("attribute", shape=(1,), dtype=str)[:] = np.array(["Male"])
    stats_path = tmp_path / "train-men.zarr"
    params = SummaryParams(thresholds=(1.5,))
    points = open_zpoints(copy)
    write_stats(stats_of(points, params=params, split="train", where=["Male=1"]), stats_path, source="t")
    mvn = generate(stats_path, tmp_path / "mvn.zarr", spec=sampler_spec("mvn"), n=100)
    results = score(copy, stats_path, [mvn], reference_size=10_000)
    men_elsewhere = (np.arange(len(x)) >= 2400) & (male[:, 0] == 1) & valid
    assert results["heldout_rows"] == men_elsewhere.sum()
    assert results["fit_rows"] == ((np.arange(len(x)) < 2400) & (male[:, 0] == 1) & valid).sum()
    with pytest.raises(ScoreError, match="no real point is held out of the fit"):
        all_men = tmp_path / "all-men.zarr"
        write_stats(stats_of(points, params=params, where=["Male=1"]), all_men, source="t")
        score(copy, all_men, [mvn])
