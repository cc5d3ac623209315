"""The per-block pass for z-points already in a torch tensor, on the tensor's device.

Same states as :func:`latentdask.stats.scan.scan_block`, same binning rule (numpy's:
truncate, then correct by one against the edges), counts equal to the last one, and
moments equal to float64 rounding. On a GPU worker this keeps the statistics of a
freshly encoded shard off the CPU, which is busy decoding images. States come back
as numpy: a block returns numpy, wherever it was computed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from latentdask.stats.kernels import Counts1D, Histogram, Moments, Slices, groups_chunk
from latentdask.stats.scan import BlockScan, scan_block

if TYPE_CHECKING:
    import torch


def _bins(values: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """-1 below, bins above, else the bin np.histogram chooses (values float64)."""
    import torch

    bins = len(edges) - 1
    low, high = edges[0], edges[-1]
    index = ((values - low) * (bins / (high - low))).clamp(0, bins).long()
    index = index - (index == bins).long()
    index = index - (values < edges[index]).long()
    index = index + ((values >= edges[(index + 1).clamp(max=bins)]) & (index != bins - 1)).long()
    index = torch.where(values < low, torch.full_like(index, -1), index)
    return torch.where(values > high, torch.full_like(index, bins), index)


def _counts(index: torch.Tensor, bins: int) -> np.ndarray:
    """(bins + 2) counts of -1 … bins along the last axis, per leading row."""
    import torch

    rows = index.shape[0] if index.ndim == 2 else 1
    offset = torch.arange(rows, device=index.device)[:, None] * (bins + 2) if index.ndim == 2 else 0
    flat = torch.bincount((index + 1 + offset).reshape(-1), minlength=rows * (bins + 2))
    return flat.reshape(rows, bins + 2).cpu().numpy() if index.ndim == 2 else flat.cpu().numpy()


def scan_block_torch(
    z: torch.Tensor,
    keep: np.ndarray,
    *,
    edges: np.ndarray,
    thresholds: np.ndarray,
    radius_edges: np.ndarray,
    attributes: np.ndarray | None = None,
) -> BlockScan:
    """The moments, histogram, radius and slice states of the kept rows of ``z``, on z's device;
    with ``attributes`` the attribute groups' moments too (from the centred rows, on the host)."""
    import torch

    if not keep.any():
        return scan_block(
            np.zeros((0, z.shape[1]), np.float32),
            keep[:0],
            edges=edges,
            thresholds=thresholds,
            radius_edges=radius_edges,
            attributes=attributes,
        )
    device = z.device
    x = z[torch.from_numpy(keep).to(device)].to(torch.float64)
    n, dim = x.shape
    mean = x.mean(dim=0)
    d = x - mean
    d2 = d * d
    bins = len(edges) - 1
    edges_t = torch.as_tensor(edges, dtype=torch.float64, device=device)
    table = _counts(_bins(x.T.contiguous(), edges_t), bins)  # (dim, bins + 2)
    length = x.square().sum(dim=1).sqrt()
    radius_bins = len(radius_edges) - 1
    radius = _counts(
        _bins(length, torch.as_tensor(radius_edges, dtype=torch.float64, device=device)), radius_bins
    )
    n0 = np.zeros(len(thresholds), dtype=np.int64)
    c1 = np.zeros((len(thresholds), dim), dtype=np.int64)
    c2 = np.zeros((len(thresholds), dim, dim), dtype=np.int64)
    magnitude = x.abs()
    for k, t in enumerate(np.asarray(thresholds, dtype=np.float64)):
        outside = magnitude >= t
        count = outside.sum(dim=1)
        n0[k] = int((count == 0).sum())
        c1[k] = outside[count == 1].sum(dim=0).cpu().numpy()
        pairs = outside[count == 2].nonzero()[:, 1].reshape(-1, 2)  # columns in increasing order
        c2[k] = (
            torch.bincount(pairs[:, 0] * dim + pairs[:, 1], minlength=dim * dim)
            .reshape(dim, dim)
            .cpu()
            .numpy()
        )
    moments = Moments(
        n=n,
        mean=mean.cpu().numpy(),
        m2=(d.T @ d).cpu().numpy(),
        m3=(d2 * d).sum(dim=0).cpu().numpy(),
        m4=(d2 * d2).sum(dim=0).cpu().numpy(),
        min=x.min(dim=0).values.cpu().numpy(),
        max=x.max(dim=0).values.cpu().numpy(),
    )
    return BlockScan(
        moments=moments,
        hist=Histogram(table[:, 1:-1].copy(), table[:, 0].copy(), table[:, -1].copy()),
        radius=Counts1D(radius[1:-1].copy(), int(radius[0]), int(radius[-1]), float(length.sum())),
        slices=Slices(n0, c1, c2),
        groups=None if attributes is None else groups_chunk(d.cpu().numpy(), moments.mean, attributes[keep]),
    )
