"""Multivariate normality tests: against brute force, their size under normality, their power."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from latentdask.stats import multivariate


def brute_force_mardia(x: np.ndarray) -> tuple[float, float]:
    """b₁ and b₂ straight from their definitions (Mardia 1970), O(n² N)."""
    n = len(x)
    centred = x - x.mean(axis=0)
    inverse = np.linalg.inv(centred.T @ centred / n)
    gram = centred @ inverse @ centred.T
    return float((gram**3).sum() / n**2), float((np.diag(gram) ** 2).mean())


def mardia(x: np.ndarray, alpha: float = 0.05) -> tuple[dict, dict]:
    y = multivariate.own_whitening(x)
    n, dim = y.shape
    b1 = multivariate.skewness_from_tensor(multivariate.skewness_tensor(y), n)
    b2 = float((np.einsum("ij,ij->i", y, y) ** 2).mean())
    return multivariate.skewness_test(b1, n, dim, alpha), multivariate.kurtosis_test(b2, n, dim, alpha)


@pytest.mark.parametrize(("n", "dim"), [(40, 3), (300, 7), (200, 1)])
def test_b1_b2_equal_brute_force(n: int, dim: int) -> None:
    x = np.random.default_rng(n).standard_exponential((n, dim)) @ np.random.default_rng(1).normal(
        size=(dim, dim)
    )
    b1, b2 = brute_force_mardia(x)
    skewness, kurtosis = mardia(x)
    assert skewness["b1"] == pytest.approx(b1, rel=1e-9)
    assert kurtosis["b2"] == pytest.approx(b2, rel=1e-9)


def test_skewness_tensor_sums_blocks_like_the_whole() -> None:
    y = np.random.default_rng(0).normal(size=(1000, 6))
    whole = multivariate.skewness_tensor(y)
    assert np.allclose(multivariate.skewness_tensor(y[:333]) + multivariate.skewness_tensor(y[333:]), whole)
    j, k = multivariate.pair_index(6)
    assert np.allclose(whole, np.einsum("ij,ik,il->jkl", y, y, y)[j, k])


@pytest.mark.parametrize(("n", "dim"), [(200, 4), (400, 16), (1000, 8)])
def test_size_under_normality_stays_near_alpha(n: int, dim: int) -> None:
    """Over 200 Gaussian samples (correlated, shifted) each test rejects about α of them."""
    alpha, seeds = 0.05, 200
    mix = np.random.default_rng(99).normal(size=(dim, dim))
    rejected = np.zeros(2)
    for seed in range(seeds):
        x = np.random.default_rng(seed).normal(size=(n, dim)) @ mix + 3.0
        skewness, kurtosis = mardia(x, alpha)
        assert skewness["informative"] and kurtosis["informative"]
        rejected += [skewness["reject"], kurtosis["reject"]]
    # binomial(200, 0.05): 10 expected, sd 3.1; the band holds 99.9 % of honest runs
    assert ((rejected >= 1) & (rejected <= 22)).all(), rejected


@pytest.mark.parametrize(
    "draw",
    [
        lambda rng, n, d: rng.uniform(-1, 1, size=(n, d)),
        lambda rng, n, d: rng.standard_t(4, size=(n, d)),
        # multivariate t: one chi-square per row scales the whole vector
        lambda rng, n, d: rng.normal(size=(n, d)) / np.sqrt(rng.chisquare(5, size=(n, 1)) / 5),
    ],
    ids=["uniform", "independent t4", "multivariate t5"],
)
def test_kurtosis_rejects_non_normal_tails(draw) -> None:
    x = draw(np.random.default_rng(0), 2000, 16)
    assert mardia(x)[1]["reject"]


def test_skewness_rejects_skewed_data() -> None:
    x = np.random.default_rng(0).standard_exponential((2000, 16))
    assert mardia(x)[0]["reject"]


def test_too_few_rows_per_component_is_not_informative() -> None:
    x = np.random.default_rng(0).normal(size=(300, 256))
    for test in mardia(x):
        assert not test["informative"] and not test["reject"]
        assert "5 N" in test["reason"]


def test_in_sample_law_of_d2() -> None:
    """n d²/(n−1)² ~ Beta(N/2, (n−N−1)/2) for in-sample rows: the KS test accepts it, not χ²(N)."""
    n, dim = 300, 150  # far from n ≫ N, where the two laws differ most
    x = np.random.default_rng(3).normal(size=(n, dim))
    centred = x - x.mean(axis=0)
    d2 = np.einsum("ij,jk,ik->i", centred, np.linalg.inv(np.cov(x, rowvar=False)), centred)
    law = multivariate.in_sample_law(n, dim)
    assert scipy.stats.kstest(d2, law.cdf).pvalue > 0.01
    assert scipy.stats.kstest(d2, scipy.stats.chi2(dim).cdf).pvalue < 0.01  # the wrong law for these rows
    assert d2.max() <= (n - 1) ** 2 / n  # the bound the histogram's edges end at
    edges = multivariate.d2_edges(n, dim, 2048)
    counts, _ = np.histogram(d2, bins=edges)
    assert counts.sum() == n
    binned = multivariate.beta_law_test(edges, counts, n, dim, 0.01)
    assert binned["informative"] and not binned["reject"]
    assert binned["statistic"] <= scipy.stats.kstest(d2, law.cdf).statistic + 1e-12  # a lower bound


def test_henze_zirkler_is_not_informative_where_its_terms_vanish() -> None:
    rng = np.random.default_rng(0)
    for sample in (rng.normal(size=(2000, 256)), rng.uniform(-1, 1, size=(2000, 256))):
        result = multivariate.henze_zirkler_test(sample, 0.01)
        assert result["statistic"] == pytest.approx(1.0, abs=1e-6)  # whatever the data
        assert not result["informative"] and not result["reject"]
        assert "vanishes" in result["reason"]
    low = multivariate.henze_zirkler_test(rng.uniform(-1, 1, size=(500, 3)), 0.01)
    assert low["informative"] and low["reject"]
