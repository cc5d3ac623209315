"""Measurements against baselines run in the same process.

``latentdask bench decode|train|encode|stats|knn|render|gmm|overhead``, ``bench all`` (every one, one
JSON) and ``bench readme`` (the README's tables from that JSON).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from latentdask.cli.options import parse_ints, run_bench, user_errors
from latentdask.errors import LatentdaskError

if TYPE_CHECKING:
    from latentdask.bench.report import BenchReport
    from latentdask.bench.suite import Suite

app = typer.Typer(help="Measure against baselines run in the same process.", no_args_is_help=True)

DimOption = Annotated[int, typer.Option(help="Latent dimension.")]
WorkersOption = Annotated[int, typer.Option(help="Local worker processes.")]
JsonOption = Annotated[Path | None, typer.Option("--json", help="Also save the figures as JSON.")]
ChunkRowsOption = Annotated[int, typer.Option(help="Rows per chunk of the synthetic store.")]


def _run(json_out: Path | None, measure: Callable[[], BenchReport | Suite]) -> None:
    """Measure, show and save; then exit 1 if a baseline did not compute latentdask's figures."""
    measured: list[BenchReport | Suite] = []

    def keep() -> BenchReport | Suite:
        measured.append(measure())
        return measured[0]

    run_bench(json_out, keep)
    if measured and measured[0].disagreements():
        typer.echo("error: a baseline does not compute latentdask's figures (see above)", err=True)
        raise typer.Exit(1)


@app.command("decode")
@user_errors
def bench_decode(
    dataset: Annotated[Path | None, typer.Option(help="Image folder; default: synthetic faces.")] = None,
    n: Annotated[int, typer.Option("--n", help="Images to decode.")] = 2000,
    image_size: Annotated[int, typer.Option(help="Output side.")] = 64,
    json_out: JsonOption = None,
) -> None:
    """Decode + preprocess images/s on one core against a plain PIL loop."""
    from latentdask.bench.decode import bench_decode as run

    _run(json_out, functools.partial(run, dataset=dataset, n=n, image_size=image_size))


@app.command("storage")
@user_errors
def bench_storage(
    bucket: Annotated[
        str | None,
        typer.Option(
            help="s3://BUCKET to measure (credentials from the environment); default: a local S3 server."
        ),
    ] = None,
    n: Annotated[int, typer.Option("--n", help="Synthetic images.")] = 4096,
    shard_size: Annotated[int, typer.Option(help="Images per shard.")] = 1024,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass (and per fetch).")] = 256,
    workers: Annotated[int, typer.Option(help="Worker processes of the encodes.")] = 2,
    json_out: JsonOption = None,
) -> None:
    """A dataset on object storage: fetch images/s against fsspec's concurrent fetch, and encode
    images/s with the data on S3 against the same encode on local disk."""
    from latentdask.bench.storage import bench_storage as run

    _run(
        json_out,
        functools.partial(
            run, bucket=bucket, n=n, shard_size=shard_size, batch_size=batch_size, workers=workers
        ),
    )


@app.command("train")
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

    _run(
        json_out,
        functools.partial(
            run,
            image_size=image_size,
            latent_dim=latent_dim,
            batch_size=batch_size,
            steps=steps,
            device=device,
        ),
    )


DeviceOption = Annotated[
    Literal["cpu", "cuda"],
    typer.Option(help="cpu, or cuda: the GPU measurements (see latentdask.bench.gpu)."),
]


