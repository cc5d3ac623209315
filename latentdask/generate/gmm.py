"""A Gaussian mixture fitted to every z-point of the fit: ex-post density estimation.

Ghosh et al. ("From Variational to Deterministic Autoencoders", ICLR 2020) sample a
deterministic autoencoder's decoder from a Gaussian mixture fitted to its latents. Here the
mixture is fitted over every selected row of a store, on the cluster:

1. **Initialisation**: k-means++ on a seeded sample (``init_sample`` rows), then a few Lloyd
   iterations over every row (each one pass: nearest centre per row, sums and counts per centre),
   then one M-step from the responsibilities of unit Gaussians at those centres.
2. **EM**, each iteration one pass of :mod:`latentdask.reduction`: per block the E-step's
   log-responsibilities (log-sum-exp over the components, in float64) and the M-step's
   sufficient statistics Σr, Σr·x and Σr·(x − μ)(x − μ)ᵀ about the current means (shifted like
   the co-moments, so nothing cancels), merged by addition; the client turns them into weights,
   means and covariances (+ ``reg_covar`` on the diagonal) and stops when the mean
   log-likelihood gains less than ``tol``.
3. A component whose weight falls to zero is dropped, and the fit says so.

``components="auto"`` fits K = 1 … ``max_components`` and keeps the K with the highest mean
log-likelihood of the rows *held out* of the fit (see :mod:`latentdask.store.rows`), recording
the curve (fit and held-out log-likelihood, BIC) in ``GMM.zarr``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr
from scipy.special import logsumexp
from zarr.errors import ZarrUserWarning

from latentdask.cluster.watch import compute
from latentdask.errors import LatentdaskError
from latentdask.generate.options import GMMOptions
from latentdask.location import Location, Where, location
from latentdask.output import owned_output
from latentdask.progress import console
from latentdask.reduction import add_states, reduce_blocks, row_blocks, ship
from latentdask.stats.summary import select_rows
from latentdask.store.points import ZPoints, open_zpoints
from latentdask.store.rows import default_fit_split, selection_mask

#: the kind of output GMM.zarr is, in its ``latentdask`` record
GMM_KIND = "gmm"
LOG_2PI = math.log(2 * math.pi)
#: with components="auto", the rows K is chosen on, for each split fitted
HELD_OUT = {"train": "valid", "fit": "heldout"}


class GMMError(LatentdaskError):
    """A mixture that cannot be fitted or read."""


@dataclass(frozen=True)
class Mixture:
    weights: np.ndarray  # (K,)
    means: np.ndarray  # (K, N)
    covariances: np.ndarray  # (K, N, N); diagonal matrices for covariance="diag"

    @property
    def components(self) -> int:
        return len(self.weights)

    def factors(self) -> tuple[np.ndarray, np.ndarray]:
        """Per component L⁻¹ (Σ = L Lᵀ) and log det Σ."""
        factors = np.linalg.cholesky(self.covariances)
        inverse = np.linalg.inv(factors)
        log_det = 2 * np.log(np.diagonal(factors, axis1=1, axis2=2)).sum(axis=1)
        return inverse, log_det

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        """log w_k + log N(x | μ_k, Σ_k), (n, K) in float64."""
        return _weighted_log_prob(np.asarray(x, dtype=np.float64), self.means, *self.factors(), self.weights)

    def score_samples(self, x: np.ndarray) -> np.ndarray:
        """The log-density of each row under the mixture."""
        return logsumexp(self.log_prob(x), axis=1)

    def sample(self, rng: np.random.Generator, rows: int) -> np.ndarray:
        """``rows`` points of the mixture (a :class:`~latentdask.store.points.BlockSampler`)."""
        counts = rng.multinomial(rows, self.weights / self.weights.sum())
        factors = np.linalg.cholesky(self.covariances)
        parts = [
            self.means[k] + rng.standard_normal((c, self.means.shape[1])) @ factors[k].T
            for k, c in enumerate(counts)
            if c
        ]
        return rng.permutation(np.concatenate(parts))


def _weighted_log_prob(
    x: np.ndarray, means: np.ndarray, inverse: np.ndarray, log_det: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    out = np.empty((len(x), len(means)))
    for k in range(len(means)):
        y = (x - means[k]) @ inverse[k].T
        out[:, k] = -0.5 * (np.einsum("ij,ij->i", y, y) + log_det[k] + x.shape[1] * LOG_2PI)
    with np.errstate(divide="ignore"):
        return out + np.log(weights)


# ---------------------------------------------------------------------------- per-block kernels


def _em_block(block: np.ndarray, keep: np.ndarray | None, mixture: Mixture, diagonal: bool) -> dict[str, Any]:
    x = np.asarray(block)
    rows, _, _ = select_rows(x, None, keep)
    x = x[rows].astype(np.float64)
    weighted = mixture.log_prob(x)
    norm = logsumexp(weighted, axis=1)
    resp = np.exp(weighted - norm[:, None])
    scatter = []
    for k in range(mixture.components):  # about the current means, one (n, N) array at a time
        centred = x - mixture.means[k]
        weighted_rows = centred * resp[:, k : k + 1]
        scatter.append((weighted_rows * centred).sum(axis=0) if diagonal else weighted_rows.T @ centred)
    return {
        "rows": len(x),
        "log_likelihood": float(norm.sum()),
        "resp": resp.sum(axis=0),
        "first": resp.T @ x,
        "scatter": np.asarray(scatter),
    }


def _lloyd_block(block: np.ndarray, keep: np.ndarray | None, centres: np.ndarray) -> dict[str, Any]:
    x = np.asarray(block)
    rows, _, _ = select_rows(x, None, keep)
    x = x[rows].astype(np.float64)
    nearest = (np.einsum("ij,ij->i", x, x)[:, None] - 2 * x @ centres.T + (centres**2).sum(1)).argmin(1)
    sums = np.zeros_like(centres)
    np.add.at(sums, nearest, x)
    return {"counts": np.bincount(nearest, minlength=len(centres)), "sums": sums}


def _log_likelihood_block(block: np.ndarray, keep: np.ndarray | None, mixture: Mixture) -> dict[str, Any]:
    x = np.asarray(block)
    rows, _, _ = select_rows(x, None, keep)
    return {"rows": int(rows.sum()), "log_likelihood": float(mixture.score_samples(x[rows]).sum())}


# ---------------------------------------------------------------------------- the fit


@dataclass
class Fit:
    mixture: Mixture
    log_likelihood: float  # mean per fitted row
    iterations: int
    converged: bool
    rows: int
    notes: list[str] = field(default_factory=list)


class Passes:
    """One pass of a kernel over the selected rows of a store, on the given scheduler."""

    def __init__(self, corpus: ZPoints, keep: Any, scheduler: Any) -> None:
        masks = corpus.valid if keep is None else (keep if corpus.valid is None else corpus.valid & keep)
        self.blocks = row_blocks(corpus.z, masks)
        self.scheduler = scheduler

    def graph(self, kernel: Any, shared: Any, name: str, *extra: Any) -> Any:
        """The pass, a delayed sum of ``kernel(block, keep, shared, *extra)``; built, not computed."""
        blocks = [(*block, shared, *extra) for block in self.blocks]
        return reduce_blocks(blocks, chunk=kernel, combine=add_states, name=name)

    def run(self, kernel: Any, shared: Any, name: str, *extra: Any) -> dict[str, Any]:
        shipped = ship(shared)
        (merged,) = compute(self.graph(kernel, shipped, name, *extra), scheduler=self.scheduler)
        return merged


def kmeans_plus_plus(sample: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii 2007) of ``k`` centres among the sample's rows."""
    centres = [sample[rng.integers(len(sample))]]
    nearest = ((sample - centres[0]) ** 2).sum(axis=1)
    for _ in range(1, k):
        total = nearest.sum()
        chosen = rng.choice(len(sample), p=nearest / total) if total > 0 else rng.integers(len(sample))
        centres.append(sample[chosen])
        nearest = np.minimum(nearest, ((sample - sample[chosen]) ** 2).sum(axis=1))
    return np.asarray(centres, dtype=np.float64)


