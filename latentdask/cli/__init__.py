"""The ``latentdask`` command.

Every subcommand turns a :class:`~latentdask.errors.LatentdaskError` into one red
line on stderr and exit code 2; other exceptions are bugs and keep their traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from latentdask.errors import LatentdaskError, describe_validation_error

if TYPE_CHECKING:
    from latentdask.cluster.connect import ClusterChoice
from latentdask.progress import console

app = typer.Typer(
    name="latentdask",
    help="The latent space of image autoencoders at full-corpus scale, on Dask clusters.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Measure against baselines run in the same process.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
cluster_app = typer.Typer(help="Certificates, and clusters that outlive one command.", no_args_is_help=True)
app.add_typer(cluster_app, name="cluster")

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(func: F) -> F:
    """Print what the user can act on as one plain line on stderr and exit 2.

    That is a LatentdaskError, an option that fails its options model's validation, and
    an output the system refuses to write (disk full, read-only, no permission). The text
    is printed as it is: never as markup, never wrapped.
    """
    from pydantic import ValidationError

    from latentdask.store.output import WRITE_ERRNOS

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except LatentdaskError as exc:
            message = str(exc)
        except ValidationError as exc:
            message = f"invalid options: {describe_validation_error(exc)}"
        except OSError as exc:
            if exc.errno not in WRITE_ERRNOS:
                raise
            message = f"cannot write {exc.filename or ''}: {exc.strerror}".replace("write :", "write:")
        typer.echo(f"error: {' '.join(message.splitlines())}", err=True)
        raise typer.Exit(2)

    return wrapper  # type: ignore[return-value]


def parse_ints(text: str, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise LatentdaskError(f"{option} expects comma-separated integers, got {text!r}") from None


def parse_crop(text: str) -> tuple[int, int, int, int] | None:
    if text.lower() == "none":
        return None
    box = parse_ints(text, "--crop")
    if len(box) != 4:
        raise LatentdaskError(f"--crop expects left,top,right,bottom or 'none', got {text!r}")
    return (box[0], box[1], box[2], box[3])


@app.command()
@user_errors
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to create (CelebA layout).")],
    n: Annotated[int, typer.Option("--n", help="Number of images.")] = 2000,
    seed: Annotated[int, typer.Option(help="Same seed, byte-identical files.")] = 0,
) -> None:
    """Write synthetic faces in CelebA's official layout (images, partition, attributes)."""
    import time

    from latentdask.data.synthetic_faces import read_recipe, synthesize, synthetic_recipe

    if read_recipe(out) == synthetic_recipe(n, seed):
        console.print(f"{out} already holds {n} synthetic faces with seed {seed}; nothing to do")
        return
    started = time.perf_counter()
    synthesize(out, n=n, seed=seed)
    seconds = time.perf_counter() - started
    console.print(f"wrote {n} synthetic faces in {seconds:.1f} s ({n / seconds:.0f} images/s) → {out}")


@app.command()
@user_errors
def train(
    dataset: Annotated[Path, typer.Argument(help="CelebA-layout folder or any image folder.")],
    out: Annotated[Path, typer.Option("--out", help="Checkpoint folder to write.")],
    epochs: Annotated[int, typer.Option(help="Passes over the training images.")] = 10,
    batch_size: Annotated[int, typer.Option(help="Images per optimizer step.")] = 128,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-3,
    image_size: Annotated[int, typer.Option(help="Side of the square model input.")] = 64,
    latent_dim: Annotated[int, typer.Option(help="Dimension of the latent space.")] = 256,
    channels: Annotated[str, typer.Option(help="Encoder filters per conv layer.")] = "64,64,128,128",
    batch_norm: Annotated[bool, typer.Option("--batch-norm/--no-batch-norm")] = False,
    crop: Annotated[str, typer.Option(help="left,top,right,bottom or 'none'.")] = "0,20,178,198",
    draft: Annotated[bool, typer.Option("--draft/--no-draft", help="JPEG draft-mode decoding.")] = True,
    split: Annotated[str, typer.Option(help="Rows to train on: train, valid, test or all.")] = "train",
    device: Annotated[str, typer.Option(help="auto (CUDA if present), cpu, cuda, cuda:N.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of initialisation and shuffling.")] = 0,
    workers: Annotated[int, typer.Option(help="Processes decoding images (0: this one).")] = 0,
) -> None:
    """Train the convolutional autoencoder; writes model.safetensors, config.json, training.json."""
    from latentdask.data.decode import Preprocessing
    from latentdask.model.config import build_config
    from latentdask.model.train import TrainOptions
    from latentdask.model.train import train as run_training

    model = build_config(
        image_size=image_size,
        latent_dim=latent_dim,
        channels=parse_ints(channels, "--channels"),
        batch_norm=batch_norm,
    )
    prep = Preprocessing(crop=parse_crop(crop), image_size=image_size, draft=draft)
    options = TrainOptions(
        epochs=epochs, batch_size=batch_size, lr=lr, split=split, device=device, seed=seed, workers=workers
    )
    run_training(dataset, out, model=model, preprocessing=prep, options=options)


