"""What the latent store holds: stats, synth-latents, select, normality, render, serve."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from latentdask.cli.options import (
    ClusterNameOption,
    ClusterOption,
    Defaults,
    RowsOption,
    SchedulerOption,
    SkipDamagedOption,
    SplitOption,
    UnfinishedOption,
    WhereOption,
    cluster_choice,
    must_exist,
    options_from,
    parse_ints,
    reading_store,
    user_errors,
)
from latentdask.errors import LatentdaskError
from latentdask.location import is_remote, location
from latentdask.progress import console
from latentdask.render.options import RenderOptions
from latentdask.stats.options import NormalityOptions, SummaryParams

SUMMARY = Defaults(SummaryParams)
NORMALITY = Defaults(NormalityOptions)
RENDER = Defaults(RenderOptions)


def summary_params(bin_width: float, value_range: tuple[float, float], thresholds: list[float] | None) -> Any:
    from pydantic import ValidationError

    from latentdask.cluster.spec import ConfigError
    from latentdask.errors import describe_validation_error
    from latentdask.stats.options import SummaryParams

    given = {"bin_width": bin_width, "range": value_range} | (
        {"thresholds": thresholds} if thresholds else {}
    )
    try:
        return SummaryParams.model_validate(given)  # no --thresholds: the model's
    except ValidationError as exc:
        raise ConfigError(f"statistics options: {describe_validation_error(exc)}") from None


@user_errors
def stats(
    store: Annotated[str, typer.Argument(help="Latent store, Zarr group holding 'z', or (n, N) Zarr array.")],
    out: Annotated[str, typer.Option("--out", help="stats.zarr to write (stats.json goes beside it).")],
    bin_width: Annotated[float, typer.Option(help="Histogram bin width.")] = SUMMARY.bin_width,
    value_range: Annotated[
        tuple[float, float], typer.Option("--range", help="Histogram range LOW HIGH.")
    ] = SUMMARY.range,
    thresholds: Annotated[
        list[float] | None, typer.Option("--thresholds", help="Slice thresholds (repeat).")
    ] = None,
    split: SplitOption = "all",
    where: WhereOption = None,
    rows: RowsOption = None,
    skip_damaged: SkipDamagedOption = False,
    include_unfinished: UnfinishedOption = False,
    cluster: ClusterOption = None,
    scheduler: SchedulerOption = None,
    cluster_name: ClusterNameOption = None,
) -> None:
    """Every statistic of every z-point in one pass: histograms, correlations, slices, radii, PCA."""
    import time

    from latentdask.stats.io import check_stats_output
    from latentdask.workflow import steps

    params = summary_params(bin_width, value_range, thresholds)
    check_stats_output(out, inputs=[store])
    choice = cluster_choice(cluster, scheduler, cluster_name)
    started = time.perf_counter()
    with reading_store(
        store, choice, skip_damaged=skip_damaged, include_unfinished=include_unfinished, rows=rows
    ) as (connection, points):
        figures = steps.statistics(
            store, out, params=params, split=split, where=where or [], cluster=connection, points=points
        )
    console.print(
        f"statistics of {figures['count']} z-points ({figures['selection']}; {figures['invalid']} invalid, "
        f"{figures['nonfinite']} non-finite left out) in {time.perf_counter() - started:.1f} s → {out}",
    )


@user_errors
def synth_latents(
    out: Annotated[str, typer.Argument(help="Zarr array to write.")],
    n: Annotated[int, typer.Option("--n", help="Rows.")] = 100_000,
    dim: Annotated[int, typer.Option(help="Columns (latent dimension).")] = 256,
    seed: Annotated[int, typer.Option(help="Same seed, same numbers.")] = 0,
    chunk_rows: Annotated[int, typer.Option(help="Rows per chunk (and per block generated).")] = 65_536,
    components: Annotated[
        int, typer.Option(help="A mixture of this many such Gaussians, well apart (for gmm's tests).")
    ] = 1,
) -> None:
    """Write (n, dim) float32 z-points from a known Gaussian shaped like the CelebA study's latents."""
    from latentdask.generate.synthetic import synthesize_latents

    synthesize_latents(out, n=n, dim=dim, seed=seed, chunk_rows=chunk_rows, components=components)
    console.print(f"wrote {n} x {dim} synthetic z-points (true mean and covariance beside them) → {out}")