def _m_step(sums: dict[str, Any], old_means: np.ndarray, reg_covar: float, diagonal: bool) -> Mixture:
    counts = sums["resp"]
    means = sums["first"] / counts[:, None]
    shift = means - old_means  # the scatter was summed about the old means
    dim = means.shape[1]
    if diagonal:
        variances = sums["scatter"] / counts[:, None] - shift**2 + reg_covar
        covariances = np.stack([np.diag(v) for v in variances])
    else:
        covariances = sums["scatter"] / counts[:, None, None] - shift[:, :, None] * shift[:, None, :]
        covariances = covariances + reg_covar * np.eye(dim)
    return Mixture(weights=counts / counts.sum(), means=means, covariances=covariances)


def em_step(passes: Passes, mixture: Mixture, *, options: GMMOptions) -> Mixture:
    """One EM iteration from ``mixture``: an E-step pass over the rows, then the M-step."""
    diagonal = options.covariance == "diag"
    sums = passes.run(_em_block, mixture, "gmm_em", diagonal)
    return _m_step(sums, mixture.means, options.reg_covar, diagonal)


def _drop_empty(
    sums: dict[str, Any], mixture: Mixture, notes: list[str], when: str
) -> tuple[dict[str, Any], Mixture]:
    """Leave out the components nobody belongs to (their M-step would divide by zero), and say so."""
    empty = sums["resp"] <= 1e-10 * max(sums["rows"], 1)
    if not empty.any():
        return sums, mixture
    if empty.all():
        raise GMMError(f"{when}: every component lost its rows (are the rows finite and not all equal?)")
    notes.append(f"{when}: dropped {int(empty.sum())} empty component(s)")
    kept = {k: (v[~empty] if isinstance(v, np.ndarray) else v) for k, v in sums.items()}
    weights = mixture.weights[~empty]
    return kept, Mixture(weights / weights.sum(), mixture.means[~empty], mixture.covariances[~empty])


