"""``latentdask render``: datashader images of every z-point — pairs, principal axes, slices, overlays.

The command chooses the projections and their canvases from ``stats.zarr``
(:mod:`~latentdask.render.projections`), reads the store **once** to aggregate all of them
(:mod:`~latentdask.render.aggregate`, kernels in :mod:`~latentdask.render.columns`), and
only then draws each figure as a PNG (:mod:`~latentdask.render.draw`): one per given pair,
and grids of the most correlated pairs, the first principal axes and the slices.

A slice projection keeps the points with |x_j| < t for all j outside the pair, so its
total equals ``slice_count`` exactly; pairs span the components' full range, so every
selected point is on the canvas; principal-axis canvases span ±``PC_SPREAD`` standard
deviations and say how many points fall beyond.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from itertools import islice
from typing import Any

import xarray as xr

from latentdask.location import Location, Where, location
from latentdask.output import check_output, owned_output
from latentdask.render.aggregate import Aggregate, aggregate
from latentdask.render.draw import Shading, save_grid, save_single
from latentdask.render.projections import (
    Projection,
    RenderError,
    canvas_size,
    pair_projection,
    parse_pair,
    pc_projection,
    ranked_pairs,
    read_overlay,
    special_overlay,
    stats_threshold,
    widened,
)
from latentdask.stats.io import open_stats
from latentdask.store.points import ZPoints, open_zpoints

__all__ = ["PROJECTIONS_KIND", "RenderError", "RenderResult", "render"]

#: the kind of output a render folder is, in its latentdask.json record
PROJECTIONS_KIND = "projections"


@dataclass
class RenderResult:
    aggregates: list[Aggregate]
    files: list[Location] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    points: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "points": self.points,
            "seconds": self.seconds,
            "files": [str(f) for f in self.files],
            "projections": [
                asdict(a.projection) | {"shown": a.shown, "candidates": a.candidates} for a in self.aggregates
            ],
        }


@dataclass(frozen=True)
class Figure:
    """One PNG of the render folder: a single projection, or a titled grid of projections."""

    name: str  # file stem
    projections: list[Projection]
    title: str | None = None  # grids only


def figures(
    statistics: xr.Dataset,
    *,
    pairs: Sequence[str],
    top_correlated: int,
    pcs: int,
    slice_threshold: float | None,
    slice_ranked: int,
    attribute: int | None,
    width: int,
) -> list[Figure]:
    """The figures asked for, in file order: one per given pair, then the grids."""
    dim = statistics.sizes["latent"]
    chosen = [parse_pair(spec, statistics, slice_threshold) for spec in pairs]
    singles = [
        pair_projection(statistics, a, b, canvas_size(width), color_by=attribute, note=note)
        for (a, b), note in chosen
    ]
    result = [Figure(p.name, [p]) for p in singles]
    if top_correlated > 0:
        ranked = ranked_pairs(statistics, "corr", top_correlated)
        corr = statistics["corr"].values
        size = grid_canvas(width, len(ranked))
        group = [pair_projection(statistics, a, b, size, note=f"r = {corr[a, b]:+.2f}") for a, b in ranked]
        result.append(Figure("top-correlated", group, f"the {len(ranked)} most correlated pairs"))
    if pcs >= 2:
        if pcs > dim:
            raise RenderError(f"--pcs {pcs}: the latent space has {dim} principal axes")
        plane = [(i, k) for i in range(pcs) for k in range(i + 1, pcs)]
        size = grid_canvas(width, len(plane))
        group = [pc_projection(statistics, i, k, size) for i, k in plane]
        result.append(Figure("pcs", group, f"projections onto the first {pcs} principal axes"))
    if slice_threshold is not None:
        t = stats_threshold(statistics, slice_threshold)
        smallest = ranked_pairs(statistics, "smallest-slice", slice_ranked, t)
        largest = ranked_pairs(statistics, "largest-slice", slice_ranked, t)
        plane = list(dict.fromkeys([pair for pair, _ in chosen] + smallest + largest))
        size = grid_canvas(width, len(plane))
        group = [pair_projection(statistics, a, b, size, threshold=t) for a, b in plane]
        title = (
            f"slices |x_j| < {t:g} outside the pair: given pairs, the {slice_ranked} "
            "smallest and largest populations"
        )
        result.append(Figure(f"slices-{t:g}", group, title))
    return result


def grid_canvas(width: int, panels: int) -> tuple[int, int]:
    """Canvas pixels of one panel of a square grid of ``panels`` in an image ``width`` px wide."""
    return canvas_size(width, math.ceil(math.sqrt(panels)))


def render(
    store: Where,
    out: Where,
    *,
    stats: Where | None = None,
    pairs: Sequence[str] = (),
    top_correlated: int = 16,
    pcs: int = 4,
    slice_threshold: float | None = None,
    slice_ranked: int = 4,
    overlays: Sequence[Where] = (),
    special: int | None = None,
    color_by: str | None = None,
    width: int = 800,
    how: Shading = "eq_hist",
    split: str = "all",
    where: Sequence[str] = (),
    scheduler: Any = None,
    points: ZPoints | None = None,
) -> RenderResult:
    """Every requested projection of every selected z-point, as PNGs in ``out``; see the module docstring.

    ``points``: the store already opened (e.g. leaving out damaged shards); default: opened from ``store``.
    """
    from latentdask.store.paths import default_stats_path

    if width < 100:
        raise RenderError(f"--width {width}: at least 100 pixels")
    if how not in ("eq_hist", "log"):
        raise RenderError(f"shading {how!r}: use eq_hist or log")
    store = location(store)
    stats_path = location(stats) if stats is not None else default_stats_path(store)
    if not stats_path.exists():
        raise RenderError(f"{stats_path} does not exist; give --stats (render takes ranges and PCs from it)")
    inputs = [store, stats_path, *overlays]
    check_output(out, PROJECTIONS_KIND, inputs=inputs)
    points = points or open_zpoints(store)
    statistics = open_stats(stats_path)
    dim = statistics.sizes["latent"]
    if points.z.shape[1] != dim:
        raise RenderError(
            f"{store} has {points.z.shape[1]} components; the statistics {stats_path} have {dim}"
        )
    attribute = None
    if color_by is not None:
        if color_by not in points.attribute_names:
            raise RenderError(
                f"--color-by {color_by}: the store's attributes are "
                f"{', '.join(points.attribute_names) or 'none'}"
            )
        attribute = points.attribute_names.index(color_by)

    # 1. the figures and their canvases, from the statistics
    shown = figures(
        statistics,
        pairs=pairs,
        top_correlated=top_correlated,
        pcs=pcs,
        slice_threshold=slice_threshold,
        slice_ranked=slice_ranked,
        attribute=attribute,
        width=width,
    )
    if not any(f.projections for f in shown):
        raise RenderError("nothing to render: give --pairs, --top-correlated, --pcs or --slice")
    drawn = [read_overlay(path) for path in overlays]
    if special is not None:
        drawn.append(special_overlay(points, special))
    if drawn:  # canvases also hold the overlaid points, so none is drawn off the axes
        shown = [
            replace(f, projections=[widened(p, drawn, statistics) for p in f.projections]) for f in shown
        ]

    # 2. one read of the store aggregates every projection of every figure
    started = time.perf_counter()
    aggregates = aggregate(
        points,
        [p for f in shown for p in f.projections],
        stats=statistics,
        split=split,
        where=where,
        scheduler=scheduler,
    )
    aggregated = time.perf_counter() - started

    # 3. each figure drawn from its own aggregates, in order
    started = time.perf_counter()
    result = RenderResult(aggregates, points=int(points.z.shape[0]))
    remaining = iter(aggregates)
    with owned_output(out, PROJECTIONS_KIND, inputs=inputs) as staged:
        for figure in shown:
            part = list(islice(remaining, len(figure.projections)))
            path = staged.path / f"{figure.name}.png"
            if figure.title is None:
                save_single(
                    part[0], path, width=width, how=how, stats=statistics, overlays=drawn, attribute=color_by
                )
            else:
                save_grid(
                    part, path, title=figure.title, width=width, how=how, stats=statistics, overlays=drawn
                )
            result.files.append(location(out) / path.name)  # where it is once moved into place
        result.seconds = {"aggregate": round(aggregated, 3), "draw": round(time.perf_counter() - started, 3)}
        (staged.path / "render.json").write_text(json.dumps(result.summary(), indent=2) + "\n")
    return result
