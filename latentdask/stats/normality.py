"""How far the real z-points are from a (multivariate) normal distribution.

The rows tested are the rows the statistics describe (their split and attribute conditions):
every multivariate test needs the mean and covariance *of the rows tested*.

1. **Per-component moments** — skewness and excess kurtosis of every component, from the
   full-corpus moments in ``stats.zarr`` (no re-read).
2. **Shapiro–Wilk** per component on a random subsample (scipy; the test is defined for up
   to 5,000 values).
3. **One pass over every row** (one task per block, through :mod:`latentdask.reduction`):
   the squared Mahalanobis distance d² of each vector, binned to compare with its exact
   in-sample law (QQ quantiles, the share beyond its 99.73 % point, a Kolmogorov–Smirnov
   distance), Σd⁴ for Mardia's kurtosis, and the third-moment tensor for Mardia's skewness
   (every row up to ``skewness_rows``; a seeded sample of that many rows above).
4. **Henze–Zirkler** on a subsample, from pingouin, reported as not informative where its
   kernel terms vanish (N = 256). See :mod:`latentdask.stats.multivariate` for the tests
   and when each is valid.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import scipy.stats
import xarray as xr

from latentdask.cluster.watch import compute
from latentdask.errors import LatentdaskError
from latentdask.location import Location, Where, location
from latentdask.output import save_figure, write_json
from latentdask.reduction import reduce_blocks, row_blocks
from latentdask.stats import multivariate
from latentdask.stats.io import fitted_rows, open_stats
from latentdask.stats.options import SKEWNESS_ROWS
from latentdask.stats.reference import Reference
from latentdask.stats.summary import select_rows
from latentdask.store.points import ZPoints, open_zpoints
from latentdask.store.rows import real_sample, selection_mask

#: the kinds of output normality.json and its QQ plot are, in their ``latentdask`` records
NORMALITY_KIND = "normality"
QQ_PLOT_KIND = "normality-qq"
#: probabilities at which the Mahalanobis² quantiles are compared with their in-sample law's
QQ_PROBABILITIES = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999)
#: the tail of the in-sample law the "beyond" share is counted at (the 3-sigma two-sided mass)
TAIL = 0.9973
#: bins of the d² histogram (geometric: 0.2 % wide at n = 200,000)
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
    largest: float  # the largest d² (the top of the overflow bin, so every quantile is finite)

    @property
    def count(self) -> int:
        return int(self.counts.sum()) + self.overflow

    def quantile(self, q: float) -> float:
        """The q-quantile, interpolated linearly within its bin (the overflow bin ends at the largest d²)."""
        counts = np.append(self.counts, self.overflow)
        edges = np.append(self.edges, max(self.largest, self.edges[-1]))
        cdf = np.cumsum(counts) / self.count
        k = min(int(np.searchsorted(cdf, q)), len(counts) - 1)
        before = cdf[k - 1] if k else 0.0
        fraction = (q - before) / (cdf[k] - before) if cdf[k] > before else 0.5
        return float(edges[k] + fraction * (edges[k + 1] - edges[k]))

    def share_above(self, value: float) -> float:
        """Share of vectors with d² above ``value`` (bin containing it split linearly)."""
        k = int(np.clip(np.searchsorted(self.edges, value) - 1, 0, len(self.counts) - 1))
        inside = self.counts[k] * (self.edges[k + 1] - value) / (self.edges[k + 1] - self.edges[k])
        return float((self.counts[k + 1 :].sum() + max(inside, 0.0) + self.overflow) / self.count)


def _multivariate_block(
    block: np.ndarray,
    keep: np.ndarray | None,
    *,
    mean: np.ndarray,
    inverse_factor: np.ndarray,
    edges: np.ndarray,
    skewness: bool,
) -> dict[str, Any]:
    x = np.asarray(block)
    rows, _, _ = select_rows(x, None, keep)  # the statistics' own row filter
    y = multivariate.whiten(x[rows], mean, inverse_factor)
    d2 = np.einsum("ij,ij->i", y, y)
    counts, _ = np.histogram(d2, bins=edges)
    return {
        "counts": counts,
        "overflow": int((d2 > edges[-1]).sum()),
        "sum_d2": float(d2.sum()),
        "sum_d4": float((d2**2).sum()),
        "max": float(d2.max(initial=0.0)),
        "tensor": multivariate.skewness_tensor(y) if skewness else None,
    }


@dataclass(frozen=True)
class MultivariatePass:
    histogram: D2Histogram
    sum_d4: float
    tensor: np.ndarray | None  # Σ y⊗y⊗y, packed (None: not over every row)


def multivariate_pass(
    corpus: ZPoints,
    reference: Reference,
    *,
    rows: int,
    keep: Any = None,
    skewness: bool = False,
    scheduler: Any = None,
) -> MultivariatePass:
    """d² of every valid, finite (and ``keep``-selected) vector, binned, with Σd⁴ and, if asked,
    the skewness tensor: one task per block. ``rows``: how many the selection holds (for the bins)."""
    dim = len(reference.mean)
    edges = multivariate.d2_edges(rows, dim, D2_BINS)
    masks = None
    for mask in (corpus.valid, keep):
        if mask is not None:
            masks = mask if masks is None else masks & mask
    kernel = partial(
        _multivariate_block,
        mean=reference.mean,
        inverse_factor=reference.inverse_factor,
        edges=edges,
        skewness=skewness,
    )
    graph = reduce_blocks(
        row_blocks(corpus.z, masks), chunk=kernel, combine=multivariate.merge_sums, name="mahalanobis"
    )
    (merged,) = compute(graph, scheduler=scheduler)
    histogram = D2Histogram(
        edges=edges,
        counts=np.asarray(merged["counts"]),
        overflow=int(merged["overflow"]),
        total=merged["sum_d2"],
        largest=merged["max"],
    )
    return MultivariatePass(histogram, merged["sum_d4"], merged["tensor"])


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


def qq_summary(histogram: D2Histogram, dim: int) -> dict[str, Any]:
    n = histogram.count
    law = multivariate.in_sample_law(n, dim)
    tail_point = float(law.ppf(TAIL))
    return {
        "vectors": n,
        "law": f"(n−1)²/n · Beta({dim}/2, ({n}−{dim}−1)/2), the exact law of an in-sample d²",
        "mean_d2": histogram.total / n,
        "expected_mean_d2": dim * (n - 1) / n,
        "quantiles": [
            {"p": p, "d2": histogram.quantile(p), "expected": float(law.ppf(p))} for p in QQ_PROBABILITIES
        ],
        "beyond_tail": {
            "p": TAIL,
            "point": tail_point,
            "share": histogram.share_above(tail_point),
            "expected_share": 1 - TAIL,
        },
    }


def mardia_tests(
    result: MultivariatePass,
    corpus: ZPoints,
    keep: Any,
    alpha: float,
    *,
    seed: int,
    skewness_rows: int,
    scheduler: Any,
) -> list[dict[str, Any]]:
    """Mardia's kurtosis over every row; his skewness over every row or a seeded sample."""
    n, dim = result.histogram.count, corpus.z.shape[1]
    to_divisor_n = n / (n - 1)  # the pass whitens with the covariance of divisor n − 1
    b2 = to_divisor_n**2 * result.sum_d4 / n
    started = time.perf_counter()
    if result.tensor is not None:
        b1 = to_divisor_n**3 * multivariate.skewness_from_tensor(result.tensor, n)
        rows, how = n, "every row"
    else:
        sample, _ = real_sample(corpus, skewness_rows, seed, scheduler, keep=keep)
        y = multivariate.own_whitening(sample)
        b1 = multivariate.skewness_from_tensor(multivariate.skewness_tensor(y), len(y))
        rows, how = len(y), f"a seeded sample of {len(y):,} of the {n:,} rows (over --skewness-rows)"
    skewness = multivariate.skewness_test(b1, rows, dim, alpha) | {
        "rows_used": how,
        "multiply_adds": rows * dim * dim * (dim + 1) // 2,
    }
    if result.tensor is None:
        skewness["seconds"] = time.perf_counter() - started
    return [multivariate.kurtosis_test(b2, n, dim, alpha), skewness]


