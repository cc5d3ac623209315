"""Progress bars for long work, and the closing summary line (STYLE.md §12).

Bars go to stderr through rich, so piping a command's stdout stays clean; with
``enabled=False`` (tests, workers) they cost nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

#: plain text: paths and names from data may hold brackets, which rich would read as markup
console = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)


class Bar:
    """A handle on one progress task: ``advance`` moves it, ``note`` sets the text beside it."""

    def __init__(self, progress: Progress | None, task: Any) -> None:
        self._progress = progress
        self._task = task

    def advance(self, amount: float = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, amount)

    def note(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, note=text)


@contextmanager
def progress_bar(
    description: str, *, total: float | None, unit: str = "", enabled: bool = True
) -> Iterator[Bar]:
    """Show a bar with count, rate, elapsed and remaining time while the block runs."""
    if not enabled:
        yield Bar(None, None)
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[note]}"),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total, note="")
        yield Bar(progress, task)
