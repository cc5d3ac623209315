"""How far the real z-points are from a (multivariate) normal distribution.

Four views, from the cheapest to the most demanding:

1. **Per-component moments** — skewness and excess kurtosis of every component, from the
   full-corpus moments in ``stats.zarr`` (no re-read).
2. **Shapiro–Wilk** per component on a random subsample (scipy; the test is defined for up
   to 5,000 values).
3. **Mahalanobis² against χ²(N)** over ALL valid vectors: if the corpus were normal, the
   squared Mahalanobis distance to the mean would follow χ² with N degrees of freedom. One
   task per block of the store bins d² on a fine grid; the quantiles read off the merged
   histogram are set against χ²(N)'s (a QQ comparison), together with the share of points
   beyond χ²'s 99.73 % point (0.27 % under normality).
4. **Henze–Zirkler** multivariate test on a subsample, from pingouin (a maintained
   implementation rather than one written here).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import dask
import numpy as np
import scipy.stats
import xarray as xr
from pydantic import BaseModel, ConfigDict, Field

from latentdask.errors import LatentdaskError
from latentdask.generate.score import Reference, real_sample
from latentdask.stats.io import open_stats
from latentdask.stats.reduce import reduce_blocks, row_blocks
from latentdask.stats.summary import select_rows
from latentdask.store.output import save_figure, write_json
from latentdask.store.points import ZPoints, open_zpoints
from latentdask.store.rows import selection_mask

#: probabilities at which the Mahalanobis² quantiles are compared with χ²(N)'s
#: the kinds of output normality.json and its QQ plot are, in their ``latentdask`` records
NORMALITY_KIND = "normality"
QQ_PLOT_KIND = "normality-qq"
QQ_PROBABILITIES = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999)
#: the χ² tail the "beyond" share is counted at (the 3-sigma two-sided mass)
TAIL = 0.9973
#: bins of the d² histogram
D2_BINS = 8192
#: the shown number of most skewed / least normal components
SHOWN = 10


class NormalityError(LatentdaskError):
    """A normality check that cannot run on the inputs given."""


@dataclass(frozen=True)
class D2Histogram:
    """Squared Mahalanobis distances of every selected vector, binned."""

    edges: np.ndarray
    counts: np.ndarray
    overflow: int
    total: float  # Σ d² (for the mean, which is exactly N (n − 1) / n for the corpus itself)

    @property
    def count(self) -> int:
        return int(self.counts.sum()) + self.overflow

    def quantile(self, q: float) -> float:
        """The q-quantile, interpolated linearly within its bin (inf when it lies in the overflow)."""
        cdf = np.cumsum(self.counts) / self.count
        k = int(np.searchsorted(cdf, q))
        if k >= len(self.counts):
            return float("inf")
        before = cdf[k - 1] if k else 0.0
        fraction = (q - before) / (cdf[k] - before) if cdf[k] > before else 0.5
        return float(self.edges[k] + fraction * (self.edges[k + 1] - self.edges[k]))

    def share_above(self, value: float) -> float:
        """Share of vectors with d² above ``value`` (bin containing it split linearly)."""
        k = int(np.clip(np.searchsorted(self.edges, value) - 1, 0, len(self.counts) - 1))
        inside = self.counts[k] * (self.edges[k + 1] - value) / (self.edges[k + 1] - self.edges[k])
        return float((self.counts[k + 1 :].sum() + max(inside, 0.0) + self.overflow) / self.count)


def _d2_block(
    block: np.ndarray,
    keep: np.ndarray | None,
    *,
    mean: np.ndarray,
    inverse_factor: np.ndarray,
    edges: np.ndarray,
) -> tuple[np.ndarray, int, float]:
    x = np.asarray(block)
    rows, _, _ = select_rows(x, None, keep)  # the statistics' own row filter
    whitened = (x[rows].astype(np.float64) - mean) @ inverse_factor.T
    d2 = np.einsum("ij,ij->i", whitened, whitened)
    counts, _ = np.histogram(d2, bins=edges)
    return counts, int((d2 > edges[-1]).sum()), float(d2.sum())


def _merge(parts: Sequence[tuple[np.ndarray, int, float]]) -> tuple[np.ndarray, int, float]:
    return (sum(p[0] for p in parts), sum(p[1] for p in parts), sum(p[2] for p in parts))  # type: ignore[return-value]


def mahalanobis_histogram(
    corpus: ZPoints, reference: Reference, *, keep: Any = None, scheduler: Any = None
) -> D2Histogram:
    """d² of every valid, finite (and ``keep``-selected) vector, one task per block."""
    dim = len(reference.mean)
    edges = np.linspace(0.0, 4.0 * scipy.stats.chi2.ppf(1 - 1e-9, dim), D2_BINS + 1)
    masks = None
    for mask in (corpus.valid, keep):
        if mask is not None:
            masks = mask if masks is None else masks & mask
    kernel = partial(_d2_block, mean=reference.mean, inverse_factor=reference.inverse_factor, edges=edges)
    graph = reduce_blocks(row_blocks(corpus.z, masks), chunk=kernel, combine=_merge, name="mahalanobis")
    (merged,) = dask.compute(graph, scheduler=scheduler)
    counts, overflow, total = merged
    return D2Histogram(edges=edges, counts=np.asarray(counts), overflow=int(overflow), total=total)


def moment_summary(stats: xr.Dataset) -> dict[str, Any]:
    skew, kurt = stats["skewness"].values, stats["kurtosis"].values
    order = np.argsort(-np.abs(np.nan_to_num(skew)))[:SHOWN]
    return {
        "skewness_abs_median": float(np.nanmedian(np.abs(skew))),
        "excess_kurtosis_median": float(np.nanmedian(kurt)),
        "excess_kurtosis_range": [float(np.nanmin(kurt)), float(np.nanmax(kurt))],
        "most_skewed": [
            {"latent": int(j), "skewness": float(skew[j]), "excess_kurtosis": float(kurt[j])} for j in order
        ],
    }


def shapiro_summary(sample: np.ndarray, alpha: float) -> dict[str, Any]:
    tests = [scipy.stats.shapiro(sample[:, j]) for j in range(sample.shape[1])]
    w = np.array([t.statistic for t in tests])
    p = np.array([t.pvalue for t in tests])
    order = np.argsort(w)[:SHOWN]
    return {
        "sample": len(sample),
        "rejected": int((p < alpha).sum()),
        "components": sample.shape[1],
        "w_median": float(np.median(w)),
        "least_normal": [{"latent": int(j), "w": float(w[j]), "p": float(p[j])} for j in order],
    }


def henze_zirkler(sample: np.ndarray, alpha: float) -> dict[str, Any]:
    import pingouin

    if len(sample) <= sample.shape[1]:  # the covariance of the sample would be singular
        return {"sample": len(sample), "skipped": f"needs more points than the {sample.shape[1]} components"}
    result = pingouin.multivariate_normality(sample.astype(np.float64), alpha=alpha)
    return {
        "sample": len(sample),
        "hz": float(result.hz),
        "p": float(result.pval),
        "normal": bool(result.normal),
    }


def qq_summary(histogram: D2Histogram, dim: int) -> dict[str, Any]:
    chi2 = scipy.stats.chi2(dim)
    return {
        "vectors": histogram.count,
        "mean_d2": histogram.total / histogram.count,
        "expected_mean_d2": dim * (histogram.count - 1) / histogram.count,
        "quantiles": [
            {"p": p, "d2": histogram.quantile(p), "chi2": float(chi2.ppf(p))} for p in QQ_PROBABILITIES
        ],
        "beyond_tail": {
            "p": TAIL,
            "chi2_point": float(chi2.ppf(TAIL)),
            "share": histogram.share_above(float(chi2.ppf(TAIL))),
            "expected_share": 1 - TAIL,
        },
    }


class NormalityOptions(BaseModel):
    """The options of ``latentdask normality`` and of a workflow's ``normality`` section."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sample_size: int = Field(default=5000, ge=3, le=5000)  # Shapiro–Wilk is defined for 3 to 5,000 values
    hz_size: int = Field(default=2000, ge=1)
    alpha: float = Field(default=0.01, gt=0, lt=1)
    split: str = "all"
    where: tuple[str, ...] = ()
    seed: int = 0


