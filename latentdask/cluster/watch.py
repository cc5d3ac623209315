"""A command that waits on a cluster stops with one line when the cluster has been left without
workers (batch jobs past their walltime and not replaced, jobs that fail to start) instead of
waiting forever, or when a worker that joined could not see its paths; :func:`compute` is
``dask.compute`` with that watch.

Nothing here imports distributed: the statistics run on plain dask schedulers too.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Any

import dask

from latentdask.cluster.spec import ConfigError


def worker_wait() -> float:
    """Seconds a command waits for the first worker of a cluster that has none: ``LATENTDASK_WORKER_WAIT``,
    else 600 (a batch system's jobs may queue; then the command stops with one line)."""
    text = os.environ.get("LATENTDASK_WORKER_WAIT", "600")
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ConfigError(f"LATENTDASK_WORKER_WAIT must be a number of seconds above 0, got {text!r}")
    return seconds


#: what workers that joined during a command and could not see its paths said
#: (``cluster.workers.paths_on_workers``), by (client id, check): the command's watch stops it with that line
REFUSED: dict[tuple[str, str], str] = {}

#: the longest wait for a finished result's transfer before the cluster is looked at again
LONGEST_TRANSFER_WAIT = 60.0


class WorkerWatch:
    """Stops a command that waits on a cluster left without workers (batch jobs past their
    walltime and not replaced, a cluster whose jobs fail to start) instead of waiting forever,
    and one whose joining worker could not see its paths."""

    #: seconds between two looks at the scheduler's workers
    INTERVAL = 1.0

    def __init__(self, client: Any) -> None:
        self.client = client
        self.wait = worker_wait()
        self._looked = 0.0
        self._alone_since: float | None = None

    def check(self, waiting: str) -> None:
        """Raise ConfigError, saying what is ``waiting``, once the scheduler has had no worker for
        :func:`worker_wait` seconds, or at once when a worker that joined could not see the
        command's paths."""
        refused = [line for (client, _), line in list(REFUSED.items()) if client == self.client.id]
        if refused:
            raise ConfigError(refused[0])
        now = time.monotonic()
        if now - self._looked < self.INTERVAL:
            return
        self._looked = now
        if self.client.scheduler_info(n_workers=0)["n_workers"]:
            self._alone_since = None
            return
        if self._alone_since is None:
            self._alone_since = now
        elif now - self._alone_since > self.wait:
            scheduler = self.client.scheduler_info()["address"]
            raise ConfigError(
                f"the cluster has had no worker for {self.wait:.0f} s (its scheduler {scheduler}), with "
                f"{waiting}; its jobs may have reached their walltime or failed to start "
                "(LATENTDASK_WORKER_WAIT sets the seconds)"
            )

    def result(self, future: Any, waiting: str) -> Any:
        """``future.result()``, looking at the cluster while it waits: a result whose worker left
        before it was gathered is computed again, which needs a worker."""
        timeout = self.INTERVAL
        while True:
            try:
                return future.result(timeout=timeout)
            except TimeoutError:
                if future.status in ("error", "cancelled"):
                    raise  # the task's own error, which may be a TimeoutError too
                self.check(waiting)
                # a timeout starts the transfer of a finished result over: give a long one the time it needs
                finished = future.status == "finished"
                timeout = min(timeout * 2, LONGEST_TRANSFER_WAIT) if finished else self.INTERVAL

    def results(self, futures: list[Any], waiting: str) -> list[Any]:
        """The futures' results in their order, each gathered as soon as it is ready and released
        on the workers: a worker that then retires (a job's lifetime) with no other to hand its
        memory to loses none of them, and the work goes on instead of starting over."""
        from distributed import as_completed

        gathered: dict[int, Any] = {}
        completed = as_completed(list(dict.fromkeys(futures)), loop=self.client.loop)  # each future once
        while not completed.is_empty():
            self.check(waiting)  # at most once an INTERVAL it asks the scheduler
            if not completed.has_ready():
                with completed.thread_condition:  # woken by the next result, as as_completed's own loop is
                    completed.thread_condition.wait(timeout=0.1)
                continue
            future = next(completed)
            gathered[id(future)] = self.result(future, waiting)
            future.release()
        return [gathered[id(future)] for future in futures]


def compute(
    *graphs: Any, scheduler: Any = None, waiting: str = "the command's tasks waiting"
) -> tuple[Any, ...]:
    """``dask.compute(*graphs, scheduler=scheduler)`` of dask collections (anything else comes
    back as it is); on a distributed client, watched by
    :class:`WorkerWatch` (which stops the command when the cluster has had no worker for
    :func:`worker_wait` seconds, or a worker that joined could not see its paths), each result
    gathered as soon as it is ready and released on the workers."""
    distributed = sys.modules.get("distributed")  # a client implies distributed is imported
    if distributed is None or not isinstance(scheduler, distributed.Client):
        return dask.compute(*graphs, scheduler=scheduler)
    watch = WorkerWatch(scheduler)
    # each collection once, the rest as it is: Client.compute pairs its futures with the wrong
    # collections when one is given twice
    tokens = [dask.base.tokenize(g) if dask.is_dask_collection(g) else None for g in graphs]
    unique = {token: graph for token, graph in zip(tokens, graphs, strict=True) if token is not None}
    futures = scheduler.compute(list(unique.values()))
    try:
        results = dict(zip(unique, watch.results(futures, waiting), strict=True))
    except BaseException:
        with contextlib.suppress(Exception):  # the command's own error is the one to tell
            scheduler.cancel(futures)
        raise
    pairs = zip(tokens, graphs, strict=True)
    return tuple(graph if token is None else results[token] for token, graph in pairs)