@user_errors
def select(
    store: Annotated[str, typer.Argument(help="Latent store (or any Zarr group holding 'z').")],
    out: Annotated[str, typer.Option("--out", help="selection.zarr to write.")],
    pair: Annotated[str, typer.Option(help="The two components a,b the polygon is drawn in.")],
    box: Annotated[
        str | None, typer.Option(help="X0,X1,Y0,Y1: the rows inside this box (or give --polygon).")
    ] = None,
    polygon: Annotated[
        list[str] | None, typer.Option("--polygon", help="A vertex x,y (repeat, 3 or more): a lasso.")
    ] = None,
    slice_threshold: Annotated[
        float | None, typer.Option("--slice", help="Also every other component within ±this.")
    ] = None,
    skip_damaged: SkipDamagedOption = False,
    include_unfinished: UnfinishedOption = False,
    cluster: ClusterOption = None,
    scheduler: SchedulerOption = None,
    cluster_name: ClusterNameOption = None,
) -> None:
    """A row selection over every z-point — a box or polygon in two components — for --rows."""
    from latentdask.output import check_output
    from latentdask.stats.contrast import profile
    from latentdask.store.selection import SELECTION_KIND, view_rows, write_selection

    view = _view(pair, box, polygon or [], slice_threshold)
    check_output(out, SELECTION_KIND, inputs=[store])  # before the cluster starts
    choice = cluster_choice(cluster, scheduler, cluster_name)
    with reading_store(store, choice, skip_damaged=skip_damaged, include_unfinished=include_unfinished) as (
        connection,
        points,
    ):
        rows = view_rows(points.z, view)
        if points.valid is not None:
            rows = rows & points.valid
        contrast = profile(points.z, rows, valid=points.valid, scheduler=connection.client)
        count = write_selection(
            out,
            rows,
            view=view,
            source=str(store),
            smd=contrast.smd,
            share=contrast.share,
            scheduler=connection.client,
        )
    apart = ", ".join(f"{j} ({smd:+.2f})" for j, smd in contrast.apart(5, leave_out=view.pair))
    console.print(
        f"{count:,} of {points.z.shape[0]:,} rows selected ({contrast.share:.2%} of the valid rows); "
        f"besides {view.pair[0]} and {view.pair[1]}, the components that set them apart (standardized "
        f"mean difference): {apart} → {out}"
    )


def _view(pair: str, box: str | None, polygon: list[str], slice_threshold: float | None) -> Any:
    from latentdask.store.selection import View

    chosen = parse_ints(pair, "--pair")
    if len(chosen) != 2:
        raise LatentdaskError(f"--pair expects two component numbers a,b, got {pair!r}")
    if (box is None) == (not polygon):
        raise LatentdaskError("give either --box X0,X1,Y0,Y1 or --polygon x,y (3 or more), not both")
    if box is not None:
        x0, x1, y0, y1 = _floats(box, "--box", 4)
        if not (x0 < x1 and y0 < y1):  # false for NaN too
            raise LatentdaskError(f"--box expects X0,X1,Y0,Y1 with X0 < X1 and Y0 < Y1, got {box!r}")
        return View.box((chosen[0], chosen[1]), (x0, x1), (y0, y1), slice=slice_threshold)
    vertices = tuple(_floats(vertex, "--polygon", 2) for vertex in polygon)
    return View((chosen[0], chosen[1]), vertices, slice=slice_threshold)  # type: ignore[arg-type]


def _floats(text: str, option: str, count: int) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != count:
        raise LatentdaskError(f"{option} expects {count} comma-separated numbers, got {text!r}")
    return values


@user_errors
def normality(
    store: Annotated[str, typer.Argument(help="The real latent store.")],
    stats: Annotated[str, typer.Argument(help="Its stats.zarr (mean, covariance, moments).")],
    out: Annotated[str, typer.Option("--out", help="normality.json to write.")],
    plot: Annotated[
        str | None, typer.Option(help="PNG of the QQ comparison of Mahalanobis² with its normal law.")
    ] = None,
    sample_size: Annotated[
        int, typer.Option(help="Points in the Shapiro–Wilk sample (≤ 5,000).")
    ] = NORMALITY.sample_size,
    hz_size: Annotated[int, typer.Option(help="Points in the Henze–Zirkler sample.")] = NORMALITY.hz_size,
    skewness_rows: Annotated[
        int,
        typer.Option(help="Mardia's skewness over every row up to this many, a seeded sample of it above."),
    ] = NORMALITY.skewness_rows,
    alpha: Annotated[float, typer.Option(help="Significance level of the tests.")] = NORMALITY.alpha,
    split: Annotated[
        str | None, typer.Option(help="Rows to test; default and only choice: the statistics' own.")
    ] = NORMALITY.split,
    where: WhereOption = None,
    seed: Annotated[int, typer.Option(help="Seed of the samples.")] = NORMALITY.seed,
    cluster: ClusterOption = None,
    scheduler: SchedulerOption = None,
    cluster_name: ClusterNameOption = None,
) -> None:
    """How normal the real z-points are: moments, Shapiro–Wilk, Mardia, Henze–Zirkler, Mahalanobis²."""
    from latentdask.stats.normality import format_normality
    from latentdask.stats.options import NormalityOptions
    from latentdask.store.points import zpoint_bytes
    from latentdask.workflow import steps

    options = options_from(NormalityOptions, locals())
    choice = cluster_choice(cluster, scheduler, cluster_name)
    must_exist(store)
    with steps.Connection(choice, input_bytes=zpoint_bytes(store)) as connection:
        result = steps.normality(store, stats, out, options=options, cluster=connection, plot=plot)
    typer.echo(format_normality(result))
    console.print(f"normality → {out}" + (f", QQ plot → {plot}" if plot else ""))


