"""``score --rows``: the fit and the held-out reference are the selection's rows, against numpy's
counts and a brute-force neighbour search; statistics of other rows are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from latentdask.generate.score import ScoreError, score
from latentdask.stats.io import stats_of, write_stats
from latentdask.stats.options import SummaryParams
from latentdask.store.points import open_zpoints
from latentdask.store.selection import open_selection
from tests.helpers import run_cli_in_process as run

ROWS, DIM, TRAIN = 3000, 4, 2400
#: the selection: component 0 in [0, 10), component 1 in [-10, 10)
BOX = ["--pair", "0,1", "--box", "0,10,-10,10"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A latent-store-like group (z, valid, split: train the first 2,400 rows, test the others)."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(ROWS, DIM)).astype(np.float32)
    valid = np.ones(ROWS, dtype=bool)
    valid[::13] = False
    x[::26] = np.nan  # half the invalid rows have no finite value; the others look like any row
    split = np.where(np.arange(ROWS) < TRAIN, 0, 2).astype(np.int8)
    root = tmp_path_factory.mktemp("score-rows")
    group = zarr.open_group(str(root / "store.zarr"), mode="w")
    group.create_array("z", shape=x.shape, chunks=(700, DIM), dtype="float32")[:] = x
    group.create_array("valid", shape=(ROWS,), chunks=(700,), dtype=bool)[:] = valid
    group.create_array("split", shape=(ROWS,), chunks=(700,), dtype="int8")[:] = split
    return root / "store.zarr"


def arrays(store: Path, selection: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """z, valid, the train split and the selection's mask, read straight from the Zarr arrays."""
    group = zarr.open_group(str(store), mode="r")
    z = np.asarray(group["z"][:], dtype=np.float64)
    valid = np.asarray(group["valid"][:], dtype=bool)
    train = np.asarray(group["split"][:]) == 0
    chosen = np.asarray(zarr.open_array(str(selection / "rows"), mode="r")[:], dtype=bool)
    return z, valid, train, chosen


def nearest(queries: np.ndarray, corpus: np.ndarray) -> np.ndarray:
    """Brute force: each query's distance to its nearest row of ``corpus``."""
    return np.sqrt(((queries[:, None, :] - corpus[None, :, :]) ** 2).sum(axis=2).min(axis=1))


def made(*args: str) -> None:
    """Run a latentdask command that must succeed."""
    done = run(*args)
    assert done.returncode == 0, done.stderr


def write_points(path: Path, z: np.ndarray) -> Path:
    zarr.open_group(str(path), mode="w").create_array("z", shape=z.shape, dtype="float32")[:] = z
    return path


def numpy_summary(values: np.ndarray) -> dict[str, float]:
    quantiles = (0.05, 0.25, 0.5, 0.75, 0.95)
    return {"mean": float(values.mean())} | {
        f"q{round(q * 100)}": float(v) for q, v in zip(quantiles, np.quantile(values, quantiles), strict=True)
    }


