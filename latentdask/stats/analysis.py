"""Figures derived from the finalized statistics: peak and FWHM, rankings, headline figures."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

#: how many entries the headline lists keep
TOP = 20


def peak_and_fwhm(counts: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position of each histogram's maximum and its full width at half maximum.

    Steps, per component (the CelebA study's mu and hw):
    1. the peak is the centre of the fullest bin (the first, if several tie);
    2. walk outwards from it while bins hold at least half the maximum;
    3. place each half-maximum crossing by linear interpolation between the bin centres
       on either side of it (the histogram's edge if it never drops below half).
    """
    centres = (edges[:-1] + edges[1:]) / 2
    dim, bins = counts.shape
    peak = np.full(dim, np.nan)
    fwhm = np.full(dim, np.nan)
    for j in range(dim):
        c = counts[j].astype(np.float64)
        top = int(c.argmax())
        if c[top] == 0:
            continue
        half = c[top] / 2
        left = top
        while left > 0 and c[left - 1] >= half:
            left -= 1
        right = top
        while right < bins - 1 and c[right + 1] >= half:
            right += 1
        x_left = (
            edges[0] if left == 0 else _crossing(centres[left - 1], centres[left], c[left - 1], c[left], half)
        )
        x_right = (
            edges[-1]
            if right == bins - 1
            else _crossing(centres[right + 1], centres[right], c[right + 1], c[right], half)
        )
        peak[j] = centres[top]
        fwhm[j] = x_right - x_left
    return peak, fwhm


def _crossing(x_below: float, x_above: float, c_below: float, c_above: float, half: float) -> float:
    """Where the line from (x_below, c_below < half) to (x_above, c_above ≥ half) reaches half."""
    return float(x_below + (half - c_below) / (c_above - c_below) * (x_above - x_below))


def upper_pairs(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, value) for every pair a < b of a symmetric matrix."""
    a, b = np.triu_indices(matrix.shape[0], k=1)
    return a, b, matrix[a, b]


def headline(stats: xr.Dataset) -> dict[str, Any]:
    """The figures a person reads first (``stats.json``)."""
    count = int(stats["count"])
    peak, fwhm = stats["peak"].values, stats["fwhm"].values
    reach = np.maximum(np.abs(peak - fwhm / 2), np.abs(peak + fwhm / 2))
    dominant = [int(j) for j in np.argsort(np.nan_to_num(reach, nan=-1.0))[::-1][:TOP]]
    a, b, r = upper_pairs(stats["corr"].values)
    levels = {f"{level:g}": int((np.abs(r) > level).sum()) for level in _levels(stats)}
    strong = float(_params(stats)["strong_correlation"])
    order = np.argsort(-np.abs(np.nan_to_num(r)))
    strong_pairs = [[int(a[k]), int(b[k]), round(float(r[k]), 4)] for k in order if abs(r[k]) >= strong]
    slices = {}
    for t in stats["threshold"].values:
        pa, pb, pop = upper_pairs(stats["slice_count"].sel(threshold=t).values)
        ranked = np.argsort(pop, kind="stable")
        slices[f"{t:g}"] = {
            "origin_cube": int(stats["slice_origin_count"].sel(threshold=t)),
            "smallest": [[int(pa[k]), int(pb[k]), int(pop[k])] for k in ranked[:TOP]],
            "largest": [[int(pa[k]), int(pb[k]), int(pop[k])] for k in np.argsort(-pop, kind="stable")[:TOP]],
            # pairs that share the smallest and the largest population: ties are listed by index
            "smallest_ties": int((pop == pop.min()).sum()) if len(pop) else 0,
            "largest_ties": int((pop == pop.max()).sum()) if len(pop) else 0,
        }
    return {
        "count": count,
        "invalid": int(stats["invalid"]),
        "nonfinite": int(stats["nonfinite"]),
        "selection": stats.attrs.get("selection"),
        "mean_radius": float(stats["radius_mean"]),
        "mean_radius_about_mean": float(stats["radius_centred_mean"])
        if "radius_centred_mean" in stats
        else None,
        "dominant_components": [
            {"latent": j, "peak": float(peak[j]), "fwhm": float(fwhm[j]), "mean": float(stats["mean"][j])}
            for j in dominant
        ],
        "correlation_pairs_above": levels,
        "strong_pairs": strong_pairs[:100],
        "strong_pairs_count": len(strong_pairs),
        "slice_populations": slices,
        "pca_explained_top10": [round(float(v), 5) for v in stats["pca_explained"].values[:10]],
    }


def _params(stats: xr.Dataset) -> dict[str, Any]:
    import json

    return dict(json.loads(stats.attrs["params"]))


def _levels(stats: xr.Dataset) -> list[float]:
    return [float(v) for v in _params(stats)["correlation_levels"]]
