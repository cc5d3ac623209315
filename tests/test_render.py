"""Datashader projections against np.histogram2d and the statistics' slice populations."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dask
import numpy as np
import pytest
import zarr
from PIL import Image

from latentdask.render.aggregate import aggregate, aggregate_graph
from latentdask.render.command import RenderError, render
from latentdask.render.projections import (
    canvas_size,
    pair_projection,
    parse_pair,
    pc_projection,
    ranked_pairs,
)
from latentdask.stats.io import open_stats, write_stats
from latentdask.stats.options import SummaryParams
from latentdask.stats.reduce import summarize
from latentdask.store.points import open_zpoints

DIM = 7
ROWS = 5000
THRESHOLDS = (1.0, 1.5)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray, np.ndarray, np.ndarray]:
    """A store-like group (z with invalid and non-finite rows, valid, attributes) and its statistics."""
    rng = np.random.default_rng(5)
    mixing = np.eye(DIM) + 0.6 * rng.normal(size=(DIM, DIM)) * (rng.random((DIM, DIM)) < 0.3)
    x = (0.8 * rng.normal(size=(ROWS, DIM)) @ mixing).astype(np.float32)
    valid = rng.random(ROWS) > 0.05
    x[~valid] = np.nan
    x[11, 3] = np.inf  # a valid row with a non-finite value: left out like stats does
    attributes = np.where(rng.random((ROWS, 2)) < 0.4, 1, -1).astype(np.int8)
    root = tmp_path_factory.mktemp("render")
    group = zarr.open_group(str(root / "store.zarr"), mode="w")
    group.create_array("z", shape=x.shape, chunks=(1200, DIM), dtype="float32")[:] = x
    group.create_array("valid", shape=valid.shape, chunks=(1200,), dtype=bool)[:] = valid
    group.create_array("attributes", shape=attributes.shape, chunks=(1200, 2), dtype="int8")[:] = attributes
    group.create_array("attribute", shape=(2,), dtype=str)[:] = np.array(["Male", "Smiling"])
    write_stats(
        summarize(x, valid=valid, params=SummaryParams(thresholds=THRESHOLDS)),
        root / "stats.zarr",
        source="test",
    )
    used = valid & np.isfinite(x).all(axis=1)
    return root / "store.zarr", root / "stats.zarr", x.astype(np.float64), used, attributes


def histogram2d(x: np.ndarray, y: np.ndarray, projection: object) -> np.ndarray:
    p = projection
    counts, _, _ = np.histogram2d(y, x, bins=[p.height, p.width], range=[p.y_range, p.x_range])  # type: ignore[attr-defined]
    return counts


def test_pair_counts_equal_histogram2d(corpus: tuple[Path, Path, np.ndarray, np.ndarray, np.ndarray]) -> None:
    store, stats_path, x, used, _ = corpus
    stats = open_stats(stats_path)
    projections = [pair_projection(stats, a, b, (97, 61)) for a, b in [(0, 1), (2, 6), (5, 3)]]
    for agg in aggregate(open_zpoints(store), projections, stats=stats):
        p = agg.projection
        assert agg.shown == agg.candidates == used.sum()  # the canvas spans the full range: every point
        np.testing.assert_array_equal(agg.counts, histogram2d(x[used, p.a], x[used, p.b], p))


def test_slice_counts_equal_statistics(corpus: tuple[Path, Path, np.ndarray, np.ndarray, np.ndarray]) -> None:
    store, stats_path, x, used, _ = corpus
    stats = open_stats(stats_path)
    pairs = [(0, 1), (2, 6), (1, 4), (3, 5)]
    projections = [pair_projection(stats, a, b, (40, 40), threshold=t) for t in THRESHOLDS for a, b in pairs]
    for agg in aggregate(open_zpoints(store), projections, stats=stats):
        p = agg.projection
        expected = int(stats["slice_count"].sel(threshold=p.threshold).values[p.a, p.b])
        assert agg.shown == agg.candidates == expected
        others = np.delete(np.arange(DIM), [p.a, p.b])
        inside = used & (np.abs(x[:, others]) < p.threshold).all(axis=1)
        np.testing.assert_array_equal(agg.counts, histogram2d(x[inside, p.a], x[inside, p.b], p))


def test_principal_axes_and_attribute_colouring(
    corpus: tuple[Path, Path, np.ndarray, np.ndarray, np.ndarray],
) -> None:
    store, stats_path, x, used, attributes = corpus
    stats = open_stats(stats_path)
    pcs = pc_projection(stats, 0, 2, (50, 30))
    coloured = pair_projection(stats, 1, 2, (30, 20), color_by=1)
    pc_agg, colour_agg = aggregate(open_zpoints(store), [pcs, coloured], stats=stats)
    real = x[used]
    centred = (real - real.mean(axis=0)) @ np.linalg.eigh(np.cov(real.T))[1][:, ::-1]
    signs = np.sign(
        (centred[:, [0, 2]] * ((real - stats["mean"].values) @ stats["pca_vectors"].values[:, [0, 2]])).sum(0)
    )
    expected = histogram2d(signs[0] * centred[:, 0], signs[1] * centred[:, 2], pcs)
    assert np.abs(pc_agg.counts - expected).sum() <= 4  # float64 eigenvectors from another solver: edge cases
    assert pc_agg.candidates == used.sum() and pc_agg.shown == expected.sum()
    assert colour_agg.counts.shape == (20, 30, 2)
    for k, value in enumerate((-1, 1)):
        rows = used & (attributes[:, 1] == value)
        np.testing.assert_array_equal(
            colour_agg.counts[..., k], histogram2d(x[rows, 1], x[rows, 2], coloured)
        )


def test_a_coloured_projection_with_overlays_keeps_both_legends(
    corpus: tuple[Path, Path, np.ndarray, np.ndarray, np.ndarray],
) -> None:
    """The attribute's colours and the overlays' markers each keep their legend in one projection."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.legend import Legend

    from latentdask.render.draw import draw
    from latentdask.render.projections import Overlay

    store, stats_path, x, _, _ = corpus
    stats = open_stats(stats_path)
    (coloured,) = aggregate(
        open_zpoints(store), [pair_projection(stats, 1, 2, (30, 20), color_by=1)], stats=stats
    )
    fig, ax = plt.subplots()
    draw(ax, coloured, how="eq_hist", stats=stats, overlays=[Overlay("uniform", x[:5])], attribute="Smiling")
    shown = {text.get_text() for legend in ax.findobj(Legend) for text in legend.get_texts()}
    plt.close(fig)
    assert {"Smiling = +1", "Smiling = −1", "uniform"} <= shown


