"""Statistics against independent references: numpy, scipy, boolean-mask counts."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import scipy.stats
import zarr
from distributed import Client, LocalCluster
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from latentdask.generate.synthetic import synthesize_latents
from latentdask.stats.analysis import peak_and_fwhm
from latentdask.stats.io import StatsError, open_stats, stats_of, write_stats
from latentdask.stats.kernels import moments_combine, slice_population, slices_combine
from latentdask.stats.options import SummaryParams
from latentdask.stats.reduce import summarize
from latentdask.stats.scan import histogram_chunk, moments_chunk, slices_chunk
from latentdask.stats.summary import (
    centred_radius_chunk,
    centred_radius_chunk_torch,
    summary_chunk,
    summary_combine,
)
from latentdask.store.points import open_zpoints

PARAMS = SummaryParams(range=(-8.0, 8.0), bin_width=0.25, thresholds=(1.0, 1.5), radius_max=32.0)


def latent_sample(n: int = 3000, dim: int = 12, seed: int = 0, shift: float = 0.0) -> np.ndarray:
    """Correlated, off-centre, heavy-ish tailed float32 points."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(dim, dim)) * 0.4 + np.eye(dim)
    x = rng.standard_t(6, size=(n, dim)) @ mixing * 0.6 + rng.normal(0, 0.7, dim) + shift
    return x.astype(np.float32)


def slice_reference(x: np.ndarray, t: float) -> np.ndarray:
    """The CelebA study's method: for each pair, a boolean mask over all other components."""
    dim = x.shape[1]
    population = np.zeros((dim, dim), dtype=np.int64)
    for a in range(dim):
        for b in range(a + 1, dim):
            others = [j for j in range(dim) if j not in (a, b)]
            population[a, b] = population[b, a] = (np.abs(x[:, others]) < t).all(axis=1).sum()
    return population


def check_against_references(stats: object, x: np.ndarray, params: SummaryParams = PARAMS) -> None:
    x64 = x.astype(np.float64)
    s = stats  # an xarray Dataset
    assert int(s["count"]) == len(x)  # type: ignore[index]
    np.testing.assert_allclose(s["mean"].values, x64.mean(axis=0), rtol=1e-12, atol=1e-12)  # type: ignore[index]
    np.testing.assert_allclose(s["cov"].values, np.cov(x64.T), rtol=1e-9, atol=1e-12)  # type: ignore[index]
    np.testing.assert_allclose(s["corr"].values, np.corrcoef(x64.T), rtol=1e-9, atol=1e-12)  # type: ignore[index]
    np.testing.assert_allclose(s["skewness"].values, scipy.stats.skew(x64), rtol=1e-8, atol=1e-10)  # type: ignore[index]
    np.testing.assert_allclose(s["kurtosis"].values, scipy.stats.kurtosis(x64), rtol=1e-8, atol=1e-10)  # type: ignore[index]
    np.testing.assert_allclose(s["std"].values, x64.std(axis=0, ddof=1), rtol=1e-10)  # type: ignore[index]
    np.testing.assert_array_equal(s["min"].values, x64.min(axis=0))  # type: ignore[index]
    np.testing.assert_array_equal(s["max"].values, x64.max(axis=0))  # type: ignore[index]
    for j in range(x.shape[1]):
        counts, _ = np.histogram(x[:, j], bins=params.edges)
        np.testing.assert_array_equal(s["hist"].values[j], counts)  # type: ignore[index]
        assert int(s["underflow"][j]) == int((x[:, j] < params.range[0]).sum())  # type: ignore[index]
        assert int(s["overflow"][j]) == int((x[:, j] > params.range[1]).sum())  # type: ignore[index]
    for k, t in enumerate(params.thresholds):
        np.testing.assert_array_equal(s["slice_count"].values[k], slice_reference(x, t))  # type: ignore[index]
        assert int(s["slice_origin_count"][k]) == int((np.abs(x) < t).all(axis=1).sum())  # type: ignore[index]
    radii = np.linalg.norm(x64, axis=1)
    np.testing.assert_array_equal(s["radius_hist"].values, np.histogram(radii, bins=params.radius_edges)[0])  # type: ignore[index]
    assert float(s["radius_mean"]) == pytest.approx(radii.mean(), rel=1e-12)  # type: ignore[index]
    centred = np.linalg.norm(x64 - x64.mean(axis=0), axis=1)
    np.testing.assert_array_equal(
        s["radius_centred_hist"].values, np.histogram(centred, bins=params.radius_edges)[0]
    )  # type: ignore[index]
    eigenvalues = np.linalg.eigh(np.cov(x64.T))[0][::-1]
    np.testing.assert_allclose(s["pca_eigenvalues"].values, eigenvalues, rtol=1e-9)  # type: ignore[index]
    vectors = s["pca_vectors"].values  # type: ignore[index]
    np.testing.assert_allclose(np.cov(x64.T) @ vectors, vectors * eigenvalues, rtol=1e-7, atol=1e-9)


