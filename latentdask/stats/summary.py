"""The whole summary of a set of z-points: one state of every family, chunk → combine → finalize.

:func:`summary_chunk` runs on one block of rows (inside an encode task, or on a block
of a store), :func:`summary_combine` merges any number of states, and
:func:`summary_finalize` turns the merged state into the ``stats`` Dataset. The
in-memory answer is ``summary_finalize(summary_chunk(x))``.

The histogram of radii about the mean is the one figure a single pass cannot give:
``|x - μ|`` needs μ before the rows are seen. It is a second, light pass
(:func:`centred_radius_chunk`) once the mean is known.

The numba kernels (:mod:`latentdask.stats.scan`) are imported on first use: an encode task
computes its shard's states with torch (:mod:`latentdask.stats.scan_torch`), which its
worker has loaded already, so the worker never holds numba's compiler (about 130 MiB).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from latentdask.stats.kernels import (
    Counts1D,
    GroupMoments,
    Histogram,
    Moments,
    Slices,
    counts_combine,
    groups_combine,
    histogram_combine,
    moments_combine,
    slice_population,
    slices_combine,
)
from latentdask.stats.options import SummaryParams

if TYPE_CHECKING:
    import xarray as xr


class SummaryState(NamedTuple):
    """The merged state of every family, plus the rows left out and why."""

    moments: Moments
    hist: Histogram
    radius: Counts1D
    slices: Slices
    groups: GroupMoments | None
    invalid: int
    nonfinite: int


def select_rows(z: Any, valid: np.ndarray | None, selected: np.ndarray | None) -> tuple[np.ndarray, int, int]:
    """Rows kept (selected, valid and finite), and how many selected rows were invalid or non-finite."""
    keep = np.ones(len(z), dtype=bool) if selected is None else np.asarray(selected, dtype=bool)
    invalid = 0
    if valid is not None:
        invalid = int((keep & ~np.asarray(valid, dtype=bool)).sum())
        keep = keep & np.asarray(valid, dtype=bool)
    if is_tensor(z):
        finite = z.isfinite().all(dim=1).cpu().numpy()
    else:
        from latentdask.stats.scan import finite_rows

        finite = finite_rows(z)
    nonfinite = int((keep & ~finite).sum())
    return keep & finite, invalid, nonfinite


def is_tensor(z: Any) -> bool:
    """True for a torch tensor, without importing torch where there is none."""
    return type(z).__module__.startswith("torch")


def summary_chunk(
    z: Any,
    valid: np.ndarray | None = None,
    attributes: np.ndarray | None = None,
    selected: np.ndarray | None = None,
    *,
    params: SummaryParams,
) -> SummaryState:
    """The state of one block of rows; invalid, unselected and non-finite rows are left out.

    ``z`` is a numpy array, or a torch tensor whose device (a GPU) then does the work.
    """
    keep, invalid, nonfinite = select_rows(z, valid, selected)
    groups_of = None if attributes is None or not attributes.shape[1] else np.asarray(attributes)
    scan_block: Callable[..., Any]  # torch's on a tensor (its device), numba's on an array
    if is_tensor(z):
        from latentdask.stats.scan_torch import scan_block_torch as scan_block
    else:
        from latentdask.stats.scan import scan_block
    scan = scan_block(
        z,
        keep,
        edges=params.edges,
        thresholds=np.asarray(params.thresholds),
        radius_edges=params.radius_edges,
        attributes=groups_of,
    )
    return SummaryState(scan.moments, scan.hist, scan.radius, scan.slices, scan.groups, invalid, nonfinite)


def summary_combine(states: Sequence[SummaryState]) -> SummaryState:
    """Merge any number of states (associative; a state of zero rows is neutral)."""
    groups = [s.groups for s in states if s.groups is not None]
    return SummaryState(
        moments=moments_combine([s.moments for s in states]),
        hist=histogram_combine([s.hist for s in states]),
        radius=counts_combine([s.radius for s in states]),
        slices=slices_combine([s.slices for s in states]),
        groups=groups_combine(groups) if groups else None,
        invalid=sum(s.invalid for s in states),
        nonfinite=sum(s.nonfinite for s in states),
    )


def centred_radius_chunk(
    z: Any,
    valid: np.ndarray | None,
    selected: np.ndarray | None,
    *,
    centre: np.ndarray,
    params: SummaryParams,
) -> Counts1D:
    """Histogram of |x - centre| over the same rows as :func:`summary_chunk` keeps (a torch tensor's
    on its device, with the same counts)."""
    keep, _, _ = select_rows(z, valid, selected)
    if is_tensor(z):
        from latentdask.stats.scan_torch import centred_radius_counts_torch

        return centred_radius_counts_torch(z, keep, centre=centre, radius_edges=params.radius_edges)
    from latentdask.stats.scan import centred_radius_counts

    return centred_radius_counts(z, keep, centre=centre, radius_edges=params.radius_edges)


def centred_radius_chunk_torch(
    z: np.ndarray,
    valid: np.ndarray | None,
    selected: np.ndarray | None,
    *,
    centre: np.ndarray,
    params: SummaryParams,
) -> Counts1D:
    """:func:`centred_radius_chunk` of a block read from a store, computed by torch: for workers
    that hold torch and not numba (an encode's, writing its statistics)."""
    import torch

    return centred_radius_chunk(
        torch.from_numpy(np.ascontiguousarray(z)), valid, selected, centre=centre, params=params
    )


def summary_finalize(
    state: SummaryState,
    params: SummaryParams,
    *,
    centred_radius: Counts1D | None = None,
    attribute_names: Sequence[str] = (),
    selection: str = "all valid rows",
) -> xr.Dataset:
    """The ``stats`` Dataset (names in DESIGN.md, "Formats")."""
    import xarray as xr  # here, not above: encode's workers compute chunks and never import xarray

    from latentdask.stats.analysis import peak_and_fwhm

    m = state.moments
    dim = len(m.mean)
    n = m.n
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = m.m2 / (n - 1) if n > 1 else np.full((dim, dim), np.nan)
        variance_n = np.diag(m.m2) / n if n else np.full(dim, np.nan)  # population variance for the shape
        std = np.sqrt(np.diag(cov))
        corr = cov / np.outer(std, std)
        skewness = (m.m3 / n) / variance_n**1.5 if n else np.full(dim, np.nan)
        kurtosis = (m.m4 / n) / variance_n**2 - 3.0 if n else np.full(dim, np.nan)
    edges = params.edges
    centres = (edges[:-1] + edges[1:]) / 2
    peak, fwhm = peak_and_fwhm(state.hist.counts, edges)
    eigenvalues, eigenvectors = (
        np.linalg.eigh(cov) if n > 1 else (np.full(dim, np.nan), np.full((dim, dim), np.nan))
    )
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues, eigenvectors = eigenvalues[order], eigenvectors[:, order]
    # a sign convention, so that equal inputs give equal vectors: largest |entry| positive
    signs = np.sign(eigenvectors[np.abs(eigenvectors).argmax(axis=0), np.arange(dim)])
    eigenvectors = eigenvectors * np.where(signs == 0, 1, signs)
    radius_edges = params.radius_edges
    thresholds = np.asarray(params.thresholds)

    ds = xr.Dataset(
        {
            "count": ((), n),
            "invalid": ((), state.invalid),
            "nonfinite": ((), state.nonfinite),
            "mean": (("latent",), m.mean if n else np.full(dim, np.nan)),
            "std": (("latent",), std),
            "min": (("latent",), m.min),
            "max": (("latent",), m.max),
            "skewness": (("latent",), skewness),
            "kurtosis": (("latent",), kurtosis),
            "cov": (("latent", "latent2"), cov),
            "corr": (("latent", "latent2"), corr),
            "hist": (("latent", "bin"), state.hist.counts),
            "bin_edges": (("bin_edge",), edges),
            "underflow": (("latent",), state.hist.underflow),
            "overflow": (("latent",), state.hist.overflow),
            "peak": (("latent",), peak),
            "fwhm": (("latent",), fwhm),
            "radius_hist": (("radius_bin",), state.radius.counts),
            "radius_edges": (("radius_edge",), radius_edges),
            "radius_overflow": ((), state.radius.overflow),
            "radius_mean": ((), state.radius.total / n if n else np.nan),
            "slice_count": (("threshold", "latent", "latent2"), slice_population(state.slices)),
            "slice_origin_count": (("threshold",), state.slices.n0),
            "pca_eigenvalues": (("pc",), eigenvalues),
            "pca_vectors": (("latent", "pc"), eigenvectors),
            "pca_explained": (("pc",), eigenvalues / eigenvalues.sum() if n > 1 else eigenvalues),
        },
        coords={
            "latent": np.arange(dim),
            "latent2": np.arange(dim),
            "bin": centres,
            "threshold": thresholds,
            "pc": np.arange(dim),
            "radius_bin": (radius_edges[:-1] + radius_edges[1:]) / 2,
        },
        attrs={"selection": selection, "params": params.model_dump_json()},
    )
    if centred_radius is not None:
        ds["radius_centred_hist"] = (("radius_bin",), centred_radius.counts)
        ds["radius_centred_overflow"] = ((), centred_radius.overflow)
        ds["radius_centred_mean"] = ((), centred_radius.total / n if n else np.nan)
    if state.groups is not None:
        g = state.groups
        with np.errstate(invalid="ignore", divide="ignore"):
            variance = g.m2 / np.maximum(g.n[..., None] - 1, 1)
            pooled = np.sqrt((g.m2[:, 0] + g.m2[:, 1]) / np.maximum(g.n.sum(axis=1)[:, None] - 2, 1))
            effect = (g.mean[:, 0] - g.mean[:, 1]) / pooled
        empty = g.n == 0
        ds["attribute_count"] = (("attribute", "group"), g.n)
        ds["attribute_mean"] = (("attribute", "group", "latent"), np.where(empty[..., None], np.nan, g.mean))
        ds["attribute_std"] = (
            ("attribute", "group", "latent"),
            np.where(empty[..., None], np.nan, np.sqrt(variance)),
        )
        ds["attribute_effect"] = (
            ("attribute", "latent"),
            np.where(empty.any(axis=1)[:, None], np.nan, effect),
        )
        ds = ds.assign_coords(
            attribute=np.array(attribute_names, dtype=np.dtypes.StringDType()), group=[1, -1]
        )
    return ds