def test_pairs_by_rank(corpus: tuple[Path, Path, np.ndarray, np.ndarray, np.ndarray]) -> None:
    _, stats_path, x, used, _ = corpus
    stats = open_stats(stats_path)
    r = np.corrcoef(x[used].T)
    np.fill_diagonal(r, 0)
    assert parse_pair("corr:1", stats, None)[0] == tuple(
        sorted(np.unravel_index(np.abs(r).argmax(), r.shape))
    )
    population = stats["slice_count"].sel(threshold=1.0).values.astype(float)
    smallest = ranked_pairs(stats, "smallest-slice", 3, 1.0)
    assert [population[a, b] for a, b in smallest] == sorted(population[np.triu_indices(DIM, 1)])[:3]
    assert parse_pair("largest-slice:1", stats, 1.5)[1] == "rank 1 by largest-slice"
    assert parse_pair("2,5", stats, None) == ((2, 5), "")


def test_pngs_have_the_asked_size_and_are_not_blank(
    corpus: tuple[Path, Path, np.ndarray, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    store, stats_path, _, used, _ = corpus
    overlay = zarr.open_group(str(tmp_path / "u.zarr"), mode="w")
    overlay.create_array("z", shape=(300, DIM), dtype="float32")[:] = np.random.default_rng(0).uniform(
        -1.5, 1.5, (300, DIM)
    )
    overlay.attrs["sampler"] = "uniform"
    result = render(
        store,
        tmp_path / "out",
        stats=stats_path,
        pairs=["0,1", "corr:1"],
        top_correlated=4,
        pcs=3,
        slice_threshold=1.5,
        slice_ranked=2,
        overlays=[tmp_path / "u.zarr"],
        special=int(np.flatnonzero(used)[0]),
        width=420,
    )
    (a, b), _ = parse_pair("corr:1", open_stats(stats_path), None)
    expected = ["pair-0-1.png", f"pair-{a}-{b}.png", "top-correlated.png", "pcs.png", "slices-1.5.png"]
    assert [f.name for f in result.files] == expected
    for path in result.files:
        image = np.asarray(Image.open(path).convert("RGB"))
        assert image.shape[1] == 420
        if path.name.startswith("pair-"):
            assert image.shape[0] == 420
        assert (image < 250).any(axis=2).mean() > 0.05, f"{path.name} is nearly blank"
    single = np.asarray(Image.open(tmp_path / "out" / "pair-0-1.png").convert("RGB")).astype(int)
    red = (single[..., 0] > 200) & (single[..., 1] < 80) & (single[..., 2] < 80)
    orange = (single[..., 0] > 230) & (single[..., 1] > 140) & (single[..., 1] < 190) & (single[..., 2] < 60)
    assert red.sum() > 100 and orange.sum() > 10  # the overlay and the special point are drawn
    summary = json.loads((tmp_path / "out" / "render.json").read_text())
    assert summary["projections"][0]["shown"] == used.sum()


def test_a_narrow_grid_still_draws(
    corpus: tuple[Path, Path, np.ndarray, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    """Too small for the fixed margins (panels under 60 px): laid out by tight_layout instead."""
    from latentdask.render.draw import _grid_margins

    assert _grid_margins(800, 840, 4, 4) is not None and _grid_margins(100, 140, 2, 2) is None
    store, stats_path, *_ = corpus
    result = render(store, tmp_path / "out", stats=stats_path, top_correlated=4, pcs=0, width=100)
    (grid,) = result.files
    assert np.asarray(Image.open(grid)).shape[1] == 100


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pairs": ["1;2"]}, "expected a,b"),
        ({"pairs": ["3,3"]}, "two different components"),
        ({"pairs": ["corr:0"]}, "ranks start at 1"),
        ({"slice_threshold": 2.5}, "not among the statistics' thresholds"),
        ({"color_by": "Bald", "pairs": ["0,1"]}, "attributes are Male, Smiling"),
        ({"width": 50}, "at least 100"),
        ({"pcs": 9}, "7 principal axes"),
        ({"top_correlated": 0, "pcs": 0}, "nothing to render"),
    ],
)
def test_bad_input(
    corpus: tuple[Path, Path, np.ndarray, np.ndarray, np.ndarray], tmp_path: Path, kwargs: dict, message: str
) -> None:
    store, stats_path, _, _, _ = corpus
    with pytest.raises(RenderError, match=message):
        render(store, tmp_path / "out", stats=stats_path, **kwargs)


def test_render_command_on_worker_processes(
    corpus: tuple[Path, Path, np.ndarray, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    store, stats_path, _, used, _ = corpus
    spec = tmp_path / "two.yaml"
    spec.write_text("kind: local\nworkers: 2\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "latentdask.cli",
            "render",
            str(store),
            "--out",
            str(tmp_path / "out"),
            "--stats",
            str(stats_path),
            "--pairs",
            "smallest-slice:1",
            "--slice",
            "1.0",
            "--color-by",
            "Male",
            "--width",
            "300",
            "--cluster",
            str(spec),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "out" / "render.json").read_text())
    coloured = summary["projections"][0]
    assert coloured["color_by"] == 0 and coloured["shown"] == used.sum()
    assert canvas_size(300) == (coloured["width"], coloured["height"])


class ComputeForbidden(Exception):
    pass


def forbid(*args: object, **kwargs: object) -> None:
    raise ComputeForbidden("something computed while the graph was built")


def test_building_the_aggregation_graph_computes_nothing(
    corpus: tuple[Path, Path, np.ndarray, np.ndarray, np.ndarray],
) -> None:
    store, stats_path, _, _, _ = corpus
    stats = open_stats(stats_path)
    projections = [
        pair_projection(stats, 0, 1, (20, 20), color_by=1),
        pc_projection(stats, 0, 2, (20, 20)),
        pair_projection(stats, 2, 6, (20, 20), threshold=1.0),
    ]
    with dask.config.set(scheduler=forbid):
        graph = aggregate_graph(open_zpoints(store), projections, stats=stats, where=["Male=1"])
        with pytest.raises(ComputeForbidden):
            graph.compute()
    assert str(graph.key).startswith("render_combine-0-0-")  # one tree through the driver, named