def normality(
    store: str | Path,
    stats: str | Path,
    *,
    sample_size: int = 5000,
    hz_size: int = 2000,
    alpha: float = 0.01,
    split: str = "all",
    where: Sequence[str] = (),
    seed: int = 0,
    scheduler: Any = None,
) -> dict[str, Any]:
    """All four views for the store's selected vectors; see the module docstring."""
    if not 3 <= sample_size <= 5000:
        raise NormalityError(f"the Shapiro–Wilk sample must hold 3 to 5,000 points, not {sample_size}")
    corpus = open_zpoints(store)
    statistics = open_stats(stats)
    reference = Reference.from_stats(statistics)
    if corpus.z.shape[1] != len(reference.mean):
        raise NormalityError(
            f"{store} has {corpus.z.shape[1]} components; the statistics {stats} have {len(reference.mean)}"
        )
    dim = len(reference.mean)
    # χ²(N) describes d² only with an invertible covariance: N + 1 rows at least (the centred
    # rows span at most n − 1 dimensions); Shapiro–Wilk needs 3 values
    needed = max(dim + 1, 3)
    if int(statistics["count"]) < needed:
        raise NormalityError(
            f"normality needs at least {needed} rows for {dim} components (N + 1, for an invertible "
            f"covariance); the statistics {stats} count {int(statistics['count'])}"
        )
    keep, selection = selection_mask(corpus, split, where)
    sample, _ = real_sample(corpus, sample_size, seed, scheduler, prefer_test=False, keep=keep)
    histogram = mahalanobis_histogram(corpus, reference, keep=keep, scheduler=scheduler)
    if histogram.count < 3:  # a selection (split, where) of too few rows
        raise NormalityError(
            f"normality needs at least 3 valid, finite rows in the selection ({selection}); {store} has "
            f"{histogram.count}"
        )
    return {
        "selection": selection,
        "alpha": alpha,
        "moments": moment_summary(statistics),
        "shapiro_wilk": shapiro_summary(sample, alpha),
        "henze_zirkler": henze_zirkler(sample[:hz_size], alpha),
        "mahalanobis_qq": qq_summary(histogram, len(reference.mean)),
    }


