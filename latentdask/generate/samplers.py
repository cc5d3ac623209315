"""Artificial z-points: the CelebA study's uniform sampler and samplers fitted on the real statistics.

Samplers (fitted on a ``stats.zarr``):

- ``uniform``: every component uniform in [-b, b], independently (the CelebA study's sampler;
  b = 1.5 by default, the b whose radii came closest to the real ones there);
- ``gaussian``: each component from its own fitted normal (mean, std), independently;
- ``empirical``: each component from its own histogram (inverse CDF, uniform within a
  bin), independently;
- ``mvn``: the multivariate normal with the fitted mean and covariance;
- ``mvn-core``: the same, restricted to Mahalanobis radius ≤ r with r² the χ²(N)
  quantile ``quantile`` (default 0.9973: r ≈ 17.98 for N = 256);
- ``gmm``: the Gaussian mixture of a ``GMM.zarr`` (:mod:`latentdask.generate.gmm`), given in
  place of the statistics.

Points are written block by block (:mod:`latentdask.store.points`), so n can be large and the
same seed gives the same points however they are computed.

Radius theory for ``uniform``: E|x|² = N b²/3, so the root-mean-square radius is
b √(N/3); by the delta method the mean radius is ≈ rms − Var(|x|²) / (8 rms³) with
Var(|x|²) = 4 N b⁴ / 45, and its standard deviation ≈ b / √15.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import xarray as xr
import zarr
from scipy import stats as scipy_stats

from latentdask.generate.options import GenerateError, SamplerSpec
from latentdask.location import Location, Where, identity, location
from latentdask.output import RECORD_KEY, check_output, owned_output
from latentdask.store.points import BlockSampler, write_rows

#: the kind of output a POINTS.zarr group is, in its ``latentdask`` attribute
POINTS_KIND = "points"


@dataclass(frozen=True)
class Fitted:
    """What the samplers need from the real statistics."""

    mean: np.ndarray
    std: np.ndarray
    cov: np.ndarray
    hist: np.ndarray  # (N, bins) counts
    edges: np.ndarray

    @classmethod
    def from_stats(cls, stats: xr.Dataset) -> Fitted:
        if int(stats["count"]) < 2:
            raise GenerateError("the statistics hold fewer than 2 points; nothing can be fitted")
        return cls(
            mean=stats["mean"].values,
            std=stats["std"].values,
            cov=stats["cov"].values,
            hist=stats["hist"].values,
            edges=stats["bin_edges"].values,
        )

    @property
    def dim(self) -> int:
        return len(self.mean)


def core_radius(dim: int, quantile: float) -> float:
    """The Mahalanobis radius r with P(χ²(dim) ≤ r²) = quantile."""
    return float(np.sqrt(scipy_stats.chi2.ppf(quantile, dim)))


def _cholesky(cov: np.ndarray) -> np.ndarray:
    """Cholesky factor, with the smallest diagonal jitter that makes a singular covariance work."""
    jitter = 0.0
    for _ in range(8):
        try:
            return np.linalg.cholesky(cov + jitter * np.eye(len(cov)))
        except np.linalg.LinAlgError:
            jitter = max(jitter * 10, 1e-10 * float(np.trace(cov)) / len(cov))
    raise GenerateError("the fitted covariance is not positive definite, even with jitter")


def _uniform(b: float, dim: int, rng: np.random.Generator, rows: int) -> np.ndarray:
    return rng.uniform(-b, b, size=(rows, dim))


def _gaussian(mean: np.ndarray, std: np.ndarray, rng: np.random.Generator, rows: int) -> np.ndarray:
    return mean + std * rng.standard_normal((rows, len(mean)))


def _empirical(cdf: np.ndarray, edges: np.ndarray, rng: np.random.Generator, rows: int) -> np.ndarray:
    """Inverse CDF per component, linear within each bin."""
    dim, bins = cdf.shape[0], cdf.shape[1] - 1
    u = rng.uniform(size=(rows, dim))
    out = np.empty((rows, dim))
    width = edges[1] - edges[0]
    for j in range(dim):
        k = np.clip(np.searchsorted(cdf[j], u[:, j], side="right") - 1, 0, bins - 1)
        low, high = cdf[j, k], cdf[j, k + 1]
        fraction = np.where(high > low, (u[:, j] - low) / np.where(high > low, high - low, 1), 0.5)
        out[:, j] = edges[k] + fraction * width
    return out


def _mvn(
    mean: np.ndarray, factor: np.ndarray, radius: float | None, rng: np.random.Generator, rows: int
) -> np.ndarray:
    """mean + L e; with ``radius``, only e with |e| ≤ radius (the Mahalanobis radius of the point)."""
    kept: list[np.ndarray] = []
    count = 0
    while count < rows:
        e = rng.standard_normal((max(rows - count, 64) * (1 if radius is None else 2), len(mean)))
        if radius is not None:
            e = e[(e * e).sum(axis=1) <= radius * radius]
        kept.append(e[: rows - count])
        count += len(kept[-1])
    return mean + np.concatenate(kept) @ factor.T


def block_sampler(spec: SamplerSpec, fitted: Fitted) -> BlockSampler:
    """A function (rng, rows) → rows of points for ``spec``."""
    if spec.name == "uniform":
        return partial(_uniform, spec.b, fitted.dim)
    if spec.name == "gaussian":
        return partial(_gaussian, fitted.mean, fitted.std)
    if spec.name == "empirical":
        counts = fitted.hist.astype(np.float64)
        totals = counts.sum(axis=1, keepdims=True)
        if (totals == 0).any():
            raise GenerateError("empirical sampler: some components have empty histograms")
        cdf = np.concatenate([np.zeros((fitted.dim, 1)), np.cumsum(counts, axis=1) / totals], axis=1)
        return partial(_empirical, cdf, fitted.edges)
    factor = _cholesky(fitted.cov)
    radius = core_radius(fitted.dim, spec.quantile) if spec.name == "mvn-core" else None
    return partial(_mvn, fitted.mean, factor, radius)


def generate(
    stats: Where, out: Where, *, spec: SamplerSpec, n: int, seed: int = 0, chunk_rows: int = 65_536
) -> Location:
    """Write ``n`` artificial z-points of ``spec``, fitted on ``stats``, to the group ``out``.

    For the ``gmm`` sampler, ``stats`` is the ``GMM.zarr`` to sample.

    Examples
    --------
    >>> uniform = sampler_spec("uniform", b=1.5)
    >>> generate("latents-stats.zarr", "uniform.zarr", spec=uniform, n=10_000)  # doctest: +SKIP
    """
    from latentdask.stats.io import open_stats

    if n < 1:
        raise GenerateError(f"--n must be at least 1, got {n}")
    out = location(out)
    check_output(out, POINTS_KIND, inputs=[stats])
    sampler: BlockSampler
    if spec.name == "gmm":
        from latentdask.generate.gmm import open_gmm

        mixture = open_gmm(stats)
        sampler, dim = mixture.sample, mixture.means.shape[1]
    else:
        fitted = Fitted.from_stats(open_stats(stats))
        sampler, dim = block_sampler(spec, fitted), fitted.dim
    with owned_output(out, POINTS_KIND, inputs=[stats], zarr=True) as staged:
        group = zarr.open_group(str(staged.path), mode="w")
        group.attrs.update(
            {
                "sampler": spec.name,
                "params": spec.model_dump(mode="json"),
                "seed": seed,
                "n": n,
                "stats": identity(stats),
                "generator": "latentdask generate",
                RECORD_KEY: staged.record,
            }
        )
        write_rows(
            group,
            "z",
            sampler,
            n=n,
            dim=dim,
            seed=seed,
            chunk_rows=min(chunk_rows, n),
            dims=["point", "latent"],
        )
    return out


@dataclass(frozen=True)
class RadiusTheory:
    """Radii of the uniform sampler in N dimensions with half-width b."""

    dim: int
    b: float

    @property
    def rms(self) -> float:
        return self.b * np.sqrt(self.dim / 3)

    @property
    def mean(self) -> float:
        variance_of_square = 4 * self.dim * self.b**4 / 45
        return float(self.rms - variance_of_square / (8 * self.rms**3))

    @property
    def std(self) -> float:
        return float(self.b / np.sqrt(15))


def b_scan(
    stats: xr.Dataset, *, grid: np.ndarray | None = None, samples: int = 20_000, seed: int = 0
) -> dict[str, object]:
    """The b whose uniform-sampler radius distribution is closest (Wasserstein) to the real one.

    Real radii come from ``radius_hist`` (bin centres weighted by counts); sampled radii
    from ``samples`` uniform points per b.
    """
    dim = int(stats.sizes["latent"])
    grid = np.round(np.arange(0.5, 3.01, 0.05), 3) if grid is None else np.asarray(grid)
    centres = stats["radius_bin"].values
    weights = stats["radius_hist"].values.astype(np.float64)
    if weights.sum() == 0:
        raise GenerateError("the statistics hold no radii")
    rng = np.random.default_rng(seed)
    unit = rng.uniform(-1, 1, size=(samples, dim))
    unit_radii = np.sqrt((unit * unit).sum(axis=1))  # radii scale with b: one draw serves the grid
    distances = [
        float(scipy_stats.wasserstein_distance(centres, b * unit_radii, u_weights=weights)) for b in grid
    ]
    best = int(np.argmin(distances))
    return {
        "grid": grid.tolist(),
        "wasserstein": distances,
        "best_b": float(grid[best]),
        "real_mean_radius": float(stats["radius_mean"]),
    }


def radius_report(stats: xr.Dataset, points: np.ndarray, b: float) -> dict[str, object]:
    """Uniform-sampler radius theory beside the sampled radii, plus the b-scan."""
    theory = RadiusTheory(points.shape[1], b)
    radii = np.sqrt((points.astype(np.float64) ** 2).sum(axis=1))
    return {
        "theory": {"rms": theory.rms, "mean": theory.mean, "std": theory.std},
        "sampled": {
            "rms": float(np.sqrt((radii**2).mean())),
            "mean": float(radii.mean()),
            "std": float(radii.std()),
        },
        "b_scan": b_scan(stats),
    }
