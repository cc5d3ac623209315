"""``latentdask bench knn``: exact nearest-real-neighbour search against the same brute force in RAM.

One run: ``queries`` artificial points against ``n`` real vectors of a synthetic store,
searched by :func:`latentdask.stats.nearest.nearest_real_distance` on a local cluster
(one task per block of ``chunk_rows`` rows, ``workers`` processes of one thread), in
FLOP/s (2 · queries · rows · dim per search), against:

- **baseline** — the same brute force on the array loaded into RAM (load apart): the same
  library, batch shape and threads as the search's tasks — on the CPU numpy (OpenBLAS)
  GEMMs of :data:`~latentdask.stats.nearest.QUERY_BATCH` queries × ``chunk_rows`` rows on
  ``workers`` BLAS threads, on a GPU torch with
  :data:`~latentdask.stats.nearest.GPU_QUERY_BATCH` — each batch ranks the rows by
  |x|² − 2 q·x and measures the distance to the best one in float64. Its distances
  must agree with latentdask's (relative difference ≤ 1e-5: near-ties may pick another
  row at the same distance);
- **bound** — the best GEMM available, computing no answer: torch float32
  ``queries @ block.T`` with every query at once, on all cores or the GPU, over 4 blocks.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr

from latentdask.bench.report import BenchReport, blas_threads, local_client, warm_up
from latentdask.device import resolve_device
from latentdask.generate.synthetic import synthesize_latents
from latentdask.stats.nearest import GPU_QUERY_BATCH, QUERY_BATCH, nearest_real_distance
from latentdask.store.points import open_zpoints

#: near-ties: another row within float32 rounding of the nearest may be chosen
DISTANCE_TOLERANCE = 1e-5


def brute_force_numpy(x: np.ndarray, queries: np.ndarray, block_rows: int, batch: int) -> np.ndarray:
    """Exact nearest distances, a block of rows and a batch of queries at a time (numpy)."""
    best = np.full(len(queries), np.inf)
    for r0 in range(0, len(x), block_rows):
        block = x[r0 : r0 + block_rows]
        norms = np.einsum("ij,ij->i", block, block)
        for q0 in range(0, len(queries), batch):
            q = queries[q0 : q0 + batch]
            rank = q @ block.T
            rank *= -2.0
            rank += norms
            nearest = rank.argmin(axis=1)
            squared = ((q.astype(np.float64) - block[nearest].astype(np.float64)) ** 2).sum(axis=1)
            np.minimum(best[q0 : q0 + batch], squared, out=best[q0 : q0 + batch])
    return np.sqrt(best)


def brute_force_torch(
    x: np.ndarray, queries: np.ndarray, block_rows: int, batch: int, device: torch.device
) -> np.ndarray:
    """:func:`brute_force_numpy` with torch on ``device`` (the search's engine on a GPU)."""
    best = torch.full((len(queries),), torch.inf, dtype=torch.float64, device=device)
    q_all = torch.from_numpy(queries).to(device)
    with torch.inference_mode():
        for r0 in range(0, len(x), block_rows):
            block = torch.from_numpy(x[r0 : r0 + block_rows]).to(device)
            norms = (block * block).sum(dim=1)
            for q0 in range(0, len(queries), batch):
                q = q_all[q0 : q0 + batch]
                nearest = torch.addmm(norms[None, :], q, block.T, alpha=-2.0).argmin(dim=1)
                squared = ((q.double() - block[nearest].double()) ** 2).sum(dim=1)
                best[q0 : q0 + batch] = torch.minimum(best[q0 : q0 + batch], squared)
    return np.sqrt(best.cpu().numpy())


def gemm_bound_flops(
    queries: np.ndarray, dim: int, block_rows: int, blocks: int, device: torch.device
) -> float:
    """FLOP/s of queries @ block.T over ``blocks`` random float32 blocks (torch: all cores, or the GPU)."""
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
    *, n: int = 2_000_000, queries: int = 10_000, dim: int = 256, chunk_rows: int = 65_536, workers: int = 2
) -> BenchReport:
    from threadpoolctl import threadpool_limits

    device = resolve_device("auto")
    on_gpu = device.type == "cuda"
    batch = GPU_QUERY_BATCH if on_gpu else QUERY_BATCH
    engine = f"torch on {device}" if on_gpu else f"numpy on {workers} BLAS threads"
    baseline = f"brute force in RAM as the tasks do it ({engine}, batches of {batch:,} queries)"
    cores = "the GPU" if on_gpu else "all cores"
    bound = f"bound: torch float32 GEMM alone, all {queries:,} queries at once ({cores})"
    report = BenchReport(
        "nearest real neighbour, exact",
        setup={
            "real_rows": n,
            "queries": queries,
            "dim": dim,
            "chunk_rows": chunk_rows,
            "workers": workers,
            "cores": os.cpu_count(),
            "device": str(device),
            "query_batch": batch,
        },
    )
    points = np.random.default_rng(0).uniform(-1.5, 1.5, size=(queries, dim)).astype(np.float32)
    flops = 2.0 * queries * n * dim
    with tempfile.TemporaryDirectory() as scratch:
        store = synthesize_latents(Path(scratch) / "real.zarr", n=n, dim=dim, seed=0, chunk_rows=chunk_rows)
        with local_client(workers) as client:
            client.run(warm_up, "latentdask.generate.score")
            corpus = open_zpoints(store)
            started = time.perf_counter()
            found = nearest_real_distance(corpus, points, scheduler=client)
            seconds = time.perf_counter() - started
            task_threads = sorted(set(client.run(blas_threads).values()))
        started = time.perf_counter()
        x = np.asarray(zarr.open_array(str(store / "z"), mode="r")[:])
        load = time.perf_counter() - started
    with threadpool_limits(limits=workers, user_api="blas"):
        threads = blas_threads()
        started = time.perf_counter()
        if on_gpu:
            theirs = brute_force_torch(x, points, chunk_rows, batch, device)
        else:
            theirs = brute_force_numpy(x, points, chunk_rows, batch)
        in_ram = time.perf_counter() - started
    del x
    report.add(baseline, flops / in_ram / 1e9, "GFLOP/s", kind="baseline")
    report.check(
        baseline,
        "nearest distances: largest relative difference",
        _largest_relative(found, theirs),
        DISTANCE_TOLERANCE,
    )
    report.add(f"{baseline}: loading the array (apart)", load, "s", kind="detail")
    report.add(bound, gemm_bound_flops(points, dim, chunk_rows, 4, device) / 1e9, "GFLOP/s", kind="bound")
    report.add(
        f"latentdask search: {workers} workers x 1 thread (store read included)",
        flops / seconds / 1e9,
        "GFLOP/s",
        vs=[baseline, bound],
    )
    report.setup |= {
        "search_seconds": round(seconds, 2),
        "baseline_seconds": round(in_ram, 2),
        "blas_threads_per_task_worker": task_threads,
        "blas_threads_baseline": threads,
    }
    return report


def _largest_relative(ours: np.ndarray, theirs: np.ndarray) -> float:
    """Largest |ours − theirs| / ours over the queries (distances are positive)."""
    if ours.shape != theirs.shape:
        return float("nan")
    return float((np.abs(ours - theirs) / np.maximum(ours, np.finfo(np.float64).tiny)).max(initial=0.0))