def normality(
    store: Where,
    stats: Where,
    *,
    sample_size: int = 5000,
    hz_size: int = 2000,
    skewness_rows: int = SKEWNESS_ROWS,
    alpha: float = 0.01,
    split: str | None = None,
    where: Sequence[str] | None = None,
    seed: int = 0,
    scheduler: Any = None,
) -> dict[str, Any]:
    """Every view for the rows the statistics describe; see the module docstring.

    ``split`` and ``where``, when given, must be the statistics' own (the tests need the mean
    and covariance of the rows they test).
    """
    if not 3 <= sample_size <= 5000:
        raise NormalityError(f"the Shapiro–Wilk sample must hold 3 to 5,000 points, not {sample_size}")
    corpus = open_zpoints(store)
    statistics = open_stats(stats)
    fitted_split, fitted_where = fitted_rows(statistics)
    asked = (fitted_split if split is None else split, fitted_where if where is None else tuple(where))
    if asked != (fitted_split, fitted_where):
        raise NormalityError(
            f"the statistics {stats} describe split={fitted_split}, where={list(fitted_where)}; normality "
            f"tests those rows with their mean and covariance: compute statistics for split={asked[0]}, "
            f"where={list(asked[1])} first, or leave --split and --where out"
        )
    reference = Reference.from_stats(statistics)
    if corpus.z.shape[1] != len(reference.mean):
        raise NormalityError(
            f"{store} has {corpus.z.shape[1]} components; the statistics {stats} have {len(reference.mean)}"
        )
    dim = len(reference.mean)
    count = int(statistics["count"])
    # the in-sample law and Mardia's tests need an invertible covariance: N + 2 rows at least
    # (the centred rows span at most n − 1 dimensions, and Beta's second parameter is (n − N − 1)/2)
    needed = max(dim + 2, 3)
    if count < needed:
        raise NormalityError(
            f"normality needs at least {needed} rows for {dim} components (N + 2, for an invertible "
            f"covariance); the statistics {stats} count {count}"
        )
    keep, selection = selection_mask(corpus, *asked)
    sample, _ = real_sample(corpus, sample_size, seed, scheduler, keep=keep)
    started = time.perf_counter()
    result = multivariate_pass(
        corpus, reference, rows=count, keep=keep, skewness=count <= skewness_rows, scheduler=scheduler
    )
    seconds = time.perf_counter() - started
    if result.histogram.count != count:
        raise NormalityError(
            f"the statistics {stats} count {count} rows ({selection}); {store} has {result.histogram.count}: "
            "were they computed on this store?"
        )
    # a random subset of the sample (its rows are in store order: the first would all be one split)
    hz_rows = np.sort(np.random.default_rng(seed).permutation(len(sample))[:hz_size])
    tests = [
        multivariate.henze_zirkler_test(sample[hz_rows], alpha),
        *mardia_tests(
            result, corpus, keep, alpha, seed=seed, skewness_rows=skewness_rows, scheduler=scheduler
        ),
        multivariate.beta_law_test(result.histogram.edges, result.histogram.counts, count, dim, alpha),
    ]
    return {
        "selection": selection,
        "alpha": alpha,
        "moments": moment_summary(statistics),
        "shapiro_wilk": shapiro_summary(sample, alpha),
        "multivariate": tests,
        "mahalanobis_qq": qq_summary(result.histogram, dim) | {"pass_seconds": seconds},
    }


