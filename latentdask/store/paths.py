"""Where things lie: the statistics beside a store, and a workflow's run folder.

One place for these names, so the steps that write a run folder, the report that reads
it and the commands that find a store's statistics agree.

Run folder (``runs/<name>`` by default)::

    run.json              what ran: each step's identity, parameters, timings, outputs
    data/                 synthetic faces (when the dataset is synthetic)
    model/                the checkpoint (unless the workflow names one)
    latents.zarr          the latent store; latents-stats.zarr and .json beside it
    normality.json        normality of the real z-points; normality-qq.png
    fit-stats.zarr        statistics of the rows the samplers are fitted on (train; .json beside it)
    points/LABEL.zarr     each sampler's artificial z-points (points/LABEL-gmm.zarr: a fitted mixture)
    scores.json           their scores beside real points held out of the fit
    grids/samplers.png    decoded points and reconstructions; grids/face_rate.json
    projections/          datashader images (render.json lists them)
    report.html           everything above on one page

A sweep's folder holds its runs' folders (one per combination of the matrix) and::

    cka.json              linear CKA between the latent spaces of every two runs
    report.html           the runs side by side
"""

from __future__ import annotations

from dataclasses import dataclass

from latentdask.location import Location, Where, location


def default_stats_path(store: Where) -> Location:
    """Where encode writes its statistics: ``latents.zarr`` → ``latents-stats.zarr`` beside it."""
    store = location(store)
    return store.with_name(f"{store.stem}-stats.zarr")


def stats_json_path(stats: Where) -> Location:
    """``stats.zarr`` → ``stats.json`` beside it (the headline figures)."""
    path = location(stats)
    return path.with_suffix(".json") if path.suffix == ".zarr" else path.with_name(path.name + ".json")


@dataclass(frozen=True)
class RunFolder:
    """The paths of a workflow's run folder (see the module docstring)."""

    root: Location

    @property
    def record(self) -> Location:
        return self.root / "run.json"

    @property
    def data(self) -> Location:
        return self.root / "data"

    @property
    def model(self) -> Location:
        return self.root / "model"

    @property
    def store(self) -> Location:
        return self.root / "latents.zarr"

    @property
    def stats(self) -> Location:
        return default_stats_path(self.store)

    @property
    def normality(self) -> Location:
        return self.root / "normality.json"

    @property
    def normality_plot(self) -> Location:
        return self.root / "normality-qq.png"

    @property
    def fit_stats(self) -> Location:
        return self.root / "fit-stats.zarr"

    @property
    def points(self) -> Location:
        return self.root / "points"

    def sampler_points(self, label: str) -> Location:
        return self.points / f"{label}.zarr"

    def mixture(self, label: str) -> Location:
        return self.points / f"{label}-gmm.zarr"

    @property
    def scores(self) -> Location:
        return self.root / "scores.json"

    @property
    def grid(self) -> Location:
        return self.root / "grids" / "samplers.png"

    @property
    def face_rates(self) -> Location:
        return self.root / "grids" / "face_rate.json"

    @property
    def projections(self) -> Location:
        return self.root / "projections"

    @property
    def report(self) -> Location:
        return self.root / "report.html"

    @property
    def cka(self) -> Location:
        return self.root / "cka.json"
