"""``latentdask bench render``: one-read rendering and in-memory zoom against datashader on pandas.

One run on a synthetic store (``synth-latents``) and its statistics, every comparison on
the same cores (``workers`` single-threaded worker processes against ``workers`` threads):

(a) **render** — :func:`latentdask.render.aggregate.aggregate` of the 16 most correlated pairs on a
    local cluster, store read included (PNG drawing timed and reported apart), against
    the sum of a **bare read pass** over the store (every block read and decompressed,
    nothing computed, on the same cluster) and **datashader on in-memory pandas
    DataFrames** for the same 16 projections, ``workers`` projections at a time on as many
    threads (datashader's kernels release the GIL; the columns loaded beforehand, untimed).
(b) **zoom** — re-aggregating a zoomed view (the central quarter of each axis) from the
    columns the dashboard holds persisted across the workers (:class:`~latentdask.render.explore.Explorer`),
    in points/s, against datashader on an in-memory pandas DataFrame of the same two
    columns, same canvas, cut in ``workers`` parts aggregated on as many threads and summed.
    The zoom (b) is timed as the best of ``repeats``; the aggregation (a) once.

The baselines' canvases must equal latentdask's, count for count.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path
from typing import Any

import dask
import numpy as np
from dask.delayed import delayed

from latentdask.bench.report import BenchReport, count_difference, local_client, warm_up
from latentdask.generate.synthetic import synthesize_latents
from latentdask.render.aggregate import aggregate
from latentdask.render.columns import Columns, aggregate_columns
from latentdask.render.draw import save_grid
from latentdask.render.explore import Explorer, View
from latentdask.render.projections import Projection, canvas_size, pair_projection, ranked_pairs
from latentdask.stats.io import open_stats, stats_of, write_stats
from latentdask.stats.options import SummaryParams
from latentdask.store.points import open_zpoints

PROJECTIONS = 16


def _rows(block: np.ndarray) -> int:
    return len(np.asarray(block))


def pandas_counts(frame: Any, projection: Projection) -> np.ndarray:
    """Datashader counts of an in-memory x/y pandas frame over the projection's canvas."""
    import datashader as ds

    canvas = ds.Canvas(
        plot_width=projection.width,
        plot_height=projection.height,
        x_range=projection.x_range,
        y_range=projection.y_range,
    )
    return np.asarray(canvas.points(frame, "x", "y", agg=ds.count()).values, dtype=np.int64)


def pandas_projections(
    pool: ThreadPoolExecutor, frames: Sequence[Any], projections: Sequence[Projection]
) -> list[np.ndarray]:
    """Every projection from its own frame, as many at a time as the pool has threads."""
    return list(pool.map(pandas_counts, frames, projections))


def pandas_zoom(pool: ThreadPoolExecutor, parts: Sequence[Any], projection: Projection) -> np.ndarray:
    """One zoomed canvas from a frame cut in parts, aggregated on the pool's threads and summed."""
    return sum(pool.map(pandas_counts, parts, [projection] * len(parts)))  # type: ignore[return-value]


