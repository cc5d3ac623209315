"""The ``latentdask`` command: the app, and where each of its commands lives.

Every subcommand turns a :class:`~latentdask.errors.LatentdaskError` into one red
line on stderr and exit code 2; other exceptions are bugs and keep their traceback.

Modules: :mod:`~latentdask.cli.options` (what the commands share),
:mod:`~latentdask.cli.pipeline` (images to a latent store, workflows),
:mod:`~latentdask.cli.analysis` (what the store holds), :mod:`~latentdask.cli.artificial`
(artificial z-points), :mod:`~latentdask.cli.cluster`
and :mod:`~latentdask.cli.bench` (the two groups).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, MutableMapping
from typing import Any

import typer
from typer.core import TyperGroup

from latentdask.cli import bench, cluster
from latentdask.cli.options import resolve_defaults

Command = Any  # a click command of typer's own copy of click

#: the top-level commands, in the order ``latentdask --help`` lists them: module:function
COMMANDS = {
    "synth": "pipeline:synth",
    "train": "pipeline:train",
    "info": "pipeline:info",
    "verify": "pipeline:verify",
    "import-model": "pipeline:import_model",
    "encode": "pipeline:encode",
    "stats": "analysis:stats",
    "synth-latents": "analysis:synth_latents",
    "select": "analysis:select",
    "run": "pipeline:run",
    "report": "pipeline:report",
    "gmm": "artificial:gmm",
    "generate": "artificial:generate",
    "score": "artificial:score",
    "compare": "compare:compare",
    "normality": "analysis:normality",
    "decode": "artificial:decode",
    "render": "analysis:render",
    "serve": "analysis:serve",
}


def _build(name: str, *, defaults: bool = True) -> Command:
    """The click command ``name``, its option defaults read from its options models now (unless
    ``defaults`` is false: a command only listed, by its help line, needs none of them)."""
    module, function = COMMANDS[name].split(":")
    callback = getattr(importlib.import_module(f"latentdask.cli.{module}"), function)
    if defaults:
        resolve_defaults(callback)
    single = typer.Typer(add_completion=False)
    single.command(name=name)(callback)
    return typer.main.get_command(single)


class _Commands(MutableMapping[str, Command]):
    """The top-level commands, each built when first looked up.

    A command's defaults come from its options model, whose module imports torch or xarray;
    building every command for every call would make ``latentdask info`` wait seconds for
    ``encode``'s. ``latentdask --help`` lists them all by their help lines, built without
    their defaults (``listing``): the list needs neither torch nor xarray.
    """

    def __init__(self, built: MutableMapping[str, Command]) -> None:
        self._built = dict(built)
        self._listed: dict[str, Command] = {}
        self.listing = False

    def __getitem__(self, name: str) -> Command:
        if name not in self._built:
            if name not in COMMANDS:
                raise KeyError(name)
            if self.listing:
                if name not in self._listed:
                    self._listed[name] = _build(name, defaults=False)
                return self._listed[name]
            self._built[name] = _build(name)
        return self._built[name]

    def __setitem__(self, name: str, command: Command) -> None:
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        del self._built[name]

    def __iter__(self) -> Iterator[str]:
        yield from COMMANDS
        yield from (name for name in self._built if name not in COMMANDS)

    def __len__(self) -> int:
        return len(COMMANDS.keys() | self._built.keys())


class _Group(TyperGroup):
    def __init__(self, *, commands: MutableMapping[str, Command] | None = None, **attrs: Any) -> None:
        super().__init__(commands=_Commands(commands or {}), **attrs)  # type: ignore[arg-type]  # a mapping

    def format_help(self, ctx: Any, formatter: Any) -> None:
        commands = self.commands
        assert isinstance(commands, _Commands)
        commands.listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            commands.listing = False


app = typer.Typer(
    name="latentdask",
    help="The latent space of image autoencoders at full-corpus scale, on Dask clusters.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=_Group,
)
app.add_typer(bench.app, name="bench")
app.add_typer(cluster.app, name="cluster")


if __name__ == "__main__":
    app()
