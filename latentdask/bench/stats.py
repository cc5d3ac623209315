"""``latentdask bench stats``: the fused one-pass summary against the ways people do it now.

All on the same synthetic store (``synth-latents``), in one run:

- **fused** — ``latentdask stats``: every family, all 32,640 pair slice populations
  per threshold, on the local cluster, store read included (pass 2 timed apart).
- **seed method, in RAM** — as the seed study writes it, after loading the array::

      np.corrcoef(X.T)
      for j in range(N): np.histogram(X[:, j], bins=edges)
      for a, b in 16 pairs: (abs(X[:, others]) < t).all(axis=1).sum()

- **dask.array equivalents** — ``da.cov`` (via ``da.corrcoef``), ``da.histogram`` per
  component, the same mask count per pair for 16 pairs, on the same cluster.
- **float32 XᵀX** — ``(x.T @ x)`` over the same chunks: the least any covariance pass
  must do.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import zarr

from latentdask.bench.report import BenchReport, PeakMemory, local_client
from latentdask.generate.synthetic import synthesize_latents
from latentdask.stats.reduce import Inputs, first_pass, second_pass
from latentdask.stats.summary import SummaryParams
from latentdask.store.points import open_zpoints

PAIRS = 16


def seed_method(x: np.ndarray, edges: np.ndarray, pairs: list[tuple[int, int]], t: float) -> dict[str, float]:
    """The seed study's way, on an array in RAM; seconds per part."""
    seconds = {}
    started = time.perf_counter()
    np.corrcoef(x.T)
    seconds["correlation"] = time.perf_counter() - started
    started = time.perf_counter()
    for j in range(x.shape[1]):
        np.histogram(x[:, j], bins=edges)
    seconds["histograms"] = time.perf_counter() - started
    started = time.perf_counter()
    for a, b in pairs:
        others = [j for j in range(x.shape[1]) if j not in (a, b)]
        (np.abs(x[:, others]) < t).all(axis=1).sum()
    seconds[f"slices ({len(pairs)} pairs)"] = time.perf_counter() - started
    return seconds


def dask_equivalents(
    z: da.Array, edges: np.ndarray, pairs: list[tuple[int, int]], t: float
) -> dict[str, float]:
    """dask.array's own functions for the same figures; seconds per part."""
    seconds = {}
    started = time.perf_counter()
    da.corrcoef(z.T).compute()
    seconds["correlation"] = time.perf_counter() - started
    started = time.perf_counter()
    dask.compute(*[da.histogram(z[:, j], bins=edges)[0] for j in range(z.shape[1])])
    seconds["histograms"] = time.perf_counter() - started
    started = time.perf_counter()
    counts = []
    for a, b in pairs:
        others = [j for j in range(z.shape[1]) if j not in (a, b)]
        counts.append((da.fabs(z[:, others]) < t).all(axis=1).sum())
    dask.compute(*counts)
    seconds[f"slices ({len(pairs)} pairs)"] = time.perf_counter() - started
    return seconds


def _compile_kernels(params: SummaryParams) -> None:
    from latentdask.stats.summary import summary_chunk

    summary_chunk(np.zeros((4, 3), np.float32), params=params)


def bench_stats(
    *, n: int = 2_000_000, dim: int = 256, chunk_rows: int = 65_536, workers: int = 2, baselines: bool = True
) -> BenchReport:
    """Run all four on one synthetic store (the fused pass alone without ``baselines``)."""
    params = SummaryParams()
    t = params.thresholds[0]
    report = BenchReport(
        "statistics pass",
        setup={
            "rows": n,
            "dim": dim,
            "chunk_rows": chunk_rows,
            "workers": workers,
            "pairs_fused": dim * (dim - 1) // 2,
            "pairs_baselines": PAIRS,
        },
    )
    with tempfile.TemporaryDirectory() as scratch:
        store = synthesize_latents(Path(scratch) / "points.zarr", n=n, dim=dim, seed=0, chunk_rows=chunk_rows)
        rng = np.random.default_rng(0)
        pairs = [tuple(sorted(rng.choice(dim, size=2, replace=False).tolist())) for _ in range(PAIRS)]
        with local_client(workers) as client:
            client.run(_compile_kernels, params)  # numba compiles (or loads) once per worker, untimed
            points = open_zpoints(store)
            inputs = Inputs(points.z)
            with PeakMemory() as memory:
                started = time.perf_counter()
                (state,) = first_pass(inputs, params=params, scheduler=client)
                one = time.perf_counter() - started
                started = time.perf_counter()
                second_pass(inputs, state, params, scheduler=client)
                two = time.perf_counter() - started
            report.add("fused pass 1: every family, all pairs (store read included)", one, "s")
            report.add("fused pass 2: radii about the mean", two, "s")
            fused = one + two
            report.add("fused, total", fused, "s")
            report.add("fused: peak RSS, client + scheduler + workers", memory.peak_bytes / 2**20, "MiB")
            if not baselines:
                return report

            started = time.perf_counter()
            (z32,) = dask.compute(points.z.T @ points.z)
            report.add("float32 X^T X over the same chunks", time.perf_counter() - started, "s")
            del z32

            parts = dask_equivalents(points.z, params.edges, pairs, t)
            for name, seconds in parts.items():
                report.add(f"dask.array: {name}", seconds, "s")
            report.add("dask.array, total", sum(parts.values()), "s")

        started = time.perf_counter()
        x = zarr.open_array(str(store / "z"), mode="r")[:]
        load = time.perf_counter() - started
        parts = seed_method(x, params.edges, pairs, t)  # type: ignore[arg-type]
        del x
        report.add("seed method: load into RAM", load, "s")
        for name, seconds in parts.items():
            report.add(f"seed method: {name}", seconds, "s")
        report.add("seed method, total (load included)", load + sum(parts.values()), "s")

    # speed-ups: baseline seconds / fused seconds (higher is better)
    totals = {row.name: row.value for row in report.rows}
    report.setup |= {
        "speedup vs seed method": round(totals["seed method, total (load included)"] / fused, 2),
        "speedup vs dask.array": round(totals["dask.array, total"] / fused, 2),
        "throughput vs float32 XtX (pass 1)": round(totals["float32 X^T X over the same chunks"] / one, 2),
    }
    return report
