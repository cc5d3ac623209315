"""``latentdask bench gmm``: one EM iteration of the Gaussian mixture over a store, against scikit-learn.

One run: ``n`` × ``dim`` synthetic z-points on disk, ``components`` full covariances, from one
start (seeded rows as means, the sample covariance, equal weights). Rates in rows per second:

- **latentdask** — one EM iteration of :mod:`latentdask.generate.gmm` (E-step and sufficient
  statistics per block, merged, M-step on the client) on ``workers`` single-threaded worker
  processes, reading the store from disk;
- **baseline** — scikit-learn's ``GaussianMixture`` on the array in RAM, on ``workers`` BLAS
  threads: one iteration is the time of ``fit`` with ``max_iter=2`` less that with
  ``max_iter=1`` from the same start (both pay the same set-up and final E-step). Its
  weights, means and covariances after one iteration must equal latentdask's (relative 1e-6);
- **bound** — the float32 GEMMs an iteration cannot avoid, computing no answer: per row and
  component one (dim × dim) product for the Mahalanobis distance (torch, all cores).
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import zarr

from latentdask.bench.report import BenchReport, blas_threads, local_client, relative_difference, warm_up
from latentdask.generate.gmm import Mixture, Passes, em_step
from latentdask.generate.options import GMMOptions
from latentdask.generate.synthetic import synthesize_latents
from latentdask.store.points import open_zpoints

#: one iteration from the same start, in float64 both ways
AGREEMENT = 1e-6


def start_mixture(x: np.ndarray, components: int, seed: int = 0) -> Mixture:
    """Seeded rows as means, the covariance of a sample, equal weights."""
    rng = np.random.default_rng(seed)
    sample = x[rng.choice(len(x), size=min(len(x), 20_000), replace=False)].astype(np.float64)
    means = sample[rng.choice(len(sample), size=components, replace=False)]
    covariance = np.cov(sample, rowvar=False) + 1e-6 * np.eye(x.shape[1])
    return Mixture(np.full(components, 1 / components), means, np.stack([covariance] * components))


def gemm_bound_rows(dim: int, components: int, rows: int = 65_536, repeats: int = 2) -> float:
    """Rows per second of ``components`` float32 (rows × dim) @ (dim × dim) products (torch, all cores)."""
    x = torch.randn(rows, dim)
    factor = torch.randn(dim, dim)
    x @ factor  # warm-up
    started = time.perf_counter()
    for _ in range(repeats * components):
        x @ factor
    return rows * repeats / (time.perf_counter() - started)


def sklearn_iteration(x: np.ndarray, start: Mixture, reg_covar: float) -> tuple[float, object]:
    """Seconds of one scikit-learn EM iteration (max_iter 2 less max_iter 1), and the 1-iteration fit."""
    from sklearn.mixture import GaussianMixture

    def fit(iterations: int) -> tuple[float, GaussianMixture]:
        model = GaussianMixture(
            len(start.weights),
            covariance_type="full",
            max_iter=iterations,
            tol=0,
            reg_covar=reg_covar,
            init_params="random_from_data",  # replaced by the start below; the cheapest set-up
            weights_init=start.weights,
            means_init=start.means,
            precisions_init=np.linalg.inv(start.covariances),
        )
        began = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "did not converge": one or two iterations on purpose
            model.fit(x)
        return time.perf_counter() - began, model

    one, after_one = fit(1)
    two, _ = fit(2)
    return max(two - one, 1e-9), after_one


def bench_gmm(
    *, n: int = 2_000_000, dim: int = 256, components: int = 8, chunk_rows: int = 65_536, workers: int = 2
) -> BenchReport:
    from threadpoolctl import threadpool_limits

    options = GMMOptions(components=components, split="all")
    baseline = f"scikit-learn GaussianMixture, one iteration on the array in RAM ({workers} BLAS threads)"
    bound = f"bound: float32 GEMMs of {components} Mahalanobis evaluations per row (torch, all cores)"
    report = BenchReport(
        f"Gaussian mixture, one EM iteration, K = {components} full covariances",
        setup={"rows": n, "dim": dim, "components": components, "chunk_rows": chunk_rows, "workers": workers},
    )
    with tempfile.TemporaryDirectory() as scratch:
        store = synthesize_latents(Path(scratch) / "real.zarr", n=n, dim=dim, seed=0, chunk_rows=chunk_rows)
        x = np.asarray(zarr.open_array(str(store / "z"), mode="r")[:], dtype=np.float64)
        start = start_mixture(x, components)
        with local_client(workers) as client:
            client.run(warm_up, "latentdask.generate.gmm")
            passes = Passes(open_zpoints(store), None, client)
            started = time.perf_counter()
            ours = em_step(passes, start, options=options)
            seconds = time.perf_counter() - started
    with threadpool_limits(limits=workers, user_api="blas"):
        threads = blas_threads()
        theirs_seconds, theirs = sklearn_iteration(x, start, options.reg_covar)
    del x
    report.add(baseline, n / theirs_seconds, "rows/s", kind="baseline")
    for figure, mine, other in (
        ("weights", ours.weights, theirs.weights_),  # type: ignore[attr-defined]
        ("means", ours.means, theirs.means_),  # type: ignore[attr-defined]
        ("covariances", ours.covariances, theirs.covariances_),  # type: ignore[attr-defined]
    ):
        report.check(baseline, f"{figure} after one iteration", relative_difference(mine, other), AGREEMENT)
    report.add(bound, gemm_bound_rows(dim, components), "rows/s", kind="bound")
    report.add(
        f"latentdask EM iteration: {workers} workers x 1 thread (store read included)",
        n / seconds,
        "rows/s",
        vs=[baseline, bound],
    )
    report.setup |= {
        "latentdask_seconds": round(seconds, 2),
        "baseline_seconds": round(theirs_seconds, 2),
        "blas_threads_baseline": threads,
        "cores": os.cpu_count(),
    }
    return report