def test_score_rows_fits_and_holds_out_the_selections_rows_only(corpus: Path, tmp_path: Path) -> None:
    selection = tmp_path / "selection.zarr"
    done = run("select", str(corpus), *BOX, "--out", str(selection))
    assert done.returncode == 0, done.stderr
    stats = tmp_path / "stats.zarr"
    done = run("stats", str(corpus), "--split", "train", "--rows", str(selection), "--out", str(stats))
    assert done.returncode == 0, done.stderr
    # artificial points where the selection has no row (component 0 near -2): their nearest real
    # z-point among the selected fit rows lies far beyond their nearest among all fit rows
    queries = np.column_stack([np.linspace(-2.5, -1.5, 8), np.zeros((8, DIM - 1))]).astype(np.float32)
    points = write_points(tmp_path / "outside.zarr", queries)
    out = tmp_path / "scores.json"
    done = run(
        "score", str(corpus), str(stats), str(points), "--rows", str(selection),
        "--reference-size", "100000", "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = json.loads(out.read_text())

    z, valid, train, chosen = arrays(corpus, selection)
    fit = chosen & valid & train
    heldout = chosen & valid & ~train
    assert results["fit_rows"] == fit.sum() > 100
    assert results["heldout_rows"] == heldout.sum() > 20  # all of them: --reference-size exceeds them
    assert results["heldout_rows_in_fit"] == 0
    assert results["selection"]["path"] == str(selection.resolve())
    assert results["selection"]["rows"] == chosen.sum()
    assert (
        results["selection"]["fingerprint"] == zarr.open_group(str(stats), mode="r").attrs["rows_fingerprint"]
    )

    # nearest real neighbour: brute force over the selected fit rows only
    expected = nearest(queries.astype(np.float64), z[fit])
    everywhere = nearest(queries.astype(np.float64), z[valid & train])
    assert (expected > everywhere + 1.0).all()  # the data make the two answers differ
    got = results["sets"]["outside (outside.zarr)"]["nearest_real_distance"]
    for key, value in numpy_summary(expected).items():
        assert got[key] == pytest.approx(value, rel=1e-5), key
    # the held-out real points too: each against the selected fit rows
    real = results["sets"]["real (held out)"]
    assert real["points"] == heldout.sum()
    for key, value in numpy_summary(nearest(z[heldout], z[fit])).items():
        assert real["nearest_real_distance"][key] == pytest.approx(value, rel=1e-5), key

    # a copy of the selection holds the same rows: the same selection, wherever it lies
    copy = tmp_path / "copy.zarr"
    shutil.copytree(selection, copy)
    again = score(corpus, stats, [points], rows=copy, reference_size=100_000)
    assert (again["fit_rows"], again["heldout_rows"], again["heldout_rows_in_fit"]) == (
        fit.sum(),
        heldout.sum(),
        0,
    )
    assert again["selection"]["fingerprint"] == results["selection"]["fingerprint"]


def test_statistics_of_other_rows_are_refused_and_nothing_is_written(corpus: Path, tmp_path: Path) -> None:
    selection, other = tmp_path / "selection.zarr", tmp_path / "other.zarr"
    made("select", str(corpus), *BOX, "--out", str(selection))
    made("select", str(corpus), "--pair", "0,1", "--box", "-10,0,-10,10", "--out", str(other))
    of_selection, of_all = tmp_path / "selected-stats.zarr", tmp_path / "train-stats.zarr"
    done = run("stats", str(corpus), "--split", "train", "--rows", str(selection), "--out", str(of_selection))
    assert done.returncode == 0, done.stderr
    made("stats", str(corpus), "--split", "train", "--out", str(of_all))
    points = write_points(tmp_path / "points.zarr", np.zeros((8, DIM), dtype=np.float32))
    out = tmp_path / "scores.json"

    def refused(stats: Path, *rows: str) -> str:
        done = run("score", str(corpus), str(stats), str(points), *rows, "--out", str(out))
        assert done.returncode == 2, done.stderr
        assert not out.exists()
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
        return lines[0]

    # statistics of every row of the split, scored on a selection
    line = refused(of_all, "--rows", str(selection))
    assert f"the statistics {of_all} describe no row selection; --rows gives {selection}" in line
    # statistics of a selection, scored on another one, or on every row
    line = refused(of_selection, "--rows", str(other))
    assert f"describe the rows of the selection {selection}; --rows {other} holds other rows:" in line
    line = refused(of_selection)
    assert f"the statistics {of_selection} describe the row selection {selection}; score with --rows" in line
    # the same path, selected again over other rows since: its fingerprint tells
    made("select", str(corpus), "--pair", "0,1", "--box", "0,5,0,10", "--out", str(selection))
    line = refused(of_selection, "--rows", str(selection))
    assert f"--rows {selection} holds other rows now" in line
    # not a selection, or one of another store: open_selection's own lines
    line = refused(of_selection, "--rows", str(points))
    assert line == f"error: {points} is not a latentdask selection (latentdask select writes one)"
    small = tmp_path / "small.zarr"
    assert run("synth-latents", str(small), "--n", "500", "--dim", str(DIM)).returncode == 0
    assert run("select", str(small), *BOX, "--out", str(tmp_path / "small-rows.zarr")).returncode == 0
    line = refused(of_selection, "--rows", str(tmp_path / "small-rows.zarr"))
    assert "holds 500 rows; the store has 3,000" in line


def test_statistics_of_a_selection_written_without_its_fingerprint(corpus: Path, tmp_path: Path) -> None:
    """Statistics from before the fingerprint was recorded: no selection if they name none; a
    selection they name cannot be checked, so it is refused."""
    selection = tmp_path / "selection.zarr"
    made("select", str(corpus), *BOX, "--out", str(selection))
    points = open_zpoints(corpus)
    points.selection = open_selection(selection, corpus, points.z.shape[0], points.z.chunks[0])
    older = stats_of(points, params=SummaryParams(), split="train")
    del older.attrs["rows_fingerprint"]
    stats = tmp_path / "older.zarr"
    write_stats(older, stats, source="t")
    queries = write_points(tmp_path / "points.zarr", np.zeros((8, DIM), dtype=np.float32))
    with pytest.raises(ScoreError, match="do not record which rows it held"):
        score(corpus, stats, [queries], rows=selection)


@pytest.mark.parametrize("chunks", [7, 97, 1000, 5000])  # 715 blocks down to one, the last short
def test_fingerprint_names_the_rows_whatever_the_chunks(chunks: int) -> None:
    """Kernel properties: the blocks' sums combine in any grouping; one row more or less changes it."""
    import dask.array as da

    from latentdask.store.selection import fingerprint_chunk, fingerprint_combine, rows_fingerprint

    mask = np.random.default_rng(7).random(5000) < 0.2
    whole = rows_fingerprint(da.from_array(mask, chunks=5000))
    assert rows_fingerprint(da.from_array(mask, chunks=chunks)) == whole
    states = [fingerprint_chunk(mask[i : i + chunks], i) for i in range(0, len(mask), chunks)]
    grouped = fingerprint_combine([fingerprint_combine(states[:2]), fingerprint_combine(states[2:])])
    assert np.array_equal(grouped, fingerprint_combine(states))
    assert np.array_equal(fingerprint_combine([]), [0, 0])  # no block, no row
    for row in (0, 2500, 4999):
        flipped = mask.copy()
        flipped[row] = ~flipped[row]
        assert rows_fingerprint(da.from_array(flipped, chunks=chunks)) != whole
    shifted = np.roll(mask, 1)  # as many rows, other ones
    assert rows_fingerprint(da.from_array(shifted, chunks=chunks)) != whole
