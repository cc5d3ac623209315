"""The dashboard served by ``latentdask serve`` and driven in headless Chromium (Debian's package).

The page must load with no request leaving 127.0.0.1 (no CDN, no remote fonts), show what
numpy finds in the store (the count of points in view after a zoom, the pair or principal axes
its title names, an overlay's points), show images on a click, and log no errors.
Without Chromium the tests are skipped, unless LATENTDASK_REQUIRE_BROWSER=1 (set by CI),
where a missing browser is a failure.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pytest
import torch
import zarr
from distributed import Client, LocalCluster, get_task_stream

from latentdask.cluster.spec import ClusterChoice
from latentdask.data.decode import Preprocessing
from latentdask.encode.options import EncodeOptions
from latentdask.encode.run import encode
from latentdask.generate.options import sampler_spec
from latentdask.generate.samplers import generate
from latentdask.model.autoencoder import Autoencoder
from latentdask.model.checkpoint import save_checkpoint
from latentdask.model.config import ModelConfig
from latentdask.output import OutputError
from latentdask.render.dashboard import CLICKS_SHOW, THUMBNAILS_TOGGLE
from latentdask.render.explore import Explorer, View
from latentdask.render.projections import PC_SPREAD
from latentdask.render.selected import Drawn, SelectionError, describe_drawn, export, selection_path
from latentdask.stats.describe import Corpus, describe
from latentdask.stats.io import open_stats
from latentdask.store import selection
from latentdask.store.paths import default_stats_path
from latentdask.store.points import ZPoints, open_zpoints
from tests.helpers import run_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: an image name that closes an attribute and opens a handler (a stored XSS if it reached HTML as is)
HOSTILE = "a\" b' onload=alert(document.domain) x='1.jpg"


def encoded(dataset: Path, root: Path, shard_size: int) -> Path:
    """A real latent store of ``dataset`` with its statistics, dataset and model recorded."""
    torch.manual_seed(0)
    model = Autoencoder(ModelConfig(image_size=16, latent_dim=8, channels=(4, 4)))
    checkpoint = save_checkpoint(root / "model", model, Preprocessing(image_size=16))
    spec = root / "one.yaml"
    spec.write_text("kind: local\nworkers: 1\n")
    out = root / "latents.zarr"
    encode(
        dataset,
        checkpoint,
        out,
        options=EncodeOptions(shard_size=shard_size, device="cpu"),
        cluster=ClusterChoice(spec=spec),
        progress=False,
    )
    return out


@pytest.fixture(scope="module")
def store(faces: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic faces, encoded."""
    return encoded(faces, tmp_path_factory.mktemp("dashboard"), 40)