@app.command("encode")
@user_errors
def bench_encode(
    n: Annotated[int, typer.Option("--n", help="Synthetic images (on cuda: 200,000 or more).")] = 8192,
    shard_size: Annotated[int, typer.Option(help="Images per shard (on cuda: 16,384).")] = 1024,
    batch_size: Annotated[
        int, typer.Option(help="Images per forward pass (the CPU workers' default; on cuda: 1024).")
    ] = 64,
    image_size: Annotated[int, typer.Option(help="Model input side.")] = 64,
    latent_dim: Annotated[int, typer.Option(help="Latent dimension.")] = 256,
    layout: Annotated[
        list[str] | None,
        typer.Option(
            help="CPU worker layout WORKERS,TORCH_THREADS,DECODE_THREADS, repeatable "
            "(default: 1,2,2, 2,1,1 and 2,1,0)."
        ),
    ] = None,
    decoder: Annotated[
        list[str] | None,
        typer.Option(
            help="The decoders measured, repeatable (default: pil and opencv; on cuda also nvjpeg)."
        ),
    ] = None,
    rounds: Annotated[
        int,
        typer.Option(
            min=1, help="CPU: turns the multi-process loop and the pipeline take (the median is reported)."
        ),
    ] = 3,
    device: DeviceOption = "cpu",
    precision: Annotated[
        str, typer.Option(help="cuda: the encoder's arithmetic, fp32, bf16 or fp16.")
    ] = "fp32",
    json_out: JsonOption = None,
) -> None:
    """Encode pipeline images/s against a plain loop and the ceiling: per CPU decoder (PIL, OpenCV) and
    worker layout (with a multi-process loop and each decoder alone), or on a CUDA GPU per decoder
    (PIL, nvJPEG) with each stage alone."""
    known = ("pil", "opencv", "nvjpeg") if device == "cuda" else ("pil", "opencv")
    unknown = sorted(set(decoder or ()) - set(known))
    if unknown:
        raise LatentdaskError(f"--decoder measures {', '.join(known)} on {device}, got {', '.join(unknown)}")
    chosen: dict[str, Any] = {"decoders": tuple(decoder)} if decoder else {}
    if device == "cuda":
        from latentdask.bench.gpu import bench_encode_gpu

        _run(
            json_out,
            functools.partial(
                bench_encode_gpu,
                n=n,
                shard_size=shard_size,
                batch_size=batch_size,
                image_size=image_size,
                latent_dim=latent_dim,
                precision=precision,
                **chosen,
            ),
        )
        return
    from latentdask.bench.encode import bench_encode as run

    measure = functools.partial(
        run,
        n=n,
        shard_size=shard_size,
        batch_size=batch_size,
        image_size=image_size,
        latent_dim=latent_dim,
        rounds=rounds,
    )
    if layout:
        layouts = tuple(parse_ints(text, "--layout") for text in layout)
        if any(len(item) != 3 for item in layouts):
            raise LatentdaskError(f"--layout expects WORKERS,TORCH_THREADS,DECODE_THREADS, got {layout}")
        measure = functools.partial(measure, layouts=layouts)
    _run(json_out, functools.partial(measure, **chosen))


@app.command("stats")
@user_errors
def bench_stats(
    n: Annotated[int, typer.Option("--n", help="Rows of the synthetic store.")] = 2_000_000,
    dim: DimOption = 256,
    chunk_rows: ChunkRowsOption = 65_536,
    workers: WorkersOption = 2,
    baselines: Annotated[
        bool,
        typer.Option(
            "--baselines/--no-baselines", help="Also run the baselines (they hold the array in RAM)."
        ),
    ] = True,
    device: DeviceOption = "cpu",
    json_out: JsonOption = None,
) -> None:
    """The fused statistics pass against the CelebA study's own code, numpy and dask.array (all pairs), and a
    float32 XᵀX bound; every baseline's figures checked against latentdask's. On cuda: the pass over
    device-resident blocks against a torch baseline of the same figures."""
    if device == "cuda":
        from latentdask.bench.gpu import bench_stats_gpu

        _run(json_out, functools.partial(bench_stats_gpu, n=n, dim=dim, chunk_rows=chunk_rows))
        return
    from latentdask.bench.stats import bench_stats as run

    _run(
        json_out,
        functools.partial(run, n=n, dim=dim, chunk_rows=chunk_rows, workers=workers, baselines=baselines),
    )


@app.command("knn")
@user_errors
def bench_knn(
    n: Annotated[int, typer.Option("--n", help="Real vectors.")] = 2_000_000,
    queries: Annotated[int, typer.Option(help="Query points.")] = 10_000,
    dim: DimOption = 256,
    chunk_rows: ChunkRowsOption = 65_536,
    workers: WorkersOption = 2,
    json_out: JsonOption = None,
) -> None:
    """Exact nearest-real-neighbour search in GFLOP/s against the same brute force in RAM (same library,
    batch shape and threads) and a torch GEMM bound."""
    from latentdask.bench.knn import bench_knn as run

    _run(
        json_out,
        functools.partial(run, n=n, queries=queries, dim=dim, chunk_rows=chunk_rows, workers=workers),
    )