@app.command()
@user_errors
def info(path: Annotated[Path, typer.Argument(help="A dataset, checkpoint or latent store.")]) -> None:
    """Describe a dataset, a checkpoint or a latent store."""
    from latentdask.model.config import CONFIG_FILE

    if not path.exists():
        raise LatentdaskError(f"{path} does not exist")
    if (path / "zarr.json").is_file():
        from latentdask.store import describe_store

        lines = describe_store(path)
    elif (path / CONFIG_FILE).is_file() or path.is_file():
        from latentdask.model.checkpoint import load_checkpoint

        lines = load_checkpoint(path).describe()
    else:
        from latentdask.data.dataset import open_dataset

        lines = open_dataset(path).describe()
    typer.echo("\n".join(lines))


@app.command()
@user_errors
def verify(
    store: Annotated[Path, typer.Argument(help="A latent store.")],
    cluster: ClusterOption = None,
    scheduler: SchedulerOption = None,
    cluster_name: ClusterNameOption = None,
) -> None:
    """Check every finished shard of a latent store against its checksums; exit 1 naming the damaged ones."""
    from latentdask.cluster.connect import check_paths_on_workers, connect
    from latentdask.store.integrity import verify_store

    with connect(cluster_choice(cluster, scheduler, cluster_name)) as client:
        check_paths_on_workers(client, [store])
        found = verify_store(store, client=client)
    typer.echo("\n".join(found.lines()))
    if found.damaged:
        typer.echo(
            f"'latentdask encode ... --out {store} --resume' encodes the damaged shards again", err=True
        )
        raise typer.Exit(1)


@app.command("import-model")
@user_errors
def import_model(
    state_dict: Annotated[Path, typer.Argument(help="A torch.save()d state_dict (.pt/.pth).")],
    config: Annotated[Path, typer.Option("--config", help="JSON: model fields, or model + preprocessing.")],
    out: Annotated[Path, typer.Option("--out", help="Checkpoint folder to write.")],
) -> None:
    """Turn a compatible PyTorch state_dict into a checkpoint folder (loaded tensors-only)."""
    from latentdask.model.checkpoint import import_state_dict

    checkpoint = import_state_dict(state_dict, config, out)
    typer.echo("\n".join(checkpoint.describe()))


SchedulerOption = Annotated[
    str | None,
    typer.Option("--scheduler", help="Address of a running Dask scheduler.", rich_help_panel="Cluster"),
]
ClusterOption = Annotated[
    Path | None,
    typer.Option("--cluster", help="Cluster spec YAML (see cluster/README.md).", rich_help_panel="Cluster"),
]
SplitOption = Annotated[str, typer.Option(help="all, train, valid or test.")]
WhereOption = Annotated[
    list[str] | None, typer.Option("--where", help="ATTRIBUTE=1 or ATTRIBUTE=-1 (repeat).")
]
DimOption = Annotated[int, typer.Option(help="Latent dimension.")]
WorkersOption = Annotated[int, typer.Option(help="Local worker processes.")]
ClusterNameOption = Annotated[
    str | None,
    typer.Option("--cluster-name", help="A gateway or Kubernetes cluster from 'latentdask cluster up'.",
                 rich_help_panel="Cluster"),
]  # fmt: skip


SkipDamagedOption = Annotated[
    bool,
    typer.Option(
        "--skip-damaged", help="Leave out shards whose checksums fail (found by reading them first)."
    ),
]
UnfinishedOption = Annotated[
    bool,
    typer.Option(
        "--include-unfinished", help="Also count the valid rows of shards an encode has not finished."
    ),
]


def open_points(store: Path, client: Any, *, skip_damaged: bool, include_unfinished: bool) -> Any:
    """The z-points a reading command works on, saying what is left out of an unfinished or damaged store."""
    from latentdask.stats.io import open_zpoints
    from latentdask.store.integrity import verify_store

    skipped: list[int] = []
    if skip_damaged:
        verification = verify_store(store, client=client)
        skipped = sorted(verification.damaged)
        if skipped:
            console.print(f"leaving out {len(skipped)} damaged shard(s): {', '.join(map(str, skipped))}")
    points = open_zpoints(store, include_unfinished=include_unfinished, skip_shards=skipped)
    note = points.unfinished_note()
    if note:
        console.print(note.replace("left out", "kept where valid") if include_unfinished else note)
    return points


