"""What runs on a cluster's workers for every command: the paths a run needs checked on each
worker (waiting for the first one of a cluster that has none yet, and on each one that joins
while the command runs), and a workflow's storage options on every worker."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from distributed import Client, WorkerPlugin

from latentdask.cluster.spec import ConfigError
from latentdask.cluster.watch import REFUSED, worker_wait
from latentdask.location import Where, identity, location, use_storage_options


class StorageOptionsPlugin(WorkerPlugin):
    """A workflow's ``storage_options`` on every worker, joiners too (they never leave the cluster:
    the scheduler holds the plugin, as it holds the tasks' arguments)."""

    name = "latentdask-storage-options"

    def __init__(self, options: dict[str, dict[str, Any]]) -> None:
        self.options = options

    def __repr__(self) -> str:  # the options hold credentials: never in a log line
        return f"StorageOptionsPlugin({sorted(self.options)})"

    def setup(self, worker: Any) -> None:
        use_storage_options(self.options)


def _missing(paths: list[str]) -> list[str]:
    """The paths this process cannot see: local paths, or fsspec URLs (``s3://…``, ``gs://…``)."""
    missing = []
    for path in paths:
        try:
            visible = location(path).exists()
        except Exception:  # no driver for the protocol, no credentials, no network: not visible
            visible = False
        if not visible:
            missing.append(path)
    return missing


def check_paths_on_workers(client: Client, paths: Sequence[Where]) -> None:
    """Fail early, naming worker and path, if any worker cannot see a path the run needs.

    A tiny task on every worker: on a cluster whose workers run on other machines, a
    dataset or run folder on the client's local disk is the commonest first mistake. A
    cluster without a worker yet (batch jobs still queued, an adaptive cluster at zero) is
    first given the check as a task, which an adaptive cluster starts a worker for, and
    waited for (:func:`worker_wait`): checking no worker would pass anything, and the GPU
    decision that follows would see no GPU.
    """
    wanted = [identity(p) for p in paths]
    wait = worker_wait()  # a bad setting is told before anything runs
    if not client.scheduler_info(n_workers=0)["n_workers"]:
        probe = client.submit(_missing, wanted, pure=False, key=f"latentdask-first-worker-{uuid.uuid4().hex}")
        try:
            probe.result(timeout=wait)
        except TimeoutError:
            probe.cancel()
            scheduler = client.scheduler_info()["address"]
            raise ConfigError(
                f"no worker joined the cluster in {wait:.0f} s (its scheduler {scheduler} "
                "has none): its jobs may still be queued or failing to start; set LATENTDASK_WORKER_WAIT "
                "(seconds) to wait longer"
            ) from None
    unseen = {worker: missing for worker, missing in client.run(_missing, wanted).items() if missing}
    if unseen:
        raise ConfigError(_unseen(unseen))


def _unseen(missing: dict[str, list[str]]) -> str:
    return "paths must be visible to every worker (a shared file system or an fsspec URL): " + "; ".join(
        f"{worker} cannot see {', '.join(paths)}" for worker, paths in sorted(missing.items())
    )


#: the start of a path check's plugin name, followed by its command's client id
PATHS_PLUGIN = "latentdask-paths--"


class PathsPlugin(WorkerPlugin):
    """The paths a command needs, checked on each worker that joins while it runs: a worker that
    cannot see one says so (an event on the plugin's own topic, which the command reports) and
    leaves before it runs a task (the scheduler gives those to other workers). Its name holds
    the command's client id: a plugin whose command was killed before it could unregister it is
    removed by the next command on that scheduler (:func:`_drop_orphans`)."""

    def __init__(self, paths: list[str], owner: str) -> None:
        self.paths = paths
        self.name = f"{PATHS_PLUGIN}{owner}--{uuid.uuid4().hex}"

    def setup(self, worker: Any) -> None:
        # runs as the worker registers, before it reads its first message from the scheduler
        missing = _missing(self.paths)
        if missing:
            worker.log_event(self.name, {"worker": worker.address, "missing": missing})
            worker.loop.add_callback(worker.close, reason=f"latentdask: cannot see {', '.join(missing)}")


def _drop_orphans(client: Client) -> None:
    """Unregister the path checks of commands whose clients have left the scheduler (killed
    before their own cleanup): on a scheduler that outlives its commands (``--scheduler``, a
    named cluster), an orphan would go on turning away workers that cannot see an old path."""

    def orphans(dask_scheduler: Any, prefix: str = PATHS_PLUGIN) -> list[str]:  # runs on the scheduler
        owners = {name: name[len(prefix) :].rsplit("--", 1)[0] for name in dask_scheduler.worker_plugins}
        return [
            name
            for name, owner in owners.items()
            if name.startswith(prefix) and owner not in dask_scheduler.clients
        ]

    try:
        for name in client.run_on_scheduler(orphans):
            client.unregister_worker_plugin(name)
    except Exception:  # a scheduler that runs no client function, a closing worker: not this command's
        pass


@contextlib.contextmanager
def paths_on_workers(client: Client, paths: Sequence[Where]) -> Iterator[None]:
    """:func:`check_paths_on_workers` now, and on each worker that joins while the block runs: one
    that cannot see a path leaves, and the command's :class:`~latentdask.cluster.watch.WorkerWatch`
    stops it with one line naming worker and path (where the command waits through it)."""
    check_paths_on_workers(client, paths)
    _drop_orphans(client)
    plugin = PathsPlugin([identity(p) for p in paths], owner=client.id)
    refused: dict[str, list[str]] = {}
    listening = True

    def heard(event: tuple[float, dict[str, Any]]) -> None:
        if listening:  # an event that arrives after the block is not this command's
            refused[event[1]["worker"]] = event[1]["missing"]
            line = _unseen(refused) + " (it joined while the command ran, and left)"
            REFUSED[(client.id, plugin.name)] = line

    try:
        client.subscribe_topic(plugin.name, heard)
        client.register_plugin(plugin)
        yield
    finally:
        listening = False
        REFUSED.pop((client.id, plugin.name), None)
        if client.status == "running":  # a lost scheduler holds no plugin
            try:
                client.unsubscribe_topic(plugin.name)
                client.unregister_worker_plugin(plugin.name)
            except Exception:  # a worker closing as it is told: it takes the plugin with it
                pass
