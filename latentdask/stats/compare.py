"""Two latent spaces compared: linear CKA, canonical correlations, the least-squares map A → B.

Every figure comes from one pass over the matched rows (through :mod:`latentdask.reduction`)
whose state is the joint co-moments of ``[z_A, z_B]``: the float64 moments the summary merges
(:func:`~latentdask.stats.kernels.moments_combine`, Chan/Pébay), so the pass is exact however the
rows are split into blocks. With C the joint covariance, split into C_AA (p × p), C_BB (q × q)
and C_AB (p × q):

1. linear CKA (Kornblith et al., ICML 2019) = ‖C_AB‖²_F / (‖C_AA‖_F ‖C_BB‖_F), features centred;
2. the canonical correlations: the singular values of C_AA^-½ C_AB C_BB^-½, descending
   (min(p, q) of them). A singular block (a component that never varies, fewer rows than
   components, one space a linear image of a smaller one) gets a ridge of :data:`RIDGE` × its
   mean variance on its diagonal, and the result says so in ``notes``;
3. the least-squares map B ≈ A W + b with W = C_AA⁺ C_AB (the minimum-norm solution where C_AA is
   singular) and b = μ_B − μ_A W, and R² of each component j of B: (C_BA W)_jj / (C_BB)_jj.

Rows: two latent stores are matched by file name — rows valid in both, in any order, and either
store may hold names the other lacks; any other pair of (n, N) arrays is matched by row number and
must have the same n. ``split`` and ``where`` choose rows of store A.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any, NamedTuple

import dask.array as da
import numpy as np
import zarr
from dask.delayed import Delayed

from latentdask.cluster.watch import compute
from latentdask.errors import StatsError
from latentdask.location import Location, Where
from latentdask.output import write_json
from latentdask.reduction import reduce_blocks, row_blocks
from latentdask.stats.kernels import Moments, moments_combine
from latentdask.stats.scan import finite_rows, moments_chunk
from latentdask.stats.summary import select_rows
from latentdask.store.points import ZPoints, open_zpoints
from latentdask.store.rows import selection_mask

#: the kind of output compare.json is, in its ``latentdask`` record
COMPARE_KIND = "compare"
#: a covariance block is singular when its smallest eigenvalue is below this share of its largest
SINGULAR = 1e-10
#: the ridge added to a singular block's diagonal, as a share of its mean variance
RIDGE = 1e-6


class Joint(NamedTuple):
    """The joint co-moments of the rows kept, and the matched rows left out and why."""

    moments: Moments  # of [z_A, z_B]: p + q components
    invalid: int  # selected rows not valid in both stores
    nonfinite: int  # selected rows valid in both, with a NaN or infinity in either


def joint_chunk(
    za: np.ndarray,
    zb: np.ndarray,
    valid_a: np.ndarray | None = None,
    valid_b: np.ndarray | None = None,
    selected: np.ndarray | None = None,
) -> Joint:
    """The state of one block of matched rows (row i of ``za`` is the same image as row i of ``zb``)."""
    za, zb = np.asarray(za), np.asarray(zb)
    valid = valid_a if valid_b is None else valid_b if valid_a is None else valid_a & valid_b
    keep, invalid, nonfinite = select_rows(za, valid, selected)
    finite_b = finite_rows(zb)
    nonfinite += int((keep & ~finite_b).sum())
    keep &= finite_b
    joint = np.hstack([za[keep].astype(np.float64), zb[keep].astype(np.float64)])
    return Joint(moments_chunk(joint), invalid, nonfinite)


def joint_combine(states: Sequence[Joint]) -> Joint:
    """Merge any number of states (associative; a state of zero rows is neutral)."""
    return Joint(
        moments_combine([s.moments for s in states]),
        sum(s.invalid for s in states),
        sum(s.nonfinite for s in states),
    )


def _blocks(state: Joint, dim_a: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """C_AA, C_BB and C_AB of the state, refused where they cannot be used."""
    m = state.moments
    if m.n < 2:
        raise StatsError(f"{m.n} matched row(s) valid in both: at least 2 are needed to compare")
    if not np.isfinite(m.m2).all():
        raise StatsError("the co-moments overflow float64: z-points this large need rescaling first")
    cov = m.m2 / (m.n - 1)
    caa, cbb, cab = cov[:dim_a, :dim_a], cov[dim_a:, dim_a:], cov[:dim_a, dim_a:]
    for name, block in (("A", caa), ("B", cbb)):
        if not np.trace(block) > 0:
            raise StatsError(f"the z-points of {name} do not vary over the matched rows: nothing to compare")
    return caa, cbb, cab


def linear_cka(caa: np.ndarray, cbb: np.ndarray, cab: np.ndarray) -> float:
    """‖C_AB‖²_F / (‖C_AA‖_F ‖C_BB‖_F): 1 for spaces equal up to rotation and scale, near 0 when unrelated."""
    return float(np.sum(cab * cab) / (np.linalg.norm(caa) * np.linalg.norm(cbb)))


def _inverse_sqrt(cov: np.ndarray, name: str) -> tuple[np.ndarray, float | None, str | None]:
    """C^-½, with the ridge added when C is singular (None when it is not) and a note saying so."""
    values, vectors = np.linalg.eigh(cov)
    ridge, note = None, None
    if values[0] <= SINGULAR * values[-1]:
        ridge = RIDGE * float(np.trace(cov)) / len(cov)
        note = (
            f"C_{name}{name} is singular (eigenvalues {values[0]:.3g} … {values[-1]:.3g}): the canonical "
            f"correlations add {ridge:.3g} ({RIDGE:g} × its mean variance) to its diagonal"
        )
        values = np.maximum(values, 0.0) + ridge
    return (vectors / np.sqrt(values)) @ vectors.T, ridge, note


def compare_finalize(state: Joint, dim_a: int) -> dict[str, Any]:
    """Every figure of the comparison from the merged state of the pass (``dim_a``: p, the width of A)."""
    caa, cbb, cab = _blocks(state, dim_a)
    wa, ridge_a, note_a = _inverse_sqrt(caa, "A")
    wb, ridge_b, note_b = _inverse_sqrt(cbb, "B")
    # singular values are ≤ 1 in exact arithmetic; rounding may add an ulp
    canonical = np.minimum(np.linalg.svd(wa @ cab @ wb, compute_uv=False), 1.0)
    weights = np.linalg.lstsq(caa, cab, rcond=None)[0]
    mean = state.moments.mean
    variance = np.diag(cbb)
    with np.errstate(invalid="ignore", divide="ignore"):  # a component of B that never varies: R² NaN
        r2 = np.where(variance > 0, np.einsum("ij,ij->j", cab, weights) / variance, np.nan)
    return {
        "linear_cka": linear_cka(caa, cbb, cab),
        "canonical_correlations": canonical,
        "r2": r2,
        "linear_map": {"weights": weights, "intercept": mean[dim_a:] - mean[:dim_a] @ weights},
        "rows": state.moments.n,
        "dims": {"a": dim_a, "b": len(mean) - dim_a},
        "left_out": {"invalid": state.invalid, "nonfinite": state.nonfinite},
        "ridge": {"a": ridge_a, "b": ridge_b},
        "notes": [note for note in (note_a, note_b) if note],
    }


@dataclass(frozen=True)
class Matched:
    """The rows of A and B paired (row i of ``za`` and ``zb`` are one image), lazily, and how."""

    za: da.Array
    zb: da.Array
    valid_a: da.Array | None
    valid_b: da.Array | None
    selected: da.Array | None
    matching: dict[str, Any]


def _filenames(points: ZPoints) -> np.ndarray:
    names = np.asarray(zarr.open_group(str(points.path), mode="r")["filename"][:])  # type: ignore[index]
    if np.unique(names).size != names.size:
        raise StatsError(f"{points.path}: some file names repeat, so its rows cannot be matched by name")
    return names


def _take(values: da.Array | None, rows: np.ndarray) -> da.Array | None:
    """``values[rows]`` (None stays None; all rows in order stay as they are)."""
    if values is None or (len(rows) == values.shape[0] and np.array_equal(rows, np.arange(len(rows)))):
        return values
    return values[rows]


def match_rows(a: ZPoints, b: ZPoints, *, split: str = "all", where: Sequence[str] = ()) -> Matched:
    """Pair the rows of ``a`` and ``b``: by file name for two latent stores, else by row number.

    Only metadata is read (the file names); validity and the selection stay lazy.
    """
    selected, selection = selection_mask(a, split, where)
    n_a, n_b = a.z.shape[0], b.z.shape[0]
    if a.shard_size is not None and b.shard_size is not None:
        _, rows_a, rows_b = np.intersect1d(
            _filenames(a), _filenames(b), assume_unique=True, return_indices=True
        )
        order = np.argsort(rows_a)  # the rows of A in order: A's blocks are read as they lie
        rows_a, rows_b = rows_a[order], rows_b[order]
        if not len(rows_a):
            raise StatsError(f"no file name of {a.path} is in {b.path}: no rows to compare")
        by = "filename"
    elif n_a != n_b:
        raise StatsError(
            f"{a.path} has {n_a:,} rows and {b.path} {n_b:,}: rows are matched by number unless both "
            "are latent stores (matched by file name), so they must have as many"
        )
    else:
        rows_a = rows_b = np.arange(n_a)
        by = "row"
    za, zb = _take(a.z, rows_a), _take(b.z, rows_b)
    assert za is not None and zb is not None
    return Matched(
        za,
        zb,
        _take(a.valid, rows_a),
        _take(b.valid, rows_b),
        _take(selected, rows_a),
        {"by": by, "rows_a": n_a, "rows_b": n_b, "matched": len(rows_a), "selection": selection},
    )


def compare_graph(matched: Matched) -> Delayed:
    """The delayed :class:`Joint` state of all matched rows; building it computes nothing."""
    blocks = row_blocks(matched.za, matched.zb, matched.valid_a, matched.valid_b, matched.selected)
    return reduce_blocks(blocks, chunk=joint_chunk, combine=joint_combine, name="compare")


def compare(
    store_a: Where,
    store_b: Where,
    *,
    split: str = "all",
    where: Sequence[str] = (),
    scheduler: Any = None,
) -> dict[str, Any]:
    """Compare the latent spaces of two stores (or any two (n, N) Zarr arrays) in one pass over their rows.

    Parameters
    ----------
    store_a, store_b
        Latent stores (rows matched by file name), or Zarr arrays or groups holding ``z``
        (matched by row number: same n).
    split, where
        Rows of ``store_a`` to use, as ``latentdask stats --split/--where`` chooses them.
    scheduler
        A distributed Client (or any dask scheduler); None takes dask's default.

    Returns
    -------
    dict
        ``linear_cka``, ``canonical_correlations`` (descending), ``r2`` (per component of B),
        ``linear_map`` (``weights`` p × q and ``intercept``: B ≈ A W + b), ``rows`` (used),
        ``matching`` (how rows were paired), ``left_out``, ``ridge`` and ``notes``.

    Examples
    --------
    >>> result = compare("runs/a/latents.zarr", "runs/b/latents.zarr")  # doctest: +SKIP
    >>> result["linear_cka"], result["canonical_correlations"][:4]  # doctest: +SKIP
    """
    a, b = open_zpoints(store_a), open_zpoints(store_b)
    matched = match_rows(a, b, split=split, where=where)
    (state,) = compute(compare_graph(matched), scheduler=scheduler)
    result = compare_finalize(state, a.z.shape[1])
    unfinished = [note for note in (a.unfinished_note(), b.unfinished_note()) if note]
    return result | {
        "stores": {"a": str(store_a), "b": str(store_b)},
        "matching": matched.matching,
        "notes": unfinished + result["notes"],
    }


def cka_matrix(stores: Sequence[Where], *, scheduler: Any = None) -> np.ndarray:
    """Linear CKA between every two of ``stores`` (all valid rows): one comparison per pair, one graph."""
    points = [open_zpoints(store) for store in stores]
    pairs = list(combinations(range(len(points)), 2))
    graphs = [compare_graph(match_rows(points[i], points[j])) for i, j in pairs]
    states = compute(*graphs, scheduler=scheduler)
    matrix = np.eye(len(points))
    for (i, j), state in zip(pairs, states, strict=True):
        matrix[i, j] = matrix[j, i] = linear_cka(*_blocks(state, points[i].z.shape[1]))
    return matrix


def write_compare(result: dict[str, Any], out: Where, *, inputs: Sequence[Where]) -> Location:
    """Write ``compare.json`` (an R² that is not a number, of a component that never varies, as null)."""
    r2 = [float(v) if np.isfinite(v) else None for v in result["r2"]]
    return write_json(out, result | {"r2": r2}, COMPARE_KIND, inputs=inputs)


def format_compare(result: dict[str, Any]) -> str:
    """The headline figures as lines of text."""
    canonical, r2 = result["canonical_correlations"], np.asarray(result["r2"], dtype=float)
    shown = ", ".join(f"{c:.3f}" for c in canonical[:8]) + (", …" if len(canonical) > 8 else "")
    return "\n".join(
        [
            f"linear CKA               {result['linear_cka']:.4f}",
            f"canonical correlations   {shown} (mean {np.mean(canonical):.3f})",
            f"R² of B from A           mean {np.nanmean(r2):.3f}, min {np.nanmin(r2):.3f}",
            f"rows                     {result['rows']:,} (matched by {result['matching']['by']})",
        ]
    )