def cluster_choice(cluster: Path | None, scheduler: str | None, name: str | None = None) -> ClusterChoice:
    """The one place every computing command turns its cluster options into a choice."""
    from latentdask.cluster.connect import ClusterChoice

    return ClusterChoice(spec=cluster, scheduler=scheduler, name=name)


@app.command()
@user_errors
def encode(
    dataset: Annotated[Path, typer.Argument(help="CelebA-layout folder or any image folder.")],
    model: Annotated[Path, typer.Option("--model", help="Checkpoint folder.")],
    out: Annotated[Path, typer.Option("--out", help="Latent store to write (a .zarr folder).")],
    shard_size: Annotated[int, typer.Option(help="Images per shard = per task = per Zarr chunk.")] = 4096,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 256,
    split: SplitOption = "all",
    resume: Annotated[bool, typer.Option("--resume", help="Finish an interrupted store.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing store.")] = False,
    reconstruction_error: Annotated[
        bool, typer.Option("--reconstruction-error", help="Also store each image's reconstruction MSE.")
    ] = False,
    device: Annotated[str, typer.Option(help="auto (CUDA if present), cpu, cuda.")] = "auto",
    decode_threads: Annotated[
        int | None,
        typer.Option(help="Threads decoding ahead of the encoder (default: 1 on CPU, up to 8 with a GPU)."),
    ] = None,
    torch_threads: Annotated[
        int | None, typer.Option(help="Torch threads per worker (default: torch's).")
    ] = None,
    cluster: ClusterOption = None,
    scheduler: SchedulerOption = None,
    cluster_name: ClusterNameOption = None,
) -> None:
    """Encode every image into a chunked Zarr latent store, on Dask workers; resumable."""
    from latentdask.encode.run import EncodeOptions
    from latentdask.encode.run import encode as run_encode

    options = EncodeOptions(
        shard_size=shard_size, batch_size=batch_size, split=split, resume=resume, overwrite=overwrite,
        reconstruction_error=reconstruction_error, device=device, decode_threads=decode_threads,
        torch_threads=torch_threads,
    )  # fmt: skip
    run_encode(dataset, model, out, options=options, cluster=cluster_choice(cluster, scheduler, cluster_name))


def summary_params(bin_width: float, value_range: tuple[float, float], thresholds: list[float]) -> Any:
    from pydantic import ValidationError

    from latentdask.cluster.spec import ConfigError
    from latentdask.errors import describe_validation_error
    from latentdask.stats.summary import SummaryParams

    try:
        return SummaryParams(bin_width=bin_width, range=value_range, thresholds=tuple(thresholds))
    except ValidationError as exc:
        raise ConfigError(f"statistics options: {describe_validation_error(exc)}") from None


@app.command()
@user_errors
def stats(
    store: Annotated[
        Path, typer.Argument(help="Latent store, Zarr group holding 'z', or (n, N) Zarr array.")
    ],
    out: Annotated[Path, typer.Option("--out", help="stats.zarr to write (stats.json goes beside it).")],
    bin_width: Annotated[float, typer.Option(help="Histogram bin width.")] = 0.125,
    value_range: Annotated[tuple[float, float], typer.Option("--range", help="Histogram range LOW HIGH.")] = (
        -16.0,
        16.0,
    ),
    thresholds: Annotated[
        list[float] | None, typer.Option("--thresholds", help="Slice thresholds (repeat).")
    ] = None,
    split: SplitOption = "all",
    where: WhereOption = None,
    skip_damaged: SkipDamagedOption = False,
    include_unfinished: UnfinishedOption = False,
    cluster: ClusterOption = None,
    scheduler: SchedulerOption = None,
    cluster_name: ClusterNameOption = None,
) -> None:
    """Every statistic of every z-point in one pass: histograms, correlations, slices, radii, PCA."""
    import time

    from latentdask.cluster.connect import check_paths_on_workers, connect
    from latentdask.stats.io import check_stats_output, stats_of, write_stats
    from latentdask.store.integrity import listing_damaged

    params = summary_params(bin_width, value_range, thresholds or [1.5, 2.0])
    check_stats_output(out, inputs=[store])
    choice = cluster_choice(cluster, scheduler, cluster_name)
    started = time.perf_counter()
    with connect(choice) as client, listing_damaged(store, client=client):
        check_paths_on_workers(client, [store])
        points = open_points(store, client, skip_damaged=skip_damaged, include_unfinished=include_unfinished)
        result = stats_of(points, params=params, split=split, where=where or [], scheduler=client)
    figures = write_stats(result, out, source=str(store), inputs=[store])
    console.print(
        f"statistics of {figures['count']} z-points ({figures['selection']}; {figures['invalid']} invalid, "
        f"{figures['nonfinite']} non-finite left out) in {time.perf_counter() - started:.1f} s → {out}",
        highlight=False,
    )