@user_errors
def render(
    store: Annotated[str, typer.Argument(help="Latent store (or any Zarr group holding 'z').")],
    out: Annotated[str, typer.Option("--out", help="Folder for the PNGs and render.json.")],
    stats: Annotated[
        str | None, typer.Option(help="stats.zarr (default: the one encode wrote beside the store).")
    ] = None,
    pairs: Annotated[
        list[str] | None,
        typer.Option("--pairs", help="a,b or corr:K, smallest-slice:K, largest-slice:K (repeat)."),
    ] = None,
    top_correlated: Annotated[
        int, typer.Option(help="Grid of the K most correlated pairs (0: none).")
    ] = RENDER.top_correlated,
    pcs: Annotated[
        int, typer.Option(help="Grid of all pairs among the first K principal axes.")
    ] = RENDER.pcs,
    slice_threshold: Annotated[
        float | None, typer.Option("--slice", help="Slice projections at this threshold.")
    ] = RENDER.slice,
    slice_ranked: Annotated[
        int, typer.Option(help="Slices of the K smallest and K largest populations.")
    ] = RENDER.slice_ranked,
    overlay: Annotated[list[str] | None, typer.Option(help="POINTS.zarr drawn in red (repeat).")] = None,
    special: Annotated[
        int | None, typer.Option(help="Row of one real point drawn in orange.")
    ] = RENDER.special,
    color_by: Annotated[
        str | None, typer.Option(help="Colour the --pairs images by this attribute.")
    ] = RENDER.color_by,
    width: Annotated[int, typer.Option(help="Image width in pixels.")] = RENDER.width,
    how: Annotated[str, typer.Option(help="Shading: eq_hist or log.")] = RENDER.how,
    split: SplitOption = RENDER.split,
    where: WhereOption = None,
    rows: RowsOption = None,
    skip_damaged: SkipDamagedOption = False,
    include_unfinished: UnfinishedOption = False,
    cluster: ClusterOption = None,
    scheduler: SchedulerOption = None,
    cluster_name: ClusterNameOption = None,
) -> None:
    """Datashader images of every z-point: pairs, top-correlated grid, principal axes, slices."""
    from latentdask.render.options import RenderOptions
    from latentdask.workflow import steps

    options = options_from(RenderOptions, locals(), slice=slice_threshold)
    choice = cluster_choice(cluster, scheduler, cluster_name)
    with reading_store(
        store, choice, skip_damaged=skip_damaged, include_unfinished=include_unfinished, rows=rows
    ) as (connection, points):
        result = steps.render(
            store,
            out,
            options=options,
            cluster=connection,
            stats=stats,
            overlays=overlay or [],
            points=points,
        )
    console.print(
        f"{len(result.aggregates)} projections of {result.points:,} rows aggregated in "
        f"{result.seconds['aggregate']:.1f} s, drawn in {result.seconds['draw']:.1f} s → {out}",
    )


@user_errors
def serve(
    store: Annotated[str, typer.Argument(help="Latent store.")],
    stats: Annotated[str | None, typer.Option(help="stats.zarr (default: the one beside the store).")] = None,
    points: Annotated[list[str] | None, typer.Option(help="POINTS.zarr to overlay (repeat).")] = None,
    dataset: Annotated[
        str | None, typer.Option(help="Dataset for thumbnails (default: the store's).")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Checkpoint for decoding (default: the store's).")] = None,
    address: Annotated[
        str, typer.Option(help="Address to bind (127.0.0.1: this machine only).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (1-65535).")] = 5006,
    selections: Annotated[
        str, typer.Option(help="Folder that Export writes selection-NAME.zarr into (default: this one).")
    ] = ".",
    cluster: ClusterOption = None,
    scheduler: SchedulerOption = None,
    cluster_name: ClusterNameOption = None,
) -> None:
    """A dashboard in the browser: every z-point re-aggregated on zoom; histograms, correlations, images."""
    from latentdask.cluster.connect import connect
    from latentdask.cluster.workers import check_paths_on_workers
    from latentdask.render.dashboard import serve as run_serve

    if not 0 < port < 65536:  # before a cluster starts
        raise LatentdaskError(f"--port must be a port number from 1 to 65535, got {port}")
    exports = location(selections)  # written by the workers: checked on them too (a URL prefix may be new)
    if not is_remote(exports) and not exports.is_dir():
        raise LatentdaskError(f"--selections {selections} is not a folder")
    with connect(cluster_choice(cluster, scheduler, cluster_name)) as client:
        # once: a server's later workers are not watched
        check_paths_on_workers(client, [store] if is_remote(exports) else [store, exports])
        # the address is said once the server listens, after the first view's columns are read
        console.print(f"opening {store}: its first view's columns into the workers' memory (Ctrl-C stops)")
        if address not in ("127.0.0.1", "localhost", "::1"):
            console.print(
                f"warning: bound to {address}: anyone who can reach it sees every image "
                "and z-point; put it behind an authenticating proxy",
            )
        run_serve(
            store,
            stats=stats,
            points=list(points or []),
            dataset=dataset,
            model=model,
            client=client,
            address=address,
            port=port,
            selections=selections,
        )
