"""Open the Dask cluster a command runs on, from one place for every command.

Without a spec or address, the embedded :class:`~distributed.LocalCluster` starts
worker processes on this machine, bound to 127.0.0.1. A spec file names another kind
(see :mod:`latentdask.cluster.spec` and ``cluster/README.md``): ``cuda`` (dask-cuda),
``gateway`` (dask-gateway), ``slurm`` (dask-jobqueue), ``kubernetes`` (the dask-kubernetes
operator) or ``address`` (a running scheduler, with mutual TLS). ``--scheduler ADDRESS``
joins a running scheduler; ``--cluster-name NAME`` joins a gateway or Kubernetes cluster
started earlier by ``latentdask cluster up``.

Dask's deployment projects do all the work; what is here only turns a spec into their
arguments (pure functions, tested where the cluster itself cannot run) and opens a client.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dask
from distributed import Client, LocalCluster

from latentdask.cluster.spec import (
    Adapt,
    AddressSpec,
    AnySpec,
    ClusterChoice,
    ConfigError,
    CudaSpec,
    GatewaySpec,
    KubernetesSpec,
    LocalSpec,
    Scaled,
    SlurmSpec,
    walltime_seconds,
)

#: a reading command whose input is at most this size runs the embedded cluster in its own process
#: (threads; starting worker processes would cost more than the work: README, "bench overhead")
IN_PROCESS_BYTES = 64 * 2**20


#: Dask settings of the embedded cluster's processes: the event loop's housekeeping at a pace
#: that leaves the cores to the tasks. Dask's defaults wake each worker's event loop about 150
#: times a second (the statistical profiler every 10 ms, the tick every 20 ms), which took ~7 %
#: of an encode on 2 cores (README, "Where the time goes"); the dashboard's profile and system
#: pages still fill, coarser. The memory monitor keeps its pace: it is what stops a worker
#: before the machine runs out of memory.
LOCAL_CLUSTER_CONFIG = {
    "distributed.worker.profile.interval": "100ms",
    "distributed.worker.profile.cycle": "10s",
    "distributed.admin.tick.interval": "200ms",
    "distributed.admin.system-monitor.interval": "2s",
}


def local_cluster(**kwargs: Any) -> LocalCluster:
    """A :class:`~distributed.LocalCluster` of worker processes run with :data:`LOCAL_CLUSTER_CONFIG`:
    its scheduler, and every worker through its nanny (one that adaptive scaling adds too)."""
    with dask.config.set(LOCAL_CLUSTER_CONFIG):
        # the whole configuration as it is now: a nanny sends it to the worker process it starts
        return LocalCluster(processes=True, config=copy.deepcopy(dask.config.config), **kwargs)


def default_local_workers() -> int:
    """One worker process per core: measured fastest for encoding on CPU (README, bench encode)."""
    return max(1, os.cpu_count() or 1)


def local_torch_threads(spec: LocalSpec) -> int:
    """Torch threads per worker of a local cluster: its share of this machine's cores."""
    workers = spec.workers or default_local_workers()
    return max(1, (os.cpu_count() or 1) // workers)


# ---------------------------------------------------------------------------- spec → arguments


def cuda_cluster_kwargs(spec: CudaSpec) -> dict[str, Any]:
    """Arguments of ``dask_cuda.LocalCUDACluster``: one worker per GPU, each declaring ``GPU: 1``."""
    kwargs: dict[str, Any] = {
        "host": spec.host,
        "dashboard_address": spec.dashboard_address,
        "threads_per_worker": 1,
        "resources": {"GPU": 1},  # encode tasks ask for one: never two on a GPU, never on a CPU worker
        "silence_logs": logging.CRITICAL,  # task failures reach the command through its futures
    }
    if spec.devices is not None:
        kwargs["CUDA_VISIBLE_DEVICES"] = ",".join(str(d) for d in spec.devices)
    if spec.workers is not None:
        kwargs["n_workers"] = spec.workers
    if spec.device_memory_limit is not None:
        kwargs["device_memory_limit"] = spec.device_memory_limit
    if spec.rmm_pool_size is not None:
        kwargs["rmm_pool_size"] = spec.rmm_pool_size
    return kwargs


def worker_lifetime(walltime: str) -> list[str]:
    """Job-script lines that retire a job's workers before SLURM ends the job (dask-jobqueue's
    pattern with ``adapt``, which then starts a new job): their tasks move to other workers
    instead of being lost at the walltime. A twelfth of the walltime is left (5 minutes of an
    hour), at least 2 minutes, and the workers of jobs started together retire at staggered
    times. Set through dask's configuration, which plain and dask-cuda workers both read (dask-cuda's
    worker has no ``--lifetime`` option)."""
    total = walltime_seconds(walltime)
    margin = min(max(120, total // 12), total // 2)
    return [
        f"export DASK_DISTRIBUTED__WORKER__LIFETIME__DURATION={total - margin}s",
        f"export DASK_DISTRIBUTED__WORKER__LIFETIME__STAGGER={margin // 2}s",
    ]


def slurm_cluster_kwargs(spec: SlurmSpec) -> dict[str, Any]:
    """Arguments of ``dask_jobqueue.SLURMCluster``; GPU jobs run ``dask cuda worker``, one worker per GPU."""
    processes = spec.processes or max(spec.gpus, 1)
    dashboard = (
        {"dashboard_address": spec.dashboard_address}
        if spec.dashboard_address is not None
        else {"dashboard": False, "dashboard_address": "127.0.0.1:0"}
    )
    kwargs: dict[str, Any] = {
        "queue": spec.queue,
        "account": spec.account,
        "walltime": spec.walltime,
        "cores": spec.cores,
        "memory": spec.memory,
        "processes": processes,
        "interface": spec.interface,
        # dask-jobqueue joins the worker's command line unquoted: each word quoted, so that a
        # spec's words stay words
        "python": shlex.quote(spec.python) if spec.python else None,
        "job_script_prologue": list(spec.job_script_prologue),
        "local_directory": shlex.quote(spec.local_directory) if spec.local_directory else None,
        "job_extra_directives": list(spec.job_extra_directives),
        "worker_extra_args": [shlex.quote(word) for word in spec.worker_extra_args],
        "log_directory": str(Path(spec.log_directory).expanduser()) if spec.log_directory else None,
        # dask-jobqueue's default is every address, port 8787; with no dashboard the scheduler still
        # serves /health and /metrics over HTTP, so that stays on the loopback
        "scheduler_options": (dask.config.get("jobqueue.slurm.scheduler-options", {}) or {}) | dashboard,
    }
    own_lifetime = any(word.startswith("--lifetime") for word in spec.worker_extra_args) or any(
        "LIFETIME" in line for line in spec.job_script_prologue
    )
    if isinstance(spec.scaling, Adapt) and not own_lifetime:
        kwargs["job_script_prologue"] += worker_lifetime(spec.walltime)
    if spec.gpus:
        kwargs["job_extra_directives"].append(f"--gres=gpu:{spec.gpus}")
        # ``python -m dask_cuda.cli`` is dask-cuda's worker: one process per visible GPU, each pinned to it
        kwargs["worker_command"] = "dask_cuda.cli"
        kwargs["processes"] = 1  # dask-cuda spawns the per-GPU processes itself
        kwargs["worker_extra_args"] += ["--resources", "GPU=1"]
    if spec.tls:
        from distributed.security import Security

        kwargs["protocol"] = "tls://"
        kwargs["security"] = Security.temporary()  # handed to the jobs through the job script, nobody else
        shared = Path(spec.shared_temp_directory).expanduser()
        shared.mkdir(parents=True, exist_ok=True, mode=0o700)
        kwargs["shared_temp_directory"] = str(shared)
    return {k: v for k, v in kwargs.items() if v is not None}


def kubernetes_cluster_spec(spec: KubernetesSpec) -> dict[str, Any]:
    """The operator's DaskCluster resource: worker resources, GPUs and ``GPU`` Dask resources."""
    from dask_kubernetes.operator import make_cluster_spec

    limits = {"cpu": spec.cpu, "memory": spec.memory}
    if spec.gpus:
        limits["nvidia.com/gpu"] = str(spec.gpus)
    manifest: dict[str, Any] = make_cluster_spec(
        name=spec.name,
        image=spec.image,
        n_workers=spec.workers or 0,
        env=dict(spec.env) or None,
        resources={"limits": limits, "requests": {"cpu": spec.cpu, "memory": spec.memory}},
        worker_command="dask-cuda-worker" if spec.gpus else "dask-worker",
    )
    if spec.gpus:
        container = manifest["spec"]["worker"]["spec"]["containers"][0]
        container["args"] += ["--resources", "GPU=1"]
    return manifest


def kube_cluster(
    spec: KubernetesSpec, name: str | None = None, *, shutdown_on_close: bool | None = None
) -> Any:
    """The operator's ``KubeCluster``: the one called ``name``, or a new one made from the spec.

    ``shutdown_on_close`` left as None keeps dask-kubernetes' rule: closing deletes a cluster
    started here and leaves a joined one running. Every Kubernetes cluster of this module comes
    from here, so the tests (which have no Kubernetes) can stand a real local cluster in for it.
    """
    from dask_kubernetes.operator import KubeCluster

    if name is not None:
        return KubeCluster.from_name(
            name, namespace=spec.namespace, shutdown_on_close=bool(shutdown_on_close)
        )
    return KubeCluster(
        custom_cluster_spec=kubernetes_cluster_spec(spec),
        namespace=spec.namespace,
        shutdown_on_close=shutdown_on_close,
    )


def gateway_of(spec: GatewaySpec) -> Any:
    """A ``dask_gateway.Gateway`` for the spec; the password comes from ``auth.password_env``."""
    try:
        from dask_gateway import Gateway
        from dask_gateway.auth import BasicAuth, JupyterHubAuth, KerberosAuth
    except ImportError:
        raise ConfigError("gateway specs need dask-gateway: pip install 'latentdask[gateway]'") from None
    auth: Any
    if spec.auth.kind == "basic":
        auth = BasicAuth(username=spec.auth.username, password=os.environ.get(spec.auth.password_env))
    elif spec.auth.kind == "kerberos":
        auth = KerberosAuth()
    else:
        auth = JupyterHubAuth(api_token=os.environ.get(spec.auth.password_env))
    return Gateway(address=spec.address, proxy_address=spec.proxy_address, auth=auth)


def apply_scaling(cluster: Any, spec: Scaled) -> None:
    scaling = spec.scaling
    if isinstance(scaling, Adapt):
        cluster.adapt(minimum=scaling.minimum, maximum=scaling.maximum)
    elif scaling is not None:
        cluster.scale(scaling)


# ---------------------------------------------------------------------------- named clusters


def gateway_call(spec: GatewaySpec, what: str, work: Any) -> Any:
    gateway = gateway_of(spec)
    try:
        return work(gateway)
    except Exception as exc:  # unknown name, refused login, unreachable server: one clear line
        reason = gateway_reason(exc, spec)
        with contextlib.suppress(Exception):
            gateway.sync(gateway._cleanup)  # the HTTP session; the client's own finalizer stops its loop
    raise ConfigError(f"dask-gateway at {spec.address}: {what}: {reason}")


def gateway_reason(exc: Exception, spec: GatewaySpec) -> str:
    if "401" in str(exc) or "Unauthorized" in str(exc):
        return (
            f"the gateway refused the login of user {spec.auth.username!r} (wrong password in "
            f"${spec.auth.password_env}?)"
        )
    return str(exc)


def close_gateway_cluster(cluster: Any, *, shutdown: bool) -> None:
    """Stop our use of a gateway cluster (and the cluster itself with ``shutdown``).

    ``GatewayCluster.close()`` stops its gateway client's event loop, after which the
    client's own finalizer raises (dask-gateway 2026.3); stopping through the running loop
    leaves the finalizer a clean close.
    """
    cluster.gateway.sync(cluster._stop_internal, shutdown=shutdown)


def _gateway_cluster(spec: GatewaySpec, name: str | None) -> tuple[Any, bool]:
    """The named cluster, or a new one (then ours to scale and shut down)."""
    if name is not None:
        return gateway_call(spec, f"joining {name}", lambda gateway: gateway.connect(name)), False
    cluster = gateway_call(
        spec, "starting a cluster", lambda gateway: gateway.new_cluster(**spec.cluster_options)
    )
    return cluster, True


def in_process(spec: LocalSpec, input_bytes: int | None) -> bool:
    """Whether the embedded cluster runs on threads of this process (see :class:`LocalSpec`)."""
    if spec.processes is not None:
        return not spec.processes
    return spec.adapt is None and input_bytes is not None and input_bytes <= IN_PROCESS_BYTES


@contextmanager
def connect(
    choice: ClusterChoice | AnySpec | None = None, *, input_bytes: int | None = None
) -> Iterator[Client]:
    """Yield a Client on the chosen cluster; a cluster started here is closed on exit.

    The client is not made dask's global default: callers pass it on (``scheduler=``),
    so that several runs in one process (a resumed encode beside the original) never
    see each other's clients. ``input_bytes``: what a command that only reads will read;
    a small input runs the embedded cluster in this process (:func:`in_process`).

    Examples
    --------
    >>> with connect(LocalSpec(workers=2)) as client:  # doctest: +SKIP
    ...     client.submit(sum, [1, 2]).result()
    3
    """
    name = choice.name if isinstance(choice, ClusterChoice) else None
    spec = choice.resolve() if isinstance(choice, ClusterChoice) else (choice or LocalSpec())
    if isinstance(spec, AddressSpec):
        try:
            client = Client(spec.address, timeout="30s", set_as_default=False, security=spec.security())
        except OSError as exc:
            raise ConfigError(f"cannot reach the scheduler at {spec.address} ({exc})") from None
        with client:
            yield client
        return
    if isinstance(spec, GatewaySpec):
        cluster, owned = _gateway_cluster(spec, name)
        try:
            if owned:
                apply_scaling(cluster, spec)
            with cluster.get_client(set_as_default=False) as client:
                yield client
        finally:
            close_gateway_cluster(cluster, shutdown=owned)  # a named cluster lives on
        return
    if isinstance(spec, KubernetesSpec):
        kube = kube_cluster(spec, name)
        try:
            if name is None:
                apply_scaling(kube, spec)
            with Client(kube, set_as_default=False) as client:
                yield client
        finally:  # a failed command must not leave a cluster running: this deletes one started here
            kube.close()  # and leaves a named one running (dask-kubernetes' rule for joined clusters)
        return
    started: Any
    if isinstance(spec, CudaSpec):
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError as exc:
            raise ConfigError(
                f"cuda specs need dask-cuda on a CUDA machine: pip install 'latentdask[cuda]' ({exc})"
            ) from None
        started = LocalCUDACluster(**cuda_cluster_kwargs(spec))
        if spec.adapt is not None:
            apply_scaling(started, spec)
    elif isinstance(spec, SlurmSpec):
        try:
            from dask_jobqueue import SLURMCluster
        except ImportError:
            raise ConfigError("slurm specs need dask-jobqueue: pip install 'latentdask[slurm]'") from None
        started = SLURMCluster(**slurm_cluster_kwargs(spec))
        apply_scaling(started, spec)
    elif in_process(spec, input_bytes):
        # inproc:// transport and no dashboard: nothing leaves this process; the scheduler's HTTP
        # server (health, metrics) takes a free port of the loopback, not 8787 on every address
        started = LocalCluster(
            n_workers=1,
            threads_per_worker=spec.threads_per_worker * (spec.workers or default_local_workers()),
            processes=False,
            memory_limit=spec.memory_limit,
            scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
            silence_logs=logging.CRITICAL,
        )
    else:
        workers = spec.adapt.minimum if spec.adapt is not None else spec.workers or default_local_workers()
        # task failures reach the command through its futures and are told once, as one line
        started = local_cluster(
            n_workers=workers,
            threads_per_worker=spec.threads_per_worker,
            memory_limit=spec.memory_limit,
            host=spec.host,
            dashboard_address=spec.dashboard_address,
            silence_logs=logging.CRITICAL,
        )
        if spec.adapt is not None:
            apply_scaling(started, spec)
    with started, Client(started, set_as_default=False) as client:
        yield client
