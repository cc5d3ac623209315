"""Synthetic z-points from a known Gaussian shaped like the CelebA study's latent statistics.

The distribution: a centre off the origin (a few components with |mean| of 1–2.5,
the rest near 0), a few dominant components with wide spreads, the others narrow,
and correlations from a low-rank factor (a handful of pairs with |r| above 0.5).
Each block of rows comes from its own random stream ``(seed, block)``, so the array
is the same whatever order or parallelism writes it, in memory bounded by one block
per thread.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import zarr

from latentdask.errors import LatentdaskError
from latentdask.store.output import RECORD_KEY, owned_output
from latentdask.store.points import write_rows

#: the kind of output synth-latents writes, in the group's ``latentdask`` attribute
SYNTHETIC_LATENTS_KIND = "synthetic-latents"


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


def _gaussian_rows(mean: np.ndarray, factor: np.ndarray, rng: np.random.Generator, rows: int) -> np.ndarray:
    return mean + rng.standard_normal((rows, len(mean))) @ factor.T


def synthesize_latents(
    out: str | Path, *, n: int, dim: int = 256, seed: int = 0, chunk_rows: int = 65_536
) -> Path:
    """Write a Zarr group at ``out``: ``z`` (n, dim) float32, ``true_mean``, ``true_cov``."""
    if n < 1 or dim < 2 or chunk_rows < 1:
        raise LatentdaskError(
            f"need n >= 1, dim >= 2, chunk_rows >= 1; got n={n}, dim={dim}, chunk_rows={chunk_rows}"
        )
    out = Path(out)
    mean, cov = true_distribution(dim, seed)
    factor = np.linalg.cholesky(cov)
    with owned_output(out, SYNTHETIC_LATENTS_KIND, zarr=True) as staged:
        group = zarr.open_group(str(staged.path), mode="w")
        group.create_array("true_mean", shape=(dim,), dtype="float64", dimension_names=["latent"])[:] = mean
        true_cov = group.create_array(
            "true_cov", shape=(dim, dim), dtype="float64", dimension_names=["latent", "latent2"]
        )
        true_cov[:] = cov
        group.attrs.update(
            {
                "generator": "latentdask synth-latents",
                "seed": seed,
                "n": n,
                "dim": dim,
                RECORD_KEY: staged.record,
            }
        )
        write_rows(
            group,
            "z",
            partial(_gaussian_rows, mean, factor),
            n=n,
            dim=dim,
            seed=seed,
            chunk_rows=chunk_rows,
            dims=["image", "latent"],
        )
    return out
