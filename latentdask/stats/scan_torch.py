"""The per-block pass for z-points already in a torch tensor, on the tensor's device.

Same states as :func:`latentdask.stats.scan.scan_block`, same binning rule (numpy's:
``[e_k, e_k+1)``, the last bin closed, found as the numba kernel finds it): counts equal to the
last one (on a GPU a radius sums its squares in another order, so one on a bin edge may move
by one bin), moments equal to float64 rounding. On a GPU worker this keeps the statistics of a
freshly encoded shard off the CPU, which is busy decoding images. States come back
as numpy: a block returns numpy, wherever it was computed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from latentdask.stats.kernels import BlockScan, Counts1D, Histogram, Moments, Slices, empty_scan, groups_chunk

if TYPE_CHECKING:
    import torch


def _bins(values: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """np.histogram's bin of each value, [e_k, e_k+1) and the last bin closed; -1 below, bins above.

    The rule of :func:`latentdask.stats.scan.histogram_bin`, element-wise: the bin from the
    value's offset (edges are evenly spaced), then one step to the bin whose edges hold it.
    """
    bins = len(edges) - 1
    scale = bins / (edges[-1] - edges[0])
    index = ((values - edges[0]) * scale).clamp_(0, bins - 1).long()
    below = values < edges[index]
    above = (values >= edges[index + 1]) & (index != bins - 1)
    index = index - below.long() + above.long()
    index.masked_fill_(values < edges[0], -1)
    return index.masked_fill_(values > edges[-1], bins)


def _counts(index: torch.Tensor, bins: int) -> torch.Tensor:
    """(bins + 2) counts of -1 … bins along the last axis, per leading row (on the device)."""
    import torch

    rows = index.shape[0] if index.ndim == 2 else 1
    offset = torch.arange(rows, device=index.device)[:, None] * (bins + 2) if index.ndim == 2 else 0
    flat = torch.bincount((index + 1 + offset).reshape(-1), minlength=rows * (bins + 2))
    return flat.reshape(rows, bins + 2) if index.ndim == 2 else flat


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
    with ``attributes`` the attribute groups' moments too (from the centred rows, on the host).

    Every kernel is queued before the first result is copied back: the device waits for the
    host once per block, not once per figure.
    """
    import torch

    if not keep.any():
        return empty_scan(
            z.shape[1],
            bins=len(edges) - 1,
            thresholds=len(thresholds),
            radius_bins=len(radius_edges) - 1,
            attributes=attributes,
        )
    device = z.device
    rows = z if keep.all() else z.index_select(0, torch.from_numpy(np.flatnonzero(keep)).to(device))
    x = rows.to(torch.float64)
    n, dim = x.shape
    mean = x.mean(dim=0)
    d = x - mean
    d2 = d * d
    bins = len(edges) - 1
    edges_t = torch.as_tensor(edges, dtype=torch.float64, device=device)
    length = _row_lengths(x, torch.zeros(dim, dtype=torch.float64, device=device))
    radius_t = torch.as_tensor(radius_edges, dtype=torch.float64, device=device)
    magnitude = x.abs()
    n0, c1, c2 = [], [], []
    for t in np.asarray(thresholds, dtype=np.float64):
        outside = magnitude >= t
        count = outside.sum(dim=1, keepdim=True)
        n0.append((count == 0).sum())
        c1.append((outside & (count == 1)).sum(dim=0))
        if device.type == "cpu":  # only the rows with exactly two outside
            two = outside[count.squeeze(1) == 2].to(torch.float64)
        else:  # a product of indicators: selecting the rows would wait for the device
            two = (outside & (count == 2)).to(torch.float64)
        c2.append(torch.triu(two.T @ two, diagonal=1).round().long())  # pairs a < b, exact in float64
    on_device = {
        "table": _counts(_bins(x.T.contiguous(), edges_t), bins),  # (dim, bins + 2)
        "radius": _counts(_bins(length, radius_t), len(radius_edges) - 1),
        "radius_total": length.sum(),
        "mean": mean,
        "m2": d.T @ d,
        "m3": (d2 * d).sum(dim=0),
        "m4": (d2 * d2).sum(dim=0),
        "min": x.min(dim=0).values,
        "max": x.max(dim=0).values,
        "n0": torch.stack(n0) if n0 else torch.zeros(0, dtype=torch.long, device=device),
        "c1": torch.stack(c1) if c1 else torch.zeros((0, dim), dtype=torch.long, device=device),
        "c2": torch.stack(c2) if c2 else torch.zeros((0, dim, dim), dtype=torch.long, device=device),
    }
    if attributes is not None:
        on_device["d"] = d
    host = {name: value.cpu().numpy() for name, value in on_device.items()}
    table, radius = host["table"], host["radius"]
    moments = Moments(n, host["mean"], host["m2"], host["m3"], host["m4"], host["min"], host["max"])
    return BlockScan(
        moments=moments,
        hist=Histogram(table[:, 1:-1].copy(), table[:, 0].copy(), table[:, -1].copy()),
        radius=Counts1D(radius[1:-1].copy(), int(radius[0]), int(radius[-1]), float(host["radius_total"])),
        slices=Slices(host["n0"].astype(np.int64), host["c1"].astype(np.int64), host["c2"]),
        groups=None if attributes is None else groups_chunk(host["d"], moments.mean, attributes[keep]),
    )


def _row_lengths(x: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """|x - centre| of each row of the float64 ``x``. On the CPU each row's squares are summed
    component after component, in the numba kernels' order, so the radii and their bins are
    theirs; on a GPU one reduction (equal to float64 rounding), which does not wait for the host."""
    import torch

    if x.device.type != "cpu":
        return (x - centre).square().sum(dim=1).sqrt()
    squared = torch.zeros(len(x), dtype=torch.float64)
    for column, c in zip(x.T.contiguous(), centre, strict=True):
        d = column - c
        squared += d * d
    return squared.sqrt()


def centred_radius_counts_torch(
    z: torch.Tensor, keep: np.ndarray, *, centre: np.ndarray, radius_edges: np.ndarray
) -> Counts1D:
    """:func:`latentdask.stats.scan.centred_radius_counts` on z's device: on the CPU the same counts
    (:func:`_row_lengths`, binned by the kernel's rule), the sum of the radii to float64 rounding."""
    import torch

    rows = z if keep.all() else z.index_select(0, torch.from_numpy(np.flatnonzero(keep)).to(z.device))
    length = _row_lengths(
        rows.to(torch.float64), torch.as_tensor(centre, dtype=torch.float64, device=z.device)
    )
    edges = torch.as_tensor(radius_edges, dtype=torch.float64, device=z.device)
    counts = _counts(_bins(length, edges), len(radius_edges) - 1).cpu().numpy()
    return Counts1D(counts[1:-1].copy(), int(counts[0]), int(counts[-1]), float(length.sum()))
