"""``latentdask bench stats``: the fused one-pass summary against the ways people compute its figures.

All on the same synthetic store (``synth-latents``), in one run. The figures compared are
the covariance (or correlation), the per-component histograms on the statistics' bin
edges, and slice populations — for a pair (a, b) at threshold t, the rows with |x_j| < t
for every j outside {a, b}:

- **fused** — ``latentdask stats``: every family (moments to the 4th, min/max, histograms,
  radii, all N(N−1)/2 pair slice populations at every threshold) on the local cluster,
  store read included; pass 2 (radii about the mean) timed apart. Every numba kernel of
  both passes is compiled on the workers before the clock starts.
- **the CelebA study's code, in RAM** — after loading the array, as its parts I–IV do it::

      np.corrcoef(X.T)
      for j in range(N): np.histogram(X[:, j], bins=edges)
      for a, b in 16 pairs:                    # three filters on column slices
          Y = X[(abs(X[:, :a]) < t).all(1)]
          Y = Y[(abs(Y[:, a+1:b]) < t).all(1)]
          len(Y[(abs(Y[:, b+1:]) < t).all(1)])

- **numpy in RAM, all pairs** — what a numpy expert writes for the same figures: float64
  ``np.cov``; per block of rows ONE ``np.bincount`` for all N histograms (each column's bin
  index offset by column × bins); all pair populations at once from the per-row count of
  components outside ±t (:mod:`latentdask.bench.stats_baselines`).
- **dask.array, all pairs** — the same on the cluster: ``da.cov`` in float64, and the
  two block kernels through ``map_blocks`` and a sum, in one ``dask.compute``.
- **bound: float32 XᵀX** over the same chunks — the least any covariance pass must do; it
  computes no figure.
- **bound: a bare read pass** — every block read (and decoded) on the same workers, nothing
  computed: what pass 2, a second read that exactness needs, is compared with.
- **the whole command** — ``latentdask stats STORE`` as a user runs it (process start,
  imports, cluster, both passes, finalize and write), beside the numpy expert's compute
  alone (load excluded); finalize and write are also timed apart.
- **where pass 1's time goes** — read, row filter, centring with the float64 co-moment GEMM,
  and the numba scan, each timed on a few blocks in one process on one thread and scaled to all
  blocks over the workers; the rest of pass 1 is scheduling, transfer, merging and imbalance.

Each baseline's figures are checked against the fused pass's: slice counts and
histograms equal, covariance (correlation for the study's code) within 1e-6 of its
largest entry.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import zarr

from latentdask.bench.report import (
    BenchReport,
    PeakMemory,
    count_difference,
    local_client,
    relative_difference,
    warm_up,
)
from latentdask.bench.stats_baselines import dask_all_pairs, numpy_all_pairs, seed_code
from latentdask.generate.synthetic import synthesize_latents
from latentdask.location import Location
from latentdask.reduction import row_starts
from latentdask.stats.io import write_stats
from latentdask.stats.kernels import slice_population
from latentdask.stats.options import SummaryParams
from latentdask.stats.reduce import Inputs, first_pass, second_pass
from latentdask.stats.summary import SummaryState, select_rows, summary_finalize
from latentdask.store.points import ZPoints, open_zpoints

#: pairs the CelebA study's code counts (all 32,640 pairs would take it hours)
PAIRS = 16
#: covariance and correlation: largest |difference| relative to the largest entry
COVARIANCE_TOLERANCE = 1e-6

STUDY_CODE = "the CelebA study's code in RAM, total (load included)"
NUMPY = "numpy in RAM, all pairs, total (load included)"
DASK = "dask.array, all pairs, total (one compute)"
BOUND = "bound: float32 X^T X over the same chunks (no figure)"
READ = "bound: a bare read pass over the store (no figure)"
NUMPY_COMPUTE = "numpy in RAM, all pairs, compute only (load excluded)"
#: blocks the profile of pass 1 times, in one process
PROFILED_BLOCKS = 4


# ------------------------------------------------------------------------------- the benchmark


def whole_command(store: Location, scratch: Path, workers: int) -> float:
    """Seconds of ``latentdask stats STORE`` as a user runs it, on a local cluster of ``workers``."""
    spec = scratch / "cluster.yaml"
    spec.write_text(f"kind: local\nworkers: {workers}\n")
    command = [
        sys.executable,
        "-m",
        "latentdask.cli",
        "stats",
        str(store),
        "--out",
        str(scratch / "cmd.zarr"),
    ]
    started = time.perf_counter()
    done = subprocess.run([*command, "--cluster", str(spec)], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"latentdask stats failed:\n{done.stderr[-2000:]}")
    return seconds


def _rows_read(block: np.ndarray) -> np.ndarray:
    return np.array([len(block)])


def read_pass(z: da.Array, client: Any) -> int:
    """Read every block of ``z`` on the cluster, computing nothing; the rows read."""
    counts = da.map_blocks(_rows_read, z, drop_axis=1, chunks=((1,) * len(z.chunks[0]),), dtype=np.int64)
    (rows,) = dask.compute(counts.sum(), scheduler=client)
    return int(rows)


def pass_one_profile(points: ZPoints, params: SummaryParams, workers: int) -> dict[str, float]:
    """Seconds of each part of pass 1 over the whole array on ``workers`` cores, estimated from
    :data:`PROFILED_BLOCKS` blocks timed here on one thread (the parts of :func:`scan_block`)."""
    from threadpoolctl import threadpool_limits

    from latentdask.stats import scan

    source = points.source
    assert source is not None
    starts = row_starts(points.z)
    chosen = np.linspace(0, len(starts) - 1, min(PROFILED_BLOCKS, len(starts))).round().astype(int)
    thresholds = np.asarray(params.thresholds, dtype=np.float64)
    parts = (
        "read and decode",
        "row filter (finite, valid)",
        "mean, centring and co-moment GEMM (float64, in tiles)",
        "numba scan: histograms, moments, radii, slices",
    )
    seconds = dict.fromkeys(parts, 0.0)
    warm = np.asarray(source[:64])  # numba's kernels loaded here, untimed
    scan.scan_block(
        warm,
        np.ones(len(warm), bool),
        edges=params.edges,
        thresholds=thresholds,
        radius_edges=params.radius_edges,
    )
    with threadpool_limits(limits=1, user_api="blas"):
        for b in chosen:
            stop = starts[b] + points.z.chunks[0][b]
            clock = time.perf_counter()
            timings = []
            x = np.asarray(source[starts[b] : stop])
            timings.append(time.perf_counter())
            keep, _, _ = select_rows(x, None, None)
            timings.append(time.perf_counter())
            mean = scan._kept_mean(x, keep)
            scan._co_moments(x, keep, mean, None)
            timings.append(time.perf_counter())
            scan._scan(x, keep, mean, params.edges, thresholds, params.radius_edges)
            timings.append(time.perf_counter())
            for name, end in zip(seconds, timings, strict=True):
                seconds[name] += end - clock
                clock = end
    scale = len(starts) / len(chosen) / workers
    return {name: value * scale for name, value in seconds.items()}


def _fused_figures(state: SummaryState) -> dict[str, np.ndarray]:
    m = state.moments
    cov = m.m2 / (m.n - 1)
    std = np.sqrt(np.diag(cov))
    return {
        "cov": cov,
        "corr": cov / np.outer(std, std),
        "hist": state.hist.counts,
        "populations": slice_population(state.slices),
    }


def bench_stats(
    *, n: int = 2_000_000, dim: int = 256, chunk_rows: int = 65_536, workers: int = 2, baselines: bool = True
) -> BenchReport:
    """The fused pass, and with ``baselines`` the bound and the three baselines, on one synthetic store."""
    params = SummaryParams()
    thresholds = np.asarray(params.thresholds)
    t = float(thresholds[0])
    report = BenchReport(
        "statistics pass",
        setup={
            "rows": n,
            "dim": dim,
            "chunk_rows": chunk_rows,
            "workers": workers,
            "thresholds": list(params.thresholds),
            "pairs_fused": dim * (dim - 1) // 2,
            "pairs_seed_code": PAIRS,
        },
    )
    rng = np.random.default_rng(0)
    pairs = [
        (int(a), int(b)) for a, b in (sorted(rng.choice(dim, size=2, replace=False)) for _ in range(PAIRS))
    ]
    with tempfile.TemporaryDirectory() as scratch:
        store = synthesize_latents(Path(scratch) / "points.zarr", n=n, dim=dim, seed=0, chunk_rows=chunk_rows)
        with local_client(workers) as client:
            client.run(warm_up, "latentdask.stats.reduce")  # every numba kernel of both passes, untimed
            points = open_zpoints(store)
            inputs = Inputs(points.z)
            with PeakMemory() as memory:
                started = time.perf_counter()
                (state,) = first_pass(inputs, params=params, scheduler=client)
                one = time.perf_counter() - started
                started = time.perf_counter()
                centred = second_pass(inputs, state, params, scheduler=client)
                two = time.perf_counter() - started
            started = time.perf_counter()
            result = summary_finalize(state, params, centred_radius=centred, selection="all rows")
            finalize = time.perf_counter() - started
            started = time.perf_counter()
            write_stats(result, Path(scratch) / "stats.zarr", source=str(store))
            write = time.perf_counter() - started
            fused = _fused_figures(state)
            started = time.perf_counter()
            read_pass(points.z, client)
            report.add(READ, time.perf_counter() - started, "s", kind="bound")
            profile = pass_one_profile(points, params, workers)
            if baselines:
                started = time.perf_counter()
                dask.compute(points.z.T @ points.z, scheduler=client)
                report.add(BOUND, time.perf_counter() - started, "s", kind="bound")
                started = time.perf_counter()
                theirs = dask_all_pairs(points.z, params.edges, thresholds, client)
                report.add(DASK, time.perf_counter() - started, "s", kind="baseline")
                _check_all_pairs(report, DASK, fused, theirs)
        if baselines:
            from threadpoolctl import threadpool_limits

            # the in-RAM baselines on as many BLAS threads as the fused pass has workers
            with threadpool_limits(limits=workers, user_api="blas"):
                started = time.perf_counter()
                x = np.asarray(zarr.open_array(str(store / "z"), mode="r")[:])
                load = time.perf_counter() - started
                report.add("loading the array into RAM (both in-RAM baselines)", load, "s", kind="detail")
                parts, seed = seed_code(x, params.edges, pairs, t)
                for name, seconds in parts.items():
                    report.add(f"the CelebA study's code: {name}", seconds, "s", kind="detail")
                report.add(STUDY_CODE, load + sum(parts.values()), "s", kind="baseline")
                report.check(
                    STUDY_CODE,
                    "correlation: largest |difference| / largest entry",
                    relative_difference(fused["corr"], seed["corr"]),
                    COVARIANCE_TOLERANCE,
                )
                report.check(
                    STUDY_CODE,
                    "histograms: largest |count difference|",
                    count_difference(fused["hist"], seed["hist"]),
                    0,
                )
                ours = np.array([fused["populations"][0, a, b] for a, b in pairs])
                report.check(
                    STUDY_CODE,
                    f"slice counts of {PAIRS} pairs at t={t:g}: largest |difference|",
                    count_difference(ours, seed["pairs"]),
                    0,
                )
                parts, expert = numpy_all_pairs(x, params.edges, thresholds, chunk_rows)
                del x
                for name, seconds in parts.items():
                    report.add(f"numpy in RAM: {name}", seconds, "s", kind="detail")
                report.add(NUMPY, load + sum(parts.values()), "s", kind="baseline")
                _check_all_pairs(report, NUMPY, fused, expert)
                report.add(NUMPY_COMPUTE, sum(parts.values()), "s", kind="baseline")
                _check_all_pairs(report, NUMPY_COMPUTE, fused, expert)
        command = whole_command(store, Path(scratch), workers)

    compared = [STUDY_CODE, NUMPY, NUMPY_COMPUTE, DASK] if baselines else []
    report.add(
        "fused pass 1: every family, all pairs (store read included)",
        one,
        "s",
        vs=[BOUND] if baselines else [],
    )
    for part, seconds in profile.items():
        report.add(f"fused pass 1, estimated: {part}", seconds, "s")
    report.add(
        "fused pass 1, the rest: scheduling, transfer, merging, imbalance", one - sum(profile.values()), "s"
    )
    report.add("fused pass 2: radii about the mean", two, "s", vs=[READ])
    report.add("fused: finalize (PCA, peaks, FWHM, slice populations)", finalize, "s")
    report.add("fused: write stats.zarr and stats.json", write, "s")
    report.add("fused, total (both passes)", one + two, "s", vs=compared)
    report.add(
        "latentdask stats, the whole command (process start, cluster, both passes, write)",
        command,
        "s",
        vs=[NUMPY_COMPUTE] if baselines else [],
    )
    report.add("fused: peak RSS, client + scheduler + workers", memory.peak_bytes / 2**20, "MiB")
    return report


def _check_all_pairs(
    report: BenchReport, baseline: str, fused: dict[str, np.ndarray], theirs: dict[str, np.ndarray]
) -> None:
    report.check(
        baseline,
        "covariance: largest |difference| / largest entry",
        relative_difference(fused["cov"], theirs["cov"]),
        COVARIANCE_TOLERANCE,
    )
    report.check(
        baseline, "histograms: largest |count difference|", count_difference(fused["hist"], theirs["hist"]), 0
    )
    report.check(
        baseline,
        "slice counts, all pairs and thresholds: largest |difference|",
        count_difference(fused["populations"], theirs["populations"]),
        0,
    )
