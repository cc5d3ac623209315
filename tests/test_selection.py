"""Row selections: ``latentdask select`` (box, lasso, slice) over every z-point, ``--rows`` in
stats and render, checked against numpy and matplotlib's own point-in-polygon test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from latentdask.store.selection import TILE, View, rows_in_view
from tests.helpers import run_cli_in_process as run

ROWS, DIM = 6000, 6


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("selection") / "points.zarr"
    done = run("synth-latents", str(path), "--n", str(ROWS), "--dim", str(DIM), "--chunk-rows", "1000")
    assert done.returncode == 0, done.stderr
    return path


def values(store: Path) -> np.ndarray:
    return np.asarray(zarr.open_array(str(store / "z"), mode="r")[:], dtype=np.float64)


def test_a_lasso_selects_matplotlibs_points() -> None:
    from matplotlib.path import Path as Polygon

    rng = np.random.default_rng(3)
    angles = np.sort(rng.uniform(0, 2 * np.pi, 9))
    radii = rng.uniform(0.3, 1.0, 9)  # a star-shaped, non-convex lasso
    vertices = np.column_stack([radii * np.cos(angles), radii * np.sin(angles)])
    points = rng.uniform(-1.1, 1.1, size=(20_000, 2))
    ours = rows_in_view(points, View((0, 1), tuple(map(tuple, vertices))))
    np.testing.assert_array_equal(ours, Polygon(vertices).contains_points(points))
    assert 0.1 < ours.mean() < 0.9


def test_box_edges_lower_and_left_inside_upper_and_right_outside_nan_never() -> None:
    """Boxes that tile the plane share no point."""
    corners = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]
    x = np.array([0.0, 0.5, 1.0, 0.5, 0.5, np.nan, 0.5])
    y = np.array([0.5, 0.0, 0.5, 1.0, 0.5, 0.5, np.nan])
    np.testing.assert_array_equal(
        rows_in_view(np.column_stack([x, y]), View((0, 1), tuple(corners))),
        [True, True, False, False, True, False, False],
    )


@pytest.mark.parametrize("slice_threshold", [None, 1.8])
def test_rows_in_view_over_tiles_equals_matplotlib_and_numpy(slice_threshold: float | None) -> None:
    """A block of several tiles and a partial one; NaN and ±inf inside and outside the lasso."""
    from matplotlib.path import Path as Polygon

    rng = np.random.default_rng(5)
    block = rng.normal(size=(3 * TILE + 77, 7)).astype(np.float32)
    block[rng.integers(0, len(block), 40), rng.integers(0, 7, 40)] = np.nan
    block[rng.integers(0, len(block), 40), rng.integers(0, 7, 40)] = np.inf
    block[rng.integers(0, len(block), 40), rng.integers(0, 7, 40)] = -np.inf
    angles = np.sort(rng.uniform(0, 2 * np.pi, 11))
    vertices = np.column_stack([np.cos(angles), np.sin(angles)]) * rng.uniform(0.4, 1.5, (11, 1))
    view = View((4, 1), tuple(map(tuple, vertices)), slice=slice_threshold)
    x = block.astype(np.float64)
    expected = Polygon(vertices).contains_points(x[:, [4, 1]]) & np.isfinite(x).all(axis=1)
    if slice_threshold is not None:
        expected &= (np.abs(x[:, [0, 2, 3, 5, 6]]) < slice_threshold).all(axis=1)
    ours = rows_in_view(block, view)
    np.testing.assert_array_equal(ours, expected)
    assert 30 < ours.sum() < len(block) - 30


def test_views_refuse_what_cannot_select() -> None:
    from latentdask.errors import StatsError

    with pytest.raises(StatsError, match="3 vertices"):
        View((0, 1), ((0.0, 0.0), (1.0, 1.0)))
    with pytest.raises(StatsError, match="two different components"):
        View.box((2, 2), (0, 1), (0, 1))
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(StatsError, match="finite vertices"):
            View.box((0, 1), (bad, 1.0), (0.0, 1.0))
        with pytest.raises(StatsError, match="finite vertices"):
            View((0, 1), ((0.0, 0.0), (1.0, bad), (1.0, 1.0)))


@pytest.mark.parametrize("slice_threshold", [None, 1.5])
def test_box_selection_equals_numpy_and_feeds_stats(
    store: Path, tmp_path: Path, slice_threshold: float | None
) -> None:
    x = values(store)
    box = ["--box", "-0.5,1.0,-1.0,0.5"]
    extra = [] if slice_threshold is None else ["--slice", str(slice_threshold)]
    selection = tmp_path / "selection.zarr"
    done = run("select", str(store), "--pair", "1,3", *box, *extra, "--out", str(selection))
    assert done.returncode == 0, done.stderr
    expected = (x[:, 1] > -0.5) & (x[:, 1] < 1.0) & (x[:, 3] > -1.0) & (x[:, 3] < 0.5)
    if slice_threshold is not None:
        expected &= (np.abs(x[:, [0, 2, 4, 5]]) < slice_threshold).all(axis=1)
    mask = np.asarray(zarr.open_array(str(selection / "rows"), mode="r")[:])
    np.testing.assert_array_equal(mask, expected)
    attrs = zarr.open_group(str(selection), mode="r").attrs
    assert attrs["count"] == expected.sum() > 20 and attrs["view"]["pair"] == [1, 3]
    assert attrs["view"]["slice"] == slice_threshold
    assert attrs["share"] == pytest.approx(expected.mean())
    # what sets the selection apart: the standardized mean difference, against numpy
    chosen, rest = x[expected], x[~expected]
    squares = ((chosen - chosen.mean(0)) ** 2).sum(0) + ((rest - rest.mean(0)) ** 2).sum(0)
    smd = (chosen.mean(0) - rest.mean(0)) / np.sqrt(squares / (ROWS - 2))
    np.testing.assert_allclose(zarr.open_array(str(selection / "smd"))[:], smd, rtol=1e-9)
    printed = " ".join(done.stderr.split())
    assert f"{int(expected.sum()):,} of {ROWS:,} rows selected" in printed
    others = np.abs(smd)
    others[[1, 3]] = -1  # selected on: apart by construction, not listed
    assert "besides 1 and 3, the components that set them apart" in printed
    assert f"(standardized mean difference): {int(np.argmax(others))} (" in printed

    # stats --rows: the statistics of exactly those rows
    out = tmp_path / "stats.zarr"
    done = run("stats", str(store), "--rows", str(selection), "--out", str(out))
    assert done.returncode == 0, done.stderr
    stats = zarr.open_group(str(out), mode="r")
    assert int(stats["count"][...]) == len(chosen)
    np.testing.assert_allclose(stats["cov"][:], np.cov(chosen.T), rtol=1e-9, atol=1e-12)
    from latentdask.stats.options import SummaryParams

    edges = SummaryParams().edges  # the command's default bins
    for j in range(DIM):
        np.testing.assert_array_equal(stats["hist"][j], np.histogram(chosen[:, j], bins=edges)[0])
    headline = json.loads(out.with_suffix(".json").read_text())
    assert f"rows of the selection {selection}" in headline["selection"]


def test_lasso_selection_and_render_rows(store: Path, tmp_path: Path) -> None:
    x = values(store)
    lasso = [(-1.0, -1.0), (1.5, -0.5), (0.5, 0.2), (1.2, 1.4), (-0.8, 0.9)]  # not convex
    selection = tmp_path / "lasso.zarr"
    polygon = [arg for vertex in lasso for arg in ("--polygon", f"{vertex[0]},{vertex[1]}")]
    done = run("select", str(store), "--pair", "0,2", *polygon, "--out", str(selection))
    assert done.returncode == 0, done.stderr
    from matplotlib.path import Path as Polygon

    expected = Polygon(np.array(lasso)).contains_points(x[:, [0, 2]])
    np.testing.assert_array_equal(np.asarray(zarr.open_array(str(selection / "rows"))[:]), expected)

    stats = tmp_path / "all-stats.zarr"
    assert run("stats", str(store), "--out", str(stats)).returncode == 0
    figures = tmp_path / "figures"
    done = run(
        "render", str(store), "--stats", str(stats), "--rows", str(selection), "--pairs", "0,2",
        "--top-correlated", "0", "--pcs", "0", "--out", str(figures),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (projection,) = json.loads((figures / "render.json").read_text())["projections"]
    assert projection["candidates"] == expected.sum()


def test_rows_with_a_non_finite_value_are_never_selected(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    values = rng.normal(size=(400, 4)).astype(np.float32)
    values[::7, 3] = np.nan  # outside the pair, not in a slice: still left out
    store = tmp_path / "nan.zarr"
    zarr.open_group(str(store), mode="w").create_array("z", shape=values.shape, dtype="float32")[:] = values
    selection = tmp_path / "s.zarr"
    done = run("select", str(store), "--pair", "0,1", "--box", "-9,9,-9,9", "--out", str(selection))
    assert done.returncode == 0, done.stderr
    mask = np.asarray(zarr.open_array(str(selection / "rows"))[:])
    np.testing.assert_array_equal(mask, np.isfinite(values).all(axis=1))
    assert zarr.open_group(str(selection)).attrs["share"] == 1.0  # of the finite rows, all


def test_rows_of_another_store_and_statistics_of_a_selection_are_refused(store: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.zarr"
    assert run("synth-latents", str(other), "--n", "500", "--dim", str(DIM)).returncode == 0
    selection = tmp_path / "small.zarr"
    box = ["--pair", "0,1", "--box", "0,1,0,1"]
    assert run("select", str(other), *box, "--out", str(selection)).returncode == 0
    done = run("stats", str(store), "--rows", str(selection), "--out", str(tmp_path / "s.zarr"))
    assert done.returncode != 0 and "holds 500 rows; the store has 6,000" in done.stderr
    assert not (tmp_path / "s.zarr").exists()
    # another store of as many rows: refused too
    twin = tmp_path / "twin.zarr"
    assert run("synth-latents", str(twin), "--n", str(ROWS), "--dim", str(DIM), "--seed", "9").returncode == 0
    assert run("select", str(twin), *box, "--out", str(tmp_path / "twin-rows.zarr")).returncode == 0
    done = run(
        "stats", str(store), "--rows", str(tmp_path / "twin-rows.zarr"), "--out", str(tmp_path / "t.zarr")
    )
    assert done.returncode != 0 and f"was made on {twin.resolve()}, not on {store}" in done.stderr

    done = run("select", str(store), *box, "--polygon", "0,0", "--out", str(tmp_path / "x.zarr"))
    assert done.returncode != 0 and "either --box" in done.stderr
    # bounds that would select by accident (NaN compares false, ±inf or reversed bounds select nothing)
    for bounds in ("nan,1,0,1", "inf,-inf,0,1", "1,0,0,1", "0,1,1,0"):
        done = run("select", str(store), "--pair", "0,1", "--box", bounds, "--out", str(tmp_path / "x.zarr"))
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert "--box expects X0,X1,Y0,Y1 with X0 < X1" in done.stderr
    assert not (tmp_path / "x.zarr").exists()

    from latentdask.errors import StatsError
    from latentdask.stats.io import fitted_rows, open_stats

    mine = tmp_path / "mine.zarr"
    assert run("select", str(store), *box, "--out", str(mine)).returncode == 0
    stats = tmp_path / "selected-stats.zarr"
    assert run("stats", str(store), "--rows", str(mine), "--out", str(stats)).returncode == 0
    with pytest.raises(StatsError, match="describe the row selection"):
        fitted_rows(open_stats(stats))