@app.command("synth-latents")
@user_errors
def synth_latents(
    out: Annotated[Path, typer.Argument(help="Zarr array to write.")],
    n: Annotated[int, typer.Option("--n", help="Rows.")] = 100_000,
    dim: Annotated[int, typer.Option(help="Columns (latent dimension).")] = 256,
    seed: Annotated[int, typer.Option(help="Same seed, same numbers.")] = 0,
    chunk_rows: Annotated[int, typer.Option(help="Rows per chunk (and per block generated).")] = 65_536,
) -> None:
    """Write (n, dim) float32 z-points from a known Gaussian shaped like the seed's finding."""
    from latentdask.generate.synthetic import synthesize_latents

    synthesize_latents(out, n=n, dim=dim, seed=seed, chunk_rows=chunk_rows)
    console.print(f"wrote {n} x {dim} synthetic z-points (true mean and covariance beside them) → {out}")


@app.command()
@user_errors
def run(
    workflow: Annotated[Path, typer.Argument(help="Workflow file (workflows/*.yaml).")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="key=value override, e.g. train.epochs=3.")
    ] = None,
    cluster: ClusterOption = None,
    scheduler: SchedulerOption = None,
    cluster_name: ClusterNameOption = None,
) -> None:
    """Run a workflow's steps in order; finished steps with the same parameters are skipped."""
    from latentdask.workflow.run import run_workflow

    run_workflow(workflow, cluster=cluster_choice(cluster, scheduler, cluster_name), overrides=set_ or [])


@app.command()
@user_errors
def report(
    folder: Annotated[Path, typer.Argument(help="A workflow's run folder (holding run.json).")],
) -> None:
    """Write report.html in a run folder: every figure and table of the study, images embedded."""
    from latentdask.workflow.report import write_report

    console.print(f"report → {write_report(folder)}", highlight=False)


@app.command()
@user_errors
def generate(
    stats: Annotated[Path, typer.Argument(help="stats.zarr the samplers are fitted on.")],
    out: Annotated[Path, typer.Option("--out", help="POINTS.zarr to write.")],
    sampler: Annotated[str, typer.Option(help="uniform, gaussian, empirical, mvn or mvn-core.")] = "uniform",
    b: Annotated[float, typer.Option("--b", help="uniform: half-width of [-b, b].")] = 1.5,
    quantile: Annotated[float, typer.Option(help="mvn-core: χ² quantile of the kept core.")] = 0.9973,
    n: Annotated[int, typer.Option("--n", help="Points.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Same seed, same points.")] = 0,
) -> None:
    """Artificial z-points from the seed's uniform sampler or samplers fitted on real statistics."""
    import json

    import numpy as np
    import zarr

    from latentdask.generate.samplers import generate as run_generate
    from latentdask.generate.samplers import radius_report, sampler_spec
    from latentdask.stats.io import open_stats

    spec = sampler_spec(sampler, b=b, quantile=quantile)
    run_generate(stats, out, spec=spec, n=n, seed=seed)
    console.print(f"wrote {n} {spec.name} z-points → {out}")
    if spec.name == "uniform":
        points = np.asarray(zarr.open_array(str(out / "z"), mode="r")[: min(n, 100_000)])
        report = radius_report(open_stats(stats), points, spec.b)
        scan = report.pop("b_scan")
        typer.echo(json.dumps(report | {"best_b_by_radius": scan["best_b"]}, indent=2))  # type: ignore[index]


