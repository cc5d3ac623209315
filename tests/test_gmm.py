"""The Gaussian mixture fitted over every z-point: against scikit-learn, on a known mixture, on workers."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from sklearn.mixture import GaussianMixture

from latentdask.generate import gmm
from latentdask.generate.options import GMMOptions, sampler_spec
from latentdask.generate.samplers import generate
from latentdask.generate.synthetic import true_distribution
from latentdask.store.points import open_zpoints
from tests.helpers import run_cli


def write_store(path: Path, x: np.ndarray, chunk: int = 500) -> Path:
    group = zarr.open_group(str(path), mode="w")
    group.create_array("z", shape=x.shape, chunks=(chunk, x.shape[1]), dtype="float32")[:] = x
    return path


def known_mixture(rng: np.random.Generator, n: int, dim: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """n rows of k well-separated Gaussians (spreads 0.5 to 1.5 per component), and their means."""
    means = rng.normal(scale=8.0, size=(k, dim))
    spreads = rng.uniform(0.5, 1.5, size=(k, dim))
    labels = rng.integers(k, size=n)
    return (means[labels] + rng.normal(size=(n, dim)) * spreads[labels]).astype(np.float32), means


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_em_equals_scikit_learn_from_the_same_start(tmp_path: Path, covariance: str) -> None:
    """From the same weights, means and covariances, each EM step gives scikit-learn's parameters."""
    rng = np.random.default_rng(0)
    dim, k = 4, 3
    x = np.concatenate(
        [
            rng.normal(size=(700, dim)) @ rng.normal(size=(dim, dim)) + rng.normal(scale=1.5, size=dim)
            for _ in range(k)
        ]
    ).astype(np.float32)  # overlapping components: EM takes all its iterations
    corpus = open_zpoints(write_store(tmp_path / "s.zarr", x))
    options = GMMOptions(components=k, covariance=covariance, split="all", max_iter=8, tol=0)
    passes = gmm.Passes(corpus, None, None)
    start = gmm.initial_mixture(corpus, passes, None, k, options, None, [])
    fit = gmm.em(passes, start, options=options)
    covariances = (
        start.covariances if covariance == "full" else np.diagonal(start.covariances, axis1=1, axis2=2)
    )
    reference = GaussianMixture(
        k,
        covariance_type=covariance,
        max_iter=options.max_iter,
        tol=0,
        reg_covar=options.reg_covar,
        weights_init=start.weights,
        means_init=start.means,
        precisions_init=1 / covariances if covariance == "diag" else np.linalg.inv(covariances),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "did not converge": the iterations are counted on purpose
        reference.fit(x.astype(np.float64))
    assert not fit.converged and fit.iterations == options.max_iter
    ours = fit.mixture.covariances
    if covariance == "diag":
        ours = np.diagonal(ours, axis1=1, axis2=2)
    np.testing.assert_allclose(fit.mixture.means, reference.means_, atol=1e-8)
    np.testing.assert_allclose(fit.mixture.weights, reference.weights_, atol=1e-10)
    np.testing.assert_allclose(ours, reference.covariances_, atol=1e-8)
    assert fit.log_likelihood == pytest.approx(reference.score(x.astype(np.float64)), rel=1e-10)
    head = x[:50].astype(np.float64)
    np.testing.assert_allclose(fit.mixture.score_samples(head), reference.score_samples(head), rtol=1e-10)


def test_auto_finds_the_number_of_components_and_recovers_them(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x, means = known_mixture(rng, 6000, 5, 3)
    store = write_store(tmp_path / "known.zarr", x, chunk=700)
    options = GMMOptions(components="auto", max_components=5, split="fit", seed=2)
    fitted = gmm.fit_gmm(store, options=options, progress=False)
    assert fitted.attrs["components"] == 3
    assert fitted.attrs["split"] == "fit" and fitted.attrs["selection"] == "all rows; split=fit"
    curve = fitted["heldout_log_likelihood"].values
    assert int(fitted["k"][np.argmax(curve)]) == 3 and np.isfinite(fitted["bic"].values).all()
    found = fitted["means"].values
    for mean in means:  # every true mean has a fitted one beside it
        assert np.linalg.norm(found - mean, axis=1).min() < 0.15
    out = gmm.write_gmm(fitted, tmp_path / "GMM.zarr")
    reopened = xr.open_zarr(out)
    assert reopened["covariances"].dims == ("component", "latent", "latent2")
    mixture = gmm.open_gmm(out)
    points = generate(out, tmp_path / "gmm.zarr", spec=sampler_spec("gmm"), n=20_000, seed=3)
    z = zarr.open_array(str(points / "z"))[:]
    assert z.shape == (20_000, 5)
    np.testing.assert_allclose(z.mean(axis=0), x.mean(axis=0), atol=0.2)
    assert mixture.score_samples(z).mean() == pytest.approx(fitted.attrs["log_likelihood"], abs=0.1)


def test_auto_needs_held_out_rows(tmp_path: Path) -> None:
    store = write_store(
        tmp_path / "s.zarr", np.random.default_rng(0).normal(size=(300, 2)).astype(np.float32)
    )
    with pytest.raises(gmm.GMMError, match="fit on train or fit, not split=all"):
        gmm.fit_gmm(store, options=GMMOptions(components="auto", split="all"), progress=False)


def test_gmm_command_on_worker_processes(tmp_path: Path) -> None:
    """The CLI on a two-process local cluster gives the fit of the in-process scheduler."""
    x, _ = known_mixture(np.random.default_rng(4), 3000, 3, 2)
    store = write_store(tmp_path / "s.zarr", x)
    spec = tmp_path / "two.yaml"
    spec.write_text("kind: local\nworkers: 2\nthreads_per_worker: 1\n")
    out = tmp_path / "GMM.zarr"
    result = run_cli(
        "gmm", str(store), "--out", str(out), "--components", "2", "--split", "fit", "--cluster", str(spec)
    )
    assert result.returncode == 0, result.stderr
    assert "2 components (K given) fitted on" in result.stderr
    local = gmm.fit_gmm(store, options=GMMOptions(components=2, split="fit"), progress=False)
    np.testing.assert_allclose(xr.open_zarr(out)["means"].values, local["means"].values, atol=1e-8)
    again = run_cli("gmm", str(store), "--out", str(out), "--components", "2", "--split", "fit")
    assert again.returncode == 0, again.stderr  # its own earlier output is replaced
    taken = tmp_path / "mine.json"
    taken.write_text(json.dumps({"mine": True}))
    refused = run_cli("gmm", str(store), "--out", str(taken), "--components", "2", "--split", "fit")
    assert refused.returncode == 2 and json.loads(taken.read_text()) == {"mine": True}
    for bad in ("abc", "-2", "2.5"):
        done = run_cli("gmm", str(store), "--out", str(tmp_path / "new.zarr"), "--components", bad)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert "--components expects a number of components or 'auto'" in done.stderr


def test_building_an_em_pass_computes_nothing(tmp_path: Path) -> None:
    import dask

    x, _ = known_mixture(np.random.default_rng(7), 2000, 3, 2)
    corpus = open_zpoints(write_store(tmp_path / "s.zarr", x))
    mixture = gmm.Mixture(np.full(2, 0.5), x[:2].astype(np.float64), np.stack([np.eye(3)] * 2))

    def forbid(*args: object, **kwargs: object) -> None:
        raise AssertionError("the graph was computed while it was built")

    with dask.config.set(scheduler=forbid):
        graph = gmm.Passes(corpus, None, None).graph(gmm._em_block, mixture, "gmm_em", False)
    names = {str(key).rsplit("-", 1)[0] for key in dict(graph.dask)}
    assert {"gmm_em_chunk", "gmm_em_combine-0-0"} <= names  # one task per block, readable names
    assert [str(k).rsplit("-", 1)[0] for k in dict(graph.dask)].count("gmm_em_chunk") == 4


def test_synth_latents_mixture_is_found_at_scale(tmp_path: Path) -> None:
    """`synth-latents --components 3` then `gmm --components auto`: K = 3, means and weights recovered."""
    store = tmp_path / "mixture.zarr"
    made = run_cli(
        "synth-latents", str(store), "--n", "60000", "--dim", "16", "--components", "3", "--seed", "5"
    )
    assert made.returncode == 0, made.stderr
    out = tmp_path / "GMM.zarr"
    fitted = run_cli(
        "gmm",
        str(store),
        "--out",
        str(out),
        "--components",
        "auto",
        "--max-components",
        "5",
        "--split",
        "fit",
    )
    assert fitted.returncode == 0, fitted.stderr
    truth = zarr.open_group(str(store), mode="r")
    true_means = np.asarray(truth["true_means"][:])
    found = xr.open_zarr(out)
    assert found.attrs["components"] == 3
    distance = np.linalg.norm(found["means"].values[:, None, :] - true_means[None, :, :], axis=2)
    assert (distance.min(axis=0) < 0.1).all()  # every true mean found, within 0.1 (spreads ≤ 1.8)
    np.testing.assert_allclose(np.sort(found["weights"].values), 1 / 3, atol=0.02)
    _, within = true_distribution(16, 5)  # each component's covariance
    np.testing.assert_allclose(found["covariances"].values, np.stack([within] * 3), atol=0.1)


def test_components_nobody_belongs_to_are_dropped_and_said(tmp_path: Path) -> None:
    """A start with a component far from every row: dropped, weights renormalised, the fit says so."""
    x, _ = known_mixture(np.random.default_rng(8), 2000, 3, 2)
    corpus = open_zpoints(write_store(tmp_path / "s.zarr", x))
    far = np.vstack([x[:2].astype(np.float64), np.full((1, 3), 1e4)])
    start = gmm.Mixture(np.full(3, 1 / 3), far, np.stack([np.eye(3)] * 3))
    fit = gmm.em(gmm.Passes(corpus, None, None), start, options=GMMOptions(components=3, split="all"))
    assert fit.mixture.components == 2 and fit.mixture.weights.sum() == pytest.approx(1.0)
    assert fit.notes and "dropped 1 empty component" in fit.notes[0]
    assert np.isfinite(fit.log_likelihood)
