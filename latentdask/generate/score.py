"""In-distribution scores of point sets against the real corpus, beside held-out real points.

The statistics are the fit: the mean, covariance and component ranges every score uses, and
every sampler's parameters, come from the rows they describe (their split and attribute
conditions, e.g. ``--split train``). The real reference points are drawn from the valid rows
*outside* that fit, so they are held out in fact; scores.json records the fit's rows, the
reference's rows and how many of them the fit saw (0). Statistics of every row leave nothing
to hold out, and scoring refuses them.

With a row selection (``rows``, a ``selection.zarr`` of ``latentdask select``), every real
point is one of its rows: the fit is the selection's rows of the statistics' split and
conditions, the held-out reference is drawn from its rows of the other splits. The statistics
must describe the same selection (``latentdask stats --rows``): the fingerprints of their rows
are compared, and scores.json records the selection beside the rows of the fit.

For each point set (artificial z-points, and always the held-out real points as the
reference):

1. **Mahalanobis distance** to the fit's mean under its covariance: its distribution
   (quantiles, mean). For Gaussian data a held-out point's d² follows the out-of-sample law
   n/(n+1)·d² ~ (n−1)N/(n−N)·F(N, n−N) (mean ≈ N(n−1)/(n−N−2)), above χ²(N)'s N: points
   drawn from the fit itself sit closer.
2. **Components outside the real range**: per point, how many components lie outside
   the fit's per-component [0.5 %, 99.5 %] range (read off its histograms), and the
   distribution of that count (both against :class:`~latentdask.stats.reference.Reference`).
3. **Distance to the nearest real z-point of the fit**, exact, by brute force against every
   row of the fit, one task per block of the store (|q|² + |x|² − 2 q·x, a GEMM per block),
   merged by minimum (:mod:`latentdask.stats.nearest`); real and artificial points are measured
   against the same rows.
4. **Slice membership**: for a pair (a, b) and threshold t, the fraction of points with
   |x_j| < t for all j outside the pair, beside the real fraction (slice_count / count).
5. **Log-likelihood** per point under the multivariate normal fitted to the fit's rows, and under
   a Gaussian mixture (``gmm``, a ``GMM.zarr`` of :mod:`latentdask.generate.gmm`) when given.
6. **Sample quality** of each artificial set against the held-out reference: precision, recall,
   density and coverage of k-NN balls (:mod:`latentdask.generate.quality`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr
import zarr

from latentdask.cluster.watch import compute
from latentdask.errors import LatentdaskError
from latentdask.location import Location, Where, identity, location
from latentdask.output import write_json
from latentdask.stats.io import fitted_rows, fitted_selection, open_stats
from latentdask.stats.nearest import nearest_real_distance
from latentdask.stats.reference import Reference, mahalanobis, mvn_log_likelihood, outside_counts
from latentdask.store.points import ZPoints, open_zpoints
from latentdask.store.rows import real_sample, selection_mask, split_mask

#: the kind of output scores.json is, in its ``latentdask`` record
SCORES_KIND = "scores"
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


class ScoreError(LatentdaskError):
    """Point sets or statistics that cannot be scored together."""


def summary(values: np.ndarray) -> dict[str, float]:
    values = np.asarray(values, dtype=np.float64)
    return {"mean": float(values.mean())} | {
        f"q{round(q * 100)}": float(v) for q, v in zip(QUANTILES, np.quantile(values, QUANTILES), strict=True)
    }


def in_slice(points: np.ndarray, a: int, b: int, t: float) -> np.ndarray:
    others = np.ones(points.shape[1], dtype=bool)
    others[[a, b]] = False
    return (np.abs(points[:, others]) < t).all(axis=1)


def score(
    store: Where,
    stats: Where,
    point_sets: Sequence[Where],
    *,
    reference_size: int = 2000,
    pair: tuple[int, int] | None = None,
    threshold: float | None = None,
    seed: int = 0,
    gmm: Where | None = None,
    rows: Where | None = None,
    scheduler: Any = None,
) -> dict[str, Any]:
    """Score each point set and a held-out real sample; see the module docstring.

    ``rows``: a row selection of ``store`` (its ``selection.zarr``) that ``stats`` describe too.
    """
    from latentdask.generate.quality import K, reference_radii, sample_quality

    corpus = open_zpoints(store)
    statistics = open_stats(stats)
    if rows is not None:
        from latentdask.store.selection import open_selection

        corpus.selection = open_selection(rows, store, corpus.z.shape[0], corpus.z.chunks[0])
    selection = same_selection(statistics, stats, corpus, scheduler=scheduler)
    reference = Reference.from_stats(statistics)
    dim = len(reference.mean)
    t = float(threshold if threshold is not None else reference.thresholds[0])
    if t not in reference.thresholds:
        raise ScoreError(
            f"threshold {t} is not among the statistics' slice thresholds {reference.thresholds.tolist()}"
        )
    if pair is None:  # the pair whose slice the real points fill least
        population = statistics["slice_count"].sel(threshold=t).values.astype(float)
        population[np.tril_indices(dim)] = np.inf
        pair = tuple(int(v) for v in np.unravel_index(np.argmin(population), population.shape))  # type: ignore[assignment]
    a, b = pair  # type: ignore[misc]
    if not (0 <= a < dim and 0 <= b < dim and a != b):
        raise ScoreError(f"the slice pair ({a}, {b}) needs two different components of 0 … {dim - 1}")
    fit_split, fit_where = fitted_rows(statistics, selection_checked=True)
    fit, fit_selection = selection_mask(corpus, fit_split, fit_where)
    split_rows = split_mask(corpus, fit_split)
    if fit is None or split_rows is None:
        raise ScoreError(
            f"the statistics {stats} describe rows of every split ({fit_selection}), so no real point "
            "is held out of the fit: compute them on the rows to fit (latentdask stats --split train, "
            "or --split fit for a seeded 90 %, with the same --rows) and score against the others"
        )
    in_fit = np.asarray(compute(fit, scheduler=scheduler)[0], dtype=bool)
    selected = int(statistics["count"]) + int(statistics["invalid"]) + int(statistics["nonfinite"])
    if int(in_fit.sum()) != selected:
        raise ScoreError(
            f"the statistics {stats} selected {selected:,} rows ({fit_selection}); {store} has "
            f"{int(in_fit.sum()):,} there: were they computed on this store?"
        )
    # held out: the same conditions (--where) in the rows of the other splits, and of the selection
    same_conditions, _ = selection_mask(corpus, "all", fit_where)
    outside = ~split_rows if same_conditions is None else ~split_rows & same_conditions
    real, heldout = real_sample(corpus, reference_size, seed, scheduler, keep=outside)
    if len(heldout) == 0:
        raise ScoreError(f"no valid row of {store} lies outside the fit ({fit_selection}) to compare with")
    sets: dict[str, tuple[np.ndarray, np.ndarray | None]] = {"real (held out)": (real, heldout)}
    for path in point_sets:
        node = zarr.open_group(str(location(path)), mode="r")
        z = np.asarray(node["z"][:], dtype=np.float32)  # type: ignore[index]
        if z.shape[1] != dim:
            raise ScoreError(f"{path} has {z.shape[1]} components; the statistics have {dim}")
        sets[str(node.attrs.get("sampler", location(path).stem)) + f" ({location(path).name})"] = (z, None)
    k = int(np.flatnonzero(reference.thresholds == t)[0])
    mixture = None
    if gmm is not None:
        from latentdask.generate.gmm import open_gmm

        mixture = open_gmm(gmm)
        mixture_rows = fitted_rows(xr.open_zarr(str(location(gmm))))
        if mixture_rows != (fit_split, fit_where):
            raise ScoreError(
                f"the mixture {gmm} was fitted on split={mixture_rows[0]}, where={list(mixture_rows[1])}; "
                f"the statistics on split={fit_split}, where={list(fit_where)}: the held-out points must be "
                "held out of both"
            )
        if mixture.means.shape[1] != dim:
            raise ScoreError(f"{gmm} has {mixture.means.shape[1]} components; the statistics have {dim}")
    radii = reference_radii(corpus, heldout, k=K, scheduler=scheduler)
    results: dict[str, Any] = {
        "fit": fit_selection,
        "fit_rows": int(statistics["count"]),
        "selection": selection,
        "heldout": f"valid rows{'' if selection is None else ' of the selection'} outside the fit, "
        f"{len(heldout):,} drawn with seed {seed}",
        "heldout_rows": len(heldout),
        "heldout_rows_in_fit": int(in_fit[heldout].sum()),
        "pair": [a, b],
        "threshold": t,
        "real_slice_fraction": float(reference.slice_fraction[k, a, b]),
        "range": "[0.5 %, 99.5 %] per component",
        "quality": (
            f"k-NN balls, k = {K}, around the {len(heldout):,} held-out real points and as many of each set's"
        ),
        "sets": {},
    }
    for name, (points, query_rows) in sets.items():
        nearest = nearest_real_distance(corpus, points, query_rows=query_rows, keep=fit, scheduler=scheduler)
        outside = outside_counts(points, reference)
        results["sets"][name] = {
            "points": len(points),
            "mahalanobis": summary(mahalanobis(points, reference)),
            "outside_components": summary(outside) | {"share_with_none": float((outside == 0).mean())},
            "nearest_real_distance": summary(nearest),
            "slice_fraction": float(in_slice(points, a, b, t).mean()),
            "log_likelihood": {"mvn": float(mvn_log_likelihood(points, reference).mean())}
            | ({} if mixture is None else {"gmm": float(mixture.score_samples(points).mean())}),
        }
        if query_rows is None:  # an artificial set: its quality against the held-out reference,
            # with as many of its points as there are reference points (the measures depend on both sizes)
            quality = sample_quality(corpus, heldout, radii, points[: len(heldout)], k=K, scheduler=scheduler)
            results["sets"][name]["quality"] = quality
    return results


def same_selection(
    statistics: xr.Dataset, stats: Where, corpus: ZPoints, *, scheduler: Any = None
) -> dict[str, Any] | None:
    """The row selection every real point is drawn from (its path, the fingerprint of its rows and
    their number), checked to be the one ``statistics`` were computed over; None for none.

    Statistics of a selection are the fit of its rows only: scored without it, or with another
    selection, the held-out points could be rows the fit saw, so both are refused.
    """
    fitted, given = fitted_selection(statistics), corpus.selection
    if given is None:
        if fitted is not None:
            raise ScoreError(
                f"the statistics {stats} describe the row selection {fitted.path}; score with "
                f"--rows {fitted.path}, or compute them without --rows"
            )
        return None
    if fitted is None:
        raise ScoreError(
            f"the statistics {stats} describe no row selection; --rows gives {given.path}: compute "
            f"them with latentdask stats --rows {given.path}, or score without --rows"
        )
    if fitted.fingerprint is None:
        raise ScoreError(
            f"the statistics {stats} of the row selection {fitted.path} do not record which rows it "
            f"held (written before they did); compute them again with --rows {given.path}"
        )
    fingerprint = given.fingerprint(scheduler)
    if fingerprint != fitted.fingerprint:
        now = " now" if identity(fitted.path) == identity(given.path) else ""
        raise ScoreError(
            f"the statistics {stats} describe the rows of the selection {fitted.path}; --rows "
            f"{given.path} holds other rows{now}: compute the statistics with --rows {given.path}, "
            "or score with the selection they describe"
        )
    return {"path": identity(given.path), "fingerprint": fingerprint, "rows": given.count}


#: the scores' table: each column's header and its width in the text form
SCORE_COLUMNS = (
    ("set", 34),
    ("mahalanobis q50", 16),
    ("outside q50", 12),
    ("none outside", 13),
    ("nearest real q50", 17),
    ("in slice", 9),
    ("loglik mvn", 11),
    ("loglik gmm", 11),
    ("precision", 9),
    ("recall", 7),
    ("density", 8),
    ("coverage", 9),
)


def score_table(results: dict[str, Any]) -> tuple[str, list[list[str]], str]:
    """The scores as a table: the fit it is measured against, a row of cells per set (— where a score
    was not measured), and the slice it counts."""
    rows = []
    for name, s in results["sets"].items():
        quality = s.get("quality") or {}
        loglik = s.get("log_likelihood", {})
        rows.append(
            [
                name,
                f"{s['mahalanobis']['q50']:.2f}",
                f"{s['outside_components']['q50']:.1f}",
                f"{s['outside_components']['share_with_none']:.3f}",
                f"{s['nearest_real_distance']['q50']:.3f}",
                f"{s['slice_fraction']:.4f}",
                *(_number(loglik.get(kind), 1) for kind in ("mvn", "gmm")),
                *(_number(quality.get(kind), 3) for kind in ("precision", "recall", "density", "coverage")),
            ]
        )
    a, b = results["pair"]
    fit = (
        f"fit: {results['fit']} ({results['fit_rows']:,} rows); real (held out): {results['heldout']}, "
        f"{results['heldout_rows_in_fit']} of them in the fit"
    )
    where = (
        f"slice: pair ({a}, {b}), |x_j| < {results['threshold']:g} elsewhere; real fraction "
        f"{results['real_slice_fraction']:.4f}"
    )
    return fit, rows, where


def format_scores(results: dict[str, Any]) -> str:
    """The scores side by side, one line per set."""
    fit, rows, where = score_table(results)

    def line(cells: list[str]) -> str:
        (_, width), *numbers = SCORE_COLUMNS
        return " ".join(
            [f"{cells[0][:width]:<{width}}"]
            + [f"{c:>{w}}" for c, (_, w) in zip(cells[1:], numbers, strict=True)]
        )

    return "\n".join([fit, line([header for header, _ in SCORE_COLUMNS]), *map(line, rows), where])


def _number(value: float | None, decimals: int) -> str:
    return "—" if value is None else f"{value:.{decimals}f}"


def write_scores(results: dict[str, Any], out: Where, *, inputs: Sequence[Where] = ()) -> Location:
    """Write ``scores.json`` (replacing only an earlier scores.json of latentdask's)."""
    return write_json(out, results, SCORES_KIND, inputs=inputs)
