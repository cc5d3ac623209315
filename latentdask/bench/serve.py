"""``latentdask bench serve``: the dashboard's three waits at corpus scale, against pandas and numpy.

One run on a synthetic store (``synth-latents``, 10,000,000 × 256 by default) and its
statistics, every comparison on the same cores (``workers`` single-threaded worker processes
against ``workers`` threads):

(a) **first view** — what ``serve`` does before its first picture: the shown pair's columns
    read from the store into the workers' memory, and every point aggregated on the canvas,
    against reading the same two columns with zarr into a pandas DataFrame and datashader's
    aggregation of it (``workers`` parts on as many threads).
(b) **zoom** — re-aggregating the central quarter of each axis from the columns the workers
    hold, against datashader on the in-memory DataFrame (best of ``repeats``). Goal: ≤ 0.3 s.
(c) **a lasso's statistics** — a regular octagon in the pair's plane: the selected rows
    evaluated over every z-point and held (as the dashboard holds them for its linked view),
    their count and share, every component's standardized mean difference against the rest,
    their mean, the pair's histograms and a seeded sample (what the panel shows,
    :func:`latentdask.render.selected.describe_drawn`, the corpus's moments from the statistics
    as the dashboard takes them), against numpy on the whole array in memory, given the same
    corpus sums (the load and those sums untimed), block by block on ``workers`` threads:
    the even–odd rule in numpy expressions (which release the GIL; matplotlib's
    ``contains_points`` holds it), then the selected rows' sums accumulated in float64 and their
    histograms (best of ``repeats`` each). Goal: ≤ 2 s.

The dashboard holds the store's rows in the workers' memory (they fit in half of it), read once
more after the first view, in the background; the lasso is timed once they are held. The
baselines' canvases must equal the dashboard's count for count, and numpy's selection the same
rows, means, differences and histograms. The memory the workers
hold is stated: the store's rows, one view's columns and its plane indexes (hover).
"""

from __future__ import annotations

import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
from distributed import wait

from latentdask.bench.render import central_quarter, pandas_zoom, timed
from latentdask.bench.report import BenchReport, count_difference, local_client, warm_up
from latentdask.generate.synthetic import synthesize_latents
from latentdask.render.explore import Explorer, View
from latentdask.render.projections import Projection, canvas_size, ranked_pairs
from latentdask.render.selected import Drawn, describe_drawn
from latentdask.stats.describe import Corpus, warm_kernels
from latentdask.stats.io import open_stats, stats_of, write_stats
from latentdask.stats.options import SummaryParams
from latentdask.store.points import open_zpoints
from latentdask.store.selection import View as Lasso

#: the lasso: a regular octagon around the pair's mean, of radius this many standard deviations
LASSO_RADIUS = 1.0


