"""``latentdask bench render``: one-read rendering and in-memory zoom against datashader on pandas.

One run on a synthetic store (``synth-latents``) and its statistics:

(a) **render** — :func:`latentdask.render.aggregate.aggregate` of the 16 most correlated pairs on a
    local cluster, store read included (PNG drawing timed and reported apart), against
    the sum of a **bare read pass** over the store (every block read and decompressed,
    nothing computed, on the same cluster) and **datashader on in-memory pandas
    DataFrames** for the same 16 projections (the columns loaded beforehand, untimed).
(b) **zoom** — re-aggregating a zoomed view (the central quarter of each axis) from the
    columns the dashboard holds persisted across the workers (:class:`~latentdask.render.explore.Explorer`),
    in points/s, against datashader on an in-memory pandas DataFrame of the same two
    columns, same canvas. Each is timed as the best of ``repeats``.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import dask
import numpy as np
from dask.delayed import delayed

from latentdask.bench.report import BenchReport, local_client
from latentdask.generate.synthetic import synthesize_latents
from latentdask.render.aggregate import aggregate
from latentdask.render.columns import Columns, aggregate_columns
from latentdask.render.draw import save_grid
from latentdask.render.explore import Explorer, View
from latentdask.render.projections import canvas_size, pair_projection, ranked_pairs
from latentdask.stats.io import open_stats, stats_of, write_stats
from latentdask.stats.summary import SummaryParams
from latentdask.store.points import open_zpoints

PROJECTIONS = 16
READ = "bare read pass + datashader on pandas (16 projections)"
PANDAS_ZOOM = "datashader on an in-memory pandas DataFrame (zoomed)"


def _rows(block: np.ndarray) -> int:
    return len(np.asarray(block))


def bench_render(
    *,
    n: int = 10_000_000,
    dim: int = 256,
    chunk_rows: int = 65_536,
    workers: int = 2,
    width: int = 800,
    repeats: int = 3,
) -> BenchReport:
    import datashader as ds
    import pandas as pd

    report = BenchReport(
        "rendering every z-point",
        setup={
            "rows": n,
            "dim": dim,
            "chunk_rows": chunk_rows,
            "workers": workers,
            "projections": PROJECTIONS,
            "grid_width": width,
        },
    )
    with tempfile.TemporaryDirectory() as scratch:
        store = synthesize_latents(Path(scratch) / "points.zarr", n=n, dim=dim, seed=0, chunk_rows=chunk_rows)
        with local_client(workers) as client:
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
            for p, frame in zip(projections, frames, strict=True):
                canvas = ds.Canvas(
                    plot_width=p.width, plot_height=p.height, x_range=p.x_range, y_range=p.y_range
                )
                canvas.points(frame, "x", "y", agg=ds.count())
            in_memory = time.perf_counter() - started
            del frames, loaded
            report.add("bare read pass over the store", read, "s")
            report.add("datashader on in-memory pandas, 16 projections", in_memory, "s")
            report.add(READ, read + in_memory, "s")

            started = time.perf_counter()
            aggregates = aggregate(points, projections, stats=stats, scheduler=client)
            rendered = time.perf_counter() - started
            report.add("latentdask render: aggregation, store read included", rendered, "s", baseline=READ)
            started = time.perf_counter()
            save_grid(
                aggregates, Path(scratch) / "grid.png", title="bench", width=width, how="eq_hist", stats=stats
            )
            report.add("latentdask render: drawing the PNG (apart)", time.perf_counter() - started, "s")

            # (b) zoom from persisted columns against pandas in memory
            a, b = projections[0].a, projections[0].b
            explorer = Explorer(store, stats_path, client)
            view = View("pair", a, b)
            started = time.perf_counter()
            held = explorer.count(view)  # reads the store once and persists the two columns
            report.add(
                "dashboard: loading two columns into cluster memory (once per view)",
                time.perf_counter() - started,
                "s",
            )
            full = projections[0]
            x_range = _central(full.x_range)
            y_range = _central(full.y_range)
            zoom_w, zoom_h = canvas_size(width)
            explorer.aggregate(view, x_range, y_range, zoom_w, zoom_h)  # warm-up, as for pandas below
            persisted = min(
                _timed(lambda: explorer.aggregate(view, x_range, y_range, zoom_w, zoom_h))
                for _ in range(repeats)
            )
            two = pd.concat(client.gather(explorer.frame(view)), ignore_index=True)[["x", "y"]]
            canvas = ds.Canvas(plot_width=zoom_w, plot_height=zoom_h, x_range=x_range, y_range=y_range)
            canvas.points(two, "x", "y", agg=ds.count())
            in_pandas = min(
                _timed(lambda: canvas.points(two, "x", "y", agg=ds.count())) for _ in range(repeats)
            )
            report.add(PANDAS_ZOOM, len(two) / in_pandas / 1e6, "Mpoints/s")
            report.add(
                "dashboard zoom from persisted columns",
                held / persisted / 1e6,
                "Mpoints/s",
                baseline=PANDAS_ZOOM,
            )
    totals = {row.name: row for row in report.rows}
    report.setup |= {
        "render / (read + pandas) (goal <= 1.5)": round(
            totals["latentdask render: aggregation, store read included"].value / totals[READ].value, 2
        ),
        "zoom vs pandas (goal >= 0.5)": round(
            totals["dashboard zoom from persisted columns"].ratio or 0.0, 2
        ),
    }
    return report


def _central(bounds: tuple[float, float]) -> tuple[float, float]:
    low, high = bounds
    quarter = (high - low) / 4
    return low + 1.5 * quarter, high - 1.5 * quarter


def _timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started
