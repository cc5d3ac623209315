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

import typer

from latentdask.cli import bench, cluster

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


app = typer.Typer(
    name="latentdask",
    help="The latent space of image autoencoders at full-corpus scale, on Dask clusters.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
for name, target in COMMANDS.items():
    module, function = target.split(":")
    app.command(name=name)(getattr(importlib.import_module(f"latentdask.cli.{module}"), function))
app.add_typer(bench.app, name="bench")
app.add_typer(cluster.app, name="cluster")


if __name__ == "__main__":
    app()