@app.command()
@user_errors
def score(
    store: Annotated[Path, typer.Argument(help="The real latent store.")],
    stats: Annotated[Path, typer.Argument(help="Its stats.zarr.")],
    points: Annotated[list[Path], typer.Argument(help="POINTS.zarr groups to score.")],
    out: Annotated[Path, typer.Option("--out", help="scores.json to write.")],
    reference_size: Annotated[int, typer.Option(help="Held-out real points scored beside them.")] = 2000,
    pair: Annotated[
        str | None, typer.Option(help="a,b for the slice score (default: the least filled slice).")
    ] = None,
    threshold: Annotated[float | None, typer.Option(help="Slice threshold (one of the statistics').")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the real sample.")] = 0,
    cluster: ClusterOption = None,
    scheduler: SchedulerOption = None,
    cluster_name: ClusterNameOption = None,
) -> None:
    """In-distribution scores of point sets, always beside held-out real points."""
    from latentdask.cluster.connect import connect
    from latentdask.generate.score import SCORES_KIND, format_scores, write_scores
    from latentdask.generate.score import score as run_score
    from latentdask.store.output import check_output

    check_output(out, SCORES_KIND, inputs=[store, stats, *points])
    chosen = parse_ints(pair, "--pair") if pair else None
    if chosen is not None and len(chosen) != 2:
        raise LatentdaskError(f"--pair expects two component numbers a,b, got {pair!r}")
    with connect(cluster_choice(cluster, scheduler, cluster_name)) as client:
        results = run_score(store, stats, points, reference_size=reference_size,
                            pair=(chosen[0], chosen[1]) if chosen else None, threshold=threshold, seed=seed,
                            scheduler=client)  # fmt: skip
    write_scores(results, out, inputs=[store, stats, *points])
    typer.echo(format_scores(results))
    console.print(f"scores → {out}")


@app.command()
@user_errors
def normality(
    store: Annotated[Path, typer.Argument(help="The real latent store.")],
    stats: Annotated[Path, typer.Argument(help="Its stats.zarr (mean, covariance, moments).")],
    out: Annotated[Path, typer.Option("--out", help="normality.json to write.")],
    plot: Annotated[Path | None, typer.Option(help="PNG of the Mahalanobis²-vs-χ² QQ comparison.")] = None,
    sample_size: Annotated[int, typer.Option(help="Points in the Shapiro–Wilk sample (≤ 5,000).")] = 5000,
    hz_size: Annotated[int, typer.Option(help="Points in the Henze–Zirkler sample.")] = 2000,
    alpha: Annotated[float, typer.Option(help="Significance level of the tests.")] = 0.01,
    split: SplitOption = "all",
    where: WhereOption = None,
    seed: Annotated[int, typer.Option(help="Seed of the samples.")] = 0,
    cluster: ClusterOption = None,
    scheduler: SchedulerOption = None,
    cluster_name: ClusterNameOption = None,
) -> None:
    """How normal the real z-points are: moments, Shapiro–Wilk, Henze–Zirkler, Mahalanobis² vs χ²."""
    from latentdask.cluster.connect import check_paths_on_workers, connect
    from latentdask.stats.normality import (
        NORMALITY_KIND,
        QQ_PLOT_KIND,
        format_normality,
        plot_qq,
        write_normality,
    )
    from latentdask.stats.normality import normality as run_normality
    from latentdask.store.output import check_output

    check_output(out, NORMALITY_KIND, inputs=[store, stats])
    if plot is not None:
        check_output(plot, QQ_PLOT_KIND, inputs=[store, stats])

    with connect(cluster_choice(cluster, scheduler, cluster_name)) as client:
        check_paths_on_workers(client, [store])
        result = run_normality(store, stats, sample_size=sample_size, hz_size=hz_size, alpha=alpha,
                               split=split, where=where or [], seed=seed, scheduler=client)  # fmt: skip
    write_normality(result, out, inputs=[store, stats])
    if plot is not None:
        plot_qq(result, plot, inputs=[store, stats])
    typer.echo(format_normality(result))
    console.print(f"normality → {out}" + (f", QQ plot → {plot}" if plot else ""))


@app.command()
@user_errors
def decode(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint folder.")],
    points: Annotated[list[Path] | None, typer.Argument(help="POINTS.zarr groups: one row each.")] = None,
    out: Annotated[Path, typer.Option("--out", help="PNG to write.")] = Path("grid.png"),
    per_row: Annotated[int, typer.Option(help="Images per row.")] = 12,
    reconstruct: Annotated[
        Path | None, typer.Option(help="Dataset: originals above reconstructions.")
    ] = None,
    interpolate: Annotated[
        str | None, typer.Option(help="i,j: interpolate between two images of --dataset.")
    ] = None,
    dataset: Annotated[Path | None, typer.Option(help="Dataset for --interpolate.")] = None,
    path: Annotated[str | None, typer.Option(help="a,b: a path in the plane of components a and b.")] = None,
    stats: Annotated[Path | None, typer.Option(help="stats.zarr for --path (centre and spreads).")] = None,
    through: Annotated[
        str, typer.Option(help="--path through the real 'centre' or the 'origin'.")
    ] = "centre",
    scale: Annotated[int, typer.Option(help="Pixels per image pixel.")] = 2,
    face_rate: Annotated[
        int, typer.Option(help="Also measure the face rate on this many points per set (0: no).")
    ] = 0,
    faces_out: Annotated[Path | None, typer.Option(help="face_rate.json to write.")] = None,
) -> None:
    """Decode z-points to a labelled image grid: samplers, reconstructions, interpolations, paths."""
    from latentdask.generate.faces import FACE_RATES_KIND
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
    from latentdask.store.output import check_output, save_png

    inputs = [checkpoint, *(points or []), *(p for p in (reconstruct, dataset, stats) if p is not None)]
    check_output(out, DECODED_GRID_KIND, inputs=inputs)
    if faces_out is not None:
        check_output(faces_out, FACE_RATES_KIND, inputs=inputs)
    ckpt = load_checkpoint(checkpoint)
    rows = point_rows(ckpt.model, points or [], per_row)
    if reconstruct is not None:
        rows += reconstruction_rows(ckpt, reconstruct, list(range(per_row)))
    if interpolate is not None:
        ends = parse_ints(interpolate, "--interpolate")
        if dataset is None or len(ends) != 2:
            raise LatentdaskError("--interpolate i,j needs two image numbers and --dataset")
        rows.append(interpolation_row(ckpt, dataset, ends[0], ends[1], per_row))
    if path is not None:
        from latentdask.stats.io import open_stats

        plane = parse_ints(path, "--path")
        if stats is None or len(plane) != 2 or through not in ("centre", "origin"):
            raise LatentdaskError("--path a,b needs two components, --stats, and --through centre|origin")
        real = open_stats(stats)
        rows.append(path_row(ckpt.model, real["mean"].values, real["std"].values, plane[0], plane[1],
                             through=through, steps=per_row))  # type: ignore[arg-type]  # fmt: skip
    save_png(
        render_grid(rows, scale=scale, title=f"decoded by {checkpoint}"),
        out,
        DECODED_GRID_KIND,
        inputs=inputs,
    )
    note = skipped_note(rows)
    console.print(f"{len(rows)} row(s) → {out}" + (f"; {note}" if note else ""))
    if face_rate > 0:
        from latentdask.generate.faces import face_rates, format_face_rates, write_face_rates

        reference_images = reconstruct or dataset
        if reference_images is None:
            raise LatentdaskError(
                "--face-rate needs real images for reference: give --reconstruct or --dataset"
            )
        rates = face_rates(ckpt, points or [], reference_images, n=face_rate)
        typer.echo(format_face_rates(rates))
        if faces_out is not None:
            write_face_rates(rates, faces_out, inputs=inputs)
            console.print(f"face rates → {faces_out}")


@app.command()
@user_errors
def render(
    store: Annotated[Path, typer.Argument(help="Latent store (or any Zarr group holding 'z').")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the PNGs and render.json.")],
    stats: Annotated[
        Path | None, typer.Option(help="stats.zarr (default: the one encode wrote beside the store).")
    ] = None,
    pairs: Annotated[
        list[str] | None,
        typer.Option("--pairs", help="a,b or corr:K, smallest-slice:K, largest-slice:K (repeat)."),
    ] = None,
    top_correlated: Annotated[int, typer.Option(help="Grid of the K most correlated pairs (0: none).")] = 16,
    pcs: Annotated[int, typer.Option(help="Grid of all pairs among the first K principal axes.")] = 4,
    slice_threshold: Annotated[
        float | None, typer.Option("--slice", help="Slice projections at this threshold.")
    ] = None,
    slice_ranked: Annotated[
        int, typer.Option(help="Slices of the K smallest and K largest populations.")
    ] = 4,
    overlay: Annotated[list[Path] | None, typer.Option(help="POINTS.zarr drawn in red (repeat).")] = None,
    special: Annotated[int | None, typer.Option(help="Row of one real point drawn in orange.")] = None,
    color_by: Annotated[str | None, typer.Option(help="Colour the --pairs images by this attribute.")] = None,
    width: Annotated[int, typer.Option(help="Image width in pixels.")] = 800,
    how: Annotated[str, typer.Option(help="Shading: eq_hist or log.")] = "eq_hist",
    split: SplitOption = "all",
    where: WhereOption = None,
    skip_damaged: SkipDamagedOption = False,
    include_unfinished: UnfinishedOption = False,
    cluster: ClusterOption = None,
    scheduler: SchedulerOption = None,
    cluster_name: ClusterNameOption = None,
) -> None:
    """Datashader images of every z-point: pairs, top-correlated grid, principal axes, slices."""
    from latentdask.cluster.connect import check_paths_on_workers, connect
    from latentdask.render.command import render as run_render
    from latentdask.store.integrity import listing_damaged

    with (
        connect(cluster_choice(cluster, scheduler, cluster_name)) as client,
        listing_damaged(store, client=client),
    ):
        check_paths_on_workers(client, [store])
        points = open_points(store, client, skip_damaged=skip_damaged, include_unfinished=include_unfinished)
        result = run_render(store, out, stats=stats, pairs=pairs or [], top_correlated=top_correlated, pcs=pcs,
                            slice_threshold=slice_threshold, slice_ranked=slice_ranked, overlays=overlay or [],
                            special=special, color_by=color_by, width=width, how=how,  # type: ignore[arg-type]
                            split=split, where=where or [], scheduler=client, points=points)  # fmt: skip
    console.print(
        f"{len(result.aggregates)} projections of {result.points:,} rows aggregated in "
        f"{result.seconds['aggregate']:.1f} s, drawn in {result.seconds['draw']:.1f} s → {out}",
        highlight=False,
    )


@app.command()
@user_errors
def serve(
    store: Annotated[Path, typer.Argument(help="Latent store.")],
    stats: Annotated[
        Path | None, typer.Option(help="stats.zarr (default: the one beside the store).")
    ] = None,
    points: Annotated[list[Path] | None, typer.Option(help="POINTS.zarr to overlay (repeat).")] = None,
    dataset: Annotated[
        Path | None, typer.Option(help="Dataset for thumbnails (default: the store's).")
    ] = None,
    model: Annotated[
        Path | None, typer.Option(help="Checkpoint for decoding (default: the store's).")
    ] = None,
    address: Annotated[
        str, typer.Option(help="Address to bind (127.0.0.1: this machine only).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 5006,
    cluster: ClusterOption = None,
    scheduler: SchedulerOption = None,
    cluster_name: ClusterNameOption = None,
) -> None:
    """A dashboard in the browser: every z-point, re-aggregated on zoom, with histograms, correlations, images."""
    from latentdask.cluster.connect import check_paths_on_workers, connect
    from latentdask.render.dashboard import serve as run_serve

    with connect(cluster_choice(cluster, scheduler, cluster_name)) as client:
        check_paths_on_workers(client, [store])
        console.print(f"serving {store} on http://{address}:{port}/ (Ctrl-C stops)", highlight=False)
        if address not in ("127.0.0.1", "localhost", "::1"):
            console.print(f"warning: bound to {address}: anyone who can reach it sees every image "
                          "and z-point; put it behind an authenticating proxy", highlight=False)  # fmt: skip
        run_serve(store, stats=stats, points=list(points or []), dataset=dataset, model=model, client=client,
                  address=address, port=port)  # fmt: skip


@cluster_app.command("certs")
@user_errors
def cluster_certs(
    folder: Annotated[Path, typer.Argument(help="Folder for ca.pem and the scheduler/worker/client pairs.")],
    host: Annotated[
        list[str] | None,
        typer.Option("--host", help="Host names or IPs the certificates are valid for (repeat)."),
    ] = None,
    days: Annotated[int, typer.Option(help="Days of validity.")] = 365,
    overwrite: Annotated[bool, typer.Option(help="Replace certificates already in FOLDER.")] = False,
) -> None:
    """A private CA and scheduler, worker and client certificates for mutual TLS."""
    from latentdask.cluster.certs import make_certificates

    paths = make_certificates(
        folder, hosts=host or ["127.0.0.1", "localhost"], days=days, overwrite=overwrite
    )
    console.print(f"wrote {', '.join(p.name for p in paths.values())} → {folder}", highlight=False)
    console.print(
        f"scheduler: dask scheduler --protocol tls --tls-ca-file {paths['ca']} --tls-cert {paths['scheduler']} "
        f"--tls-key {paths['scheduler-key']}\nworkers:   dask worker tls://HOST:8786 --tls-ca-file {paths['ca']} "
        f"--tls-cert {paths['worker']} --tls-key {paths['worker-key']}\nclients:   a spec of kind address with "
        f"tls: {{ca_file: {paths['ca']}, cert: {paths['client']}, key: {paths['client-key']}}}",
        highlight=False,
    )


SpecArgument = Annotated[Path, typer.Option("--cluster", help="The gateway or Kubernetes cluster spec YAML.")]


@cluster_app.command("up")
@user_errors
def cluster_up(
    spec: Annotated[Path, typer.Argument(help="A gateway or Kubernetes cluster spec YAML.")],
) -> None:
    """Start a cluster that outlives this command and print its name (use it with --cluster-name)."""
    from latentdask.cluster.connect import ClusterChoice, cluster_up

    name = cluster_up(ClusterChoice(spec=spec).resolve())
    typer.echo(name)
    console.print(f"started {name}; computing commands join it with --cluster {spec} --cluster-name {name}",
                  highlight=False)  # fmt: skip


@cluster_app.command("scale")
@user_errors
def cluster_scale(
    name: Annotated[str, typer.Argument(help="Cluster name (from 'cluster up' or 'cluster list').")],
    workers: Annotated[int, typer.Argument(help="Workers wanted.")],
    spec: SpecArgument,
) -> None:
    """Scale a running cluster to N workers: an encode in progress spreads its remaining shards over them."""
    from latentdask.cluster.connect import ClusterChoice, cluster_scale

    cluster_scale(ClusterChoice(spec=spec).resolve(), name, workers)
    console.print(f"{name}: scaling to {workers} worker(s)", highlight=False)


@cluster_app.command("list")
@user_errors
def cluster_list(spec: SpecArgument) -> None:
    """The clusters the gateway runs for you."""
    from latentdask.cluster.connect import ClusterChoice, cluster_list

    for name, status in cluster_list(ClusterChoice(spec=spec).resolve()):
        typer.echo(f"{name}\t{status}")


@cluster_app.command("down")
@user_errors
def cluster_down(name: Annotated[str, typer.Argument(help="Cluster name.")], spec: SpecArgument) -> None:
    """Stop a cluster and its workers."""
    from latentdask.cluster.connect import ClusterChoice, cluster_down

    cluster_down(ClusterChoice(spec=spec).resolve(), name)
    console.print(f"{name}: stopped", highlight=False)


def _run_bench(json_out: Path | None, measure: Callable[[], Any]) -> None:
    """Check where the JSON goes first (a benchmark takes minutes), measure, show, save."""
    from latentdask.bench.report import BENCH_KIND
    from latentdask.store.output import check_output

    if json_out is not None:
        check_output(json_out, BENCH_KIND)
    report = measure()
    report.show()
    if json_out is not None:
        report.save(json_out)
        console.print(f"saved {json_out}")


JsonOption = Annotated[Path | None, typer.Option("--json", help="Also save the figures as JSON.")]


@bench_app.command("decode")
@user_errors
def bench_decode(
    dataset: Annotated[Path | None, typer.Option(help="Image folder; default: synthetic faces.")] = None,
    n: Annotated[int, typer.Option("--n", help="Images to decode.")] = 2000,
    image_size: Annotated[int, typer.Option(help="Output side.")] = 64,
    json_out: JsonOption = None,
) -> None:
    """Decode + preprocess images/s on one core against a plain PIL loop."""
    from latentdask.bench.decode import bench_decode as run

    _run_bench(json_out, functools.partial(run, dataset=dataset, n=n, image_size=image_size))


@bench_app.command("train")
@user_errors
def bench_train(
    image_size: Annotated[int, typer.Option(help="Model input side.")] = 64,
    latent_dim: Annotated[int, typer.Option(help="Latent dimension.")] = 256,
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = 128,
    steps: Annotated[int, typer.Option(help="Timed steps.")] = 10,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda.")] = "auto",
    json_out: JsonOption = None,
) -> None:
    """Training images/s of the default autoencoder on this machine."""
    from latentdask.bench.train import bench_train as run

    _run_bench(json_out, functools.partial(run, image_size=image_size, latent_dim=latent_dim,
                                            batch_size=batch_size, steps=steps, device=device))  # fmt: skip


@bench_app.command("encode")
@user_errors
def bench_encode(
    n: Annotated[int, typer.Option("--n", help="Synthetic images to encode.")] = 8192,
    shard_size: Annotated[int, typer.Option(help="Images per shard.")] = 1024,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 256,
    image_size: Annotated[int, typer.Option(help="Model input side.")] = 64,
    json_out: JsonOption = None,
) -> None:
    """Encode pipeline images/s with 1 and 2 workers against a plain loop and the CPU ceiling."""
    from latentdask.bench.encode import bench_encode as run

    _run_bench(json_out, functools.partial(run, n=n, shard_size=shard_size, batch_size=batch_size,
                                            image_size=image_size))  # fmt: skip


@bench_app.command("stats")
@user_errors
def bench_stats(
    n: Annotated[int, typer.Option("--n", help="Rows of the synthetic store.")] = 2_000_000,
    dim: DimOption = 256,
    workers: WorkersOption = 2,
    baselines: Annotated[
        bool,
        typer.Option(
            "--baselines/--no-baselines", help="Also run the baselines (they hold the array in RAM)."
        ),
    ] = True,
    json_out: JsonOption = None,
) -> None:
    """The fused statistics pass against the seed's method, dask.array, and a float32 XᵀX pass."""
    from latentdask.bench.stats import bench_stats as run

    _run_bench(json_out, functools.partial(run, n=n, dim=dim, workers=workers, baselines=baselines))


@bench_app.command("knn")
@user_errors
def bench_knn(
    n: Annotated[int, typer.Option("--n", help="Real vectors.")] = 2_000_000,
    queries: Annotated[int, typer.Option(help="Query points.")] = 10_000,
    workers: WorkersOption = 2,
    json_out: JsonOption = None,
) -> None:
    """Exact nearest-real-neighbour search in GFLOP/s against a blocked in-memory float32 GEMM."""
    from latentdask.bench.knn import bench_knn as run

    _run_bench(json_out, functools.partial(run, n=n, n_queries=queries, workers=workers))


@bench_app.command("render")
@user_errors
def bench_render(
    n: Annotated[int, typer.Option("--n", help="Rows of the synthetic store.")] = 10_000_000,
    dim: DimOption = 256,
    workers: WorkersOption = 2,
    width: Annotated[int, typer.Option(help="Grid image width in pixels.")] = 800,
    json_out: JsonOption = None,
) -> None:
    """Render's one-read aggregation and the dashboard's in-memory zoom against datashader on pandas."""
    from latentdask.bench.render import bench_render as run

    _run_bench(json_out, functools.partial(run, n=n, dim=dim, workers=workers, width=width))


if __name__ == "__main__":
    app()
