"""Measurements against baselines run in the same process.

``latentdask bench decode|train|encode|stats|knn|render``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

import typer

from latentdask.cli.options import run_bench, user_errors

app = typer.Typer(help="Measure against baselines run in the same process.", no_args_is_help=True)

DimOption = Annotated[int, typer.Option(help="Latent dimension.")]
WorkersOption = Annotated[int, typer.Option(help="Local worker processes.")]
JsonOption = Annotated[Path | None, typer.Option("--json", help="Also save the figures as JSON.")]


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

    run_bench(json_out, functools.partial(run, dataset=dataset, n=n, image_size=image_size))


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

    run_bench(
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


@app.command("encode")
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

    run_bench(
        json_out,
        functools.partial(run, n=n, shard_size=shard_size, batch_size=batch_size, image_size=image_size),
    )


@app.command("stats")
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

    run_bench(json_out, functools.partial(run, n=n, dim=dim, workers=workers, baselines=baselines))


@app.command("knn")
@user_errors
def bench_knn(
    n: Annotated[int, typer.Option("--n", help="Real vectors.")] = 2_000_000,
    queries: Annotated[int, typer.Option(help="Query points.")] = 10_000,
    workers: WorkersOption = 2,
    json_out: JsonOption = None,
) -> None:
    """Exact nearest-real-neighbour search in GFLOP/s against a blocked in-memory float32 GEMM."""
    from latentdask.bench.knn import bench_knn as run

    run_bench(json_out, functools.partial(run, n=n, n_queries=queries, workers=workers))


@app.command("render")
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

    run_bench(json_out, functools.partial(run, n=n, dim=dim, workers=workers, width=width))
