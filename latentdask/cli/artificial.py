"""Artificial z-points: gmm (a mixture fitted to every z-point), generate, score, decode."""

from __future__ import annotations

from typing import Annotated

import typer

from latentdask.cli.options import (
    ClusterNameOption,
    ClusterOption,
    Defaults,
    RowsOption,
    SchedulerOption,
    WhereOption,
    cluster_choice,
    must_exist,
    options_from,
    parse_ints,
    user_errors,
)
from latentdask.errors import LatentdaskError
from latentdask.generate.options import DecodeOptions, GenerateOptions, GMMOptions, SamplerSpec, ScoreOptions
from latentdask.progress import console

SAMPLER = Defaults(SamplerSpec)
GENERATE = Defaults(GenerateOptions)
SCORE = Defaults(ScoreOptions)
GMM = Defaults(GMMOptions)
DECODE = Defaults(DecodeOptions)


@user_errors
def gmm(
    store: Annotated[str, typer.Argument(help="The real latent store.")],
    out: Annotated[str, typer.Option("--out", help="GMM.zarr to write.")],
    components: Annotated[
        str, typer.Option(help="K, or 'auto': K = 1 … --max-components by held-out log-likelihood.")
    ] = str(GMM.components),
    max_components: Annotated[int, typer.Option(help="The largest K tried by 'auto'.")] = GMM.max_components,
    covariance: Annotated[str, typer.Option(help="full or diag.")] = GMM.covariance,
    split: Annotated[
        str | None, typer.Option(help="Rows fitted (default: train when the store has it, else fit).")
    ] = GMM.split,
    where: WhereOption = None,
    seed: Annotated[int, typer.Option(help="Seed of the initial sample.")] = GMM.seed,
    max_iter: Annotated[int, typer.Option(help="EM iterations at most.")] = GMM.max_iter,
    tol: Annotated[float, typer.Option(help="Stop when the mean log-likelihood gains less.")] = GMM.tol,
    reg_covar: Annotated[float, typer.Option(help="Added to the covariances' diagonals.")] = GMM.reg_covar,
    cluster: ClusterOption = None,
    scheduler: SchedulerOption = None,
    cluster_name: ClusterNameOption = None,
) -> None:
    """A Gaussian mixture fitted by EM over every z-point of the fit, for the gmm sampler."""
    import xarray as xr

    from latentdask.generate.options import GMMOptions
    from latentdask.store.points import zpoint_bytes
    from latentdask.workflow import steps

    if components != "auto" and not (components.isascii() and components.isdigit()):
        raise LatentdaskError(f"--components expects a number of components or 'auto', got {components!r}")
    chosen = components if components == "auto" else int(components)
    options = options_from(GMMOptions, locals(), components=chosen)
    choice = cluster_choice(cluster, scheduler, cluster_name)
    must_exist(store)
    with steps.Connection(choice, input_bytes=zpoint_bytes(store)) as connection:
        steps.gmm(store, out, options=options, cluster=connection)
    from latentdask.location import location

    fitted = xr.open_zarr(str(location(out)))
    console.print(
        f"{fitted.attrs['components']} components ({fitted.attrs['rule']}) fitted on "
        f"{fitted.attrs['fit_rows']:,} z-points ({fitted.attrs['selection']}), mean log-likelihood "
        f"{fitted.attrs['log_likelihood']:.4f} → {out}"
    )


@user_errors
def generate(
    stats: Annotated[
        str, typer.Argument(help="stats.zarr the samplers are fitted on (a GMM.zarr for --sampler gmm).")
    ],
    out: Annotated[str, typer.Option("--out", help="POINTS.zarr to write.")],
    sampler: Annotated[
        str, typer.Option(help="uniform, gaussian, empirical, mvn, mvn-core, or gmm (from a GMM.zarr).")
    ] = "uniform",
    b: Annotated[float, typer.Option("--b", help="uniform: half-width of [-b, b].")] = SAMPLER.b,
    quantile: Annotated[
        float, typer.Option(help="mvn-core: χ² quantile of the kept core.")
    ] = SAMPLER.quantile,
    n: Annotated[int, typer.Option("--n", help="Points.")] = GENERATE.n,
    seed: Annotated[int, typer.Option(help="Same seed, same points.")] = GENERATE.seed,
) -> None:
    """Artificial z-points: the CelebA study's uniform sampler in [-b, b], or samplers fitted on stats."""
    import json

    import numpy as np
    import zarr

    from latentdask.generate.options import GenerateOptions, sampler_spec
    from latentdask.generate.samplers import radius_report
    from latentdask.stats.io import open_stats
    from latentdask.workflow import steps

    spec = sampler_spec(sampler, b=b, quantile=quantile)
    steps.generate(stats, out, sampler=spec, options=options_from(GenerateOptions, locals()))
    console.print(f"wrote {n} {spec.name} z-points → {out}")
    if spec.name == "uniform":
        from latentdask.location import location

        points = np.asarray(zarr.open_array(str(location(out) / "z"), mode="r")[: min(n, 100_000)])
        report = radius_report(open_stats(stats), points, spec.b)
        scan = report.pop("b_scan")
        typer.echo(json.dumps(report | {"best_b_by_radius": scan["best_b"]}, indent=2))  # type: ignore[index]


