"""Two latent spaces compared: ``latentdask compare STORE_A STORE_B --out compare.json``."""

from __future__ import annotations

from typing import Annotated

import typer

from latentdask.cli.options import (
    ClusterNameOption,
    ClusterOption,
    SchedulerOption,
    SplitOption,
    WhereOption,
    cluster_choice,
    user_errors,
)
from latentdask.progress import console


@user_errors
def compare(
    store_a: Annotated[
        str, typer.Argument(help="Latent store A (or any (n, N) Zarr array, or a group holding 'z').")
    ],
    store_b: Annotated[str, typer.Argument(help="Latent store B, the same images encoded by another model.")],
    out: Annotated[str, typer.Option("--out", help="compare.json to write.")],
    split: SplitOption = "all",
    where: WhereOption = None,
    cluster: ClusterOption = None,
    scheduler: SchedulerOption = None,
    cluster_name: ClusterNameOption = None,
) -> None:
    """Two latent spaces compared: linear CKA, canonical correlations, the linear map A → B and its R².

    Rows of two latent stores are matched by file name (valid in both); other arrays by row.
    --split and --where choose rows of STORE_A.
    """
    import time

    from latentdask.cluster.workers import paths_on_workers
    from latentdask.output import check_output
    from latentdask.stats.compare import COMPARE_KIND, format_compare, write_compare
    from latentdask.stats.compare import compare as run_compare
    from latentdask.store.integrity import listing_damaged
    from latentdask.workflow import steps

    inputs = [store_a, store_b]
    check_output(out, COMPARE_KIND, inputs=inputs)
    started = time.perf_counter()
    with steps.Connection(cluster_choice(cluster, scheduler, cluster_name)) as connection:
        client = connection.client
        with (
            paths_on_workers(client, inputs),
            listing_damaged(store_a, client=client),
            listing_damaged(store_b, client=client),
        ):
            result = run_compare(store_a, store_b, split=split, where=where or [], scheduler=client)
    write_compare(result, out, inputs=inputs)
    for note in result["notes"]:
        console.print(note)
    typer.echo(format_compare(result))
    matching = result["matching"]
    console.print(
        f"compared {result['rows']:,} z-points (matched by {matching['by']}: {matching['matched']:,} of "
        f"{matching['rows_a']:,} and {matching['rows_b']:,} rows; {matching['selection']}) in "
        f"{time.perf_counter() - started:.1f} s → {out}"
    )