def bench_render(
    *,
    n: int = 10_000_000,
    dim: int = 256,
    chunk_rows: int = 65_536,
    workers: int = 2,
    width: int = 800,
    repeats: int = 3,
) -> BenchReport:
    import pandas as pd

    read_baseline = (
        f"bare read pass + datashader on in-memory pandas, {PROJECTIONS} projections on {workers} threads"
    )
    zoom_baseline = (
        f"datashader on an in-memory pandas DataFrame, zoomed, in {workers} parts on {workers} threads"
    )
    report = BenchReport(
        "rendering every z-point",
        setup={
            "rows": n,
            "dim": dim,
            "chunk_rows": chunk_rows,
            "workers": workers,
            "baseline_threads": workers,
            "projections": PROJECTIONS,
            "grid_width": width,
        },
    )
    with (
        tempfile.TemporaryDirectory() as scratch,
        ThreadPoolExecutor(workers, thread_name_prefix="bench-pandas") as pool,
    ):
        store = synthesize_latents(Path(scratch) / "points.zarr", n=n, dim=dim, seed=0, chunk_rows=chunk_rows)
        with local_client(workers) as client:
            client.run(warm_up, "latentdask.render.columns", "latentdask.render.explore")
            points = open_zpoints(store)
            stats_path = Path(scratch) / "stats.zarr"
            write_stats(
                stats_of(points, params=SummaryParams(), scheduler=client), stats_path, source="bench"
            )
            stats = open_stats(stats_path).load()
            size = canvas_size(width, 4)
            projections = [
                pair_projection(stats, a, b, size) for a, b in ranked_pairs(stats, "corr", PROJECTIONS)
            ]

            # numba compiles datashader's kernels once per process and canvas type: untimed everywhere
            warm = [pair_projection(stats, 0, 1, size)]
            tiny: list[list[Columns]] = [[(np.zeros(4, np.float32), np.zeros(4, np.float32), None)]]
            client.run(aggregate_columns, tiny, projections=warm)
            aggregate_columns(tiny, projections=warm)

            # (a) baseline: a bare read pass, then datashader on pandas for the same projections
            started = time.perf_counter()
            dask.compute(
                *[delayed(_rows)(block) for block in points.z.to_delayed().ravel()], scheduler=client
            )
            read = time.perf_counter() - started
            columns = sorted({c for p in projections for c in (p.a, p.b)})
            loaded = dict(
                zip(columns, np.asarray(points.z[:, columns].compute(scheduler=client)).T, strict=True)
            )
            # one x/y frame per projection: datashader compiles its kernel per column name
            frames = [pd.DataFrame({"x": loaded[p.a], "y": loaded[p.b]}, copy=False) for p in projections]
            started = time.perf_counter()
            theirs = pandas_projections(pool, frames, projections)
            in_memory = time.perf_counter() - started
            del frames, loaded
            report.add("bare read pass over the store, on the cluster", read, "s", kind="detail")
            report.add(
                f"datashader on in-memory pandas, {PROJECTIONS} projections on {workers} threads",
                in_memory,
                "s",
                kind="detail",
            )
            report.add(read_baseline, read + in_memory, "s", kind="baseline")

            started = time.perf_counter()
            aggregates = aggregate(points, projections, stats=stats, scheduler=client)
            rendered = time.perf_counter() - started
            report.check(
                read_baseline,
                "counts of every canvas: largest |difference|",
                max(count_difference(a.counts, counts) for a, counts in zip(aggregates, theirs, strict=True)),
                0,
            )
            report.add(
                "latentdask render: aggregation, store read included", rendered, "s", vs=[read_baseline]
            )
            started = time.perf_counter()
            save_grid(
                aggregates, Path(scratch) / "grid.png", title="bench", width=width, how="eq_hist", stats=stats
            )
            report.add("latentdask render: drawing the PNG (apart)", time.perf_counter() - started, "s")

            # (b) zoom from persisted columns against pandas in memory
            full = projections[0]
            explorer = Explorer(store, stats_path, client)
            view = View("pair", full.a, full.b)
            started = time.perf_counter()
            held = explorer.count(view)  # reads the store once and persists the two columns
            report.add(
                "dashboard: loading two columns into cluster memory (once per view)",
                time.perf_counter() - started,
                "s",
            )
            zoom_w, zoom_h = canvas_size(width)
            zoom = Projection(
                "zoom",
                "pair",
                full.a,
                full.b,
                central_quarter(full.x_range),
                central_quarter(full.y_range),
                zoom_w,
                zoom_h,
            )

            def dashboard() -> np.ndarray:
                return explorer.aggregate(view, zoom.x_range, zoom.y_range, zoom.width, zoom.height)

            ours = dashboard()  # warm-up, as for pandas below
            persisted = min(timed(dashboard) for _ in range(repeats))
            two = pd.concat(client.gather(explorer.frame(view)), ignore_index=True)[["x", "y"]]
            bounds = np.linspace(0, len(two), workers + 1).astype(int)
            parts = [two.iloc[b0:b1] for b0, b1 in pairwise(bounds)]
            zoomed = pandas_zoom(pool, parts, zoom)  # warm-up
            in_pandas = min(timed(lambda: pandas_zoom(pool, parts, zoom)) for _ in range(repeats))
            report.add(zoom_baseline, len(two) / in_pandas / 1e6, "Mpoints/s", kind="baseline")
            report.check(
                zoom_baseline, "zoomed canvas counts: largest |difference|", count_difference(ours, zoomed), 0
            )
            report.add(
                f"dashboard zoom from columns persisted on {workers} workers x 1 thread",
                held / persisted / 1e6,
                "Mpoints/s",
                vs=[zoom_baseline],
            )
    return report


def central_quarter(bounds: tuple[float, float]) -> tuple[float, float]:
    """The central quarter of an axis' range: the zoomed view of the benchmarks."""
    low, high = bounds
    quarter = (high - low) / 4
    return low + 1.5 * quarter, high - 1.5 * quarter


def timed(work: Callable[[], object]) -> float:
    """Seconds ``work`` takes."""
    started = time.perf_counter()
    work()
    return time.perf_counter() - started