def em(passes: Passes, start: Mixture, *, options: GMMOptions, progress: bool = False) -> Fit:
    """EM from ``start`` until the mean log-likelihood gains less than ``tol`` (or ``max_iter``)."""
    diagonal = options.covariance == "diag"
    mixture, previous, notes = start, -np.inf, list[str]()
    for iteration in range(1, options.max_iter + 1):
        sums = passes.run(_em_block, mixture, "gmm_em", diagonal)
        sums, mixture = _drop_empty(sums, mixture, notes, f"iteration {iteration}")
        current = sums["log_likelihood"] / sums["rows"]
        if not np.isfinite(current):
            raise GMMError(f"iteration {iteration}: the log-likelihood is {current} (singular covariances?)")
        if progress:
            console.print(f"  K = {len(sums['resp'])}: iteration {iteration}, log-likelihood {current:.4f}")
        if current - previous < options.tol:
            if current < previous:
                notes.append(f"iteration {iteration}: the log-likelihood fell by {previous - current:.3g}")
            return Fit(mixture, current, iteration, True, sums["rows"], notes)
        previous = current
        mixture = _m_step(sums, mixture.means, options.reg_covar, diagonal)
    # the last M-step's parameters, scored by one more pass
    final = passes.run(_log_likelihood_block, mixture, "gmm_loglik")
    return Fit(
        mixture, final["log_likelihood"] / final["rows"], options.max_iter, False, final["rows"], notes
    )


def initial_mixture(
    corpus: ZPoints, passes: Passes, keep: Any, k: int, options: GMMOptions, scheduler: Any, notes: list[str]
) -> Mixture:
    """k-means++ on a seeded sample, Lloyd over every row, then each cluster's moments."""
    from latentdask.store.rows import real_sample

    sample, _ = real_sample(corpus, options.init_sample, options.seed, scheduler, keep=keep)
    if len(sample) < k:
        raise GMMError(f"{k} components need at least {k} rows; the fit has {len(sample)}")
    centres = kmeans_plus_plus(sample.astype(np.float64), k, np.random.default_rng(options.seed))
    for _ in range(options.lloyd_iterations):
        sums = passes.run(_lloyd_block, centres, "gmm_lloyd")
        filled = sums["counts"] > 0
        centres = np.where(filled[:, None], sums["sums"] / np.maximum(sums["counts"], 1)[:, None], centres)
    # weights and covariances: one M-step from the responsibilities of unit Gaussians at the centres
    dim = centres.shape[1]
    unit = Mixture(np.full(k, 1 / k), centres, np.broadcast_to(np.eye(dim), (k, dim, dim)))
    sums = passes.run(_em_block, unit, "gmm_init", options.covariance == "diag")
    sums, unit = _drop_empty(sums, unit, notes, "initialisation")
    return _m_step(sums, unit.means, options.reg_covar, options.covariance == "diag")


# ---------------------------------------------------------------------------- fit, save, open