def bench_serve(
    *, n: int = 10_000_000, dim: int = 256, chunk_rows: int = 262_144, workers: int = 2, repeats: int = 5
) -> BenchReport:
    """Run the three measurements (see the module docstring)."""
    import pandas as pd

    report = BenchReport(
        "dashboard at corpus scale",
        setup={
            "rows": n,
            "dim": dim,
            "chunk_rows": chunk_rows,
            "workers": workers,
            "baseline_threads": workers,
        },
    )
    first_baseline = f"zarr read of the two columns + datashader on pandas ({workers} threads)"
    zoom_baseline = f"datashader zoom on in-memory pandas ({workers} threads)"
    lasso_baseline = f"numpy in memory, block by block on {workers} threads"
    with (
        tempfile.TemporaryDirectory() as scratch,
        ThreadPoolExecutor(workers, thread_name_prefix="bench-baseline") as pool,
    ):
        store = synthesize_latents(Path(scratch) / "points.zarr", n=n, dim=dim, seed=0, chunk_rows=chunk_rows)
        with local_client(workers) as client:
            modules = ("latentdask.render.explore", "latentdask.render.selected", "latentdask.stats.describe")
            client.run(warm_up, *modules)
            client.run(warm_kernels)  # as serve does when it starts
            stats_path = Path(scratch) / "stats.zarr"
            write_stats(
                stats_of(open_zpoints(store), params=SummaryParams(), scheduler=client),
                stats_path,
                source="bench",
            )
            stats = open_stats(stats_path).load()
            (a, b) = ranked_pairs(stats, "corr", 1)[0]
            view = View("pair", a, b)

            # (a) first view: the store's rows and the pair's columns into the workers' memory, then
            # every point on the canvas (datashader's kernels compiled first, on a tiny store)
            warm_store = synthesize_latents(Path(scratch) / "warm.zarr", n=64, dim=dim, seed=1, chunk_rows=64)
            warm_explorer = Explorer(warm_store, stats_path, client)
            warm = warm_explorer.projection(View("pair", 0, 1))
            warm_explorer.aggregate(View("pair", 0, 1), warm.x_range, warm.y_range, 8, 8)
            started = time.perf_counter()
            explorer = Explorer(store, stats_path, client)
            full = explorer.projection(view, *canvas_size(800))
            ours = explorer.aggregate(view, full.x_range, full.y_range, full.width, full.height)
            first = time.perf_counter() - started
            started = time.perf_counter()
            wait(explorer.hold_rows())  # as serve does after the first view, in the background
            holding = time.perf_counter() - started
            held = sum(client.nbytes(keys=[f.key for f in explorer.frame(view)]).values())
            indexed = explorer.index_bytes(view)

            import zarr

            tiny = pd.DataFrame({"x": np.zeros(4, np.float32), "y": np.zeros(4, np.float32)})
            pandas_zoom(pool, [tiny] * workers, full)  # datashader's kernels compile once per process
            started = time.perf_counter()
            columns = np.asarray(zarr.open_array(str(store / "z"), mode="r").oindex[:, np.array([a, b])])
            frame = pd.DataFrame({"x": columns[:, 0], "y": columns[:, 1]}, copy=False)
            parts = [frame.iloc[b0:b1] for b0, b1 in pairwise(np.linspace(0, n, workers + 1).astype(int))]
            theirs = pandas_zoom(pool, parts, full)
            report.add(first_baseline, time.perf_counter() - started, "s", kind="baseline")
            report.check(
                first_baseline, "canvas counts: largest |difference|", count_difference(ours, theirs), 0
            )
            report.add(
                "dashboard: first view (columns into worker memory + aggregation)",
                first,
                "s",
                vs=[first_baseline],
            )
            report.add(
                "the store's rows into the workers' memory, after the first view (in the background)",
                holding,
                "s",
                kind="detail",
            )
            report.add(
                "memory the workers hold: the store's rows", explorer.held_bytes / 2**20, "MiB", kind="detail"
            )
            report.add(
                "memory the workers hold: one view's columns (x, y, row)", held / 2**20, "MiB", kind="detail"
            )
            report.add(
                "memory the workers hold: one view's plane indexes (hover)",
                indexed / 2**20,
                "MiB",
                kind="detail",
            )

            # (b) zoom from the held columns
            zoom = Projection(
                "zoom",
                "pair",
                a,
                b,
                central_quarter(full.x_range),
                central_quarter(full.y_range),
                full.width,
                full.height,
            )
            ours = explorer.aggregate(view, zoom.x_range, zoom.y_range, zoom.width, zoom.height)
            zoomed = min(
                timed(lambda: explorer.aggregate(view, zoom.x_range, zoom.y_range, zoom.width, zoom.height))
                for _ in range(repeats)
            )
            theirs = pandas_zoom(pool, parts, zoom)
            in_pandas = min(timed(lambda: pandas_zoom(pool, parts, zoom)) for _ in range(repeats))
            report.add(zoom_baseline, in_pandas, "s", kind="baseline")
            report.check(
                zoom_baseline, "zoomed canvas counts: largest |difference|", count_difference(ours, theirs), 0
            )
            report.add("dashboard: zoom (goal 0.3 s)", zoomed, "s", vs=[zoom_baseline])

            # (c) a lasso's statistics over every z-point
            lasso = Lasso((a, b), _octagon(stats, a, b))
            points = explorer.points
            edges = stats["bin_edges"].values
            corpus = Corpus.of(stats, points.z.shape[0])
            drawn = Drawn().then("new", lasso)

            def selected() -> Any:
                return describe_drawn(
                    points, drawn, edges=edges, columns=(a, b), corpus=corpus, client=client
                )[1]

            started = time.perf_counter()
            summary = selected()
            first_lasso = time.perf_counter() - started
            described = min(timed(selected) for _ in range(repeats))
            report.add("dashboard: a lasso's statistics (goal 2 s)", described, "s", vs=[lasso_baseline])
            report.add("a lasso's statistics, the first time", first_lasso, "s", kind="detail")

        z = np.asarray(zarr.open_array(str(store / "z"), mode="r")[:])  # untimed: the baseline's load
        blocks = [z[start : start + chunk_rows] for start in range(0, n, chunk_rows)]
        # untimed: the corpus's sums, as the statistics give them
        whole = [np.ones(len(block), dtype=bool) for block in blocks]
        sums = np.sum(list(pool.map(_numpy_sums, blocks, whole)), axis=0)
        mask, smd, mean, hist = _numpy_lasso(pool, blocks, lasso, sums, edges)
        in_numpy = min(timed(lambda: _numpy_lasso(pool, blocks, lasso, sums, edges)) for _ in range(repeats))
        report.add(lasso_baseline, in_numpy, "s", kind="baseline")
        report.check(
            lasso_baseline,
            "selected rows: count difference",
            abs(int(mask.sum()) - summary.profile.selected),
            0,
        )
        report.check(
            lasso_baseline,
            "standardized mean differences: largest |difference|",
            float(np.nanmax(np.abs(smd - summary.profile.smd))),
            1e-6,
        )
        assert summary.mean is not None
        report.check(
            lasso_baseline,
            "selection mean: largest |difference|",
            float(np.abs(mean - summary.mean).max()),
            1e-6,
        )
        report.check(
            lasso_baseline,
            "the pair's histograms: largest |difference|",
            count_difference(np.stack([summary.hist[a], summary.hist[b]]), hist),
            0,
        )
        report.setup |= {"pair": [a, b], "lasso share": round(float(mask.mean()), 4)}
        del z
    return report


