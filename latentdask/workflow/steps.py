"""The steps of a study, each written once: the ``latentdask`` commands and the workflow runner call these.

Contract of a step function:

1. it takes its inputs and outputs as paths, and its parameters as the step's options model
   (keyword ``options``; the model holds every default and check of the step, and the
   workflow's YAML section for the step is that model);
2. it refuses its outputs (someone else's file, an input) before any work, and asks for the
   cluster (``cluster.client``) only after that, so a refused command starts no cluster;
3. it writes its outputs and returns what it made; it prints nothing of its own, so the
   command and the runner each end with their own summary line.

"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from distributed import Client

    from latentdask.cluster.spec import ClusterChoice
    from latentdask.data.options import SynthOptions
    from latentdask.encode.options import EncodeOptions
    from latentdask.encode.summary import EncodeSummary
    from latentdask.generate.options import (
        DecodeOptions,
        GenerateOptions,
        GMMOptions,
        SamplerSpec,
        ScoreOptions,
    )
    from latentdask.location import Location, Where
    from latentdask.model.config import ModelOptions, TrainOptions
    from latentdask.render.command import RenderResult
    from latentdask.render.options import RenderOptions
    from latentdask.stats.options import NormalityOptions, SummaryParams
    from latentdask.store.points import ZPoints


def keywords(options: BaseModel, model: type[BaseModel], **renamed: str) -> dict[str, Any]:
    """The fields of ``model`` in ``options`` as a stage function's keyword arguments.

    ``options`` may be a workflow section that adds fields of its own (render's ``overlay``);
    ``renamed`` maps a field to the stage's name for it (``slice="slice_threshold"``).
    """
    return {renamed.get(name, name): getattr(options, name) for name in model.model_fields}


class Connection:
    """The cluster a command or a whole workflow run computes on: one client, opened on first use.

    Steps ask for :attr:`client` after their own checks, so a refused command starts nothing. A
    run opens one Connection for all its steps (``for_run=True``): every step, encode included,
    runs on the one client, and a run whose steps are all skipped starts no cluster. A command
    that only reads gives ``input_bytes`` (see :func:`~latentdask.cluster.connect.connect`); a
    workflow's ``storage_options`` reach every worker before its first task.
    """

    def __init__(
        self,
        choice: ClusterChoice,
        *,
        for_run: bool = False,
        input_bytes: int | None = None,
        storage_options: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.choice = choice
        self.for_run = for_run
        self.input_bytes = input_bytes
        self.storage_options = storage_options or {}
        self._stack = ExitStack()
        self._client: Client | None = None

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._client = None
        self._stack.__exit__(*exc)  # closes the client, and the cluster if it was started here

    @property
    def client(self) -> Client:
        if self._client is None:
            from latentdask.cluster.connect import connect

            self._client = self._stack.enter_context(connect(self.choice, input_bytes=self.input_bytes))
            if self.storage_options:  # before any task: the workers' file systems take them
                from latentdask.cluster.workers import StorageOptionsPlugin

                self._client.register_plugin(StorageOptionsPlugin(self.storage_options))
        return self._client


# ---------------------------------------------------------------------------- synth


def synth_done(out: Where, options: SynthOptions) -> bool:
    """Whether ``out`` already holds exactly these faces."""
    from latentdask.data.synthetic_faces import read_recipe, synthetic_recipe
    from latentdask.location import location

    return read_recipe(location(out)) == synthetic_recipe(options.n, options.seed)


def synth(out: Where, options: SynthOptions) -> float | None:
    """Write the faces (replacing only synthetic faces made earlier); seconds taken, None if already there."""
    import time

    from latentdask.data.synthetic_faces import synthesize

    if synth_done(out, options):
        return None
    started = time.perf_counter()
    synthesize(out, n=options.n, seed=options.seed)
    return time.perf_counter() - started


# ---------------------------------------------------------------------------- train


def train(dataset: Where, out: Where, *, model: ModelOptions, options: TrainOptions) -> None:
    """Train the autoencoder on ``dataset`` into the checkpoint folder ``out``."""
    from latentdask.model.train import train as run_training

    run_training(
        dataset, out, model=model.architecture(), preprocessing=model.preprocessing(), options=options
    )


# ---------------------------------------------------------------------------- encode


def encode(
    dataset: Where, checkpoint: Where, out: Where, *, options: EncodeOptions, cluster: Connection
) -> EncodeSummary:
    """Encode every image into the latent store ``out`` (and its statistics beside it).

    A command's encode opens the cluster itself, after its own checks (store, model, outputs);
    a run's encode runs on the run's one client.
    """
    from latentdask.encode.run import encode as run_encode

    client = cluster.client if cluster.for_run else None
    return run_encode(dataset, checkpoint, out, options=options, cluster=cluster.choice, client=client)


# ---------------------------------------------------------------------------- statistics


def statistics(
    store: Where,
    out: Where,
    *,
    params: SummaryParams,
    split: str = "all",
    where: Sequence[str] = (),
    cluster: Connection,
    points: ZPoints | None = None,
) -> dict[str, Any]:
    """Write the statistics of the store's selected z-points to ``out`` (and stats.json beside it).

    ``points``: the store already opened (e.g. leaving out damaged shards). Returns the headline.
    """
    from latentdask.cluster.workers import paths_on_workers
    from latentdask.stats.io import check_stats_output, stats_of, write_stats
    from latentdask.store.points import open_zpoints

    check_stats_output(out, inputs=[store])
    with ExitStack() as checked:
        if points is None:
            checked.enter_context(paths_on_workers(cluster.client, [store]))
            points = open_zpoints(store)
        result = stats_of(points, params=params, split=split, where=where, scheduler=cluster.client)
    return write_stats(result, out, source=str(store), inputs=[store])


# ---------------------------------------------------------------------------- normality


def normality(
    store: Where,
    stats: Where,
    out: Where,
    *,
    options: NormalityOptions,
    cluster: Connection,
    plot: Where | None = None,
) -> dict[str, Any]:
    """Write ``normality.json`` (and the QQ plot to ``plot``) for the store's selected z-points."""
    from latentdask.cluster.workers import paths_on_workers
    from latentdask.output import check_output
    from latentdask.stats.normality import NORMALITY_KIND, QQ_PLOT_KIND, plot_qq, write_normality
    from latentdask.stats.normality import normality as run_normality
    from latentdask.stats.options import NormalityOptions

    check_output(out, NORMALITY_KIND, inputs=[store, stats])
    if plot is not None:
        check_output(plot, QQ_PLOT_KIND, inputs=[store, stats])
    with paths_on_workers(cluster.client, [store]):
        result = run_normality(store, stats, **keywords(options, NormalityOptions), scheduler=cluster.client)
    write_normality(result, out, inputs=[store, stats])
    if plot is not None:
        plot_qq(result, plot, inputs=[store, stats])
    return result


# ---------------------------------------------------------------------------- generate and score


def gmm(store: Where, out: Where, *, options: GMMOptions, cluster: Connection) -> Location:
    """Fit a Gaussian mixture over every z-point of the fit and write it to the GMM.zarr ``out``."""
    from latentdask.cluster.workers import paths_on_workers
    from latentdask.generate.gmm import GMM_KIND, fit_gmm, write_gmm
    from latentdask.output import check_output

    check_output(out, GMM_KIND, inputs=[store])
    with paths_on_workers(cluster.client, [store]):
        fitted = fit_gmm(store, options=options, scheduler=cluster.client)
    return write_gmm(fitted, out, inputs=[store])


def generate(stats: Where, out: Where, *, sampler: SamplerSpec, options: GenerateOptions) -> Location:
    """Write ``options.n`` z-points of ``sampler``, fitted on ``stats``, to the POINTS.zarr ``out``."""
    from latentdask.generate.samplers import generate as run_generate

    return run_generate(stats, out, spec=sampler, n=options.n, seed=options.seed)


def score(
    store: Where,
    stats: Where,
    points: Sequence[Where],
    out: Where,
    *,
    options: ScoreOptions,
    cluster: Connection,
    gmm: Where | None = None,
    rows: Where | None = None,
) -> dict[str, Any]:
    """Write ``scores.json``: each point set's scores beside held-out real points (log-likelihoods
    under the mixture ``gmm`` too, when given); with ``rows``, a row selection the statistics
    describe too, every real point is one of its rows."""
    from latentdask.generate.options import ScoreOptions
    from latentdask.generate.score import SCORES_KIND, write_scores
    from latentdask.generate.score import score as run_score
    from latentdask.output import check_output

    inputs = [store, stats, *points, *(p for p in (gmm, rows) if p is not None)]
    check_output(out, SCORES_KIND, inputs=inputs)
    results = run_score(
        store, stats, points, **keywords(options, ScoreOptions), gmm=gmm, rows=rows, scheduler=cluster.client
    )
    write_scores(results, out, inputs=inputs)
    return results


# ---------------------------------------------------------------------------- decode


@dataclass(frozen=True)
class Decoded:
    rows: int
    note: str  # rows or images left out, and why ("" when none)
    rates: dict[str, Any] | None  # the face rates, when measured


def decode(
    checkpoint: Where,
    out: Where,
    *,
    options: DecodeOptions,
    points: Sequence[Where] = (),
    reconstruct: Where | None = None,
    dataset: Where | None = None,
    interpolate: Sequence[int] | None = None,
    path: Sequence[int] | None = None,
    stats: Where | None = None,
    faces_out: Where | None = None,
    title: str | None = None,
) -> Decoded:
    """Decode z-points to a labelled grid PNG ``out``: a row per point set, then real images above their
    reconstructions, an interpolation between two images, a path in a plane; and the face rates."""
    from latentdask.errors import LatentdaskError
    from latentdask.generate.faces import FACE_RATES_KIND, face_rates, write_face_rates
    from latentdask.generate.grids import (
        DECODED_GRID_KIND,
        interpolation_row,
        path_row,
        point_rows,
        reconstruction_rows,
        render_grid,
        skipped_note,
    )
    from latentdask.model.checkpoint import load_checkpoint
    from latentdask.output import check_output, save_png

    inputs = [checkpoint, *points, *(p for p in (reconstruct, dataset, stats) if p is not None)]
    check_output(out, DECODED_GRID_KIND, inputs=inputs)
    if faces_out is not None:
        check_output(faces_out, FACE_RATES_KIND, inputs=inputs)
    loaded = load_checkpoint(checkpoint)
    rows = point_rows(loaded.model, points, options.per_row)
    if reconstruct is not None:
        rows += reconstruction_rows(loaded, reconstruct, list(range(options.per_row)))
    if interpolate is not None:
        if dataset is None or len(interpolate) != 2:
            raise LatentdaskError("--interpolate i,j needs two image numbers and --dataset")
        rows.append(interpolation_row(loaded, dataset, interpolate[0], interpolate[1], options.per_row))
    if path is not None:
        from latentdask.stats.io import open_stats

        if stats is None or len(path) != 2:
            raise LatentdaskError("--path a,b needs two components, --stats, and --through centre|origin")
        real = open_stats(stats)
        rows.append(
            path_row(
                loaded.model,
                real["mean"].values,
                real["std"].values,
                path[0],
                path[1],
                through=options.through,
                steps=options.per_row,
            )
        )
    grid = render_grid(
        rows, scale=options.scale, title=f"decoded by {checkpoint}" if title is None else title
    )
    save_png(grid, out, DECODED_GRID_KIND, inputs=inputs)
    rates = None
    if options.face_rate > 0:
        reference_images = reconstruct or dataset
        if reference_images is None:
            raise LatentdaskError(
                "--face-rate needs real images for reference: give --reconstruct or --dataset"
            )
        rates = face_rates(loaded, list(points), reference_images, n=options.face_rate)
        if faces_out is not None:
            write_face_rates(rates, faces_out, inputs=inputs)
    return Decoded(rows=len(rows), note=skipped_note(rows) or "", rates=rates)


# ---------------------------------------------------------------------------- render


def render(
    store: Where,
    out: Where,
    *,
    options: RenderOptions,
    cluster: Connection,
    stats: Where | None = None,
    overlays: Sequence[Where] = (),
    points: Any = None,
) -> RenderResult:
    """Write the projections' PNGs and render.json to ``out``; ``points``: the store already opened."""
    from latentdask.render.command import render as run_render
    from latentdask.render.options import RenderOptions

    return run_render(
        store,
        out,
        stats=stats,
        overlays=overlays,
        **keywords(options, RenderOptions, slice="slice_threshold"),
        scheduler=cluster.client,
        points=points,
    )


# ---------------------------------------------------------------------------- report


def report(folder: Where) -> Location:
    """Write ``report.html`` in a run folder; return its path."""
    from latentdask.workflow.report import write_report

    return write_report(folder)