def fit_gmm(store: Where, *, options: GMMOptions, scheduler: Any = None, progress: bool = True) -> xr.Dataset:
    """Fit the mixture over every selected row of ``store``; the GMM Dataset (see :func:`write_gmm`)."""
    corpus = open_zpoints(store)
    split = options.split or default_fit_split(corpus)
    keep, selection = selection_mask(corpus, split, options.where)
    passes = Passes(corpus, keep, scheduler)
    if options.components == "auto":
        if split not in HELD_OUT:
            raise GMMError(
                f"components=auto picks K on rows held out of the fit: fit on {' or '.join(HELD_OUT)}, "
                f"not split={split}"
            )
        outside, _ = selection_mask(corpus, HELD_OUT[split], options.where)
        heldout = Passes(corpus, outside, scheduler)
        candidates = range(1, options.max_components + 1)
    else:
        heldout, candidates = None, range(options.components, options.components + 1)
    fits, curve = [], []
    for k in candidates:
        started: list[str] = []
        start = initial_mixture(corpus, passes, keep, k, options, scheduler, started)
        result = em(passes, start, options=options, progress=progress)
        result.notes[:0] = started
        row: dict[str, float] = {"components": k, "fit_log_likelihood": result.log_likelihood}
        row["bic"] = -2 * result.log_likelihood * result.rows + _parameters(
            result.mixture, options
        ) * math.log(result.rows)
        if heldout is not None:
            scored = heldout.run(_log_likelihood_block, result.mixture, "gmm_heldout")
            if scored["rows"] == 0:
                raise GMMError(f"components=auto needs rows outside the fit ({selection}); there are none")
            row["heldout_log_likelihood"] = scored["log_likelihood"] / scored["rows"]
            row["heldout_rows"] = scored["rows"]
        curve.append(row)
        fits.append(result)
        if progress:
            console.print(
                f"K = {k}: fit log-likelihood {result.log_likelihood:.4f}"
                + (f", held out {row['heldout_log_likelihood']:.4f}" if heldout is not None else "")
                + ("" if result.converged else f" (not converged in {result.iterations} iterations)")
            )
    best = int(np.argmax([r["heldout_log_likelihood"] for r in curve])) if heldout is not None else 0
    chosen = fits[best]
    rule = (
        f"K = 1 … {options.max_components}, the highest mean log-likelihood of the rows held out of the fit"
        if heldout is not None
        else "K given"
    )
    return _dataset(chosen, curve, selection=selection, split=split, options=options, rule=rule)


def _parameters(mixture: Mixture, options: GMMOptions) -> int:
    k, dim = mixture.means.shape
    covariance = dim if options.covariance == "diag" else dim * (dim + 1) // 2
    return (k - 1) + k * dim + k * covariance


def _dataset(
    fit: Fit, curve: list[dict[str, float]], *, selection: str, split: str, options: GMMOptions, rule: str
) -> xr.Dataset:
    m = fit.mixture
    curve_vars = {
        key: ("k", np.array([row.get(key, np.nan) for row in curve], dtype=np.float64))
        for key in ("fit_log_likelihood", "heldout_log_likelihood", "bic")
    }
    return xr.Dataset(
        {
            "weights": ("component", m.weights),
            "means": (("component", "latent"), m.means),
            "covariances": (("component", "latent", "latent2"), m.covariances),
            **curve_vars,
        },
        coords={"k": [int(row["components"]) for row in curve]},
        attrs={
            "selection": selection,
            "split": split,
            "where": list(options.where),
            "fit_rows": fit.rows,
            "rule": rule,
            "components": m.components,
            "covariance": options.covariance,
            "log_likelihood": fit.log_likelihood,
            "iterations": fit.iterations,
            "converged": fit.converged,
            "notes": fit.notes,
            "options": options.model_dump_json(),
        },
    )


def write_gmm(gmm: xr.Dataset, out: Where, *, inputs: Sequence[Where] = ()) -> Location:
    """Write ``GMM.zarr`` (replacing only an earlier GMM of latentdask's)."""
    with owned_output(out, GMM_KIND, inputs=inputs, zarr=True) as staged, warnings.catch_warnings():
        warnings.simplefilter("ignore", ZarrUserWarning)  # consolidated metadata, as for stats.zarr
        gmm.assign_attrs(latentdask=staged.record).to_zarr(str(staged.path), mode="w", consolidated=True)
    return location(out)


def open_gmm(path: Where) -> Mixture:
    """The mixture of a ``GMM.zarr``."""
    path = location(path)
    if not (path / "zarr.json").is_file():
        raise GMMError(f"{path} is not a GMM.zarr (latentdask gmm writes one)")
    gmm = xr.open_zarr(str(path))
    if "weights" not in gmm:
        raise GMMError(f"{path} holds no mixture (no 'weights')")
    return Mixture(gmm["weights"].values, gmm["means"].values, gmm["covariances"].values)