def _numpy_sums(block: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(count, Σx, Σx²) per component of the rows of ``block`` that ``mask`` keeps, accumulated in
    float64 (numpy's fastest way here: no float64 copy of the rows), (3, N)."""
    x = block[mask]
    return np.stack(
        [
            np.full(block.shape[1], len(x), dtype=np.float64),
            x.sum(axis=0, dtype=np.float64),
            np.einsum("ij,ij->j", x, x, dtype=np.float64),
        ]
    )


def _numpy_inside(x: np.ndarray, y: np.ndarray, polygon: tuple[tuple[float, float], ...]) -> np.ndarray:
    """The even–odd rule in numpy expressions, edge by edge (they release the GIL, where
    matplotlib's ``contains_points`` holds it); NaN never inside."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    inside = np.zeros(len(x), dtype=bool)
    vertices = np.asarray(polygon, dtype=np.float64)
    for (xi, yi), (xj, yj) in zip(vertices, np.roll(vertices, -1, axis=0), strict=True):
        if yi != yj:  # a horizontal edge crosses no horizontal ray
            inside ^= ((yi > y) != (yj > y)) & (x < (xj - xi) * (y - yi) / (yj - yi) + xi)
    return inside


def _numpy_lasso(
    pool: ThreadPoolExecutor, blocks: list[np.ndarray], lasso: Lasso, corpus: np.ndarray, edges: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The lasso's rows, every component's standardized mean difference, the selection's mean and
    its histograms of the pair, block by block on the ``pool``'s threads: the selected rows' sums,
    the rest's the corpus's less theirs."""
    pair = list(lasso.pair)

    def block_part(block: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        mask = _numpy_inside(block[:, pair[0]], block[:, pair[1]], lasso.polygon)
        hist = np.stack([np.histogram(block[mask, j], bins=edges)[0] for j in pair])
        return mask, _numpy_sums(block, mask), hist

    masks, block_sums, block_hists = zip(*pool.map(block_part, blocks), strict=True)
    chosen = np.sum(block_sums, axis=0)
    groups = np.stack([chosen, corpus - chosen])  # (the selection, the rest) × (count, Σx, Σx²) × N
    n, sums, squares = groups[:, 0, 0], groups[:, 1], groups[:, 2]
    means = sums / n[:, None]
    within = (squares - n[:, None] * means**2).sum(axis=0)
    smd = (means[0] - means[1]) / np.sqrt(within / (n.sum() - 2))
    return np.concatenate(masks), smd, means[0], np.sum(block_hists, axis=0)


def _octagon(stats: Any, a: int, b: int) -> tuple[tuple[float, float], ...]:
    mean, std = stats["mean"].values, stats["std"].values
    angles = np.linspace(0, 2 * np.pi, 8, endpoint=False) + np.pi / 8
    return tuple(
        (
            float(mean[a] + LASSO_RADIUS * std[a] * np.cos(t)),
            float(mean[b] + LASSO_RADIUS * std[b] * np.sin(t)),
        )
        for t in angles
    )
