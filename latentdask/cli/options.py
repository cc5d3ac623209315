"""What the commands share: errors as one line, option types and parsers, the cluster choice,
opening z-points, running a benchmark, and defaults read from the options models."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from latentdask.errors import LatentdaskError, describe_validation_error
from latentdask.progress import console

if TYPE_CHECKING:
    from pydantic import BaseModel

    from latentdask.cluster.spec import ClusterChoice
    from latentdask.location import Where
    from latentdask.workflow.steps import Connection

F = TypeVar("F", bound=Callable[..., Any])
M = TypeVar("M", bound="BaseModel")


def user_errors(func: F) -> F:
    """Print what the user can act on as one plain line on stderr and exit 2.

    That is a LatentdaskError, an option that fails its options model's validation, and
    an output the system refuses to write (disk full, read-only, no permission). The text
    is printed as it is: never as markup, never wrapped.
    """
    from pydantic import ValidationError

    from latentdask.output import WRITE_ERRNOS

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except LatentdaskError as exc:
            message = str(exc)
        except ValidationError as exc:
            message = f"invalid options: {describe_validation_error(exc)}"
        except OSError as exc:
            if exc.errno is None:  # an object store's answer (no access, no such bucket): s3fs and the
                message = f"object storage: {exc}"  # other fsspec drivers raise OSErrors without errno
            elif exc.errno in WRITE_ERRNOS:
                message = f"cannot write {exc.filename or ''}: {exc.strerror}".replace("write :", "write:")
            else:
                raise
        typer.echo(f"error: {' '.join(message.splitlines())}", err=True)
        raise typer.Exit(2)

    return wrapper  # type: ignore[return-value]


# ---------------------------------------------------------------------------- defaults from the models


class Defaults:
    """An options model's defaults for typer options: ``ENCODE.shard_size`` with
    ``ENCODE = Defaults(EncodeOptions)``. Each default is written once, in its model; the models
    live in modules of pydantic only, so building every command imports no torch or xarray."""

    def __init__(self, model: type[BaseModel]) -> None:
        self._model = model

    def __getattr__(self, field: str) -> Any:
        if field.startswith("_"):
            raise AttributeError(field)
        return self._model.model_fields[field].get_default(call_default_factory=True)


def options_from(model: type[M], parameters: dict[str, Any], **given: Any) -> M:
    """The options model built from a command's parameters: those named as its fields.

    A parameter left ``None`` that the model does not take as ``None`` (a repeatable option
    given no value) takes the model's default; ``given`` names values the command computed.
    """
    values = {
        name: parameters[name]
        for name, field in model.model_fields.items()
        if name in parameters and (parameters[name] is not None or field.get_default() is None)
    }
    return model(**(values | given))


def comma_separated(values: tuple[int, ...] | None) -> str:
    """``(0, 20, 178, 198)`` as the option takes it, ``"0,20,178,198"``; None as ``"none"``."""
    return "none" if values is None else ",".join(str(v) for v in values)


# ---------------------------------------------------------------------------- parsers


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


# ---------------------------------------------------------------------------- shared options

SchedulerOption = Annotated[
    str | None,
    typer.Option("--scheduler", help="Address of a running Dask scheduler.", rich_help_panel="Cluster"),
]
ClusterOption = Annotated[
    Path | None,
    typer.Option("--cluster", help="Cluster spec YAML (see cluster/README.md).", rich_help_panel="Cluster"),
]
ClusterNameOption = Annotated[
    str | None,
    typer.Option(
        "--cluster-name",
        help="A gateway or Kubernetes cluster from 'latentdask cluster up'.",
        rich_help_panel="Cluster",
    ),
]
SplitOption = Annotated[str, typer.Option(help="all, train, valid or test.")]
WhereOption = Annotated[
    list[str] | None, typer.Option("--where", help="ATTRIBUTE=1 or ATTRIBUTE=-1 (repeat).")
]
SkipDamagedOption = Annotated[
    bool,
    typer.Option(
        "--skip-damaged", help="Leave out shards whose checksums fail (found by reading them first)."
    ),
]
RowsOption = Annotated[
    str | None,
    typer.Option("--rows", help="Keep to the rows of a selection.zarr (from latentdask select)."),
]
UnfinishedOption = Annotated[
    bool,
    typer.Option(
        "--include-unfinished", help="Also count the valid rows of shards an encode has not finished."
    ),
]


def cluster_choice(cluster: Path | None, scheduler: str | None, name: str | None = None) -> ClusterChoice:
    """The one place every computing command turns its cluster options into a choice."""
    from latentdask.cluster.spec import ClusterChoice

    return ClusterChoice(spec=cluster, scheduler=scheduler, name=name)


def must_exist(*paths: Where) -> None:
    """Stop with one line naming the first of ``paths`` that does not exist, before any cluster starts."""
    from latentdask.location import location

    for path in paths:
        if not location(path).exists():
            raise LatentdaskError(f"{path} does not exist")


@contextmanager
def reading_store(
    store: Where,
    choice: ClusterChoice,
    *,
    skip_damaged: bool,
    include_unfinished: bool,
    rows: Where | None = None,
) -> Iterator[tuple[Connection, Any]]:
    """The cluster and the z-points of a command that reads every shard of ``store`` (keeping to
    the row selection ``rows`` when given).

    A shard found damaged on the way stops the command with the list of all damaged shards; a store
    that does not exist stops it before any cluster starts.
    """
    from latentdask.cluster.workers import paths_on_workers
    from latentdask.store.integrity import listing_damaged
    from latentdask.store.points import zpoint_bytes
    from latentdask.workflow.steps import Connection

    must_exist(store)
    with (
        Connection(choice, input_bytes=zpoint_bytes(store)) as connection,
        listing_damaged(store, client=connection.client),
        paths_on_workers(connection.client, [store]),
    ):
        points = open_points(
            store, connection.client, skip_damaged=skip_damaged, include_unfinished=include_unfinished
        )
        if rows is not None:
            from latentdask.store.selection import open_selection

            points.selection = open_selection(rows, store, points.z.shape[0], points.z.chunks[0])
        yield connection, points


def open_points(store: Where, client: Any, *, skip_damaged: bool, include_unfinished: bool) -> Any:
    """The z-points a reading command works on, saying what is left out of an unfinished or damaged store."""
    from latentdask.store.integrity import verify_store
    from latentdask.store.points import open_zpoints

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


def run_bench(json_out: Path | None, measure: Callable[[], Any]) -> None:
    """Check where the JSON goes first (a benchmark takes minutes), measure, show, save."""
    from latentdask.bench.report import BENCH_KIND
    from latentdask.output import check_output

    if json_out is not None:
        check_output(json_out, BENCH_KIND)
    report = measure()
    report.show()
    if json_out is not None:
        report.save(json_out)
        console.print(f"saved {json_out}")
