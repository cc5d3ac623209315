"""``python -m latentdask.cli``: the same command as ``latentdask``."""

from latentdask.cli import app

app()