@app.command("gmm")
@user_errors
def bench_gmm(
    n: Annotated[int, typer.Option("--n", help="Rows of the synthetic store.")] = 2_000_000,
    dim: DimOption = 256,
    components: Annotated[int, typer.Option(help="Mixture components (full covariances).")] = 8,
    chunk_rows: ChunkRowsOption = 65_536,
    workers: WorkersOption = 2,
    json_out: JsonOption = None,
) -> None:
    """One EM iteration of the Gaussian mixture over a store, in rows/s, against scikit-learn's
    iteration on the array in RAM (same start, same figures) and a float32 GEMM bound."""
    from latentdask.bench.gmm import bench_gmm as run

    _run(
        json_out,
        functools.partial(run, n=n, dim=dim, components=components, chunk_rows=chunk_rows, workers=workers),
    )


@app.command("render")
@user_errors
def bench_render(
    n: Annotated[int, typer.Option("--n", help="Rows of the synthetic store.")] = 10_000_000,
    dim: DimOption = 256,
    chunk_rows: ChunkRowsOption = 65_536,
    workers: WorkersOption = 2,
    width: Annotated[int, typer.Option(help="Grid image width in pixels.")] = 800,
    repeats: Annotated[int, typer.Option(help="Zoom timings; the best is kept.")] = 3,
    json_out: JsonOption = None,
) -> None:
    """Render's one-read aggregation and the dashboard's in-memory zoom against datashader on pandas,
    on the same cores."""
    from latentdask.bench.render import bench_render as run

    _run(
        json_out,
        functools.partial(
            run, n=n, dim=dim, chunk_rows=chunk_rows, workers=workers, width=width, repeats=repeats
        ),
    )


@app.command("serve")
@user_errors
def bench_serve(
    n: Annotated[int, typer.Option("--n", help="Rows of the synthetic store.")] = 10_000_000,
    dim: DimOption = 256,
    chunk_rows: ChunkRowsOption = 262_144,
    workers: WorkersOption = 2,
    repeats: Annotated[
        int, typer.Option(help="Timings of the zoom and of the lasso, each side; the best is kept.")
    ] = 5,
    json_out: JsonOption = None,
) -> None:
    """The dashboard's first view, zoom and a lasso's statistics over every z-point, against datashader
    on pandas and numpy in memory, on the same cores."""
    from latentdask.bench.serve import bench_serve as run

    _run(
        json_out,
        functools.partial(run, n=n, dim=dim, chunk_rows=chunk_rows, workers=workers, repeats=repeats),
    )


@app.command("overhead")
@user_errors
def bench_overhead(
    rows: Annotated[int, typer.Option(help="Rows of the small store given to stats.")] = 1000,
    dim: DimOption = 256,
    images: Annotated[int, typer.Option(help="Images of the finished store given to encode --resume.")] = 200,
    repeats: Annotated[int, typer.Option(help="Timed runs of each command (after one warm-up).")] = 5,
    json_out: JsonOption = None,
) -> None:
    """A tiny stats run and a resume with nothing to do, whole commands, beside the imports they need."""
    from latentdask.bench.overhead import bench_overhead as run

    _run(json_out, functools.partial(run, rows=rows, dim=dim, images=images, repeats=repeats))


@app.command("all")
@user_errors
def bench_all(
    out: Annotated[Path, typer.Option("--out", help="Where to write the JSON of every benchmark.")],
    scale: Annotated[
        Literal["default", "tiny"],
        typer.Option(
            help="default: every benchmark at its own command's defaults — decode 2,000 images; train 10 "
            "steps of 128 at 64 x 64; encode 8,192 images; stats 2,000,000 x 256; knn 10,000 queries "
            "against 2,000,000 x 256; render 10,000,000 x 256 (about 15 minutes on 2 cores, a 10 GB "
            "store on disk). tiny: seconds in all, for tests; its figures say nothing about speed."
        ),
    ] = "default",
) -> None:
    """Rerun every benchmark and write one JSON: date, machine, versions and each benchmark's report.

    `latentdask bench readme OUT` then writes the README's tables from it.
    """
    from latentdask.bench.suite import run_all

    _run(out, functools.partial(run_all, scale=scale))


@app.command("readme")
@user_errors
def bench_readme(
    suite: Annotated[Path, typer.Argument(help="JSON written by `latentdask bench all --out`.")],
    readme: Annotated[Path, typer.Option(help="The README whose tables to replace.")] = Path("README.md"),
) -> None:
    """Write the README's benchmark tables from a `bench all` JSON, between its two marker comments."""
    from latentdask.bench.tables import BEGIN, END, write_readme

    write_readme(suite, readme)
    typer.echo(f"wrote the benchmark tables of {readme} (between {BEGIN} and {END}) from {suite}")
