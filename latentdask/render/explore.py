"""What the dashboard computes: projections re-aggregated from columns held in the cluster's memory.

A view (a pair of components or of principal axes, optionally a slice and an attribute
to colour by) needs two columns of every z-point. Reading them reads the whole
row-chunked store once; the columns of the kept rows (valid, finite, in the slice) are
then **held in the workers' memory** as pandas DataFrames (futures, one per worker
thread), so that every zoom and pan re-aggregates with datashader where the data lie,
without touching disk: a handful of small tasks whose canvases are summed here. (Going
through datashader's dask-DataFrame pipeline instead costs ~0.2 s per call in pickling
its compiled kernels — more than aggregating 10 million points.) The last few views'
frames stay cached (``capacity``).

Where they fit in half the workers' memory, the store's rows themselves are held there too
(:meth:`Explorer.hold_rows`, read in the background once the first view's columns are taken):
later views and every selection then read memory, not the store.

A selection's rows (a boolean per row, held on the workers by
:func:`latentdask.render.selected.describe_drawn`) are aggregated in any view the same way:
each frame is joined with the blocks of the mask that cover its rows, where both lie.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from itertools import pairwise
from typing import Any, Literal

import numpy as np
import xarray as xr
from dask.delayed import delayed

from latentdask.errors import LatentdaskError
from latentdask.location import Where
from latentdask.reduction import map_blocks, row_blocks, row_starts
from latentdask.render.columns import BlockColumns, category_column
from latentdask.render.projections import Projection, pair_projection, pc_projection
from latentdask.stats.io import open_stats
from latentdask.store.points import open_zpoints


class ExploreError(LatentdaskError):
    """A view that cannot be shown."""


@dataclass(frozen=True)
class View:
    """What the projection shows."""

    mode: Literal["pair", "pc"] = "pair"
    a: int = 0
    b: int = 1
    threshold: float | None = None  # pairs only: keep |x_j| < t for all j outside the pair
    color_by: int | None = None  # attribute column


def frame_block(
    block: np.ndarray,
    keep: np.ndarray | None,
    attributes: np.ndarray | None,
    start: int,
    *,
    projection: Projection,
    mean: np.ndarray,
    vectors: np.ndarray,
) -> Any:
    """The projection's columns x, y (float32), the store row and the colour column of one block."""
    import pandas as pd

    columns = BlockColumns.of(block, keep, [projection], mean, vectors)
    x, y, inside = columns.xy(projection)
    rows = start + np.flatnonzero(columns.rows)
    if inside is None:
        inside = np.ones(len(x), dtype=bool)
    frame = {
        "x": np.asarray(x[inside], dtype=np.float32),
        "y": np.asarray(y[inside], dtype=np.float32),
        "row": rows[inside].astype(np.int64),
    }
    if projection.color_by is not None:
        assert attributes is not None
        frame["c"] = category_column(np.asarray(attributes)[columns.rows][inside, projection.color_by])
    return pd.DataFrame(frame)


def aggregate_frame(
    frame: Any,
    *,
    x_range: tuple[float, float],
    y_range: tuple[float, float],
    width: int,
    height: int,
    coloured: bool,
) -> np.ndarray:
    """Datashader counts of one in-memory frame (runs on the worker that holds it)."""
    import datashader as ds

    canvas = ds.Canvas(plot_width=width, plot_height=height, x_range=x_range, y_range=y_range)
    agg = ds.by("c", ds.count()) if coloured else ds.count()
    return np.asarray(canvas.points(frame, "x", "y", agg=agg).values, dtype=np.int64)


def aggregate_chosen(
    frame: Any,
    chosen: list[np.ndarray],
    *,
    start: int,
    x_range: tuple[float, float],
    y_range: tuple[float, float],
    width: int,
    height: int,
) -> np.ndarray:
    """Datashader counts of the frame's rows that ``chosen`` (the mask's blocks over the frame's
    rows, from store row ``start``) selects."""
    mask = np.concatenate(chosen) if chosen else np.zeros(0, dtype=bool)
    kept = frame[mask[frame["row"].to_numpy() - start]]
    return aggregate_frame(kept, x_range=x_range, y_range=y_range, width=width, height=height, coloured=False)


