"""``latentdask bench knn``: exact nearest-real-neighbour search against a blocked GEMM.

One run: ``n_queries`` artificial points against ``n`` real vectors of a synthetic
store, searched by :func:`latentdask.generate.score.nearest_real_distance` on a local cluster
(one task per block), in FLOP/s (2 · queries · rows · dim per search) against the
FLOP/s of the least a brute-force search must do: a blocked in-memory float32 GEMM
(queries × dim by dim × ``block_rows``) in this process, on all cores — or, where
there is a CUDA device, on the GPU, which the search's workers then use too.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from latentdask.bench.report import BenchReport, local_client
from latentdask.device import resolve_device
from latentdask.generate.score import nearest_real_distance
from latentdask.generate.synthetic import synthesize_latents
from latentdask.store.points import open_zpoints

GEMM = "blocked float32 GEMM (in memory; all cores, or the GPU)"


def blocked_gemm_flops(
    queries: np.ndarray, dim: int, block_rows: int, blocks: int, device: torch.device
) -> float:
    """FLOP/s of queries @ block.T over ``blocks`` random float32 blocks (all cores, or the GPU)."""
    q = torch.from_numpy(queries).to(device)
    block = torch.from_numpy(
        np.random.default_rng(1).standard_normal((block_rows, dim), dtype=np.float32)
    ).to(device)
    q @ block.T  # warm-up
    _synchronize(device)
    started = time.perf_counter()
    for _ in range(blocks):
        q @ block.T
    _synchronize(device)
    return 2.0 * len(queries) * block_rows * dim * blocks / (time.perf_counter() - started)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_knn(
    *, n: int = 2_000_000, n_queries: int = 10_000, dim: int = 256, block_rows: int = 65_536, workers: int = 2
) -> BenchReport:
    device = resolve_device("auto")
    report = BenchReport(
        "nearest real neighbour, exact",
        setup={
            "real_rows": n,
            "queries": n_queries,
            "dim": dim,
            "block_rows": block_rows,
            "workers": workers,
            "cores": os.cpu_count(),
            "device": str(device),
        },
    )
    queries = np.random.default_rng(0).uniform(-1.5, 1.5, size=(n_queries, dim)).astype(np.float32)
    report.add(GEMM, blocked_gemm_flops(queries, dim, block_rows, 4, device) / 1e9, "GFLOP/s")
    with tempfile.TemporaryDirectory() as scratch:
        store = synthesize_latents(Path(scratch) / "real.zarr", n=n, dim=dim, seed=0, chunk_rows=block_rows)
        with local_client(workers) as client:
            corpus = open_zpoints(store)
            started = time.perf_counter()
            nearest_real_distance(corpus, queries, scheduler=client)
            seconds = time.perf_counter() - started
    report.add(
        "latentdask search (store read included)",
        2.0 * n_queries * n * dim / seconds / 1e9,
        "GFLOP/s",
        baseline=GEMM,
    )
    report.setup["search_seconds"] = round(seconds, 2)
    return report