@pytest.fixture(scope="module")
def hostile_store(faces: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image folder of six faces, one of them named :data:`HOSTILE`: a click shows all six."""
    needs_chromium()
    root = tmp_path_factory.mktemp("hostile")
    folder = root / "images"
    folder.mkdir()
    images = sorted((faces / "img_align_celeba").glob("*.jpg"))[:6]
    for k, image in enumerate(images):
        shutil.copy(image, folder / (HOSTILE if k == 2 else image.name))
    return encoded(folder, root, 6)


def test_explorer_counts_equal_statistics(store: Path) -> None:
    stats = open_stats(default_stats_path(store))
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        explorer = Explorer(store, default_stats_path(store), client)
        view = View("pair", 1, 4, threshold=1.5)
        full = explorer.projection(view)
        counts = explorer.aggregate(view, full.x_range, full.y_range, 40, 30)
        assert (
            counts.sum() == explorer.count(view) == int(stats["slice_count"].sel(threshold=1.5).values[1, 4])
        )
        pair = View("pair", 2, 5)
        assert explorer.count(pair) == int(stats["count"])
        z = np.asarray(explorer.points.z)
        x_range = (float(np.median(z[:, 2])), float(z[:, 2].max()))
        zoomed = explorer.aggregate(pair, x_range, explorer.projection(pair).y_range, 20, 10)
        expected, _, _ = np.histogram2d(
            z[:, 5], z[:, 2], bins=[10, 20], range=[explorer.projection(pair).y_range, x_range]
        )
        np.testing.assert_array_equal(zoomed, expected)
        near = explorer.nearest_rows(pair, float(z[7, 2]), float(z[7, 5]), k=1)
        assert near == [7]


def plane_nearest(
    xy: np.ndarray, rows: np.ndarray, scale: tuple[float, float], at: np.ndarray, k: int
) -> np.ndarray:
    """numpy's brute force: the store rows of the k points of ``xy`` nearest to each of ``at``, in the
    plane scaled by ``scale``, nearest first."""
    d = (((xy[None, :, :] - at[:, None, :]) * np.asarray(scale)) ** 2).sum(axis=2)
    return rows[np.argsort(d, axis=1, kind="stable")[:, :k]]


def valid_rows(store: Path) -> np.ndarray:
    z = np.asarray(zarr.open_array(str(store / "z"), mode="r")[...], dtype=np.float64)
    valid = np.asarray(zarr.open_array(str(store / "valid"), mode="r")[...], dtype=bool)
    return np.flatnonzero(valid & np.isfinite(z).all(axis=1))


def test_nearest_real_points_and_thumbnails_equal_numpy(store: Path, tmp_path: Path) -> None:
    """The plane indexes' nearest rows (hover, click, thumbnails) are numpy's brute-force nearest
    points of the view, and each thumbnail is the real point nearest its dense cell's densest pixel."""
    from latentdask.render.dashboard import CANVAS, Dashboard, Sources
    from latentdask.render.thumbnails import dense_spots, pixel_centre

    z, rows = valid_z(store), valid_rows(store)
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        sources = Sources.open(
            store, stats=None, points=[], dataset=None, model=None, client=client, selections=tmp_path
        )
        explorer = sources.explorer
        view = View("pair", 3, 6)
        full = explorer.projection(view)
        scale = explorer.plane_scale(view)
        xy = z[:, [3, 6]].astype(np.float32).astype(np.float64)  # the frames hold float32 columns
        at = np.random.default_rng(0).uniform(
            [full.x_range[0], full.y_range[0]], [full.x_range[1], full.y_range[1]], size=(50, 2)
        )
        np.testing.assert_array_equal(
            explorer.nearest_each(view, at, 3), plane_nearest(xy, rows, scale, at, 3)
        )
        assert explorer.nearest_rows(view, *at[0]) == plane_nearest(xy, rows, scale, at[:1], 6)[0].tolist()
        assert explorer.index_bytes(view) >= len(rows) * (2 * 8 + 8)  # the points, their order, their rows

        x_range = (float(np.quantile(xy[:, 0], 0.1)), full.x_range[1])
        picks = Dashboard(sources).plots.thumbnail_rows(view, x_range, full.y_range)
        counts = explorer.aggregate(view, x_range, full.y_range, *CANVAS)
        spots = dense_spots(counts)
        assert [(c, r) for c, r, _ in picks] == [(c, r) for c, r, _, _ in spots] and spots
        centres = np.array([pixel_centre(i, j, x_range, full.y_range, counts.shape) for _, _, i, j in spots])
        assert [row for _, _, row in picks] == plane_nearest(xy, rows, scale, centres, 1)[:, 0].tolist()


def test_held_selection_aggregated_in_another_view_equals_numpy(store: Path) -> None:
    """A selection held on worker processes, aggregated in another pair (full and zoomed): numpy's
    2-d histogram of the selected rows."""
    z = valid_z(store)
    box = (*np.quantile(z[:, 1], [0.2, 0.9]).tolist(), *np.quantile(z[:, 4], [0.1, 0.8]).tolist())
    expected = box_mask(z[:, 1], z[:, 4], box)
    assert 0 < expected.sum() < len(z)
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        explorer = Explorer(store, default_stats_path(store), client)
        drawn = Drawn().then("new", selection.View.box((1, 4), box[:2], box[2:]))
        with get_task_stream(client) as tasks:
            held, _ = describe_drawn(  # one view, the corpus known: found and described in one pass
                explorer.points,
                drawn,
                edges=explorer.stats["bin_edges"].values,
                columns=(1, 4),
                corpus=Corpus.of(explorer.stats, explorer.points.z.shape[0]),
                client=client,
            )
        passes = [t for t in tasks.data if "selection_drawn_chunk" in str(t["key"])]  # fused or not
        assert len(passes) == len(explorer.points.z.chunks[0]) == 3  # one per block, for mask and panel
        pair = View("pair", 2, 5)
        full = explorer.projection(pair)
        counts = explorer.aggregate_held(pair, held, full.x_range, full.y_range, 20, 10)
        assert counts.sum() == expected.sum()
        x_range = (float(np.median(z[:, 2])), float(z[:, 2].max()))
        zoomed = explorer.aggregate_held(pair, held, x_range, full.y_range, 20, 10)
        reference, _, _ = np.histogram2d(
            z[expected, 5], z[expected, 2], bins=[10, 20], range=[full.y_range, x_range]
        )
        np.testing.assert_array_equal(zoomed, reference)


def polygon_mask(x: np.ndarray, y: np.ndarray, vertices: list[tuple[float, float]]) -> np.ndarray:
    """matplotlib's point-in-polygon test: the reference for a lasso."""
    from matplotlib.path import Path as Polygon

    return np.asarray(Polygon(np.array(vertices)).contains_points(np.column_stack([x, y])))


def box_mask(x: np.ndarray, y: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """Inside the box (x0, x1, y0, y1), lower and left edges in, upper and right out (a selection's rule)."""
    x0, x1, y0, y1 = box
    return (x >= x0) & (x < x1) & (y >= y0) & (y < y1)


def in_slice(z: np.ndarray, pair: tuple[int, int], t: float) -> np.ndarray:
    others = [j for j in range(z.shape[1]) if j not in pair]
    return (np.abs(z[:, others]) < t).all(axis=1)


def test_combined_selections_and_their_description_equal_numpy() -> None:
    """new, add, subtract, intersect over views in three pairs, one with a slice, against numpy and
    matplotlib; invalid rows and rows with a NaN are never selected."""
    rng = np.random.default_rng(5)
    z = rng.normal(size=(3000, 5)).astype(np.float32)
    z[::97, 4] = np.nan
    valid = rng.random(3000) > 0.05
    points = ZPoints(
        Path("in-memory"), da.from_array(z, chunks=(700, 5)), valid=da.from_array(valid, chunks=700)
    )
    x = z.astype(np.float64)
    box = (-0.5, 1.2, -1.0, 0.8)
    lasso = [(-1.0, -1.0), (1.5, -0.5), (0.5, 0.2), (1.2, 1.4), (-0.8, 0.9)]  # not convex
    cut = (0.0, 2.0, 0.0, 2.0)
    drawn = (
        Drawn()
        .then("new", selection.View.box((0, 1), box[:2], box[2:], slice=2.0))
        .then("add", selection.View((2, 3), tuple(lasso)))
        .then("subtract", selection.View.box((0, 2), cut[:2], cut[2:]))
        .then("intersect", selection.View.box((3, 1), (-2.0, 2.0), (-2.5, 2.5)))
    )
    expected = box_mask(x[:, 0], x[:, 1], box) & in_slice(x, (0, 1), 2.0)
    expected |= polygon_mask(x[:, 2], x[:, 3], lasso)
    expected &= ~box_mask(x[:, 0], x[:, 2], cut)
    expected &= box_mask(x[:, 3], x[:, 1], (-2.0, 2.0, -2.5, 2.5))
    expected &= valid & np.isfinite(x).all(axis=1)
    assert 100 < expected.sum() < 2000
    np.testing.assert_array_equal(drawn.rows(points).compute(), expected)
    assert Drawn().then("subtract", selection.View((2, 3), tuple(lasso))).steps[0][0] == "new"

    edges = np.linspace(-3, 3, 25)
    summary = describe(points, drawn.rows(points), edges=edges, scheduler="threads")
    chosen = x[expected]
    assert summary.profile.selected == len(chosen)
    assert summary.profile.share == pytest.approx(len(chosen) / (valid & np.isfinite(x).all(axis=1)).sum())
    assert summary.mean is not None
    np.testing.assert_allclose(summary.mean, chosen.mean(axis=0), rtol=1e-12)
    rest = x[~expected & valid & np.isfinite(x).all(axis=1)]
    pooled = np.sqrt(
        (chosen.var(axis=0) * len(chosen) + rest.var(axis=0) * len(rest))
        / (len(x[valid & np.isfinite(x).all(axis=1)]) - 2)
    )
    np.testing.assert_allclose(
        summary.profile.smd, (chosen.mean(axis=0) - rest.mean(axis=0)) / pooled, rtol=1e-10
    )
    for j in range(5):
        np.testing.assert_array_equal(summary.hist[j], np.histogram(chosen[:, j], bins=edges)[0])
    assert len(set(summary.sample)) == len(summary.sample) == 12
    assert expected[summary.sample].all()
    again = describe(points, drawn.rows(points), edges=edges, scheduler="sync")
    np.testing.assert_array_equal(again.sample, summary.sample)  # seeded: the same rows every time

    # the corpus's moments known (as the statistics give them): the selected rows alone are summed
    kept = x[valid & np.isfinite(x).all(axis=1)]
    corpus = Corpus(len(kept), kept.mean(axis=0), ((kept - kept.mean(axis=0)) ** 2).sum(axis=0))
    quick = describe(
        points, drawn.rows(points), edges=edges, columns=(3, 1), corpus=corpus, scheduler="threads"
    )
    assert (quick.profile.selected, quick.profile.rows) == (len(chosen), len(kept))
    np.testing.assert_allclose(
        quick.profile.smd, (chosen.mean(axis=0) - rest.mean(axis=0)) / pooled, rtol=1e-9
    )
    np.testing.assert_allclose(quick.mean, chosen.mean(axis=0), rtol=1e-12)  # type: ignore[arg-type]
    assert sorted(quick.hist) == [1, 3]
    for j in (1, 3):
        np.testing.assert_array_equal(quick.hist[j], np.histogram(chosen[:, j], bins=edges)[0])
    np.testing.assert_array_equal(quick.sample, summary.sample)

    # one view drawn, the corpus known: the rows found and summed in one pass, held on a worker
    single = Drawn().then("new", selection.View.box((0, 1), box[:2], box[2:], slice=2.0))
    alone = box_mask(x[:, 0], x[:, 1], box) & in_slice(x, (0, 1), 2.0) & valid & np.isfinite(x).all(axis=1)
    with (
        LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        held, fused = describe_drawn(
            points, single, edges=edges, columns=(0, 2), corpus=corpus, client=client
        )
        np.testing.assert_array_equal(held.compute(), alone)
    picked, others = x[alone], x[~alone & valid & np.isfinite(x).all(axis=1)]
    pooled = np.sqrt((picked.var(axis=0) * len(picked) + others.var(axis=0) * len(others)) / (len(kept) - 2))
    np.testing.assert_allclose(
        fused.profile.smd, (picked.mean(axis=0) - others.mean(axis=0)) / pooled, rtol=1e-9
    )
    np.testing.assert_allclose(fused.mean, picked.mean(axis=0), rtol=1e-12)  # type: ignore[arg-type]
    for j in (0, 2):
        np.testing.assert_array_equal(fused.hist[j], np.histogram(picked[:, j], bins=edges)[0])
    two_passes = describe(points, single.rows(points), edges=edges, columns=(0, 2), scheduler="sync")
    np.testing.assert_array_equal(fused.sample, two_passes.sample)

    nothing = Drawn().then("new", selection.View.box((0, 1), (50.0, 60.0), (50.0, 60.0)))
    empty = describe(points, nothing.rows(points), edges=edges, scheduler="sync")
    assert empty.profile.selected == 0 and empty.mean is None and len(empty.sample) == 0
    with pytest.raises(SelectionError, match="nothing is selected"):
        Drawn().rows(points)


def attribute_shares(
    attributes: np.ndarray, chosen: np.ndarray, kept: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """numpy's share of each attribute (= 1) among the chosen rows and among the kept (valid, finite) rows."""
    return (attributes[chosen] == 1).mean(axis=0), (attributes[kept] == 1).mean(axis=0)


def test_attribute_profile_equals_numpy() -> None:
    """Each attribute's share among the selected rows and among the valid, finite rows (not the
    invalid or non-finite ones), ranked by their difference, against numpy; attributes chunked
    unlike z; none ranked for an empty selection."""
    rng = np.random.default_rng(11)
    z = rng.normal(size=(2000, 4)).astype(np.float32)
    z[::53, 2] = np.nan
    valid = rng.random(2000) > 0.1
    # attribute 0 follows component 0 (a selection on it differs most there), the rest are noise
    attributes = np.where(rng.random((2000, 6)) < 0.3, 1, -1).astype(np.int8)
    attributes[:, 0] = np.where(z[:, 0] > 0.3, 1, -1)
    names = ("Smiling", "Bald", "Eyeglasses", "Male", "Young", "Blond_Hair")
    points = ZPoints(
        Path("in-memory"),
        da.from_array(z, chunks=(450, 4)),
        valid=da.from_array(valid, chunks=450),
        attributes=da.from_array(attributes, chunks=(300, 6)),
        attribute_names=names,
    )
    drawn = Drawn().then("new", selection.View.box((0, 1), (0.5, 3.0), (-2.0, 2.0)))
    kept = valid & np.isfinite(z).all(axis=1)
    expected = box_mask(z[:, 0].astype(np.float64), z[:, 1].astype(np.float64), (0.5, 3.0, -2.0, 2.0)) & kept
    assert 100 < expected.sum() < 1000
    summary = describe(points, drawn.rows(points), edges=np.linspace(-3, 3, 13), scheduler="threads")
    assert summary.attributes is not None
    chosen, corpus = attribute_shares(attributes, expected, kept)
    np.testing.assert_allclose(summary.attributes.chosen, chosen, rtol=1e-12)
    np.testing.assert_allclose(summary.attributes.corpus, corpus, rtol=1e-12)
    order = np.argsort(-np.abs(chosen - corpus), kind="stable")[:4]
    ranked = summary.attributes.ranked(4)
    assert [name for name, _, _ in ranked] == [names[j] for j in order]
    assert ranked[0][0] == "Smiling" and ranked[0][1] == 1.0  # every selected row has z_0 > 0.3
    np.testing.assert_allclose([s for _, s, _ in ranked], chosen[order], rtol=1e-12)

    nothing = Drawn().then("new", selection.View.box((0, 1), (50.0, 60.0), (50.0, 60.0)))
    empty = describe(points, nothing.rows(points), edges=np.linspace(-3, 3, 13), scheduler="sync")
    assert empty.attributes is not None and empty.attributes.ranked() == []
    np.testing.assert_allclose(empty.attributes.corpus, corpus, rtol=1e-12)
    bare = ZPoints(Path("in-memory"), da.from_array(z, chunks=(450, 4)))
    assert describe(bare, drawn.rows(bare), edges=np.linspace(-3, 3, 13), scheduler="sync").attributes is None


def test_attribute_profile_of_an_encoded_store_equals_numpy(store: Path) -> None:
    """On the encoded synthetic faces (40 CelebA attributes), on worker processes."""
    z = np.asarray(zarr.open_array(str(store / "z"), mode="r")[...], dtype=np.float64)
    valid = np.asarray(zarr.open_array(str(store / "valid"), mode="r")[...], dtype=bool)
    attributes = np.asarray(zarr.open_array(str(store / "attributes"), mode="r")[...])
    names = [str(v) for v in zarr.open_array(str(store / "attribute"), mode="r")[...]]
    assert attributes.shape == (len(z), 40)
    box = (*np.quantile(z[:, 1], [0.3, 1.0]).tolist(), *np.quantile(z[:, 3], [0.0, 0.6]).tolist())
    drawn = Drawn().then("new", selection.View.box((1, 3), box[:2], box[2:]))
    kept = valid & np.isfinite(z).all(axis=1)
    expected = box_mask(z[:, 1], z[:, 3], box) & kept
    assert 0 < expected.sum() < kept.sum()
    points = open_zpoints(store)
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        summary = describe(points, drawn.rows(points), edges=np.linspace(-8, 8, 65), scheduler=client)
        # the store's statistics as the corpus: its moments and attribute counts, not a pass over it
        stats_corpus = Corpus.of(open_stats(default_stats_path(store)), len(z))
        quick = describe(
            points, drawn.rows(points), edges=np.linspace(-8, 8, 65), corpus=stats_corpus, scheduler=client
        )
    assert stats_corpus is not None and stats_corpus.n == kept.sum()
    assert Corpus.of(open_stats(default_stats_path(store)), len(z) + 1) is None  # statistics of other rows
    np.testing.assert_allclose(stats_corpus.mean, z[kept].mean(axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(
        stats_corpus.m2, ((z[kept] - z[kept].mean(axis=0)) ** 2).sum(axis=0), rtol=1e-9
    )
    chosen, corpus = attribute_shares(attributes, expected, kept)
    for described in (summary, quick):
        assert described.attributes is not None
        assert described.attributes.names == tuple(names)
        np.testing.assert_allclose(described.attributes.chosen, chosen, rtol=1e-12)
        np.testing.assert_allclose(described.attributes.corpus, corpus, rtol=1e-12)
    np.testing.assert_allclose(quick.profile.smd, summary.profile.smd, rtol=1e-8, atol=1e-12)


def test_exported_selection_is_numpys_mask_and_feeds_stats(store: Path, tmp_path: Path) -> None:
    """Export writes selection-NAME.zarr (on worker processes): its mask is numpy's, ``stats --rows``
    of it are numpy's statistics of those rows, and a folder not a selection's is never replaced."""
    z = np.asarray(zarr.open_array(str(store / "z"), mode="r")[...], dtype=np.float64)
    valid = np.asarray(zarr.open_array(str(store / "valid"), mode="r")[...], dtype=bool)
    box = (*np.quantile(z[:, 1], [0.1, 0.8]).tolist(), *np.quantile(z[:, 4], [0.2, 0.9]).tolist())
    lasso = list(
        zip(np.quantile(z[:, 0], [0.1, 0.9, 0.5]), np.quantile(z[:, 2], [0.1, 0.2, 0.9]), strict=True)
    )
    drawn = (
        Drawn()
        .then("new", selection.View.box((1, 4), box[:2], box[2:]))
        .then("add", selection.View((0, 2), tuple(lasso)))
    )
    expected = (box_mask(z[:, 1], z[:, 4], box) | polygon_mask(z[:, 0], z[:, 2], lasso)) & valid
    assert 0 < expected.sum() < len(z)
    points = open_zpoints(store)
    out = selection_path(tmp_path, "faces")
    assert out == tmp_path / "selection-faces.zarr"
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        summary = describe(points, drawn.rows(points), edges=np.linspace(-8, 8, 65), scheduler=client)
        assert export(out, drawn, points, summary.profile, scheduler=client) == expected.sum()
        theirs = tmp_path / "selection-theirs.zarr"
        theirs.mkdir()
        (theirs / "notes.txt").write_text("mine")
        with pytest.raises(OutputError, match="is not a latentdask output"):
            export(theirs, drawn, points, summary.profile, scheduler=client)
        assert (theirs / "notes.txt").read_text() == "mine"
    np.testing.assert_array_equal(zarr.open_array(str(out / "rows"), mode="r")[...], expected)
    steps = zarr.open_group(str(out), mode="r").attrs["view"]["steps"]
    assert [(s["combine"], s["pair"]) for s in steps] == [("new", [1, 4]), ("add", [0, 2])]
    with pytest.raises(SelectionError, match="a selection's name is letters"):
        selection_path(tmp_path, "../elsewhere")

    stats = tmp_path / "stats.zarr"
    done = run_cli("stats", str(store), "--rows", str(out), "--out", str(stats))
    assert done.returncode == 0, done.stderr
    found = zarr.open_group(str(stats), mode="r")
    assert int(found["count"][...]) == expected.sum()
    np.testing.assert_allclose(found["mean"][...], z[expected].mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(found["cov"][...], np.cov(z[expected].T), rtol=1e-9, atol=1e-12)


def test_the_apps_parts_answer_events_without_a_server(store: Path, tmp_path: Path) -> None:
    """The dashboard's parts driven as the browser's events drive them, with no server: a box selects
    numpy's rows and exports them, a heatmap click shows its pair in the view the buttons name, and
    the projection keeps a zoom of the view shown but starts a new view from its full extent."""
    import holoviews as hv

    from latentdask.render.dashboard import Dashboard, Sources

    hv.extension("bokeh")  # as in a notebook: the plots' options need a plotting extension
    z = valid_z(store)
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        sources = Sources.open(
            store, stats=None, points=[], dataset=None, model=None, client=client, selections=tmp_path
        )
        app = Dashboard(sources)
        app.__panel__()
        a, b = app.controls.a.value, app.controls.b.value
        x0, x1 = np.quantile(z[:, a], [0.2, 0.7])
        y0, y1 = np.quantile(z[:, b], [0.1, 0.8])
        app.selection.select_box((x0, y0, x1, y1))
        expected = box_mask(z[:, a], z[:, b], (x0, x1, y0, y1))
        assert app.selection.summary.profile.selected == expected.sum() > 0
        app.selection.export()
        assert (
            app.selection.selection_note.object
            == f"wrote {expected.sum():,} rows → {tmp_path / 'selection-selected.zarr'}"
        )

        app.show_clicked_pair(2.2, 4.9)
        assert (app.controls.a.value, app.controls.b.value) == (2, 5)
        app.linked.clicks_show.value = "right"
        assert app.linked.clicks_note.object == CLICKS_SHOW["right"]
        app.show_clicked_pair(1.0, 3.0)
        assert (app.linked.c.value, app.linked.d.value, app.controls.a.value) == (1, 3, 2)

        full = sources.explorer.projection(View("pair", 2, 5))
        other = sources.explorer.projection(View("pair", 1, 3))
        (x0, x1), (y0, y1) = full.x_range, full.y_range
        zoom = ((x0, (x0 + x1) / 2), (y0, (y0 + y1) / 2))  # the lower left quarter
        first = app.plots.projection("pair", 2, 5, "none", "none", "eq_hist")
        zoomed = app.plots.projection("pair", 2, 5, "none", "none", "eq_hist", *zoom)
        new_view = app.plots.projection("pair", 1, 3, "none", "none", "eq_hist", *zoom)
    assert first.bounds.lbrt() == (full.x_range[0], full.y_range[0], full.x_range[1], full.y_range[1])
    assert zoomed.bounds.lbrt() == (x0, y0, (x0 + x1) / 2, (y0 + y1) / 2)
    title = zoomed.opts.get("plot").kwargs["title"]
    assert title == in_view("latent 2", "latent 5", in_box(z[:, 2], z[:, 5], (*zoom[0], *zoom[1])))
    assert new_view.bounds.lbrt() == (other.x_range[0], other.y_range[0], other.x_range[1], other.y_range[1])


def test_explore_gives_the_served_app_to_a_notebook(store: Path) -> None:
    """``latentdask.explore`` builds the same app as ``serve``: a servable panel object whose Bokeh
    document holds the projection of every point and the selection's panel."""
    import panel as pn

    import latentdask

    with (
        LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        app = latentdask.explore(store, client=client)
        assert isinstance(app, pn.viewable.Viewable)
        document = app.servable().server_doc()
        texts = [m.text for m in document.models if isinstance(getattr(m, "text", None), str)]
    n = len(valid_z(store))
    assert any(t.endswith(f": {n:,} points in view") for t in texts), texts  # a plot's title
    assert any("draw a box or a lasso" in t for t in texts)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def needs_chromium() -> None:
    if CHROMIUM is None:
        if os.environ.get("LATENTDASK_REQUIRE_BROWSER") == "1":
            pytest.fail("Chromium is required here (apt-get install chromium)")
        pytest.skip("needs Debian's chromium package (apt-get install chromium)")


@contextmanager
def serving(store: Path, folder: Path, *options: str) -> Iterator[str]:
    """``latentdask serve STORE`` in its own process, working in ``folder``, on a free port of
    127.0.0.1; yields its URL.

    The port is free when chosen, but the command's own Dask cluster binds ephemeral ports
    before the app does and may take it: the helper waits for an HTTP answer (not just an open
    port) and, when the command exits because the port was taken, tries another.
    """
    spec = folder / "one.yaml"
    spec.write_text("kind: local\nworkers: 1\n")
    log = folder / "serve.log"
    for _ in range(3):
        port = free_port()
        with log.open("w") as out:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "latentdask.cli",
                    "serve",
                    str(store),
                    "--port",
                    str(port),
                    "--cluster",
                    str(spec),
                    *options,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=folder,
            )
        url = f"http://127.0.0.1:{port}/"
        if answers_http(process, url, deadline=time.monotonic() + 120):
            break
        process.kill()
        process.wait(timeout=30)
    else:
        pytest.fail(f"latentdask serve did not answer: {log.read_text()}")
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def answers_http(process: subprocess.Popen[bytes], url: str, *, deadline: float) -> bool:
    """Whether the app answers ``url`` with HTTP before ``deadline``; False once ``process`` exits."""
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return bool(response.status == 200)
        except (OSError, http.client.HTTPException):
            time.sleep(0.5)
    return False


@pytest.mark.e2e
def test_serve_prints_its_address_once_it_listens(store: Path, tmp_path: Path) -> None:
    """The first line naming the dashboard's address comes once a connection to it succeeds, not
    while the first view's columns are still being read (which took 36 s on CelebA), and reaches a
    pipe at once (no PYTHONUNBUFFERED: as under nohup or a batch job's log)."""
    spec = tmp_path / "one.yaml"
    spec.write_text("kind: local\nworkers: 1\n")
    for _ in range(3):  # the command's own cluster may take the free port first (see serving)
        port = free_port()
        command = ["serve", str(store), "--port", str(port), "--cluster", str(spec)]
        process = subprocess.Popen(
            [sys.executable, "-m", "latentdask.cli", *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=tmp_path,
            env={name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"},
        )
        assert process.stdout is not None
        said: list[str] = []
        watchdog = threading.Timer(120, process.kill)  # a line that never comes ends the read
        watchdog.start()
        try:
            for line in process.stdout:
                said.append(line)
                if f":{port}" in line:
                    with socket.create_connection(("127.0.0.1", port), timeout=5):
                        break  # it listens
        finally:
            watchdog.cancel()
            process.terminate()
            process.wait(timeout=30)
        if said and f"serving on http://127.0.0.1:{port}/" in said[-1]:
            assert said[0].startswith(f"opening {store}"), said
            return
        if not any("in use" in line for line in said):
            break
    pytest.fail(f"serve never named its address: {''.join(said)}")


@pytest.fixture(scope="module")
def uniform_points(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 points of the uniform sampler in [-1.5, 1.5], as many components as the store."""
    out = tmp_path_factory.mktemp("points") / "uniform.zarr"
    return generate(default_stats_path(store), out, spec=sampler_spec("uniform", b=1.5), n=300, seed=0)


@dataclass(frozen=True)
class Served:
    """``latentdask serve`` of the module's store (with the uniform points as an overlay), shared by the
    browser tests: each page is a session of its own, with its own widgets and selection."""

    url: str
    exports: Path  # the folder Export writes selection-NAME.zarr into (--selections)


@pytest.fixture(scope="module")
def server(store: Path, uniform_points: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    needs_chromium()
    exports = tmp_path_factory.mktemp("exports")
    with serving(
        store, tmp_path_factory.mktemp("serve"), "--points", str(uniform_points), "--selections", str(exports)
    ) as url:
        yield Served(url, exports)


def launch(playwright: Any) -> Any:
    return playwright.chromium.launch(
        executable_path=CHROMIUM,
        headless=True,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
    )


def watched_page(browser: Any, url: str, width: int, height: int) -> tuple[Any, list[str], list[str]]:
    """A page of ``browser``, the console and page errors it records, and the requests it aborted:
    every request must go to ``url``'s server (nothing is fetched from elsewhere)."""
    errors: list[str] = []
    remote: list[str] = []
    page = browser.new_page(viewport={"width": width, "height": height})
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))

    def route(route: Any) -> None:
        if route.request.url.startswith(url.rstrip("/")):
            route.continue_()
        else:
            remote.append(route.request.url)
            route.abort()

    page.route("**/*", route)
    return page, errors, remote


#: what the page shows, read from its Bokeh models: the projection's title, ranges and red points,
#: and the two axis widgets (null until the document is there)
PAGE_STATE = """() => {
  if (!window.Bokeh || Bokeh.documents.length === 0) return null;
  const models = [...Bokeh.documents[0].all_models];
  const plot = models.find((m) => m.title?.text?.endsWith(" points in view"));
  const widget = (label) => models.find((m) => typeof m.title === "string" && m.title.startsWith(label));
  if (plot === undefined) return null;
  const red = plot.renderers.find((r) => r.glyph?.type === "Scatter");
  return {
    title: plot.title.text,
    x_range: [plot.x_range.start, plot.x_range.end],
    y_range: [plot.y_range.start, plot.y_range.end],
    red_x: red === undefined ? [] : Array.from(red.data_source.data.x),
    a: widget("x axis")?.value,
    b: widget("y axis")?.value,
  };
}"""

#: a box zoom as Bokeh's zoom tools make it: new ranges for the projection, then the plot's
#: RangesUpdate event, which is what the app's range stream listens to
ZOOM = """([x0, x1, y0, y1]) => {
  const plot = [...Bokeh.documents[0].all_models].find((m) => m.title?.text?.endsWith(" points in view"));
  const view = Bokeh.index.find_one(plot);
  view.update_range({
    xrs: new Map([[plot.x_range, {start: x0, end: x1}]]),
    yrs: new Map([[plot.y_range, {start: y0, end: y1}]]),
  });
  view.trigger_ranges_update_event();
}"""

#: where on the page the correlation heatmap draws cell (a, b): x is component a, y component b
HEATMAP_CELL = """([a, b]) => {
  const plot = [...Bokeh.documents[0].all_models].find((m) => m.title?.text?.startsWith("correlation"));
  const view = Bokeh.index.find_one(plot);
  const canvas = view.canvas_view.el.getBoundingClientRect();
  return [canvas.left + view.frame.x_scale.compute(a), canvas.top + view.frame.y_scale.compute(b)];
}"""


#: a selection drawn as Bokeh's box select tool reports it, with these exact data coordinates
SELECT_BOX = """([x0, x1, y0, y1]) => {
  const plot = [...Bokeh.documents[0].all_models].find((m) => m.title?.text?.endsWith(" points in view"));
  const {SelectionGeometry} = Bokeh.require("core/bokeh_events");
  const geometry = {type: "rect", sx0: 0, sx1: 1, sy0: 0, sy1: 1, x0, x1, y0, y1};
  plot.trigger_event(new SelectionGeometry(geometry, true));
}"""

#: where on the page the projection draws the data point (x, y)
PROJECTION_POINT = """([x, y]) => {
  const plot = [...Bokeh.documents[0].all_models].find((m) => m.title?.text?.endsWith(" points in view"));
  const view = Bokeh.index.find_one(plot);
  const canvas = view.canvas_view.el.getBoundingClientRect();
  return [canvas.left + view.frame.x_scale.compute(x), canvas.top + view.frame.y_scale.compute(y)];
}"""

#: the projection's lasso select tool made the active drag (as a click on its toolbar button does)
LASSO_TOOL = """() => {
  const plot = [...Bokeh.documents[0].all_models].find((m) => m.title?.text?.endsWith(" points in view"));
  plot.toolbar.tools.find((t) => t.type === "LassoSelectTool").active = true;
}"""

#: a widget's value set as the browser does (it reaches the app); returns the value
SET_WIDGET = """([label, value]) => {
  const widget = [...Bokeh.documents[0].all_models].find(
    (m) => typeof m.title === "string" && m.title.startsWith(label));
  widget.value = value ?? widget.options[widget.options.length - 1];
  return widget.value;
}"""

#: what the selection panel says (its count, an export, what the next box or lasso does), the outlines
#: drawn over the projection, and the selection's histogram of the component ``a`` (the orange bars)
SELECTION_STATE = """(a) => {
  const models = [...Bokeh.documents[0].all_models];
  const said = (words) => models.find((m) => typeof m.text === "string" && m.text.includes(words))?.text;
  const plot = models.find((m) => m.title?.text?.endsWith(" points in view"));
  const path = plot.renderers.find((r) => r.glyph?.type === "MultiLine");
  const histogram = models.findLast((m) => m.title?.text?.startsWith(`latent ${a}:`));
  const orange = histogram?.renderers.find((r) => r.glyph?.fill_color?.value === "#e07b39");
  return {
    text: said("rows selected") ?? "",
    wrote: said("wrote") ?? "",
    next: said("the next box or lasso") ?? "",
    outlines: path === undefined ? [] : path.data_source.data.xs.map(
      (xs, k) => Array.from(xs).map((x, i) => [x, path.data_source.data.ys[k][i]])),
    histogram: orange === undefined ? [] : Array.from(orange.data_source.data.top),
  };
}"""


def selection_shows(
    page: Any, what: str, ok: Callable[[dict[str, Any]], bool], a: int = 0, timeout_s: float = 60
) -> dict[str, Any]:
    """The selection panel's state once ``ok`` holds for it (polled)."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = page.evaluate(SELECTION_STATE, a)
        if ok(state):
            return dict(state)
        if time.monotonic() > deadline:
            pytest.fail(f"the page does not show {what}; it shows {state}")
        page.wait_for_timeout(100)


def shows(
    page: Any, what: str, ok: Callable[[dict[str, Any]], bool], timeout_s: float = 60
) -> dict[str, Any]:
    """The page's state once ``ok`` holds for it (polled); a failure names ``what`` and the last state."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = page.evaluate(PAGE_STATE)
        if state is not None and ok(state):
            return dict(state)
        if time.monotonic() > deadline:
            pytest.fail(f"the page does not show {what}; it shows {state}")
        page.wait_for_timeout(100)  # the poll's interval, not a guess at how long the app takes


def valid_z(store: Path) -> np.ndarray:
    """The store's valid, finite z-points as float64, read with zarr: the reference for every count."""
    z = np.asarray(zarr.open_array(str(store / "z"), mode="r")[...], dtype=np.float64)
    valid = np.asarray(zarr.open_array(str(store / "valid"), mode="r")[...], dtype=bool)
    return z[valid & np.isfinite(z).all(axis=1)]


def in_box(x: np.ndarray, y: np.ndarray, box: tuple[float, float, float, float]) -> int:
    """Points inside the closed box (x0, x1, y0, y1), as datashader bins them (both ends kept)."""
    x0, x1, y0, y1 = box
    return int(((x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)).sum())


def in_view(x_label: str, y_label: str, count: int) -> str:
    return f"{x_label} × {y_label}: {count:,} points in view"


@pytest.mark.browser
def test_dashboard_in_headless_chromium(
    server: Served, store: Path, uniform_points: Path, tmp_path: Path
) -> None:
    """What the page shows is checked against numpy on the store: the count in view after a zoom,
    the pair in the title after a pick, the principal axes, the red points of an overlay."""
    from playwright.sync_api import sync_playwright

    z = valid_z(store)
    n = len(z)
    uniform = np.asarray(zarr.open_array(str(uniform_points / "z"), mode="r")[...], dtype=np.float64)
    eigenvalues, vectors = np.linalg.eigh(np.cov(z.T))
    first = np.argsort(eigenvalues)[::-1][:2]
    pcs = (z - z.mean(axis=0)) @ vectors[:, first]
    spread = PC_SPREAD * np.sqrt(eigenvalues[first])
    in_pc_view = int((np.abs(pcs) <= spread).all(axis=1).sum())
    with sync_playwright() as playwright:
        browser = launch(playwright)
        page, errors, remote = watched_page(browser, server.url, 1500, 1100)
        page.goto(server.url, wait_until="networkidle")
        first_pair = shows(
            page,
            "the axis widgets' pair with every point in view",
            lambda s: s["title"] == in_view(f"latent {s['a']}", f"latent {s['b']}", n),
        )
        projection = page.locator("canvas").first.bounding_box()
        assert projection is not None and projection["width"] > 400

        # principal axes instead of components: PC 1 and PC 2, the points within ±5 sd of each
        page.get_by_text("pc", exact=True).click()
        shows(page, "the principal axes", lambda s: s["title"] == in_view("PC 1", "PC 2", in_pc_view))
        page.get_by_text("pair", exact=True).click()
        shows(page, "the first pair again", lambda s: s["title"] == first_pair["title"])

        # the uniform sampler's points drawn in red over the projection, in the pair's plane
        page.get_by_label("uniform (300)").check()
        expected_red = sorted(uniform[:, first_pair["a"]])
        shows(page, "the uniform points of component a", lambda s: sorted(s["red_x"]) == expected_red)

        # a click on the correlation heatmap's cell (a, b) selects that pair; the title names it
        r = np.abs(np.corrcoef(z.T)) + np.eye(z.shape[1])
        a, b = (int(k) for k in np.unravel_index(np.argmin(r), r.shape))  # the least correlated pair
        assert (a, b) != (first_pair["a"], first_pair["b"])
        page.mouse.click(*page.evaluate(HEATMAP_CELL, [a, b]))
        shows(
            page,
            f"the picked pair ({a}, {b}) in the title",
            lambda s: (s["a"], s["b"]) == (a, b) and s["title"] == in_view(f"latent {a}", f"latent {b}", n),
        )

        # a zoom: the count in view is numpy's count of the store's points inside the box
        x, y = z[:, a], z[:, b]
        box = (*np.quantile(x, [0.2, 0.9]).tolist(), *np.quantile(y, [0.1, 0.7]).tolist())
        expected = in_box(x, y, box)
        assert 0 < expected < n  # a count that ignored the zoom would differ
        page.evaluate(ZOOM, list(box))
        shows(
            page,
            f"{expected} points in the zoomed box {box}",
            lambda s: (
                s["title"] == in_view(f"latent {a}", f"latent {b}", expected)
                and [*s["x_range"], *s["y_range"]] == list(box)
            ),
        )
        page.screenshot(path=str(tmp_path / "zoomed.png"))

        # a click in the projection: the nearest real images and what the decoder makes there
        page.mouse.click(
            projection["x"] + 0.4 * projection["width"], projection["y"] + 0.45 * projection["height"]
        )
        page.wait_for_selector("img[alt='decoded']", timeout=30_000)
        thumbnails = page.locator("img[data-strip='nearest']")
        assert thumbnails.count() == 6
        assert all(
            name.endswith(".jpg") for name in thumbnails.evaluate_all("images => images.map(i => i.alt)")
        )
        page.screenshot(path=str(tmp_path / "clicked.png"))
        browser.close()
    assert not remote, f"the page asked for remote resources: {remote}"
    assert not errors, f"browser console errors: {errors}"


#: the page's line naming the real point under the cursor, and the opaque pixels of the thumbnails layer
IMAGES_STATE = """() => {
  const models = [...Bokeh.documents[0].all_models];
  const said = models.find((m) => typeof m.text === "string" && m.text.includes("under the cursor ("));
  const plot = models.find((m) => m.title?.text?.endsWith(" points in view"));
  const layer = plot?.renderers.findLast((r) => r.glyph?.type === "ImageRGBA");  // over the colours'
  let opaque = 0;
  for (const v of layer?.data_source.data.image?.[0] ?? []) if ((v >>> 24) !== 0) opaque++;
  return {hovered: said?.text ?? "", opaque};
}"""
HOVERED = re.compile(r"under the cursor \(([-+.\de]+), ([-+.\de]+)\): nearest real point, row (\d+)")


def images_show(page: Any, what: str, ok: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        state = page.evaluate(IMAGES_STATE)
        if ok(state):
            return dict(state)
        if time.monotonic() > deadline:
            pytest.fail(f"the page does not show {what}; it shows {state}")
        page.wait_for_timeout(100)


#: the options of the widget whose title starts with the label given
OPTIONS = """(label) => [...Bokeh.documents[0].all_models].find(
  (m) => typeof m.title === "string" && m.title.startsWith(label)).options"""

#: the projection's title and, in its first RGBA layer (the points coloured by an attribute), the lit
#: pixels mostly orange (+1) and mostly blue (−1); red points of the overlays shown
COLOURED_STATE = """() => {
  const plot = [...Bokeh.documents[0].all_models].find((m) => m.title?.text?.endsWith(" points in view"));
  const layer = plot?.renderers.find((r) => r.glyph?.type === "ImageRGBA");
  const red = plot?.renderers.find((r) => r.glyph?.type === "Scatter");
  let orange = 0, blue = 0;
  for (const v of layer?.data_source.data.image?.[0] ?? []) {
    if ((v >>> 24) === 0) continue;
    if ((v & 255) > ((v >>> 16) & 255)) orange++; else blue++;  // RGBA packed little-endian: R, G, B, A
  }
  return {title: plot?.title.text ?? "", orange, blue, red: red?.data_source.data.x.length ?? 0};
}"""


@pytest.mark.browser
def test_colour_by_every_attribute_in_headless_chromium(server: Served, store: Path) -> None:
    """Colour by each attribute offered (those with both values among the rows): every point stays in
    view, the title names the colours, and orange (+1) and blue (−1) pixels are lit where numpy finds
    rows of each value; with an overlay's red points shown too."""
    from playwright.sync_api import sync_playwright

    n = len(valid_z(store))
    attributes = valid_attributes(store)
    names = [str(v) for v in zarr.open_array(str(store / "attribute"), mode="r")[...]]
    with sync_playwright() as playwright:
        browser = launch(playwright)
        page, errors, remote = watched_page(browser, server.url, 1500, 1100)
        page.goto(server.url, wait_until="networkidle")
        first = shows(page, "the projection", lambda s: s["title"].endswith(f": {n:,} points in view"))
        labels = f"latent {first['a']} × latent {first['b']}"

        def coloured(name: str, values: np.ndarray, red: int = 0) -> dict[str, Any]:
            title = f"{labels} ({name} = +1 orange, −1 blue): {n:,} points in view"
            deadline = time.monotonic() + 60
            while True:
                state = page.evaluate(COLOURED_STATE)
                lit = (state["orange"] > 0, state["blue"] > 0)
                expected = (bool((values == 1).any()), bool((values == -1).any()))
                if state["title"] == title and lit == expected and state["red"] == red:
                    return dict(state)
                if time.monotonic() > deadline:
                    pytest.fail(f"the page does not show the points coloured by {name}; it shows {state}")
                page.wait_for_timeout(100)

        # offered: the attributes some rows have and others lack (the synthetic faces leave 19 at −1)
        varying = [j for j in range(len(names)) if len(set(attributes[:, j].tolist())) > 1]
        assert 0 < len(varying) < len(names)
        offered = page.evaluate(OPTIONS, "colour by")
        assert offered == ["none", *(names[j] for j in varying)]
        for j in varying:
            page.evaluate(SET_WIDGET, ["colour by", names[j]])
            coloured(names[j], attributes[:, j])
        page.get_by_label("uniform (300)").check()
        coloured(names[varying[-1]], attributes[:, varying[-1]], red=300)  # the overlay's points over them
        page.evaluate(SET_WIDGET, ["colour by", "none"])
        shows(
            page,
            "the points uncoloured",
            lambda s: s["title"] == in_view(f"latent {first['a']}", f"latent {first['b']}", n),
        )
        assert page.evaluate(COLOURED_STATE)["orange"] + page.evaluate(COLOURED_STATE)["blue"] == 0
        browser.close()
    assert not remote, f"the page asked for remote resources: {remote}"
    assert not errors, f"browser console errors: {errors}"


@pytest.mark.browser
def test_images_instead_of_dots_in_headless_chromium(server: Served, store: Path) -> None:
    """Hovering shows the real image of numpy's nearest point to the cursor in the view's plane, a
    click keeps it, and the thumbnails toggle draws images over the projection."""
    from playwright.sync_api import sync_playwright

    z, rows = valid_z(store), valid_rows(store)
    names = [str(name) for name in zarr.open_array(str(store / "filename"), mode="r")[...]]
    with sync_playwright() as playwright:
        browser = launch(playwright)
        page, errors, remote = watched_page(browser, server.url, 1500, 1100)
        page.goto(server.url, wait_until="networkidle")
        state = shows(
            page,
            "every point in view",
            lambda s: s["title"] == in_view(f"latent {s['a']}", f"latent {s['b']}", len(z)),
        )
        xy = z[:, [state["a"], state["b"]]].astype(np.float32).astype(np.float64)
        (x0, x1), (y0, y1) = state["x_range"], state["y_range"]  # the full view: the plane's scale
        scale = (1 / (x1 - x0), 1 / (y1 - y0))
        apart = (((xy[:, None] - xy[None]) * np.asarray(scale)) ** 2).sum(axis=2) + np.eye(len(xy))
        lone = int(np.argmax(apart.min(axis=1)))  # the point farthest from any other: a pixel off is nothing
        where = page.evaluate(PROJECTION_POINT, xy[lone].tolist())

        page.mouse.move(*where)
        said = images_show(
            page, "the point under the cursor", lambda s: HOVERED.search(s["hovered"]) is not None
        )
        found = HOVERED.search(said["hovered"])
        assert found is not None
        cursor = np.array([[float(found[1]), float(found[2])]])
        assert int(found[3]) == plane_nearest(xy, rows, scale, cursor, 1)[0, 0] == rows[lone]
        image = page.locator(f"img[alt='{names[rows[lone]]}']")
        image.first.wait_for(timeout=30_000)

        assert page.locator(f"img[data-strip='under-cursor'][alt='{names[rows[lone]]}']").count() == 1
        page.mouse.click(*where)  # shown under the cursor, first of the nearest six, and kept
        deadline = time.monotonic() + 60
        while image.count() < 3 and time.monotonic() < deadline:
            page.wait_for_timeout(100)
        assert image.count() == 3

        assert page.evaluate(IMAGES_STATE)["opaque"] == 0
        page.get_by_label(THUMBNAILS_TOGGLE).check()
        images_show(page, "thumbnails over the projection", lambda s: s["opaque"] > 0)
        page.screenshot(path=str(Path(tempfile.gettempdir()) / "latentdask-thumbnails.png"))
        browser.close()
    assert not remote, f"the page asked for remote resources: {remote}"
    assert not errors, f"browser console errors: {errors}"


@pytest.mark.browser
def test_selections_in_headless_chromium(server: Served, store: Path, tmp_path: Path) -> None:
    """A box with a slice on, a lasso drawn with the mouse added, a box subtracted: the count shown
    after each is numpy's (matplotlib's for the lasso, over the outline the page draws); the apart
    components, the histogram, the mean's image and the sample follow; Export writes numpy's mask."""
    from playwright.sync_api import sync_playwright

    needs_chromium()
    z = valid_z(store)
    n = len(z)
    edges = open_stats(default_stats_path(store))["bin_edges"].values
    url = server.url
    with sync_playwright() as playwright:
        browser = launch(playwright)
        page, errors, remote = watched_page(browser, url, 1900, 1200)
        page.goto(url, wait_until="networkidle")
        first = shows(page, "the projection", lambda s: s["title"].endswith(f": {n:,} points in view"))
        a, b = first["a"], first["b"]
        x, y = z[:, a], z[:, b]

        # a box with the widest slice on: the rows in the box whose other components are all within ±t
        t = float(page.evaluate(SET_WIDGET, ["slice", None]))
        shows(page, "the slice", lambda s: f"|x_j| < {t:g} elsewhere" in s["title"])
        box = (*np.quantile(x, [0.05, 0.8]).tolist(), *np.quantile(y, [0.1, 0.95]).tolist())
        expected = box_mask(x, y, box) & in_slice(z, (a, b), t)
        assert 0 < expected.sum() < n
        page.evaluate(SELECT_BOX, list(box))
        selection_shows(
            page, "the box's count", lambda s: f"{expected.sum():,} of {n:,} rows selected" in s["text"]
        )

        # a lasso drawn with the mouse, added (no slice): matplotlib's test over the outline drawn
        page.evaluate(SET_WIDGET, ["slice", "none"])
        shows(page, "no slice", lambda s: s["title"] == in_view(f"latent {a}", f"latent {b}", n))
        page.get_by_text("add", exact=True).click()
        selection_shows(page, "the mode add", lambda s: "the next box or lasso drawn adds" in s["next"])
        page.evaluate(LASSO_TOOL)
        qx, qy = np.quantile(x, [0.3, 0.95, 0.6]), np.quantile(y, [0.05, 0.3, 0.9])
        corners = [page.evaluate(PROJECTION_POINT, [float(u), float(v)]) for u, v in zip(qx, qy, strict=True)]
        page.mouse.move(*corners[0])
        page.mouse.down()
        for corner in [*corners[1:], corners[0]]:
            page.mouse.move(*corner, steps=8)
        page.mouse.up()
        state = selection_shows(page, "the lasso's outline", lambda s: len(s["outlines"]) == 2)
        lasso = [tuple(v) for v in state["outlines"][1][:-1]]
        expected |= polygon_mask(x, y, lasso)
        selection_shows(
            page, "the lasso added", lambda s: f"{expected.sum():,} of {n:,} rows selected" in s["text"]
        )

        # a box subtracted
        page.get_by_text("subtract", exact=True).click()
        selection_shows(page, "the mode subtract", lambda s: "drawn takes its rows out" in s["next"])
        cut = (*np.quantile(x, [0.4, 0.7]).tolist(), *np.quantile(y, [0.2, 0.6]).tolist())
        expected &= ~box_mask(x, y, cut)
        page.evaluate(SELECT_BOX, list(cut))
        count = int(expected.sum())
        assert 0 < count < n
        selection_shows(
            page, "the box subtracted", lambda s: f"{count:,} of {n:,} rows selected" in s["text"]
        )

        # the selection's histogram of component a, over the corpus's bars (numpy's bins)
        used = np.flatnonzero(open_stats(default_stats_path(store))["hist"].values[a])
        ours = np.histogram(z[expected, a], bins=edges)[0][used[0] : used[-1] + 1].tolist()
        selection_shows(page, f"the histogram {ours} of component {a}", lambda s: s["histogram"] == ours, a)
        page.wait_for_selector("img[alt='decoded mean']", timeout=30_000)
        assert page.locator("img[data-strip='sample']").count() == min(count, 12)  # the seeded sample

        # the components that set it apart, by numpy's standardized mean difference; a click shows
        # the first against the second
        chosen, rest = z[expected], z[~expected]
        squares = ((chosen - chosen.mean(0)) ** 2).sum(0) + ((rest - rest.mean(0)) ** 2).sum(0)
        smd = np.abs(chosen.mean(0) - rest.mean(0)) / np.sqrt(squares / (n - 2))
        smd[[a, b]] = -1
        j1, j2 = (int(j) for j in np.argsort(-smd)[:2])
        page.get_by_role("button", name=re.compile(f"^latent {j1}: ")).click()
        shows(page, f"the pair ({j1}, {j2})", lambda s: (s["a"], s["b"]) == (j1, j2))

        # export: selection-faces.zarr beside the server, numpy's mask
        page.evaluate(SET_WIDGET, ["name", "faces"])
        page.get_by_role("button", name="Export").click()
        selection_shows(page, "the export", lambda s: f"wrote {count:,} rows" in s["wrote"])
        page.screenshot(path=str(tmp_path / "selected.png"))
        browser.close()
    valid = np.asarray(zarr.open_array(str(store / "valid"), mode="r")[...], dtype=bool)
    mask = np.asarray(zarr.open_array(str(server.exports / "selection-faces.zarr" / "rows"), mode="r")[...])
    np.testing.assert_array_equal(mask[valid], expected)
    assert not mask[~valid].any()
    assert not remote, f"the page asked for remote resources: {remote}"
    assert not errors, f"browser console errors: {errors}"


#: the linked view's title and the selection's attribute table (its cells, row by row)
LINKED_STATE = """() => {
  if (!window.Bokeh || Bokeh.documents.length === 0) return null;
  const models = [...Bokeh.documents[0].all_models];
  const plot = models.find((m) => m.title?.text?.startsWith("linked view"));
  const said = models.find((m) => typeof m.text === "string" && m.text.includes("highlighted: "))?.text ?? "";
  const table = models.find((m) => typeof m.text === "string" && m.text.includes("whose share differs"));
  const parse = (text) => new DOMParser().parseFromString(text, "text/html");
  // the pane's text is its HTML, escaped once more: parsed twice
  const cells = table === undefined ? [] : [...parse(parse(table.text).body.textContent)
    .querySelectorAll("tbody tr")].map((row) => [...row.querySelectorAll("td")].map((td) => td.textContent));
  const highlighted = said.match(/highlighted: [^;&]*in view/)?.[0] ?? "";
  return {title: plot?.title?.text ?? "", highlighted, attributes: cells};
}"""


def linked_shows(page: Any, what: str, ok: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The linked view's state once ``ok`` holds for it (polled)."""
    deadline = time.monotonic() + 60
    while True:
        state = page.evaluate(LINKED_STATE)
        if state is not None and ok(state):
            return dict(state)
        if time.monotonic() > deadline:
            pytest.fail(f"the page does not show {what}; it shows {state}")
        page.wait_for_timeout(100)


def linked_shown(
    x_label: str, y_label: str, points: int, highlighted: int
) -> Callable[[dict[str, Any]], bool]:
    """Whether the linked view shows the pair and highlights ``highlighted`` rows of ``points``."""
    said = f"highlighted: {highlighted:,} rows of the selection, among {points:,} points in view"
    return lambda s: s["title"] == f"linked view {x_label} × {y_label}" and s["highlighted"] == said


def valid_attributes(store: Path) -> np.ndarray:
    """The attributes of the rows :func:`valid_z` keeps."""
    z = np.asarray(zarr.open_array(str(store / "z"), mode="r")[...], dtype=np.float64)
    valid = np.asarray(zarr.open_array(str(store / "valid"), mode="r")[...], dtype=bool)
    attributes = np.asarray(zarr.open_array(str(store / "attributes"), mode="r")[...])
    return attributes[valid & np.isfinite(z).all(axis=1)]


@pytest.mark.browser
def test_linked_view_and_attributes_in_headless_chromium(server: Served, store: Path, tmp_path: Path) -> None:
    """A box drawn in the left view: the linked view highlights numpy's count of its rows, in another
    pair, in a pair picked on the heatmap and in the principal axes; the attribute table is numpy's."""
    from playwright.sync_api import sync_playwright

    needs_chromium()
    z = valid_z(store)
    n = len(z)
    attributes = valid_attributes(store)
    names = [str(v) for v in zarr.open_array(str(store / "attribute"), mode="r")[...]]
    url = server.url
    with sync_playwright() as playwright:
        browser = launch(playwright)
        page, errors, remote = watched_page(browser, url, 1900, 1200)
        page.goto(url, wait_until="networkidle")
        first = shows(page, "the projection", lambda s: s["title"].endswith(f": {n:,} points in view"))
        a, b = first["a"], first["b"]
        start = linked_shows(
            page, "the linked view", lambda s: s["highlighted"].startswith("highlighted: 0 rows")
        )
        c, d = (int(v) for v in re.findall(r"latent (\d+)", start["title"]))
        assert {c, d} != {a, b}

        # a box in the left view: the linked view highlights every selected row (all are in its extent)
        x, y = z[:, a], z[:, b]
        box = (*np.quantile(x, [0.1, 0.7]).tolist(), *np.quantile(y, [0.2, 0.9]).tolist())
        expected = box_mask(x, y, box)
        count = int(expected.sum())
        assert 0 < count < n
        page.evaluate(SELECT_BOX, list(box))
        selection_shows(page, "the box's count", lambda s: f"{count:,} of {n:,} rows selected" in s["text"])
        linked_shows(
            page, f"({c}, {d}) highlighting {count}", linked_shown(f"latent {c}", f"latent {d}", n, count)
        )

        # the attributes whose share differs most, with numpy's shares
        chosen, corpus = attribute_shares(attributes, expected, np.ones(n, dtype=bool))
        order = np.argsort(-np.abs(chosen - corpus), kind="stable")[:8]
        table = [
            [names[j], f"{chosen[j]:.1%}", f"{corpus[j]:.1%}", f"{100 * (chosen[j] - corpus[j]):+.1f} pt"]
            for j in order
        ]
        linked_shows(page, f"the attribute table {table}", lambda s: s["attributes"] == table)

        # clicks show the pair in the right view: the least correlated pair, picked on the heatmap
        r = np.abs(np.corrcoef(z.T)) + np.eye(z.shape[1])
        p, q = (int(k) for k in np.unravel_index(np.argmin(r), r.shape))
        page.get_by_text("right view", exact=True).click()
        # a click sent before the server has the choice goes to the left view, as it would for a
        # person clicking within milliseconds: the page says when the server has it
        page.get_by_text(CLICKS_SHOW["right"]).wait_for()
        page.mouse.click(*page.evaluate(HEATMAP_CELL, [p, q]))
        linked_shows(
            page, f"({p}, {q}) highlighting {count}", linked_shown(f"latent {p}", f"latent {q}", n, count)
        )
        shows(page, "the left view unchanged", lambda s: (s["a"], s["b"]) == (a, b))

        # principal axes: the selected rows within ±5 sd of PC 1 and PC 2
        eigenvalues, vectors = np.linalg.eigh(np.cov(z.T))
        top = np.argsort(eigenvalues)[::-1][:2]
        inside = (
            np.abs((z - z.mean(axis=0)) @ vectors[:, top]) <= PC_SPREAD * np.sqrt(eigenvalues[top])
        ).all(1)
        page.get_by_text("principal axes", exact=True).click()
        shown = linked_shown("PC 1", "PC 2", int(inside.sum()), int((inside & expected).sum()))
        linked_shows(page, "the principal axes", shown)
        page.screenshot(path=str(tmp_path / "linked.png"))
        browser.close()
    assert not remote, f"the page asked for remote resources: {remote}"
    assert not errors, f"browser console errors: {errors}"


@pytest.mark.browser
def test_file_names_are_shown_as_text(hostile_store: Path, tmp_path: Path) -> None:
    """A file name built to close the alt attribute and add a handler runs no script and reads as written."""
    from playwright.sync_api import expect, sync_playwright

    errors: list[str] = []
    dialogs: list[str] = []
    with serving(hostile_store, tmp_path) as url, sync_playwright() as playwright:
        browser = launch(playwright)
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.goto(url, wait_until="networkidle")
        shows(page, "the projection", lambda s: s["title"].endswith(" points in view"))
        projection = page.locator("canvas").first.bounding_box()
        assert projection is not None
        page.mouse.click(
            projection["x"] + 0.4 * projection["width"], projection["y"] + 0.45 * projection["height"]
        )
        page.wait_for_selector("img[alt='decoded']", timeout=30_000)
        for image in page.locator("img").all():  # an image is complete once its load event has run
            expect(image).to_have_js_property("complete", True)
        captions = page.locator("figcaption").all_text_contents()
        alts = page.locator("img").evaluate_all("images => images.map(i => i.alt)")
        handlers = page.locator("img").evaluate_all(
            "images => images.flatMap(i => i.getAttributeNames().filter(n => n.startsWith('on')))"
        )
        page.screenshot(path=str(tmp_path / "clicked.png"))
        browser.close()
    assert not dialogs, f"the file name ran script: {dialogs}"
    assert not handlers and not errors, (handlers, errors)
    assert HOSTILE in captions  # all six images are the nearest: the name is there, letter for letter
    assert HOSTILE in alts


def screenshot_selection(store: Path, out: Path, folder: Path, url: str | None = None) -> list[str]:
    """The README's picture (docs/selection.png): ``latentdask serve STORE`` in ``folder`` (or the
    server at ``url``, serving it), the image
    under the cursor at the pair's median point kept by a click, a box drawn in the strongest pair's
    upper right, the linked view in the principal axes, the thumbnails over dense regions on, the
    page saved as a 256-colour PNG once all of them are shown; the browser's console errors.

    Run it as ``python -m tests.test_dashboard STORE OUT`` from the repository's root.
    """
    from PIL import Image
    from playwright.sync_api import sync_playwright

    z = valid_z(store)
    errors: list[str] = []
    with (
        contextlib.nullcontext(url) if url else serving(store, folder) as url,
        sync_playwright() as playwright,
    ):
        browser = launch(playwright)
        page = browser.new_page(viewport={"width": 1780, "height": 1130})
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(url, wait_until="networkidle")
        first = shows(page, "the projection", lambda s: s["title"].endswith(f": {len(z):,} points in view"))
        x, y = z[:, first["a"]], z[:, first["b"]]
        page.mouse.click(*page.evaluate(PROJECTION_POINT, [float(np.median(x)), float(np.median(y))]))
        page.wait_for_selector("img[data-strip='kept']", timeout=60_000)
        box = (*np.quantile(x, [0.55, 0.995]).tolist(), *np.quantile(y, [0.45, 0.995]).tolist())
        page.evaluate(SELECT_BOX, list(box))
        selection_shows(page, "the selection", lambda s: "rows selected" in s["text"])
        page.get_by_text("principal axes", exact=True).click()
        linked_shows(
            page,
            "the highlighted rows in the principal axes",
            lambda s: (
                s["title"] == "linked view PC 1 × PC 2" and not s["highlighted"].startswith("highlighted: 0 ")
            ),
        )
        if zarr.open_group(str(store), mode="r").attrs.get("model_path"):  # the decoded mean shows
            page.wait_for_selector("img[alt='decoded mean']", timeout=60_000)
        page.get_by_label(THUMBNAILS_TOGGLE).check()
        images_show(page, "thumbnails over the projection", lambda s: s["opaque"] > 0)
        page.wait_for_load_state("networkidle")
        shot = Image.open(io.BytesIO(page.screenshot(full_page=True)))
        browser.close()
    shot.convert("RGB").quantize(256).save(out, optimize=True)
    return errors


@pytest.mark.browser
def test_screenshot_helper(server: Served, store: Path, tmp_path: Path) -> None:
    """The helper that makes the README's picture still runs: a PNG under 300 kB, no console errors."""
    out = tmp_path / "selection.png"
    assert screenshot_selection(store, out, tmp_path, server.url) == []
    assert 0 < out.stat().st_size < 300_000


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m tests.test_dashboard STORE OUT.png")
    with tempfile.TemporaryDirectory() as folder:
        found = screenshot_selection(Path(sys.argv[1]), Path(sys.argv[2]), Path(folder))
    print(f"wrote {sys.argv[2]}" + (f"; console errors: {found}" if found else ""))
