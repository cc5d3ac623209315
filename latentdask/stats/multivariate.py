"""Multivariate normality tests that hold at N = 256, and the check that says when one does not.

Every test here is computed from the points *whitened by their own mean and covariance*
(``y = L⁻¹ (x − x̄)`` with ``S = L Lᵀ``): the tests are about the rows the moments came from.

- **Mardia's kurtosis** b₂ = mean of d⁴, with d² = |y|² under the covariance with divisor n
  (Mardia 1970). Under normality b₂ has the exact mean N(N+2)(n−1)/(n+1) and the exact
  variance of Mardia (1974); (b₂ − mean)/sd is compared with N(0, 1), two-sided.
- **Mardia's skewness** b₁ = (1/n²) Σᵢⱼ (yᵢᵀyⱼ)³ = |T|²_F / n² with T = Σᵢ yᵢ⊗yᵢ⊗yᵢ, the
  third-moment tensor, summed block by block like the co-moments: per block one GEMM of the
  row-wise products yᵢ⊗yᵢ (the N(N+1)/2 pairs j ≤ k, the tensor's pair symmetry) against yᵢ,
  n·N²(N+1)/2 multiply-adds in all. n·k·b₁/6 with Mardia's (1974) small-sample factor k is
  compared with χ²(N(N+1)(N+2)/6).
- **Mahalanobis² against its exact in-sample law**: for rows whose own mean and covariance
  (divisor n − 1) are used, n·d²/(n−1)² ~ Beta(N/2, (n−N−1)/2) (Gnanadesikan & Kettenring
  1972) — not χ²(N), which holds only for points the moments did not see. Compared by the
  Kolmogorov–Smirnov distance at the edges of the d² histogram.
- **Henze–Zirkler** (pingouin) is reported as not informative when its kernel terms vanish:
  at N = 256 every term but the n diagonal ones underflows, and HZ = 1 whatever the data.

When the tests hold: the reference laws of b₁ and b₂ are asymptotic in n for fixed N. Their
rejection rates under normality were checked by simulation (tests/test_multivariate.py and
the notes at :data:`KURTOSIS_ROWS_PER_COMPONENT` and :data:`SKEWNESS_ROWS_PER_COMPONENT`);
below those many rows per component a test is reported with ``informative: false`` and the
reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.stats

#: rows per component from which Mardia's kurtosis test (exact mean and variance) is reported
#: as informative: its rejection rate at α = 0.05 was 0.045–0.055 over Gaussian samples of
#: (n, N) = (2,000, 256), (1,600, 256) and (300, 32) (200–400 seeds each)
KURTOSIS_ROWS_PER_COMPONENT = 5
#: the same for the skewness test: at n = 5 N (N = 64) it rejected about 9 % at α = 0.05 (350
#: seeds), too often; the tests check its size from 25 N (tests/test_multivariate.py)
SKEWNESS_ROWS_PER_COMPONENT = 25
#: rows per block of the skewness GEMM: the pair products of this many rows at N = 256 take 34 MB
SKEWNESS_ROWS_PER_GEMM = 128
#: below this share of the diagonal's contribution, Henze–Zirkler's data terms count as vanished
HZ_NEGLIGIBLE = 1e-6


def pair_index(dim: int) -> tuple[np.ndarray, np.ndarray]:
    """The component pairs j ≤ k of the packed third-moment tensor."""
    return np.triu_indices(dim)


def skewness_tensor(y: np.ndarray) -> np.ndarray:
    """Σᵢ yᵢⱼ yᵢₖ yᵢₗ for the pairs j ≤ k (rows) and every l (columns): (N(N+1)/2, N) float64."""
    y = np.asarray(y, dtype=np.float64)
    j, k = pair_index(y.shape[1])
    tensor = np.zeros((len(j), y.shape[1]))
    for start in range(0, len(y), SKEWNESS_ROWS_PER_GEMM):
        rows = y[start : start + SKEWNESS_ROWS_PER_GEMM]
        tensor += (rows[:, j] * rows[:, k]).T @ rows
    return tensor


def skewness_from_tensor(tensor: np.ndarray, n: int) -> float:
    """b₁ = |T|²_F / n² from the packed tensor (pairs j < k stand for two entries)."""
    dim = tensor.shape[1]
    j, k = pair_index(dim)
    weight = np.where(j == k, 1.0, 2.0)
    return float((weight[:, None] * tensor**2).sum()) / n**2


def whiten(x: np.ndarray, mean: np.ndarray, inverse_factor: np.ndarray) -> np.ndarray:
    """``L⁻¹ (x − mean)`` row by row, in float64."""
    return (np.asarray(x, dtype=np.float64) - mean) @ inverse_factor.T


def own_whitening(x: np.ndarray) -> np.ndarray:
    """Rows whitened by their own mean and covariance with divisor n (Mardia's definition)."""
    x = np.asarray(x, dtype=np.float64)
    centred = x - x.mean(axis=0)
    factor = np.linalg.cholesky(centred.T @ centred / len(x))
    return np.linalg.solve(factor, centred.T).T


def _result(
    test: str, statistic: float, p_value: float | None, alpha: float, *, informative: bool, reason: str
) -> dict[str, Any]:
    return {
        "test": test,
        "statistic": statistic,
        "p_value": p_value,
        "reject": bool(informative and p_value is not None and p_value < alpha),
        "informative": informative,
        "reason": reason,
    }


def _enough_rows(n: int, dim: int, per_component: int) -> tuple[bool, str]:
    if n >= per_component * dim:
        return True, f"asymptotic law; n = {n:,} ≥ {per_component} N (its size checked by simulation)"
    return False, (
        f"n = {n:,} rows for N = {dim} components: the asymptotic law holds its size only from "
        f"n ≥ {per_component} N = {per_component * dim:,}"
    )


def kurtosis_test(b2: float, n: int, dim: int, alpha: float) -> dict[str, Any]:
    """Mardia's kurtosis against its exact mean and variance under normality (two-sided)."""
    p = dim
    mean = p * (p + 2) * (n - 1) / (n + 1)
    variance = 8 * p * (p + 2) * (n - 3) * (n - p - 1) * (n - p + 1) / ((n + 1) ** 2 * (n + 3) * (n + 5))
    z = (b2 - mean) / math.sqrt(variance)
    informative, reason = _enough_rows(n, dim, KURTOSIS_ROWS_PER_COMPONENT)
    result = _result(
        "mardia_kurtosis",
        z,
        float(2 * scipy.stats.norm.sf(abs(z))),
        alpha,
        informative=informative,
        reason=reason,
    )
    return result | {"b2": b2, "expected_b2": mean, "rows": n}


def skewness_test(b1: float, n: int, dim: int, alpha: float) -> dict[str, Any]:
    """Mardia's skewness, n·k·b₁/6 with the small-sample factor k, against χ²(N(N+1)(N+2)/6)."""
    p = dim
    df = p * (p + 1) * (p + 2) / 6
    k = (p + 1) * (n + 1) * (n + 3) / (n * ((n + 1) * (p + 1) - 6))
    statistic = n * k * b1 / 6
    informative, reason = _enough_rows(n, dim, SKEWNESS_ROWS_PER_COMPONENT)
    result = _result(
        "mardia_skewness",
        statistic,
        float(scipy.stats.chi2.sf(statistic, df)),
        alpha,
        informative=informative,
        reason=reason,
    )
    return result | {"b1": b1, "degrees_of_freedom": df, "rows": n}


def in_sample_law(n: int, dim: int) -> Any:
    """The law of d² (covariance with divisor n − 1) of a row the mean and covariance saw."""
    return scipy.stats.beta(dim / 2, (n - dim - 1) / 2, scale=(n - 1) ** 2 / n)


def d2_edges(n: int, dim: int, bins: int) -> np.ndarray:
    """Histogram edges holding every in-sample d², 0 to its bound (n−1)²/n: the law's ``bins``
    quantiles (each bin 1/bins of the mass under normality, so the KS distance sees fine
    departures) merged with ``bins`` geometric edges (so quantiles of data far from the law
    are still read off narrow bins)."""
    upper = (n - 1) ** 2 / n * (1 + 1e-9)
    lower = min(1e-3 * dim, upper / 2)
    quantiles = in_sample_law(n, dim).ppf(np.arange(1, bins) / bins)
    edges = np.concatenate([[0.0, upper], np.geomspace(lower, upper, bins), quantiles])
    return np.unique(edges[np.isfinite(edges) & (edges <= upper)])


def beta_law_test(edges: np.ndarray, counts: np.ndarray, n: int, dim: int, alpha: float) -> dict[str, Any]:
    """Kolmogorov–Smirnov distance between the binned d² and their exact in-sample law."""
    empirical = np.concatenate([[0.0], np.cumsum(counts)]) / counts.sum()
    distance = float(np.abs(empirical - in_sample_law(n, dim).cdf(edges)).max())
    return _result(
        "mahalanobis_beta",
        distance,
        float(scipy.stats.kstwo(n).sf(distance)),
        alpha,
        informative=True,
        reason=(
            "exact law of in-sample d²; compared at the histogram's edges, so the distance is a lower "
            "bound and the p-value conservative"
        ),
    )


@dataclass(frozen=True)
class HenzeZirklerTerms:
    """log₁₀ of the largest data-dependent term of HZ/n beside the diagonal's 1/n."""

    largest_log10: float
    negligible: bool


def henze_zirkler_terms(sample: np.ndarray) -> HenzeZirklerTerms:
    """Whether Henze–Zirkler's data terms vanish against its diagonal (then HZ = 1 for any data).

    HZ = n (1/n + (1/n²) Σᵢ≠ⱼ e^(−β² Dᵢⱼ/2) − 2 (1+β²)^(−N/2) (1/n) Σᵢ e^(−β² Dᵢ/(2(1+β²)))
    + (1+2β²)^(−N/2)), with Dᵢⱼ, Dᵢ the Mahalanobis² between rows and to the mean.
    """
    y = own_whitening(sample)
    n, p = y.shape
    beta = (1 / math.sqrt(2)) * ((2 * p + 1) / 4) ** (1 / (p + 4)) * n ** (1 / (p + 4))
    d_i = np.einsum("ij,ij->i", y, y)
    d_ij = d_i[:, None] + d_i[None, :] - 2 * (y @ y.T)
    off_diagonal = -(beta**2) / 2 * d_ij[~np.eye(n, dtype=bool)]
    logs = [
        float(scipy.special.logsumexp(off_diagonal)) - 2 * math.log(n),
        math.log(2)
        - p / 2 * math.log1p(beta**2)
        + float(scipy.special.logsumexp(-(beta**2) / (2 * (1 + beta**2)) * d_i))
        - math.log(n),
        -p / 2 * math.log1p(2 * beta**2),
    ]
    largest = max(logs) + math.log(n)  # against the diagonal's n · (1/n) = 1
    return HenzeZirklerTerms(largest / math.log(10), largest < math.log(HZ_NEGLIGIBLE))


def henze_zirkler_test(sample: np.ndarray, alpha: float) -> dict[str, Any]:
    """pingouin's Henze–Zirkler, informative only where its data terms do not vanish."""
    import pingouin

    n, dim = sample.shape
    if n <= dim:
        return _result(
            "henze_zirkler",
            float("nan"),
            None,
            alpha,
            informative=False,
            reason=f"needs more points than the {dim} components",
        )
    result = pingouin.multivariate_normality(sample.astype(np.float64), alpha=alpha)
    terms = henze_zirkler_terms(sample)
    reason = (
        f"at N = {dim} and n = {n:,} every kernel term but the diagonal vanishes (the largest is "
        f"1e{terms.largest_log10:.0f} of it): HZ = 1 whatever the data"
        if terms.negligible
        else f"sample of {n:,} points; kernel terms up to 1e{terms.largest_log10:.1f} of the diagonal"
    )
    return _result(
        "henze_zirkler",
        float(result.hz),
        float(result.pval),
        alpha,
        informative=not terms.negligible,
        reason=reason,
    ) | {"rows": n}


def merge_sums(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Sum the per-block partial sums of the multivariate pass, key by key (None stays None)."""
    merged: dict[str, Any] = {}
    for key in parts[0]:
        values = [p[key] for p in parts]
        merged[key] = None if values[0] is None else (max(values) if key == "max" else sum(values))
    return merged