def format_normality(result: dict[str, Any]) -> str:
    moments, sw, hz, qq = (result[k] for k in ("moments", "shapiro_wilk", "henze_zirkler", "mahalanobis_qq"))
    lines = [
        f"moments: median |skewness| {moments['skewness_abs_median']:.3f}, median excess kurtosis "
        f"{moments['excess_kurtosis_median']:.3f}",
        f"Shapiro–Wilk ({sw['sample']} points): {sw['rejected']} of {sw['components']} components rejected "
        f"at α = {result['alpha']:g}; median W {sw['w_median']:.4f}",
        f"Henze–Zirkler ({hz['sample']} points): "
        + (
            f"skipped, {hz['skipped']}"
            if "skipped" in hz
            else f"HZ {hz['hz']:.4f}, p {hz['p']:.3g} → "
            + ("consistent with normal" if hz["normal"] else "not normal")
        ),
        f"Mahalanobis² over {qq['vectors']:,} vectors: mean {qq['mean_d2']:.2f} "
        f"(expected {qq['expected_mean_d2']:.2f}); "
        f"beyond χ² {qq['beyond_tail']['p']:g} point: {qq['beyond_tail']['share']:.4f} "
        f"(normal: {qq['beyond_tail']['expected_share']:.4f})",
        f"{'p':>7} {'d²':>10} {'χ²':>10}",
        *(f"{q['p']:>7g} {q['d2']:>10.2f} {q['chi2']:>10.2f}" for q in qq["quantiles"]),
    ]
    return "\n".join(lines)


def plot_qq(result: dict[str, Any], out: str | Path, *, inputs: Sequence[str | Path] = ()) -> Path:
    """The QQ comparison as a PNG: d² quantiles against χ²(N) quantiles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    quantiles = result["mahalanobis_qq"]["quantiles"]
    chi2 = [q["chi2"] for q in quantiles]
    d2 = [q["d2"] for q in quantiles]
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    ax.plot(chi2, d2, "o-", label="real z-points")
    ax.plot([min(chi2), max(chi2)], [min(chi2), max(chi2)], "k--", label="multivariate normal")
    ax.set_xlabel("χ²(N) quantile")
    ax.set_ylabel("Mahalanobis² quantile")
    ax.set_title(f"Mahalanobis² vs χ² ({result['mahalanobis_qq']['vectors']:,} vectors)")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, out, QQ_PLOT_KIND, inputs=inputs)
    plt.close(fig)
    return Path(out)


def write_normality(result: dict[str, Any], out: str | Path, *, inputs: Sequence[str | Path] = ()) -> Path:
    """Write ``normality.json`` (replacing only an earlier one of latentdask's)."""
    return write_json(out, result, NORMALITY_KIND, inputs=inputs)