@user_errors
def score(
    store: Annotated[str, typer.Argument(help="The real latent store.")],
    stats: Annotated[str, typer.Argument(help="Its stats.zarr.")],
    points: Annotated[list[str], typer.Argument(help="POINTS.zarr groups to score.")],
    out: Annotated[str, typer.Option("--out", help="scores.json to write.")],
    reference_size: Annotated[
        int, typer.Option(help="Held-out real points scored beside them.")
    ] = SCORE.reference_size,
    pair: Annotated[
        str | None, typer.Option(help="a,b for the slice score (default: the least filled slice).")
    ] = None,
    threshold: Annotated[
        float | None, typer.Option(help="Slice threshold (one of the statistics').")
    ] = SCORE.threshold,
    seed: Annotated[int, typer.Option(help="Seed of the real sample.")] = SCORE.seed,
    gmm: Annotated[
        str | None, typer.Option(help="GMM.zarr: each set's log-likelihood under the mixture too.")
    ] = None,
    rows: RowsOption = None,
    cluster: ClusterOption = None,
    scheduler: SchedulerOption = None,
    cluster_name: ClusterNameOption = None,
) -> None:
    """In-distribution scores of point sets, always beside held-out real points (of a row selection
    with --rows, which STATS must describe too)."""
    from latentdask.generate.options import ScoreOptions
    from latentdask.generate.score import format_scores
    from latentdask.workflow import steps

    chosen = parse_ints(pair, "--pair") if pair else None
    if chosen is not None and len(chosen) != 2:
        raise LatentdaskError(f"--pair expects two component numbers a,b, got {pair!r}")
    options = options_from(ScoreOptions, locals(), pair=chosen)
    with steps.Connection(cluster_choice(cluster, scheduler, cluster_name)) as connection:
        results = steps.score(
            store, stats, points, out, options=options, cluster=connection, gmm=gmm, rows=rows
        )
    typer.echo(format_scores(results))
    console.print(f"scores → {out}")


@user_errors
def decode(
    checkpoint: Annotated[str, typer.Argument(help="Checkpoint folder.")],
    points: Annotated[list[str] | None, typer.Argument(help="POINTS.zarr groups: one row each.")] = None,
    out: Annotated[str, typer.Option("--out", help="PNG to write.")] = "grid.png",
    per_row: Annotated[int, typer.Option(help="Images per row.")] = DECODE.per_row,
    reconstruct: Annotated[str | None, typer.Option(help="Dataset: originals above reconstructions.")] = None,
    interpolate: Annotated[
        str | None, typer.Option(help="i,j: interpolate between two images of --dataset.")
    ] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset for --interpolate.")] = None,
    path: Annotated[str | None, typer.Option(help="a,b: a path in the plane of components a and b.")] = None,
    stats: Annotated[str | None, typer.Option(help="stats.zarr for --path (centre and spreads).")] = None,
    through: Annotated[
        str, typer.Option(help="--path through the real 'centre' or the 'origin'.")
    ] = DECODE.through,
    scale: Annotated[int, typer.Option(help="Pixels per image pixel.")] = DECODE.scale,
    face_rate: Annotated[
        int, typer.Option(help="Also measure the face rate on this many points per set (0: no).")
    ] = DECODE.face_rate,
    faces_out: Annotated[str | None, typer.Option(help="face_rate.json to write.")] = None,
) -> None:
    """Decode z-points to a labelled image grid: samplers, reconstructions, interpolations, paths."""
    from latentdask.generate.faces import format_face_rates
    from latentdask.generate.options import DecodeOptions
    from latentdask.workflow import steps

    options = options_from(DecodeOptions, locals())
    decoded = steps.decode(
        checkpoint,
        out,
        options=options,
        points=points or [],
        reconstruct=reconstruct,
        dataset=dataset,
        interpolate=parse_ints(interpolate, "--interpolate") if interpolate is not None else None,
        path=parse_ints(path, "--path") if path is not None else None,
        stats=stats,
        faces_out=faces_out,
    )
    console.print(f"{decoded.rows} row(s) → {out}" + (f"; {decoded.note}" if decoded.note else ""))
    if decoded.rates is not None:
        typer.echo(format_face_rates(decoded.rates))
        if faces_out is not None:
            console.print(f"face rates → {faces_out}")
