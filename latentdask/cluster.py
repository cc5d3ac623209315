"""Open the Dask cluster a command runs on, from one place for every command.

Without a spec or address, the embedded :class:`~distributed.LocalCluster` starts
worker processes on this machine, bound to 127.0.0.1. A spec file names another kind
(see :mod:`latentdask.config`); ``--scheduler ADDRESS`` joins a running scheduler.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from distributed import Client, LocalCluster

from latentdask.config import AddressSpec, ConfigError, LocalSpec, load_cluster_spec


@dataclass(frozen=True)
class ClusterChoice:
    """What the user asked for: a spec file, a scheduler address, or neither (local)."""

    spec: Path | None = None
    scheduler: str | None = None

    def resolve(self) -> LocalSpec | AddressSpec:
        if self.spec is not None and self.scheduler is not None:
            raise ConfigError("give either --cluster or --scheduler, not both")
        if self.scheduler is not None:
            return AddressSpec(kind="address", address=self.scheduler)
        if self.spec is not None:
            return load_cluster_spec(self.spec)
        return LocalSpec()


def default_local_workers() -> int:
    """One worker process per core: measured fastest for encoding on CPU (README, bench encode)."""
    return max(1, os.cpu_count() or 1)


def local_torch_threads(spec: LocalSpec) -> int:
    """Torch threads per worker of a local cluster: its share of this machine's cores."""
    workers = spec.workers or default_local_workers()
    return max(1, (os.cpu_count() or 1) // workers)


@contextmanager
def connect(choice: ClusterChoice | LocalSpec | AddressSpec | None = None) -> Iterator[Client]:
    """Yield a Client on the chosen cluster; a local cluster is closed on exit.

    The client is not made dask's global default: callers pass it on (``scheduler=``),
    so that several runs in one process (a resumed encode beside the original) never
    see each other's clients.

    Examples
    --------
    >>> with connect(LocalSpec(workers=2)) as client:  # doctest: +SKIP
    ...     client.submit(sum, [1, 2]).result()
    3
    """
    spec = choice.resolve() if isinstance(choice, ClusterChoice) else (choice or LocalSpec())
    if isinstance(spec, AddressSpec):
        try:
            client = Client(spec.address, timeout="30s", set_as_default=False, security=spec.security())
        except OSError as exc:
            raise ConfigError(f"cannot reach the scheduler at {spec.address} ({exc})") from None
        with client:
            yield client
        return
    cluster = LocalCluster(
        n_workers=spec.workers or default_local_workers(),
        threads_per_worker=spec.threads_per_worker,
        processes=True,
        memory_limit=spec.memory_limit,
        host=spec.host,
        dashboard_address=spec.dashboard_address,
        silence_logs=logging.ERROR,
    )
    with cluster, Client(cluster, set_as_default=False) as client:
        yield client


def _missing(paths: list[str]) -> list[str]:
    return [path for path in paths if not os.path.exists(path)]


def check_paths_on_workers(client: Client, paths: list[str | Path]) -> None:
    """Fail early, naming worker and path, if any worker cannot see a path the run needs.

    A tiny task on every worker: on a cluster whose workers run on other machines, a
    dataset or run folder on the client's local disk is the commonest first mistake.
    """
    wanted = [str(Path(p).resolve()) for p in paths]
    unseen = {worker: missing for worker, missing in client.run(_missing, wanted).items() if missing}
    if unseen:
        lines = "; ".join(
            f"{worker} cannot see {', '.join(missing)}" for worker, missing in sorted(unseen.items())
        )
        raise ConfigError(
            f"paths must be visible to every worker (a shared file system or an fsspec URL): {lines}"
        )
