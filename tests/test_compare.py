"""``latentdask compare``: two latent spaces, every figure against numpy, scipy and scikit-learn."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import dask
import numpy as np
import pytest
import zarr
from scipy.stats import ortho_group
from sklearn.cross_decomposition import CCA
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score

from latentdask.data.manifest import Manifest
from latentdask.errors import StatsError
from latentdask.stats.compare import (
    compare,
    compare_finalize,
    compare_graph,
    joint_chunk,
    joint_combine,
    match_rows,
)
from latentdask.store.integrity import shard_checksums
from latentdask.store.layout import CHECKSUM_ARRAY, CHECKSUM_COLUMNS, create_store
from latentdask.store.points import open_zpoints
from tests.helpers import run_cli


def related(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A (n, 5) off-centre and correlated; B (n, 4) partly a linear image of A, partly noise."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, 5)) @ rng.normal(size=(5, 5)) + rng.normal(3, 1, size=5)
    b = a[:, :3] @ rng.normal(size=(3, 4)) + rng.normal(size=(n, 4)) * [0.5, 1, 2, 4] - 7
    return a, b


def cka_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al.'s linear CKA on the centred data itself: ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F)."""
    x, y = x - x.mean(axis=0), y - y.mean(axis=0)
    return float(np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def canonical_reference(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Björck and Golub: the singular values of Q_xᵀ Q_y (Q: orthonormal bases of the centred blocks)."""
    qx, _ = np.linalg.qr(x - x.mean(axis=0))
    qy, _ = np.linalg.qr(y - y.mean(axis=0))
    return np.linalg.svd(qx.T @ qy, compute_uv=False)


def of_blocks(a: np.ndarray, b: np.ndarray, sizes: list[int]) -> dict:
    """The in-memory path: chunk per block of rows, combine, finalize."""
    starts = np.cumsum([0, *sizes])
    states = [joint_chunk(a[s:e], b[s:e]) for s, e in pairwise(starts)]
    return compare_finalize(joint_combine(states), a.shape[1])


def check_against_references(result: dict, a: np.ndarray, b: np.ndarray) -> None:
    assert result["rows"] == len(a)
    assert result["linear_cka"] == pytest.approx(cka_reference(a, b), rel=1e-10)
    np.testing.assert_allclose(result["canonical_correlations"], canonical_reference(a, b), atol=1e-10)
    fit = LinearRegression().fit(a, b)
    np.testing.assert_allclose(
        result["r2"], r2_score(b, fit.predict(a), multioutput="raw_values"), atol=1e-10
    )
    np.testing.assert_allclose(result["linear_map"]["weights"], fit.coef_.T, atol=1e-9)
    np.testing.assert_allclose(result["linear_map"]["intercept"], fit.intercept_, atol=1e-8)


def test_figures_equal_numpy_scipy_and_sklearn_in_any_chunking() -> None:
    a, b = related(300)
    result = of_blocks(a, b, [300])
    check_against_references(result, a, b)
    assert 0.2 < result["linear_cka"] < 0.9  # related, not the same
    assert list(result["canonical_correlations"]) == sorted(result["canonical_correlations"], reverse=True)
    assert result["ridge"] == {"a": None, "b": None} and result["notes"] == []
    cca = CCA(n_components=2, max_iter=10_000, tol=1e-14).fit(a, b)
    u, v = cca.transform(a, b)
    first_two = [np.corrcoef(u[:, k], v[:, k])[0, 1] for k in range(2)]
    np.testing.assert_allclose(result["canonical_correlations"][:2], first_two, rtol=1e-6)
    # any blocks (an empty one too) and data far from the origin give the same figures
    check_against_references(of_blocks(a, b, [7, 0, 150, 1, 142]), a, b)
    shifted = of_blocks(a + 1e3, b - 1e3, [100, 200])
    assert shifted["linear_cka"] == pytest.approx(result["linear_cka"], rel=1e-9)
    np.testing.assert_allclose(shifted["canonical_correlations"], result["canonical_correlations"], atol=1e-9)
    np.testing.assert_allclose(shifted["r2"], result["r2"], atol=1e-9)


def test_a_rotated_copy_is_the_same_space(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(3000, 8)) * np.linspace(0.5, 3, 8) + 2
    b = a @ ortho_group.rvs(8, random_state=2) + rng.normal(scale=0.01, size=a.shape)
    b[17] = np.nan  # a non-finite row is left out, and counted
    for name, values in (("a", a), ("b", b)):
        zarr.create_array(str(tmp_path / f"{name}.zarr"), data=values.astype(np.float32), chunks=(700, 8))
    result = compare(tmp_path / "a.zarr", tmp_path / "b.zarr")
    assert result["linear_cka"] > 0.9999
    assert np.min(result["canonical_correlations"]) > 0.999 and np.min(result["r2"]) > 0.999
    assert result["rows"] == 2999 and result["left_out"] == {"invalid": 0, "nonfinite": 1}
    assert result["matching"] == {
        "by": "row",
        "rows_a": 3000,
        "rows_b": 3000,
        "matched": 3000,
        "selection": "all rows",
    }


def test_independent_spaces_have_cka_near_zero_shrinking_with_n() -> None:
    rng = np.random.default_rng(3)
    cka = {}
    for n in (500, 8000):
        a, b = rng.normal(size=(n, 6)), rng.normal(size=(n, 5))
        result = of_blocks(a, b, [n // 2, n - n // 2])
        check_against_references(result, a, b)
        cka[n] = result["linear_cka"]
        assert np.max(result["r2"]) < 20 / n  # E[R²] = p / (n - 1)
    # E[CKA] ≈ √(p q) / n for independent spaces: 0.011 at n = 500, 16 times less at n = 8000
    assert cka[8000] < cka[500] / 5 < 0.01


def test_a_space_that_never_varies_in_one_component_is_regularised_and_says_so() -> None:
    a, b = related(400, seed=4)
    b[:, 2] = 5.0  # a dead component of B
    result = of_blocks(a, b, [400])
    assert result["ridge"]["a"] is None and result["ridge"]["b"] > 0
    assert len(result["notes"]) == 1 and "C_BB is singular" in result["notes"][0]
    varying = np.delete(b, 2, axis=1)
    np.testing.assert_allclose(
        result["canonical_correlations"][:3], canonical_reference(a, varying), rtol=1e-4
    )
    assert result["canonical_correlations"][3] < 1e-6
    assert np.isnan(result["r2"][2])
    assert result["linear_cka"] == pytest.approx(cka_reference(a, varying), rel=1e-10)


def latent_store(path: Path, names: list[str], z: np.ndarray, valid: np.ndarray, *, shard_size: int) -> Path:
    """A finished latent store of ``z`` for images ``names`` (invalid rows NaN, as encode leaves them)."""
    n, dim = z.shape
    manifest = Manifest(
        names=np.array(names),
        index=np.arange(n),
        split=np.zeros(n, np.int8),
        attributes=np.zeros((n, 0), np.int8),
        attribute_names=(),
        present=np.ones(n, bool),
    )
    metadata = {"model_sha256": "test", "manifest_sha256": manifest.sha256, "preprocessing": {}}
    group = create_store(path, manifest, latent_dim=dim, shard_size=shard_size, metadata=metadata)
    values = {
        "z": np.where(valid[:, None], z, np.nan).astype(np.float32),
        "valid": valid,
        "error": np.where(valid, "", "not an image"),
        "crop": np.full(n, "none"),
    }
    for name, column in values.items():
        group[name][:] = column  # type: ignore[index]
    for shard in manifest.shards(shard_size):
        rows = {name: column[shard.start : shard.stop] for name, column in values.items()}
        group[CHECKSUM_ARRAY][shard.number] = shard_checksums(rows, CHECKSUM_COLUMNS)  # type: ignore[index]
        group["shard_done"][shard.number] = True  # type: ignore[index]
    return path


@pytest.fixture(scope="module")
def two_stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """Store A: 120 images; store B: 90 of them in another order and 20 of its own, invalid rows in both.

    Also returns the z-points of the images valid in both, A's and B's, in A's order.
    """
    rng = np.random.default_rng(5)
    folder = tmp_path_factory.mktemp("compare")
    names = [f"{i:06d}.jpg" for i in range(1, 141)]
    za = (rng.normal(size=(120, 6)) * [1, 2, 0.5, 1, 3, 1]).astype(np.float32)
    valid_a = np.ones(120, bool)
    valid_a[[3, 50, 51, 119]] = False
    shared = rng.permutation(120)[:90]  # rows of A that B holds too, in B's order
    zb = np.concatenate([za[shared] @ rng.normal(size=(6, 4)), rng.normal(size=(20, 4))])
    zb = (zb + rng.normal(scale=0.3, size=zb.shape)).astype(np.float32)
    valid_b = np.ones(110, bool)
    valid_b[[0, 10, 100]] = False
    b_names = [names[i] for i in shared] + names[120:]
    order = rng.permutation(110)
    store_a = latent_store(folder / "a.zarr", names[:120], za, valid_a, shard_size=40)
    store_b = latent_store(
        folder / "b.zarr", [b_names[i] for i in order], zb[order], valid_b[order], shard_size=25
    )
    both = np.sort(shared[valid_a[shared] & valid_b[:90]])
    position = {row: k for k, row in enumerate(shared)}
    return store_a, store_b, za[both], zb[[position[row] for row in both]]


def test_rows_are_matched_by_file_name(two_stores: tuple[Path, Path, np.ndarray, np.ndarray]) -> None:
    store_a, store_b, a, b = two_stores
    result = compare(store_a, store_b)
    check_against_references(result, a.astype(np.float64), b.astype(np.float64))
    assert result["matching"] == {
        "by": "filename",
        "rows_a": 120,
        "rows_b": 110,
        "matched": 90,
        "selection": "valid rows",
    }
    assert result["left_out"]["invalid"] == 90 - len(a) > 0
    assert result["linear_cka"] > 0.5
    backwards = compare(store_b, store_a)  # the same rows; CKA and the correlations are symmetric
    assert backwards["rows"] == len(a) and backwards["linear_cka"] == pytest.approx(result["linear_cka"])
    np.testing.assert_allclose(
        backwards["canonical_correlations"], result["canonical_correlations"], atol=1e-10
    )


def test_rows_that_cannot_be_matched_are_refused(tmp_path: Path) -> None:
    zarr.create_array(str(tmp_path / "a.zarr"), data=np.ones((10, 3), np.float32))
    zarr.create_array(str(tmp_path / "b.zarr"), data=np.ones((12, 3), np.float32))
    with pytest.raises(StatsError, match=r"a.zarr has 10 rows and .*b.zarr 12: rows are matched by number"):
        compare(tmp_path / "a.zarr", tmp_path / "b.zarr")
    z, valid = np.ones((4, 2)), np.ones(4, bool)
    latent_store(tmp_path / "x.zarr", ["1.jpg", "2.jpg", "3.jpg", "4.jpg"], z, valid, shard_size=4)
    latent_store(tmp_path / "y.zarr", ["5.jpg", "6.jpg", "7.jpg", "8.jpg"], z, valid, shard_size=4)
    with pytest.raises(StatsError, match=r"no file name of .*x.zarr is in .*y.zarr"):
        compare(tmp_path / "x.zarr", tmp_path / "y.zarr")


class ComputeForbidden(Exception):
    pass


def forbid(*args: object, **kwargs: object) -> None:
    raise ComputeForbidden("something computed while the graph was built")


def test_building_the_graph_computes_nothing(two_stores: tuple[Path, Path, np.ndarray, np.ndarray]) -> None:
    store_a, store_b, _, _ = two_stores
    with dask.config.set(scheduler=forbid):
        matched = match_rows(open_zpoints(store_a), open_zpoints(store_b), split="fit")
        graph = compare_graph(matched)
        with pytest.raises(ComputeForbidden):
            graph.compute()
    names = {str(key).rsplit("-", 1)[0] for key in dict(graph.dask)}
    assert {"compare_chunk", "compare_combine-0-0"} <= names  # readable task names


def test_cli_on_a_local_cluster(
    tmp_path: Path, two_stores: tuple[Path, Path, np.ndarray, np.ndarray]
) -> None:
    store_a, store_b, a, _ = two_stores
    spec = tmp_path / "one.yaml"
    spec.write_text("kind: local\nworkers: 1\n")
    out = tmp_path / "compare.json"
    result = run_cli("compare", str(store_a), str(store_b), "--out", str(out), "--cluster", str(spec))
    assert result.returncode == 0, result.stderr
    written = json.loads(out.read_text())
    expected = compare(store_a, store_b)
    assert written["latentdask"]["kind"] == "compare" and written["rows"] == len(a)
    assert written["linear_cka"] == pytest.approx(expected["linear_cka"], rel=1e-12)
    np.testing.assert_allclose(
        written["canonical_correlations"], expected["canonical_correlations"], atol=1e-12
    )
    np.testing.assert_allclose(written["r2"], expected["r2"], atol=1e-12)
    assert np.shape(written["linear_map"]["weights"]) == (6, 4) and written["matching"]["by"] == "filename"
    assert f"linear CKA               {expected['linear_cka']:.4f}" in result.stdout
    said = " ".join(result.stderr.split())
    assert f"compared {len(a)} z-points (matched by filename: 90 of 120 and 110 rows; valid rows)" in said
    # someone else's file is refused before any computing, as one line
    (tmp_path / "notes.json").write_text("{}")
    refused = run_cli("compare", str(store_a), str(store_b), "--out", str(tmp_path / "notes.json"))
    assert refused.returncode == 2 and "not a latentdask output" in refused.stderr
    assert "Traceback" not in refused.stderr