@dataclass(frozen=True)
class PlaneIndex:
    """A k-d tree of one frame's points in the view's plane, each axis scaled by its full range
    (so that a distance means the same across and along), and the store rows of its points."""

    tree: Any  # scipy.spatial.cKDTree
    rows: np.ndarray
    scale: tuple[float, float]

    @classmethod
    def of(cls, frame: Any, *, scale: tuple[float, float]) -> PlaneIndex:
        """Built on the worker that holds ``frame``."""
        from scipy.spatial import cKDTree

        plane = np.column_stack([frame["x"].to_numpy() * scale[0], frame["y"].to_numpy() * scale[1]])
        return cls(cKDTree(plane), frame["row"].to_numpy(), scale)

    def nearest(self, xy: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """For each point of ``xy`` (m, 2): the k smallest scaled plane distances to it and their
        store rows, each (m, k'), k' = min(k, points indexed)."""
        k = min(k, len(self.rows))
        if k == 0:
            return np.zeros((len(xy), 0)), np.zeros((len(xy), 0), dtype=np.int64)
        distances, found = self.tree.query(
            np.asarray(xy, dtype=np.float64) * self.scale, k=[*range(1, k + 1)]
        )
        return distances, self.rows[found]

    def nbytes(self) -> int:
        """Memory the index holds: its points, their tree order and the rows (the nodes are few)."""
        return int(self.tree.data.nbytes + self.tree.indices.nbytes + self.rows.nbytes)


def _nearest(index: PlaneIndex, *, xy: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    return index.nearest(xy, k)


#: the store's rows are held in the workers' memory when they take at most this share of it
HOLD_SHARE = 0.5


def workers_memory(client: Any) -> int:
    """The cluster's memory: its workers' limits summed (this machine's memory where they have none)."""
    import psutil

    limits = [w.get("memory_limit") or 0 for w in client.scheduler_info(n_workers=-1)["workers"].values()]
    return int(sum(limits)) if all(limits) and limits else int(psutil.virtual_memory().total)


class Explorer:
    """A store, its statistics, and the cluster that holds the shown columns.

    ``hold``: whether :meth:`hold_rows` keeps the store's rows (z, valid, attributes) in the
    workers' memory, so that later views and selections never read the store again; by default
    when they take at most :data:`HOLD_SHARE` of the cluster's memory (:attr:`held_bytes` says
    how much they take).
    """

    def __init__(
        self, store: Where, stats: Where, client: Any, *, capacity: int = 4, hold: bool | None = None
    ) -> None:
        points = open_zpoints(store)
        self.stats: xr.Dataset = open_stats(stats).load()
        self.client = client
        arrays = [a for a in (points.z, points.valid, points.attributes) if a is not None]
        size = int(sum(a.nbytes for a in arrays))
        if hold is None:
            hold = size <= HOLD_SHARE * workers_memory(client)
        self.held_bytes = size if hold else 0
        self.points = points
        self._held: list[Any] | None = None
        self.capacity = capacity
        self._frames: OrderedDict[View, Any] = OrderedDict()
        self._blocks: dict[View, np.ndarray] = {}  # per view, the bounds of each frame's blocks
        self._indexes: dict[View, list[Any]] = {}  # per view, a PlaneIndex per frame (on its worker)
        dim = self.stats.sizes["latent"]
        if self.points.z.shape[1] != dim:
            raise ExploreError(f"{store} has {self.points.z.shape[1]} components; the statistics have {dim}")

    def hold_rows(self) -> list[Any]:
        """Read the store's rows into the workers' memory (when :attr:`held_bytes`; once) and read
        them from there from now on; the held arrays, to wait for (nothing where not held)."""
        if self._held is None:
            points = self.points
            self._held = []
            if self.held_bytes:
                persist = self.client.persist
                self.points = dataclasses.replace(
                    points,
                    z=persist(points.z),
                    valid=None if points.valid is None else persist(points.valid),
                    attributes=None if points.attributes is None else persist(points.attributes),
                )
                held = (self.points.z, self.points.valid, self.points.attributes)
                self._held = [a for a in held if a is not None]
        return self._held

    @property
    def dim(self) -> int:
        return int(self.stats.sizes["latent"])

    @property
    def thresholds(self) -> list[float]:
        return [float(t) for t in self.stats["threshold"].values]

    def projection(self, view: View, width: int = 8, height: int = 8) -> Projection:
        """The view's full canvas (every point on it) at the given size."""
        if not (0 <= view.a < self.dim and 0 <= view.b < self.dim) or view.a == view.b:
            raise ExploreError(
                f"a view needs two different axes in 0…{self.dim - 1}, got ({view.a}, {view.b})"
            )
        if view.mode == "pc":
            return pc_projection(self.stats, view.a, view.b, (width, height))
        return pair_projection(
            self.stats, view.a, view.b, (width, height), threshold=view.threshold, color_by=view.color_by
        )

    def frame(self, view: View) -> list[Any]:
        """The view's columns as futures of pandas DataFrames, one per worker thread, held in cluster memory.

        The first call for a view reads the store once; later calls return the same futures.
        """
        if view in self._frames:
            self._frames.move_to_end(view)
            return self._frames[view]
        import pandas as pd

        if view.color_by is not None and self.points.attributes is None:
            raise ExploreError(f"{self.points.path} has no attributes to colour by")
        z = self.points.z
        attributes = self.points.attributes if view.color_by is not None else None
        blocks = [
            (*block, start)
            for block, start in zip(row_blocks(z, self.points.valid, attributes), row_starts(z), strict=True)
        ]
        chunk = partial(
            frame_block,
            projection=self.projection(view),
            mean=self.stats["mean"].values,
            vectors=self.stats["pca_vectors"].values,
        )
        parts = map_blocks(blocks, chunk, name="dashboard_columns")
        # one frame per worker thread: a zoom is then a handful of tasks, not one per block
        groups = max(min(sum(self.client.nthreads().values()), len(parts)), 1)
        bounds = np.linspace(0, len(parts), groups + 1).astype(int)
        joined = [
            delayed(pd.concat, pure=True)(parts[b0:b1], ignore_index=True) for b0, b1 in pairwise(bounds)
        ]
        futures = self.client.compute(joined)
        self._frames[view] = futures
        self._blocks[view] = bounds
        while len(self._frames) > self.capacity:
            dropped, _ = self._frames.popitem(last=False)
            del self._blocks[dropped]
            self._indexes.pop(dropped, None)
        return futures

    def aggregate(
        self, view: View, x_range: tuple[float, float], y_range: tuple[float, float], width: int, height: int
    ) -> np.ndarray:
        """Counts of the view's points over a canvas (zoomed or not), (height, width[, 2]), on the cluster."""
        parts = self.client.map(
            aggregate_frame,
            self.frame(view),
            x_range=x_range,
            y_range=y_range,
            width=width,
            height=height,
            coloured=view.color_by is not None,
            pure=False,
        )
        return sum(self.client.gather(parts))

    def aggregate_held(
        self,
        view: View,
        held: Any,
        x_range: tuple[float, float],
        y_range: tuple[float, float],
        width: int,
        height: int,
    ) -> np.ndarray:
        """Counts of the view's points that the held mask (from :meth:`hold`) selects, (height, width)."""
        frames = self.frame(view)
        bounds = self._blocks[view]
        blocks = list(held.to_delayed().ravel())
        starts = row_starts(self.points.z)
        chunk = partial(aggregate_chosen, x_range=x_range, y_range=y_range, width=width, height=height)
        tasks = [
            delayed(chunk, pure=False)(frame, blocks[b0:b1], start=starts[b0])
            for frame, (b0, b1) in zip(frames, pairwise(bounds), strict=True)
        ]
        return sum(self.client.gather(self.client.compute(tasks)))

    def count(self, view: View) -> int:
        return int(sum(self.client.gather(self.client.map(len, self.frame(view), pure=False))))

    def plane_scale(self, view: View) -> tuple[float, float]:
        """1 / the full extent of each axis: the scale in which plane distances are measured."""
        projection = self.projection(view)
        return (
            1.0 / (projection.x_range[1] - projection.x_range[0]),
            1.0 / (projection.y_range[1] - projection.y_range[0]),
        )

    def index(self, view: View) -> list[Any]:
        """The view's plane indexes, one per frame, built where the frames lie on first use and held
        there as long as the frames (futures of :class:`PlaneIndex`)."""
        if view not in self._indexes:
            frames = self.frame(view)
            scale = self.plane_scale(view)
            self._indexes[view] = self.client.map(partial(PlaneIndex.of, scale=scale), frames, pure=False)
        return self._indexes[view]

    def index_bytes(self, view: View) -> int:
        """Memory the view's plane indexes hold on the workers."""
        return int(sum(self.client.gather(self.client.map(PlaneIndex.nbytes, self.index(view), pure=False))))

    def nearest_rows(self, view: View, x: float, y: float, k: int = 6) -> list[int]:
        """Store rows of the k points nearest to (x, y) in the view's plane (axes scaled by their ranges)."""
        return [int(r) for r in self.nearest_each(view, np.array([[x, y]]), k)[0]]

    def nearest_each(self, view: View, xy: np.ndarray, k: int = 1) -> np.ndarray:
        """Store rows of the k points nearest to each point of ``xy`` (m, 2) in the view's plane,
        (m, ≤ k), nearest first, from the view's plane indexes: one query per frame, where it lies."""
        parts = self.client.gather(self.client.map(_nearest, self.index(view), xy=xy, k=k, pure=False))
        distances = np.concatenate([d for d, _ in parts], axis=1)
        rows = np.concatenate([r for _, r in parts], axis=1)
        order = np.argsort(distances, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(rows, order, axis=1)

    def latent_at(self, view: View, x: float, y: float) -> np.ndarray:
        """The latent vector at (x, y) of the view, every other component at the real mean."""
        mean = self.stats["mean"].values.astype(np.float64)
        if view.mode == "pc":
            vectors = self.stats["pca_vectors"].values
            return mean + x * vectors[:, view.a] + y * vectors[:, view.b]
        z = mean.copy()
        z[view.a], z[view.b] = x, y
        return z
