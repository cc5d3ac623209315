"""What artificial z-points are measured against: the fit's statistics as a reference.

:class:`Reference` holds the fit's mean, the inverse of its covariance's Cholesky factor, the
per-component [0.5 %, 99.5 %] range read off its histograms (:func:`histogram_quantiles`) and the
real population of each slice; :func:`mahalanobis`, :func:`outside_counts` and
:func:`mvn_log_likelihood` measure points against it (``score`` and ``normality`` use them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr


@dataclass(frozen=True)
class Reference:
    """What every score is measured against, from the fit's statistics."""

    mean: np.ndarray
    inverse_factor: np.ndarray  # L⁻¹ with Σ = L Lᵀ: Mahalanobis = |L⁻¹ (x - μ)|
    low: np.ndarray  # per-component 0.5 % point
    high: np.ndarray  # per-component 99.5 % point
    slice_fraction: np.ndarray  # (threshold, latent, latent2) real fraction in each slice
    thresholds: np.ndarray

    @classmethod
    def from_stats(cls, stats: xr.Dataset, *, tail: float = 0.005) -> Reference:
        cov = stats["cov"].values
        factor = np.linalg.cholesky(cov + 1e-12 * np.trace(cov) / len(cov) * np.eye(len(cov)))
        low, high = histogram_quantiles(stats, tail), histogram_quantiles(stats, 1 - tail)
        return cls(
            mean=stats["mean"].values,
            inverse_factor=np.linalg.inv(factor),
            low=low,
            high=high,
            slice_fraction=stats["slice_count"].values / max(int(stats["count"]), 1),
            thresholds=stats["threshold"].values,
        )


def histogram_quantiles(stats: xr.Dataset, q: float) -> np.ndarray:
    """Per-component q-quantile of the statistics' rows, interpolated within the histogram's bins."""
    edges = stats["bin_edges"].values
    counts = np.concatenate(
        [stats["underflow"].values[:, None], stats["hist"].values, stats["overflow"].values[:, None]], axis=1
    ).astype(np.float64)
    cdf = np.cumsum(counts, axis=1) / counts.sum(axis=1, keepdims=True)
    out = np.empty(len(cdf))
    for j, row in enumerate(cdf):
        k = int(np.searchsorted(row, q))  # bin k of [under, bins..., over] holds the quantile
        if k == 0:
            out[j] = edges[0]
        elif k >= len(edges):
            out[j] = edges[-1]
        else:
            before = row[k - 1]
            fraction = (q - before) / (row[k] - before) if row[k] > before else 0.5
            out[j] = edges[k - 1] + fraction * (edges[k] - edges[k - 1])
    return out


def mahalanobis(points: np.ndarray, reference: Reference) -> np.ndarray:
    """Mahalanobis distance of each point to the real mean."""
    whitened = (np.asarray(points, dtype=np.float64) - reference.mean) @ reference.inverse_factor.T
    return np.sqrt((whitened * whitened).sum(axis=1))


def outside_counts(points: np.ndarray, reference: Reference) -> np.ndarray:
    """Per point, the number of components outside the real [0.5 %, 99.5 %] range."""
    return ((points < reference.low) | (points > reference.high)).sum(axis=1)


def mvn_log_likelihood(points: np.ndarray, reference: Reference) -> np.ndarray:
    """The log-density of each point under the normal with the reference's mean and covariance."""
    whitened = (np.asarray(points, dtype=np.float64) - reference.mean) @ reference.inverse_factor.T
    log_det = -2 * np.log(np.diagonal(reference.inverse_factor)).sum()
    dim = len(reference.mean)
    return -0.5 * (np.einsum("ij,ij->i", whitened, whitened) + log_det + dim * np.log(2 * np.pi))