def format_test(test: dict[str, Any]) -> str:
    """One line per multivariate test: its statistic and verdict, or why it says nothing here."""
    name = {
        "henze_zirkler": "Henze–Zirkler",
        "mardia_skewness": "Mardia skewness",
        "mardia_kurtosis": "Mardia kurtosis",
        "mahalanobis_beta": "d² vs in-sample law (KS)",
    }.get(test["test"], test["test"])
    if not test["informative"]:
        return f"{name}: not informative — {test['reason']}"
    verdict = "rejects normality" if test["reject"] else "consistent with normal"
    return (
        f"{name}: statistic {test['statistic']:.4g}, p {test['p_value']:.3g} → {verdict} ({test['reason']})"
    )


def format_normality(result: dict[str, Any]) -> str:
    moments, sw, qq = (result[k] for k in ("moments", "shapiro_wilk", "mahalanobis_qq"))
    lines = [
        f"moments: median |skewness| {moments['skewness_abs_median']:.3f}, median excess kurtosis "
        f"{moments['excess_kurtosis_median']:.3f}",
        f"Shapiro–Wilk ({sw['sample']} points): {sw['rejected']} of {sw['components']} components rejected "
        f"at α = {result['alpha']:g}; median W {sw['w_median']:.4f}",
        *(format_test(test) for test in result["multivariate"]),
        f"Mahalanobis² over {qq['vectors']:,} vectors: mean {qq['mean_d2']:.2f} "
        f"(expected {qq['expected_mean_d2']:.2f}); beyond the in-sample law's {qq['beyond_tail']['p']:g} "
        f"point: {qq['beyond_tail']['share']:.4f} (normal: {qq['beyond_tail']['expected_share']:.4f})",
        f"{'p':>7} {'d²':>10} {'expected':>10}",
        *(f"{q['p']:>7g} {q['d2']:>10.2f} {q['expected']:>10.2f}" for q in qq["quantiles"]),
    ]
    return "\n".join(lines)


def plot_qq(result: dict[str, Any], out: Where, *, inputs: Sequence[Where] = ()) -> Location:
    """The QQ comparison as a PNG: d² quantiles against those of their exact in-sample law."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    quantiles = result["mahalanobis_qq"]["quantiles"]
    expected = [q["expected"] for q in quantiles]
    d2 = [q["d2"] for q in quantiles]
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    ax.plot(expected, d2, "o-", label="real z-points")
    ax.plot(
        [min(expected), max(expected)], [min(expected), max(expected)], "k--", label="multivariate normal"
    )
    ax.set_xlabel("quantile of the in-sample law of d² under normality")
    ax.set_ylabel("Mahalanobis² quantile")
    ax.set_title(f"Mahalanobis² vs its normal law ({result['mahalanobis_qq']['vectors']:,} vectors)")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, out, QQ_PLOT_KIND, inputs=inputs)
    plt.close(fig)
    return location(out)


def write_normality(result: dict[str, Any], out: Where, *, inputs: Sequence[Where] = ()) -> Location:
    """Write ``normality.json`` (replacing only an earlier one of latentdask's)."""
    return write_json(out, result, NORMALITY_KIND, inputs=inputs)