def test_numpy_input_matches_references() -> None:
    x = latent_sample()
    check_against_references(summarize(x, params=PARAMS), x)


def test_far_from_origin_stays_exact() -> None:
    # Centred co-moments: a shift of 1e3 must not cost precision (naive Σx² would).
    x = latent_sample(shift=1e3)
    params = SummaryParams(range=(990.0, 1010.0), bin_width=0.25, thresholds=(1.5,))
    stats = summarize(da.from_array(x, chunks=(101, -1)), params=params)
    np.testing.assert_allclose(stats["cov"].values, np.cov(x.astype(np.float64).T), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(
        stats["kurtosis"].values, scipy.stats.kurtosis(x.astype(np.float64)), rtol=1e-6
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cuts=st.lists(st.integers(min_value=0, max_value=700), min_size=0, max_size=8))
def test_any_chunking_gives_the_same_answer(cuts: list[int]) -> None:
    x = latent_sample(n=700, dim=6, seed=1)
    bounds = sorted([0, 700, *cuts])  # repeated cuts make empty blocks
    chunks = tuple(b - a for a, b in itertools.pairwise(bounds))
    array = da.from_array(x, chunks=(chunks, -1))
    check_against_references(summarize(array, params=PARAMS), x)


def test_combine_is_associative_and_empty_is_neutral() -> None:
    x = latent_sample(n=600, dim=5).astype(np.float64)
    a, b, c = moments_chunk(x[:100]), moments_chunk(x[100:350]), moments_chunk(x[350:])
    empty = moments_chunk(x[:0])
    left = moments_combine([moments_combine([a, b]), c])
    right = moments_combine([a, moments_combine([empty, b, c, empty])])
    for field in ("mean", "m2", "m3", "m4", "min", "max"):
        np.testing.assert_allclose(getattr(left, field), getattr(right, field), rtol=1e-12, atol=1e-12)
    assert left.n == right.n == 600
    s = slices_combine([slices_chunk(x[:200], np.array([1.0])), slices_chunk(x[200:], np.array([1.0]))])
    np.testing.assert_array_equal(slice_population(s)[0], slice_reference(x, 1.0))


def test_histogram_edges_and_overflow_like_numpy() -> None:
    edges = np.linspace(-1, 1, 9)
    x = np.array([[-1.0], [-0.75], [-0.7500001], [0.0], [1.0], [1.0000001], [-2.0], [0.25]])
    h = histogram_chunk(x, edges)
    np.testing.assert_array_equal(h.counts[0], np.histogram(x[:, 0], bins=edges)[0])
    assert (int(h.underflow[0]), int(h.overflow[0])) == (1, 1)


@pytest.mark.parametrize(
    "params",
    [SummaryParams(), SummaryParams(bin_width=0.1, range=(-3.0, 3.0), radius_width=0.3, radius_max=9.0)],
    ids=["default", "edges-not-dyadic"],
)
def test_torch_states_equal_the_numba_scan_on_the_cpu(params: SummaryParams) -> None:
    """An encode task computes its shard's states with torch (no numba in the worker), and so does
    the second pass of its statistics: the same counts as the numba scan and numpy's histogram,
    float32 values on, just beside and outside every edge included (edges of bins whose width a
    float does not hold exactly too); moments to float64 rounding."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    edges = params.edges.astype(np.float32)
    on_edges = np.concatenate(
        [edges, np.nextafter(edges, np.float32(-np.inf)), np.nextafter(edges, np.float32(np.inf))]
    )
    x = rng.normal(scale=1.2, size=(900, 8)).astype(np.float32)
    rows = len(on_edges) // 8
    x[:rows] = on_edges[: rows * 8].reshape(rows, 8)
    x[rows] = [edges[0] - 1, edges[-1] + 1, *x[rows, 2:]]
    radii = params.radius_edges.astype(np.float32)[:6]  # whole radii on bin edges, about 0
    x[rows + 1 : rows + 7] = 0.0
    x[rows + 1 : rows + 7, 0] = radii
    attributes = rng.choice(np.array([-1, 0, 1], np.int8), size=(900, 3))
    keep = rng.random(900) > 0.1
    numba_state = summary_chunk(x, keep, attributes, params=params)
    torch_state = summary_chunk(torch.from_numpy(x), keep, attributes, params=params)
    for exact in ("hist", "slices"):
        for mine, theirs in zip(getattr(torch_state, exact), getattr(numba_state, exact), strict=True):
            np.testing.assert_array_equal(mine, theirs, err_msg=exact)
    for radius, numba_radius in (
        (torch_state.radius, numba_state.radius),
        (
            centred_radius_chunk_torch(x, keep, None, centre=np.zeros(8), params=params),
            centred_radius_chunk(x, keep, None, centre=np.zeros(8), params=params),
        ),
    ):
        np.testing.assert_array_equal(radius.counts, numba_radius.counts)
        assert (radius.underflow, radius.overflow) == (numba_radius.underflow, numba_radius.overflow)
        assert radius.total == pytest.approx(numba_radius.total, rel=1e-12)
    for family in ("moments", "groups"):
        for mine, theirs in zip(getattr(torch_state, family), getattr(numba_state, family), strict=True):
            np.testing.assert_allclose(mine, theirs, rtol=1e-10, atol=1e-12, err_msg=family)
    assert (torch_state.invalid, torch_state.nonfinite) == (numba_state.invalid, numba_state.nonfinite)
    kept = x[keep].astype(np.float64)
    for j in range(8):
        np.testing.assert_array_equal(
            torch_state.hist.counts[j], np.histogram(kept[:, j], bins=params.edges)[0]
        )
    # a shard with no row kept: the neutral state, whose merge with another leaves it as it is
    empty = summary_chunk(torch.from_numpy(x), np.zeros(900, bool), attributes, params=params)
    assert (empty.moments.n, empty.invalid) == (0, 900) and not empty.hist.counts.any()
    merged = summary_combine([empty, torch_state])
    np.testing.assert_array_equal(merged.hist.counts, torch_state.hist.counts)
    np.testing.assert_array_equal(merged.slices.c2, torch_state.slices.c2)
    np.testing.assert_allclose(merged.moments.m2, torch_state.moments.m2)


def test_invalid_nonfinite_and_all_invalid_blocks() -> None:
    x = latent_sample(n=400, dim=4)
    valid = np.ones(400, dtype=bool)
    valid[:100] = False  # the whole first block is invalid
    x[150, 2] = np.nan
    x[151, 0] = np.inf
    stats = summarize(da.from_array(x, chunks=(100, -1)), valid=valid, params=PARAMS)
    kept = x[valid & np.isfinite(x).all(axis=1)]
    assert int(stats["invalid"]) == 100 and int(stats["nonfinite"]) == 2
    check_against_references(stats, kept)


def test_attribute_group_statistics() -> None:
    x = latent_sample(n=900, dim=4).astype(np.float64)
    rng = np.random.default_rng(3)
    attributes = rng.choice(np.array([-1, 1, 0], dtype=np.int8), size=(900, 2), p=[0.5, 0.45, 0.05])
    stats = summarize(
        da.from_array(x, chunks=(250, -1)),
        attributes=attributes,
        attribute_names=["Male", "Young"],
        params=PARAMS,
    )
    for a, name in enumerate(["Male", "Young"]):
        plus, minus = x[attributes[:, a] == 1], x[attributes[:, a] == -1]
        assert stats["attribute_count"].sel(attribute=name).values.tolist() == [len(plus), len(minus)]
        np.testing.assert_allclose(
            stats["attribute_mean"].sel(attribute=name, group=1), plus.mean(axis=0), rtol=1e-12
        )
        np.testing.assert_allclose(
            stats["attribute_std"].sel(attribute=name, group=-1), minus.std(axis=0, ddof=1), rtol=1e-10
        )
        pooled = np.sqrt(
            ((len(plus) - 1) * plus.var(axis=0, ddof=1) + (len(minus) - 1) * minus.var(axis=0, ddof=1))
            / (len(plus) + len(minus) - 2)
        )
        np.testing.assert_allclose(
            stats["attribute_effect"].sel(attribute=name),
            (plus.mean(axis=0) - minus.mean(axis=0)) / pooled,
            rtol=1e-10,
        )


def test_peak_and_fwhm_of_a_known_histogram() -> None:
    edges = np.arange(-4.0, 4.01, 1.0)  # centres -3.5 … 3.5
    counts = np.array([[0, 1, 4, 10, 6, 2, 0, 0]])
    peak, fwhm = peak_and_fwhm(counts, edges)
    # half of 10 is 5: left crossing between -1.5 (4) and -0.5 (10) at -1.5 + 1/6;
    # right crossing between 0.5 (6) and 1.5 (2) at 0.5 + 1/4
    assert peak[0] == -0.5
    assert fwhm[0] == pytest.approx((0.5 + 0.25) - (-1.5 + 1 / 6))
    # a Gaussian's FWHM is 2.3548 σ
    x = np.random.default_rng(0).normal(0.3, 0.8, size=(400_000, 1))
    edges = np.linspace(-4, 4, 129)
    peak, fwhm = peak_and_fwhm(histogram_chunk(x, edges).counts, edges)
    assert peak[0] == pytest.approx(0.3, abs=0.2) and fwhm[0] == pytest.approx(2.3548 * 0.8, rel=0.02)


class ComputeForbidden(Exception):
    pass


def forbid(*args: object, **kwargs: object) -> None:
    raise ComputeForbidden("something computed while the graph was built")


def test_building_the_graph_computes_nothing() -> None:
    from latentdask.stats.reduce import Inputs, centred_radius_graph, summary_graph

    x = da.from_array(latent_sample(n=500, dim=4), chunks=(100, -1))
    valid = da.ones(500, dtype=bool, chunks=100)
    with dask.config.set(scheduler=forbid):
        inputs = Inputs(x, valid=valid)
        graph = summary_graph(inputs.z, valid=inputs.valid, params=PARAMS)
        centred_radius_graph(inputs.z, valid=inputs.valid, selected=None, centre=np.zeros(4), params=PARAMS)
        with pytest.raises(ComputeForbidden):
            graph.compute()
    names = {str(key).rsplit("-", 1)[0] for key in dict(graph.dask)}
    assert {"summary_chunk", "summary_combine-0-0"} <= names  # readable task names


def test_params_are_checked() -> None:
    with pytest.raises(ValueError, match="whole number of bins"):
        SummaryParams(range=(-1.0, 1.0), bin_width=0.3)
    with pytest.raises(ValueError, match="low < high"):
        SummaryParams(range=(1.0, -1.0))


@pytest.fixture(scope="module")
def client() -> object:
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
        ) as cluster,
        Client(cluster) as c,
    ):
        yield c


def test_on_real_worker_processes_from_zarr(client: object, tmp_path: Path) -> None:
    x = latent_sample(n=2500, dim=8, seed=5)
    array = zarr.create_array(str(tmp_path / "points.zarr"), shape=x.shape, chunks=(300, 8), dtype="float32")
    array[:] = x
    points = open_zpoints(tmp_path / "points.zarr")
    stats = stats_of(points, params=PARAMS)
    check_against_references(stats, x)
    figures = write_stats(stats, tmp_path / "stats.zarr", source="points")
    reopened = open_stats(tmp_path / "stats.zarr")
    np.testing.assert_array_equal(reopened["slice_count"].values, stats["slice_count"].values)
    on_disk = json.loads((tmp_path / "stats.json").read_text())
    assert on_disk["count"] == figures["count"] == 2500
    smallest = on_disk["slice_populations"]["1"]["smallest"][0]
    population = slice_reference(x, 1.0)[np.triu_indices(8, 1)]
    assert smallest[2] == population.min()
    ties = on_disk["slice_populations"]["1"]
    assert ties["smallest_ties"] == (population == population.min()).sum()
    assert ties["largest_ties"] == (population == population.max()).sum()
    a, b = np.triu_indices(8, 1)  # ties listed by component at both ends
    for end, order in (
        ("smallest", np.argsort(population, kind="stable")),
        ("largest", np.argsort(-population, kind="stable")),
    ):
        listed = ties[end]
        assert listed == [[int(a[k]), int(b[k]), int(population[k])] for k in order[: len(listed)]], end


def test_synthetic_latents_recover_their_truth(client: object, tmp_path: Path) -> None:
    out = synthesize_latents(tmp_path / "synthetic.zarr", n=60_000, dim=16, seed=2, chunk_rows=7000)
    group = zarr.open_group(str(out), mode="r")
    mean, cov = group["true_mean"][:], group["true_cov"][:]
    stats = stats_of(open_zpoints(out), params=SummaryParams(range=(-16.0, 16.0)))
    n = int(stats["count"])
    assert n == 60_000
    # sampling error: sd of a mean σ/√n, of a covariance entry √((σ_aa σ_bb + σ_ab²)/n); allow 5 sd
    np.testing.assert_array_less(np.abs(stats["mean"].values - mean), 5 * np.sqrt(np.diag(cov) / n))
    sd_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    np.testing.assert_array_less(np.abs(stats["cov"].values - cov), 5 * sd_cov)
    again = synthesize_latents(tmp_path / "again.zarr", n=60_000, dim=16, seed=2, chunk_rows=7000)
    np.testing.assert_array_equal(zarr.open_array(str(again / "z"))[:], zarr.open_array(str(out / "z"))[:])


def test_subsets_of_a_store_and_their_record(
    client: object, faces: Path, checkpoint: Path, tmp_path: Path
) -> None:
    from latentdask.cluster.spec import ClusterChoice
    from latentdask.encode.options import EncodeOptions
    from latentdask.encode.run import encode

    store = tmp_path / "latents.zarr"
    choice = ClusterChoice(scheduler=client.scheduler.address)  # type: ignore[attr-defined]
    encode(
        faces,
        checkpoint,
        store,
        options=EncodeOptions(shard_size=40, stats_params=PARAMS),
        cluster=choice,
        progress=False,
    )
    points = open_zpoints(store)
    z = zarr.open_array(str(store / "z"))[:]
    split = zarr.open_array(str(store / "split"))[:]
    attributes = zarr.open_array(str(store / "attributes"))[:]
    male = points.attribute_names.index("Male")
    subset = stats_of(points, params=PARAMS, split="train", where=["Male=-1"])
    rows = (split == 0) & (attributes[:, male] == -1)
    check_against_references(subset, z[rows])
    assert subset.attrs["selection"] == "valid rows; split=train; Male=-1"
    # the sidecar written by encode equals a later pass over the store
    sidecar = open_stats(tmp_path / "latents-stats.zarr")
    later = stats_of(points, params=PARAMS)
    for name in later.data_vars:
        if later[name].dtype.kind in "iub":
            np.testing.assert_array_equal(sidecar[name].values, later[name].values, err_msg=name)
        else:
            np.testing.assert_allclose(
                sidecar[name].values, later[name].values, rtol=1e-10, atol=1e-12, err_msg=name
            )
    with pytest.raises(StatsError, match="unknown attribute 'Mal'"):
        stats_of(points, params=PARAMS, where=["Mal=1"])
    with pytest.raises(StatsError, match="ATTRIBUTE=1 or ATTRIBUTE=-1"):
        stats_of(points, params=PARAMS, where=["Male"])


def test_resumed_encode_sidecar_equals_later_stats(
    client: object, faces: Path, checkpoint: Path, tmp_path: Path
) -> None:
    from latentdask.cluster.spec import ClusterChoice
    from latentdask.encode.options import EncodeOptions
    from latentdask.encode.run import encode

    store = tmp_path / "latents.zarr"
    choice = ClusterChoice(scheduler=client.scheduler.address)  # type: ignore[attr-defined]
    options = EncodeOptions(shard_size=40, stats_params=PARAMS)
    encode(faces, checkpoint, store, options=options, cluster=choice, progress=False)
    # forget one shard, as if the client had died before it finished
    done = zarr.open_array(str(store / "shard_done"), mode="r+")
    done[1] = False
    summary = encode(
        faces,
        checkpoint,
        store,
        options=options.model_copy(update={"resume": True}),
        cluster=choice,
        progress=False,
    )
    assert summary.shards_run == 1
    sidecar = open_stats(tmp_path / "latents-stats.zarr")
    later = stats_of(open_zpoints(store), params=PARAMS)
    np.testing.assert_array_equal(sidecar["hist"].values, later["hist"].values)
    np.testing.assert_allclose(sidecar["cov"].values, later["cov"].values, rtol=1e-10, atol=1e-12)
    assert int(sidecar["count"]) == 120


def test_resume_with_nothing_to_do_keeps_statistics_that_describe_the_store(
    client: object, faces: Path, checkpoint: Path, tmp_path: Path
) -> None:
    from latentdask.cluster.spec import ClusterChoice
    from latentdask.encode.options import EncodeOptions
    from latentdask.encode.run import encode
    from latentdask.stats.io import FINGERPRINT_ATTR

    store, stats = tmp_path / "latents.zarr", tmp_path / "latents-stats.zarr"
    choice = ClusterChoice(scheduler=client.scheduler.address)  # type: ignore[attr-defined]
    options = EncodeOptions(shard_size=40, stats_params=PARAMS)
    encode(faces, checkpoint, store, options=options, cluster=choice, progress=False)
    written = (stats / "zarr.json").stat().st_mtime_ns
    resume = options.model_copy(update={"resume": True})
    assert encode(faces, checkpoint, store, options=resume, cluster=choice, progress=False).shards_run == 0
    assert (stats / "zarr.json").stat().st_mtime_ns == written  # kept, not computed again
    # statistics of other parameters, or of other values, are computed again from the store
    other = PARAMS.model_copy(update={"thresholds": (2.0,)})
    resume = resume.model_copy(update={"stats_params": other})
    encode(faces, checkpoint, store, options=resume, cluster=choice)
    assert open_stats(stats)["threshold"].values.tolist() == [2.0]
    kept = open_stats(stats).attrs[FINGERPRINT_ATTR]
    written = (stats / "zarr.json").stat().st_mtime_ns
    checksums = zarr.open_array(str(store / "checksum"), mode="r+")
    checksums[0, 0] = int(checksums[0, 0]) ^ 1  # shard 0 no longer matches: encoded again
    summary = encode(faces, checkpoint, store, options=resume, cluster=choice)
    assert summary.shards_run == 1 and (stats / "zarr.json").stat().st_mtime_ns != written
    again = open_stats(stats)
    assert again.attrs[FINGERPRINT_ATTR] == kept  # the same images encode to the same checksums
    later = stats_of(open_zpoints(store), params=other)
    np.testing.assert_array_equal(again["hist"].values, later["hist"].values)
    assert int(again["count"]) == 120


def test_not_z_points(tmp_path: Path) -> None:
    with pytest.raises(StatsError, match="does not exist"):
        open_zpoints(tmp_path / "nothing")
    zarr.create_array(str(tmp_path / "flat.zarr"), shape=(10,), dtype="float32")
    with pytest.raises(StatsError, match="expected \\(n, N\\)"):
        open_zpoints(tmp_path / "flat.zarr")


def test_summary_chunk_is_the_in_memory_answer() -> None:
    x = latent_sample(n=300, dim=4)
    from latentdask.stats.summary import summary_finalize

    direct = summary_finalize(summary_chunk(x, params=PARAMS), PARAMS)
    np.testing.assert_allclose(direct["cov"].values, np.cov(x.astype(np.float64).T), rtol=1e-10)


def test_co_moments_over_several_tiles_equal_numpy() -> None:
    """A block larger than GEMM_ROWS: centred tiles through one buffer, groups per tile."""
    from latentdask.stats.scan import GEMM_ROWS
    from latentdask.stats.summary import summary_finalize

    rows = 2 * GEMM_ROWS + 3_617
    x = latent_sample(n=rows, dim=5, seed=11, shift=100.0)
    rng = np.random.default_rng(4)
    valid = rng.random(rows) > 0.3
    attributes = rng.choice(np.array([-1, 1], dtype=np.int8), size=(rows, 2))
    result = summary_finalize(
        summary_chunk(x, valid, attributes, params=PARAMS), PARAMS, attribute_names=["A", "B"]
    )
    kept = x[valid].astype(np.float64)
    np.testing.assert_allclose(result["cov"].values, np.cov(kept.T), rtol=1e-10)
    for a in range(2):
        for g, value in enumerate((1, -1)):
            group = kept[attributes[valid, a] == value]
            np.testing.assert_allclose(result["attribute_mean"].values[a, g], group.mean(axis=0), rtol=1e-12)
            np.testing.assert_allclose(
                result["attribute_std"].values[a, g], group.std(axis=0, ddof=1), rtol=1e-9
            )


def test_known_states_hold_one_merged_state_and_equal_numpy() -> None:
    """An encode's client merges its shards' states as they arrive: one state, the whole answer."""
    from latentdask.stats.io import KnownStates
    from latentdask.stats.summary import SummaryState, summary_finalize

    x = latent_sample(n=3000, dim=6, shift=5.0)
    known = KnownStates()
    for shard, start in enumerate(range(0, 3000, 250)):
        known.add(shard, summary_chunk(x[start : start + 250], params=PARAMS))
    assert known.shards == set(range(12)) and isinstance(known.state, SummaryState)
    merged = summary_finalize(known.state, PARAMS)
    np.testing.assert_allclose(merged["cov"].values, np.cov(x.astype(np.float64).T), rtol=1e-10)
    np.testing.assert_allclose(merged["mean"].values, x.astype(np.float64).mean(axis=0), rtol=1e-12)
    edges = PARAMS.edges
    for j in range(6):
        np.testing.assert_array_equal(merged["hist"].values[j], np.histogram(x[:, j], bins=edges)[0])


def test_torch_blocks_give_the_numpy_states() -> None:
    # the path a GPU worker takes, checked here on CPU tensors: counts equal, moments to rounding
    import torch

    x = latent_sample(n=2000, dim=10, seed=7)
    x[500, 3] = np.nan
    valid = np.ones(2000, dtype=bool)
    valid[:50] = False
    attributes = np.random.default_rng(1).choice(np.array([-1, 1], dtype=np.int8), size=(2000, 3))
    on_numpy = summary_chunk(x, valid, attributes, params=PARAMS)
    on_torch = summary_chunk(torch.from_numpy(x), valid, attributes, params=PARAMS)
    for family in ("hist", "radius", "slices"):
        for a, b in zip(getattr(on_numpy, family), getattr(on_torch, family), strict=True):
            if isinstance(a, float):
                assert a == pytest.approx(b, rel=1e-12)
            else:
                np.testing.assert_array_equal(a, b)
    for a, b in zip(on_numpy.moments, on_torch.moments, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
    assert (on_numpy.invalid, on_numpy.nonfinite) == (on_torch.invalid, on_torch.nonfinite) == (50, 1)
    np.testing.assert_allclose(on_numpy.groups.mean, on_torch.groups.mean, rtol=1e-10)  # type: ignore[union-attr]


def test_float16_input_and_float64_beyond_float64_squares(client: object, tmp_path: Path) -> None:
    x = latent_sample(n=1200, dim=6, seed=9).astype(np.float16)
    half = zarr.create_array(str(tmp_path / "half.zarr"), shape=x.shape, chunks=(500, 6), dtype="float16")
    half[:] = x
    check_against_references(
        stats_of(open_zpoints(tmp_path / "half.zarr"), params=PARAMS), x.astype(np.float64)
    )
    huge = zarr.create_array(str(tmp_path / "huge.zarr"), shape=(100, 3), chunks=(50, 3), dtype="float64")
    huge[:] = np.random.default_rng(0).normal(size=(100, 3)) * 1e200
    with pytest.raises(StatsError, match="co-moments overflow float64"):
        stats_of(open_zpoints(tmp_path / "huge.zarr"), params=PARAMS)
    ints = zarr.create_array(str(tmp_path / "ints.zarr"), shape=(10, 3), chunks=(5, 3), dtype="int32")
    ints[:] = 1
    with pytest.raises(StatsError, match="holds int32 values; z-points are floating point"):
        open_zpoints(tmp_path / "ints.zarr")
