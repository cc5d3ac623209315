"""Synthetic z-points from a known Gaussian shaped like the CelebA study's latent statistics.

The distribution: a centre off the origin (a few components with |mean| of 1–2.5,
the rest near 0), a few dominant components with wide spreads, the others narrow,
and correlations from a low-rank factor (a handful of pairs with |r| above 0.5).
Each block of rows comes from its own random stream ``(seed, block)``, so the array
is the same whatever order or parallelism writes it, in memory bounded by one block
per thread.

With ``components`` K > 1 the rows come from a mixture of K such Gaussians with equal weights,
sharing the covariance, their means moved apart along random directions by
:data:`SEPARATION` times the largest spread: a known mixture for the Gaussian-mixture fit
(``true_means`` and ``true_weights`` are stored beside ``true_mean`` and ``true_cov``, which
are then the mixture's overall mean and covariance).
"""

from __future__ import annotations

from functools import partial

import numpy as np
import zarr

from latentdask.errors import LatentdaskError
from latentdask.location import Location, Where, location
from latentdask.output import RECORD_KEY, owned_output
from latentdask.store.points import write_rows

#: the kind of output synth-latents writes, in the group's ``latentdask`` attribute
SYNTHETIC_LATENTS_KIND = "synthetic-latents"
#: how far apart a mixture's means are, in units of the largest component spread
SEPARATION = 6.0


def true_distribution(dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The mean (dim,) and covariance (dim, dim) the rows are drawn from."""
    rng = np.random.default_rng([seed, 2**31])
    mean = rng.normal(0.0, 0.25, dim)
    spread = rng.uniform(0.45, 0.8, dim)
    dominant = rng.choice(dim, size=max(1, dim // 16), replace=False)
    mean[dominant] = rng.choice([-1, 1], size=len(dominant)) * rng.uniform(1.0, 2.5, len(dominant))
    spread[dominant] = rng.uniform(1.0, 1.8, len(dominant))
    # correlation: identity plus a low-rank part concentrated on a few components
    factors = np.zeros((dim, 4))
    for k in range(4):
        members = rng.choice(dim, size=max(2, dim // 32), replace=False)
        factors[members, k] = rng.choice([-1, 1], size=len(members)) * rng.uniform(0.8, 1.4, len(members))
    inner = factors @ factors.T + np.eye(dim)
    scale = 1 / np.sqrt(np.diag(inner))
    correlation = inner * np.outer(scale, scale)
    return mean, correlation * np.outer(spread, spread)


def mixture_means(mean: np.ndarray, cov: np.ndarray, components: int, seed: int) -> np.ndarray:
    """``components`` means around ``mean``, :data:`SEPARATION` largest spreads from it."""
    if components == 1:
        return mean[None, :]
    rng = np.random.default_rng([seed, 2**31 + 1])
    directions = rng.normal(size=(components, len(mean)))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return mean + SEPARATION * np.sqrt(np.diag(cov).max()) * directions


def _gaussian_rows(mean: np.ndarray, factor: np.ndarray, rng: np.random.Generator, rows: int) -> np.ndarray:
    return mean + rng.standard_normal((rows, len(mean))) @ factor.T


def _mixture_rows(means: np.ndarray, factor: np.ndarray, rng: np.random.Generator, rows: int) -> np.ndarray:
    labels = rng.integers(len(means), size=rows)
    return means[labels] + rng.standard_normal((rows, means.shape[1])) @ factor.T


def synthesize_latents(
    out: Where, *, n: int, dim: int = 256, seed: int = 0, chunk_rows: int = 65_536, components: int = 1
) -> Location:
    """Write a Zarr group at ``out``: ``z`` (n, dim) float32, ``true_mean``, ``true_cov`` (and for a
    mixture, ``true_means`` and ``true_weights``)."""
    if n < 1 or dim < 2 or chunk_rows < 1 or components < 1:
        raise LatentdaskError(
            f"need n >= 1, dim >= 2, chunk_rows >= 1, components >= 1; got n={n}, dim={dim}, "
            f"chunk_rows={chunk_rows}, components={components}"
        )
    out = location(out)
    within_mean, within = true_distribution(dim, seed)
    factor = np.linalg.cholesky(within)
    means = mixture_means(within_mean, within, components, seed)
    mean = means.mean(axis=0)
    cov = within + (means - mean).T @ (means - mean) / components  # within plus between
    with owned_output(out, SYNTHETIC_LATENTS_KIND, zarr=True) as staged:
        group = zarr.open_group(str(staged.path), mode="w")
        group.create_array("true_mean", shape=(dim,), dtype="float64", dimension_names=["latent"])[:] = mean
        true_cov = group.create_array(
            "true_cov", shape=(dim, dim), dtype="float64", dimension_names=["latent", "latent2"]
        )
        true_cov[:] = cov
        if components > 1:
            group.create_array(
                "true_means", shape=means.shape, dtype="float64", dimension_names=["component", "latent"]
            )[:] = means
            group.create_array(
                "true_weights", shape=(components,), dtype="float64", dimension_names=["component"]
            )[:] = np.full(components, 1 / components)
        group.attrs.update(
            {
                "generator": "latentdask synth-latents",
                "seed": seed,
                "n": n,
                "dim": dim,
                "components": components,
                RECORD_KEY: staged.record,
            }
        )
        write_rows(
            group,
            "z",
            partial(_gaussian_rows, means[0], factor)
            if components == 1
            else partial(_mixture_rows, means, factor),
            n=n,
            dim=dim,
            seed=seed,
            chunk_rows=chunk_rows,
            dims=["image", "latent"],
        )
    return out
