"""Pure kernels of render's pass (no dask): a block's columns, and canvases aggregated from them.

A task of :mod:`latentdask.render.aggregate` reads a range of rows one block at a time;
:func:`project_block` keeps only the columns each projection needs from the block's kept
rows (a small fraction of its bytes), and :func:`aggregate_columns` aggregates every
projection once over all of them with datashader. :func:`sum_canvases` merges ranges.
The dashboard's columns (:mod:`latentdask.render.explore`) come from :class:`BlockColumns` too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from latentdask.render.projections import Projection
from latentdask.stats.summary import select_rows

#: a projection's columns over some rows: x, y (float32) and the colour column (or None)
Columns = tuple[np.ndarray, np.ndarray, np.ndarray | None]
#: a projection's counts over its canvas and its candidate count (selected points, on the canvas or not)
Canvas = tuple[np.ndarray, int]


@dataclass
class BlockColumns:
    """What every projection of one block is read from: the kept rows' needed columns."""

    rows: np.ndarray  # which of the block's rows were kept (valid, finite, selected)
    components: dict[int, np.ndarray]  # component → its kept values, float32 as stored
    pcs: dict[int, np.ndarray]  # principal axis → (z − mean) · v of the kept rows
    outside: dict[float, np.ndarray]  # threshold → per kept row, the number of |z_j| ≥ t

    @classmethod
    def of(
        cls,
        block: np.ndarray,
        keep: np.ndarray | None,
        projections: Sequence[Projection],
        mean: np.ndarray | None,
        vectors: np.ndarray | None,
    ) -> BlockColumns:
        z = np.asarray(block)
        rows, _, _ = select_rows(z, None, keep)  # the statistics' own row filter
        every = bool(rows.all())
        needed = sorted({c for p in projections if p.kind != "pc" for c in (p.a, p.b)})
        components = {c: z[:, c] if every else z[rows, c] for c in needed}
        axes = sorted({axis for p in projections if p.kind == "pc" for axis in (p.a, p.b)})
        pcs: dict[int, np.ndarray] = {}
        if axes:
            assert mean is not None and vectors is not None
            centred = ((z if every else z[rows]).astype(np.float64) - mean) @ vectors[:, axes]
            pcs = {axis: centred[:, k] for k, axis in enumerate(axes)}
        outside = {}
        for t in {p.threshold for p in projections if p.threshold is not None}:
            count = (np.abs(z) >= np.float64(t)).sum(axis=1)  # compared in float64, as the statistics do
            outside[t] = count if every else count[rows]
        return cls(rows, components, pcs, outside)

    def xy(self, projection: Projection) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The projection's two columns, and for slices the mask of rows inside the slice."""
        if projection.kind == "pc":
            return self.pcs[projection.a], self.pcs[projection.b], None
        x, y = self.components[projection.a], self.components[projection.b]
        if projection.kind != "slice":
            return x, y, None
        t = np.float64(projection.threshold)
        inside = self.outside[float(t)] - (np.abs(x) >= t) - (np.abs(y) >= t) == 0
        return x, y, inside


def project_block(
    block: np.ndarray,
    keep: np.ndarray | None,
    attributes: np.ndarray | None,
    *,
    projections: Sequence[Projection],
    mean: np.ndarray | None,
    vectors: np.ndarray | None,
) -> list[Columns]:
    """Each projection's columns over one block's kept rows (a small fraction of the block's bytes)."""
    columns = BlockColumns.of(block, keep, projections, mean, vectors)
    attrs = None if attributes is None else np.asarray(attributes)[columns.rows]
    result = []
    for p in projections:
        x, y, inside = columns.xy(p)
        colour = None if p.color_by is None else np.asarray(attrs)[:, p.color_by]
        if inside is not None:
            x, y, colour = x[inside], y[inside], None if colour is None else colour[inside]
        # contiguous copies: a column view would keep the whole block alive and concatenate slowly
        result.append(
            (np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(y, dtype=np.float32), colour)
        )
    return result


def category_column(values: np.ndarray) -> Any:
    """A CelebA attribute (±1) as a pandas categorical with both categories always present."""
    import pandas as pd

    return pd.Categorical(np.where(np.asarray(values) > 0, 1, -1), categories=[-1, 1])


def aggregate_columns(parts: Sequence[list[Columns]], *, projections: Sequence[Projection]) -> list[Canvas]:
    """Datashader counts of each projection over several blocks' columns, and its candidate count."""
    import datashader as ds
    import pandas as pd

    results = []
    for k, p in enumerate(projections):
        x = np.concatenate([part[k][0] for part in parts])
        y = np.concatenate([part[k][1] for part in parts])
        canvas = ds.Canvas(plot_width=p.width, plot_height=p.height, x_range=p.x_range, y_range=p.y_range)
        if p.color_by is not None:
            colour = np.concatenate([np.asarray(part[k][2]) for part in parts])
            frame = pd.DataFrame({"x": x, "y": y, "c": category_column(colour)})
            counts = canvas.points(frame, "x", "y", agg=ds.by("c", ds.count())).values
        else:
            counts = canvas.points(pd.DataFrame({"x": x, "y": y}), "x", "y", agg=ds.count()).values
        results.append((counts.astype(np.int64), len(x)))
    return results


def aggregate_rows(
    source: zarr.Array,
    start: int,
    stop: int,
    keep: np.ndarray | None,
    attributes: np.ndarray | None,
    *,
    block_rows: int,
    projections: Sequence[Projection],
    mean: np.ndarray | None,
    vectors: np.ndarray | None,
) -> list[Canvas]:
    """Rows [start, stop) of the store, read block by block: each block's columns kept, the block
    dropped, then every projection aggregated once over all of them (one datashader call each).

    The chunk of render's reduction: ``keep`` and ``attributes`` are those rows' companions.
    """
    parts = []
    for r0 in range(start, stop, block_rows):
        r1 = min(r0 + block_rows, stop)
        within = slice(r0 - start, r1 - start)
        parts.append(
            project_block(
                np.asarray(source[r0:r1]),
                None if keep is None else keep[within],
                None if attributes is None else attributes[within],
                projections=projections,
                mean=mean,
                vectors=vectors,
            )
        )
    return aggregate_columns(parts, projections=projections)


def sum_canvases(states: Sequence[list[Canvas]]) -> list[Canvas]:
    """The combine of render's reduction: per projection, the sum of the counts and of the candidates."""
    return [
        (sum(s[k][0] for s in states), sum(s[k][1] for s in states))  # type: ignore[misc]
        for k in range(len(states[0]))
    ]
