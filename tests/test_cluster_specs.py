"""Cluster kinds that need GPUs or a batch system, checked through what they generate; spec validation."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from distributed import Client, LocalCluster
from distributed.core import Status

import latentdask.cluster.connect
from latentdask.cluster.connect import (
    connect,
    cuda_cluster_kwargs,
    kubernetes_cluster_spec,
    slurm_cluster_kwargs,
)
from latentdask.cluster.named import cluster_up
from latentdask.cluster.spec import (
    ClusterChoice,
    ConfigError,
    CudaSpec,
    KubernetesSpec,
    LocalSpec,
    SlurmSpec,
    load_cluster_spec,
)
from latentdask.cluster.watch import worker_wait
from tests.helpers import require_extra

SHIPPED = Path(__file__).resolve().parent.parent / "cluster"


def test_cuda_workers_one_per_gpu_each_declaring_a_gpu() -> None:
    kwargs = cuda_cluster_kwargs(CudaSpec(kind="cuda", devices=[0, 2], device_memory_limit="20GB"))
    assert kwargs["CUDA_VISIBLE_DEVICES"] == "0,2"
    assert kwargs["resources"] == {"GPU": 1} and kwargs["threads_per_worker"] == 1
    assert kwargs["host"] == "127.0.0.1" and kwargs["device_memory_limit"] == "20GB"
    assert "n_workers" not in kwargs  # dask-cuda starts one worker per visible GPU


def test_slurm_gpu_job_script_runs_dask_cuda_workers(tmp_path: Path) -> None:
    dask_jobqueue = require_extra("dask_jobqueue")
    spec = SlurmSpec(
        kind="slurm",
        queue="gpu",
        account="faces",
        gpus=4,
        cores=32,
        memory="256GB",
        walltime="04:00:00",
        job_script_prologue=["module load cuda"],
        shared_temp_directory=str(tmp_path),
    )
    cluster = dask_jobqueue.SLURMCluster(**slurm_cluster_kwargs(spec))
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH --gres=gpu:4" in script and "#SBATCH -p gpu" in script and "#SBATCH -A faces" in script
    assert "#SBATCH -t 04:00:00" in script and "module load cuda" in script
    assert "-m dask_cuda.cli tls://" in script  # dask-cuda's worker, over TLS
    assert "--resources GPU=1" in script
    assert "--tls-key" in script  # the jobs get the cluster's temporary certificate, nobody else has it


def test_slurm_cpu_job_script_uses_plain_workers() -> None:
    dask_jobqueue = require_extra("dask_jobqueue")
    cluster = dask_jobqueue.SLURMCluster(
        **slurm_cluster_kwargs(SlurmSpec(kind="slurm", cores=8, processes=4, tls=False))
    )
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert (
        "distributed.cli.dask_worker tcp://" in script and "--nworkers 4" in script and "gres" not in script
    )


def test_kubernetes_gpu_worker_group() -> None:
    require_extra("dask_kubernetes")
    manifest = kubernetes_cluster_spec(
        KubernetesSpec(
            kind="kubernetes", name="faces", gpus=1, workers=3, image="ghcr.io/example/latentdask:1"
        )
    )
    assert manifest["kind"] == "DaskCluster" and manifest["metadata"]["name"] == "faces"
    worker = manifest["spec"]["worker"]
    container = worker["spec"]["containers"][0]
    assert worker["replicas"] == 3 and container["image"] == "ghcr.io/example/latentdask:1"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["args"][0] == "dask-cuda-worker" and container["args"][-2:] == ["--resources", "GPU=1"]


def test_shipped_specs_are_valid() -> None:
    kinds = {load_cluster_spec(path).kind for path in SHIPPED.glob("*.yaml")}
    assert kinds == {"local", "cuda", "gateway", "slurm", "kubernetes", "address"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("kind: local\nworkers: 2\nadapt: {maximum: 4}\n", "either 'workers' or 'adapt'"),
        ("kind: local\nadapt: {minimum: 5, maximum: 4}\n", "above adapt.maximum"),
        ("kind: slurm\ngpus: -1\n", "field 'slurm.gpus'"),
        ("kind: kubernetes\nname: Faces_1\n", "field 'kubernetes.name'"),
        ("kind: gateway\n", "field 'gateway.address'"),
        ("kind: moon\n", "kind"),
    ],
)
def test_bad_specs_name_the_field(tmp_path: Path, content: str, message: str) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_cluster_spec(spec)


def test_named_clusters_only_for_gateway_and_kubernetes(tmp_path: Path) -> None:
    spec = tmp_path / "local.yaml"
    spec.write_text("kind: local\nworkers: 1\n")
    with pytest.raises(ConfigError, match="--cluster-name works with gateway and kubernetes"):
        ClusterChoice(spec=spec, name="abc").resolve()
    with pytest.raises(ConfigError, match="live as long as the command"):
        cluster_up(load_cluster_spec(spec))


class StandIn:
    """A real LocalCluster (scheduler and worker processes) where the operator's KubeCluster would be.

    No Kubernetes runs in the tests, so ``connect``'s lifetime rules are checked on the one
    object it gets from :func:`latentdask.cluster.connect.kube_cluster`: a real cluster, whose
    scheduler can be asked afterwards whether it still runs.
    """

    def __init__(self) -> None:
        self.made: list[LocalCluster] = []

    def __call__(self, spec: KubernetesSpec, name: str | None = None, **_: object) -> LocalCluster:
        cluster = LocalCluster(
            n_workers=0, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
        )
        self.made.append(cluster)
        return cluster


def scheduler_answers(address: str) -> bool:
    try:
        with Client(address, timeout=3, set_as_default=False):
            return True
    except (OSError, TimeoutError):
        return False


def test_kubernetes_cluster_is_closed_when_the_command_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in = StandIn()
    monkeypatch.setattr(latentdask.cluster.connect, "kube_cluster", stand_in)
    spec = KubernetesSpec(kind="kubernetes", workers=1)
    with pytest.raises(RuntimeError, match="the step failed"), connect(spec) as client:
        client.wait_for_workers(1, timeout=60)  # scaled to the spec's one worker, which runs tasks
        assert client.submit(sum, [1, 2]).result() == 3
        address = client.scheduler.address
        raise RuntimeError("the step failed")
    (cluster,) = stand_in.made
    assert cluster.status == Status.closed
    assert not scheduler_answers(address)


def test_small_reading_commands_run_the_embedded_cluster_in_process() -> None:
    from latentdask.cluster.connect import IN_PROCESS_BYTES, connect, in_process
    from latentdask.cluster.spec import LocalSpec

    assert in_process(LocalSpec(), IN_PROCESS_BYTES) and not in_process(LocalSpec(), IN_PROCESS_BYTES + 1)
    assert not in_process(LocalSpec(), None)  # encode, and commands that do not say what they read
    assert not in_process(LocalSpec(processes=True), 1) and in_process(LocalSpec(processes=False), None)
    with connect(LocalSpec(workers=2), input_bytes=1000) as client:
        assert client.scheduler.address.startswith("inproc://")  # no port opened
        assert client.submit(sum, [1, 2]).result() == 3
        (worker,) = client.scheduler_info()["workers"].values()
        assert worker["nthreads"] == 2


def test_an_in_process_cluster_cannot_adapt() -> None:
    from pydantic import ValidationError

    from latentdask.cluster.spec import LocalSpec

    with pytest.raises(ValidationError, match="'adapt' grows and shrinks worker processes"):
        LocalSpec(processes=False, adapt={"minimum": 1, "maximum": 2})  # type: ignore[arg-type]
    assert LocalSpec(processes=True, adapt={"minimum": 1, "maximum": 2}).adapt is not None  # type: ignore[arg-type]


def _housekeeping() -> tuple[str, str, str]:
    import dask

    return tuple(  # type: ignore[return-value]
        dask.config.get(key)
        for key in (
            "distributed.worker.profile.interval",
            "distributed.admin.tick.interval",
            "distributed.worker.memory.monitor-interval",
        )
    )


def test_embedded_cluster_workers_keep_the_cores_for_their_tasks() -> None:
    """The embedded cluster's workers, one that scaling adds too, profile every 100 ms and tick every
    200 ms (dask's 10 and 20 ms cost an encode ~7 % on 2 cores); the memory monitor keeps dask's pace;
    the command's own process is left as it was."""
    import dask

    from latentdask.cluster.spec import LocalSpec

    before = _housekeeping()
    with connect(LocalSpec(workers=1)) as client:
        assert (
            client.run_on_scheduler(
                lambda dask_scheduler: dask_scheduler.periodic_callbacks["tick"].callback_time
            )
            == 200
        )
        client.cluster.scale(2)
        client.wait_for_workers(2, timeout=60)
        settings = client.run(_housekeeping)
    assert len(settings) == 2
    assert set(settings.values()) == {
        ("100ms", "200ms", dask.config.get("distributed.worker.memory.monitor-interval"))
    }
    assert _housekeeping() == before


def _status(url: str) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _http_hosts(cluster: Any) -> set[str]:
    return {sock.getsockname()[0] for sock in cluster.scheduler.http_server._sockets.values()}


def test_slurm_scheduler_http_stays_on_the_loopback_unless_opened(tmp_path: Path) -> None:
    """dask-jobqueue's scheduler served its dashboard on every address, port 8787, plain HTTP, on
    a login node; now on 127.0.0.1 and a free port, without a dashboard when asked, or opened."""
    dask_jobqueue = require_extra("dask_jobqueue")
    for address, dashboard, hosts in (
        ("127.0.0.1:0", True, {"127.0.0.1"}),
        (None, False, {"127.0.0.1"}),
        (":0", True, {"0.0.0.0", "::"}),
    ):
        spec = SlurmSpec(kind="slurm", tls=False, dashboard_address=address)
        cluster = dask_jobqueue.SLURMCluster(**slurm_cluster_kwargs(spec))
        try:
            assert _http_hosts(cluster) <= hosts and _http_hosts(cluster)
            port = next(iter(cluster.scheduler.http_server._sockets.values())).getsockname()[1]
            assert port != 8787
            assert (_status(f"http://127.0.0.1:{port}/status") == 200) is dashboard
            assert _status(f"http://127.0.0.1:{port}/health") == 200
        finally:
            cluster.close()


def test_slurm_spec_passes_directives_worker_arguments_and_log_folder(tmp_path: Path) -> None:
    dask_jobqueue = require_extra("dask_jobqueue")
    spec = SlurmSpec(
        kind="slurm",
        tls=False,
        job_extra_directives=["--qos=long", "--constraint=a100"],
        worker_extra_args=["--lifetime", "55m", "--lifetime-stagger", "4m"],
        log_directory=str(tmp_path / "logs"),
    )
    cluster = dask_jobqueue.SLURMCluster(**slurm_cluster_kwargs(spec))
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH --qos=long" in script and "#SBATCH --constraint=a100" in script
    assert "--lifetime 55m --lifetime-stagger 4m" in script
    assert f"#SBATCH -e {tmp_path / 'logs'}" in script


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("job_extra_directives", ["--qos=long\nrm -rf ~"], "job_extra_directives.0"),
        ("job_extra_directives", ["qos=long"], "is not an sbatch option"),
        ("worker_extra_args", ["--lifetime\t55m"], "worker_extra_args.0"),
        ("worker_extra_args", [""], "worker_extra_args.0"),
        ("log_directory", "logs\nrm -rf ~", "log_directory"),
        ("queue", "gpu\nrm -rf ~", "queue"),
    ],
)
def test_slurm_spec_refuses_words_that_would_change_the_job_script(
    tmp_path: Path, field: str, value: list[str] | str, message: str
) -> None:
    path = tmp_path / "slurm.yaml"
    path.write_text(f"kind: slurm\n{field}: {json.dumps(value)}\n")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_cluster_spec(path)


def test_the_path_check_waits_for_the_first_worker_of_an_adaptive_cluster(tmp_path: Path) -> None:
    """On a cluster without a worker yet (SLURM jobs queued, adapt at zero), the check checked no
    worker and passed anything; now it runs as a task, which starts a worker, and checks it."""
    from latentdask.cluster.spec import LocalSpec
    from latentdask.cluster.workers import check_paths_on_workers

    spec = LocalSpec(adapt={"minimum": 0, "maximum": 1})  # type: ignore[arg-type]
    with connect(spec) as client:
        assert not client.scheduler_info()["workers"]
        with pytest.raises(ConfigError, match=re.escape(f"cannot see {tmp_path / 'elsewhere'}")):
            check_paths_on_workers(client, [tmp_path, tmp_path / "elsewhere"])
        check_paths_on_workers(client, [tmp_path])


def test_a_cluster_whose_workers_never_come_stops_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from latentdask.cluster.workers import check_paths_on_workers

    monkeypatch.setenv("LATENTDASK_WORKER_WAIT", "2")
    with (
        LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        with pytest.raises(ConfigError, match=r"no worker joined the cluster in 2 s \(its scheduler "):
            check_paths_on_workers(client, [tmp_path])
        assert not client.futures  # the check's task is gone
    monkeypatch.setenv("LATENTDASK_WORKER_WAIT", "soon")
    with pytest.raises(ConfigError, match="LATENTDASK_WORKER_WAIT must be a number of seconds above 0"):
        worker_wait()


RAN_ON: list[str] = []


def _record_worker(seconds: float) -> None:
    from distributed import get_worker

    RAN_ON.append(get_worker().address)
    time.sleep(seconds)


def test_a_worker_that_joins_and_cannot_see_the_paths_leaves_and_the_command_stops_with_one_line(
    tmp_path: Path,
) -> None:
    """The paths were checked on the workers present when a command started: one that joined later
    (an adaptive SLURM job on a node without the mount) took tasks it could not run."""
    import dask

    from latentdask.cluster.watch import compute
    from latentdask.cluster.workers import paths_on_workers

    seen = tmp_path / "data"
    seen.mkdir()
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        (first,) = client.scheduler_info()["workers"]
        with paths_on_workers(client, [seen]):
            seen.rmdir()  # the first worker saw it; a worker that joins now cannot
            cluster.scale(2)
            tasks = [dask.delayed(_record_worker)(0.1, dask_key_name=f"record-{i}") for i in range(100)]
            unseen = rf"\S+ cannot see {re.escape(str(seen))} \(it joined while the command ran, and left\)"
            with pytest.raises(ConfigError, match=r"paths must be visible to every worker .*: " + unseen):
                compute(*tasks, scheduler=client)
        assert set(RAN_ON) == {first}
        assert not any(
            name.startswith("latentdask-paths")
            for plugins in client.run(lambda dask_worker: list(dask_worker.plugins)).values()
            for name in plugins
        )


def test_a_path_check_left_by_a_killed_command_is_removed_by_the_next(tmp_path: Path) -> None:
    """A command killed before its cleanup left its path check on a scheduler that outlives it
    (``--scheduler``, a named cluster), turning away every later worker that cannot see its old
    paths; the next command removes it, and keeps the checks of commands still connected."""
    from latentdask.cluster.workers import PATHS_PLUGIN, PathsPlugin, paths_on_workers

    def checks(client: Client) -> set[str]:
        plugins = client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.worker_plugins))
        return {name for name in plugins if name.startswith(PATHS_PLUGIN)}

    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
        Client(cluster.scheduler_address) as other,
    ):
        killed = PathsPlugin([str(tmp_path)], owner="Client-killed-long-ago")  # its paths, deleted later
        running = PathsPlugin([str(tmp_path)], owner=other.id)
        client.register_plugin(killed)
        client.register_plugin(running)
        with paths_on_workers(client, [tmp_path]):
            during = checks(client)
        assert killed.name not in during and running.name in during and len(during) == 2
        assert checks(client) == {running.name}


def _time_out() -> None:
    raise TimeoutError("the task's own")


def test_results_and_statistics_on_a_cluster_that_lost_its_workers_stop_with_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A finished result whose worker left before it was read is computed again, and a reduction
    waits for workers: both waited forever, printing nothing, on a cluster whose jobs had ended
    (a SLURM job cancelled as its shard finished hung the encode). Both now stop with one line."""
    import dask.array as da
    import numpy as np
    from dask import delayed
    from distributed import wait

    from latentdask.cluster.watch import WorkerWatch, compute
    from latentdask.stats.options import SummaryParams
    from latentdask.stats.reduce import Inputs, first_pass

    monkeypatch.setenv("LATENTDASK_WORKER_WAIT", "2")
    z = da.from_array(np.random.default_rng(0).normal(size=(400, 4)), chunks=(100, 4))
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        total, listed, again = compute(z.sum(), [1, 2], z.sum(), scheduler=client)
        assert total == again == z.sum().compute(scheduler="synchronous") and listed == [1, 2]
        with pytest.raises(TimeoutError, match="the task's own"):  # told, not taken for a wait
            compute(delayed(_time_out)(), scheduler=client)
        finished = client.submit(sum, [1, 2], pure=False)
        wait(finished)
        cluster.scale(0)
        while client.scheduler_info(n_workers=0)["n_workers"]:
            time.sleep(0.05)
        with pytest.raises(ConfigError, match=r"no worker for 2 s \(its scheduler .*\), with a report"):
            WorkerWatch(client).result(finished, "a report")
        with pytest.raises(ConfigError, match=r"no worker for 2 s .*, with the command's tasks waiting"):
            first_pass(Inputs(z), params=SummaryParams(), scheduler=client)


def test_data_shipped_to_a_reduction_survives_the_worker_that_held_it() -> None:
    """A GMM or score pass scattered its shared arrays to the workers: when an adaptive cluster
    let that worker go (a SLURM job scaled down or retired between two passes), the pass failed
    with lost scattered data. Shipped as a key of the graph, it is computed again."""
    import numpy as np
    from dask import delayed

    from latentdask.cluster.watch import compute
    from latentdask.reduction import ship

    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        shipped = ship(np.arange(5.0))
        assert compute(delayed(np.sum)(shipped), scheduler=client) == (10.0,)
        (before,) = client.scheduler_info()["workers"]
        cluster.scale(0)
        while client.scheduler_info(n_workers=0)["n_workers"]:
            time.sleep(0.05)
        cluster.scale(1)
        client.wait_for_workers(1)
        assert before not in client.scheduler_info()["workers"]
        assert compute(delayed(np.max)(shipped), scheduler=client) == (4.0,)


def test_slurm_defaults_to_adaptive_jobs_whose_workers_retire_before_the_walltime() -> None:
    """A fixed number of jobs is never replaced when they reach their walltime; by default a SLURM
    spec now adapts, and its workers retire (dask's ``worker.lifetime``) before SLURM ends their
    job, so that adapt starts a new one and their tasks move (dask-jobqueue's documented remedy),
    dask-cuda's workers too (their command has no ``--lifetime``)."""
    dask_jobqueue = require_extra("dask_jobqueue")
    from latentdask.cluster.connect import worker_lifetime
    from latentdask.cluster.spec import Adapt, walltime_seconds

    assert [walltime_seconds(t) for t in ("02:00:00", "60", "10:30", "1-00", "1-02:03:04")] == [
        7200,
        3600,
        630,
        86400,
        93784,
    ]
    hour = [
        "export DASK_DISTRIBUTED__WORKER__LIFETIME__DURATION=3300s",
        "export DASK_DISTRIBUTED__WORKER__LIFETIME__STAGGER=150s",
    ]
    assert worker_lifetime("01:00:00") == hour
    assert worker_lifetime("00:03:00")[0].endswith("=90s")
    default = SlurmSpec(kind="slurm")
    assert default.adapt is None and default.scaling == Adapt(minimum=0, maximum=1)
    # the default is resolved where the cluster starts: a workflow's matrix can still set workers
    assert SlurmSpec.model_validate(default.model_dump() | {"workers": 3}).scaling == 3
    for gpus in (0, 2):
        spec = SlurmSpec(kind="slurm", tls=False, walltime="01:00:00", gpus=gpus)
        cluster = dask_jobqueue.SLURMCluster(**slurm_cluster_kwargs(spec))
        try:
            script = cluster.job_script()
        finally:
            cluster.close()
        assert all(line in script for line in hour) and "--lifetime" not in script
    fixed = SlurmSpec(kind="slurm", tls=False, workers=2)
    assert not any("LIFETIME" in line for line in slurm_cluster_kwargs(fixed)["job_script_prologue"])
    for own in (["--lifetime", "20m"], ["--lifetime=20m"]):
        kwargs = slurm_cluster_kwargs(SlurmSpec(kind="slurm", tls=False, worker_extra_args=own))
        assert kwargs["worker_extra_args"] == own and not kwargs["job_script_prologue"]


def test_slurm_spec_words_stay_words_in_the_job_script(tmp_path: Path) -> None:
    """dask-jobqueue joins the worker's command line unquoted: a spec's words are quoted, so that a
    ``;`` or ``$(...)`` is an argument, not a command."""
    dask_jobqueue = require_extra("dask_jobqueue")
    spec = SlurmSpec(
        kind="slurm",
        tls=False,
        worker_extra_args=["--name", "a; touch pwned", "--memory-limit", "$(id)"],
        python="/opt/my python/bin/python",
        log_directory="~/slurm-logs",
    )
    cluster = dask_jobqueue.SLURMCluster(**slurm_cluster_kwargs(spec))
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "--name 'a; touch pwned' --memory-limit '$(id)'" in script
    assert "'/opt/my python/bin/python' -m distributed.cli.dask_worker" in script
    assert f"#SBATCH -e {Path('~/slurm-logs').expanduser()}/" in script


@pytest.mark.parametrize("walltime", ["2h", "1-", "-5", "", "00:00:00", "1:2:3:4"])
def test_slurm_walltime_that_is_not_a_slurm_time_is_refused(tmp_path: Path, walltime: str) -> None:
    path = tmp_path / "slurm.yaml"
    path.write_text(f"kind: slurm\nwalltime: {json.dumps(walltime)}\n")
    with pytest.raises(ConfigError, match="walltime"):
        load_cluster_spec(path)


def test_a_small_input_runs_in_process_with_its_http_server_on_a_free_loopback_port() -> None:
    """The in-process cluster of a small input has no dashboard on port 8787 of every address: two
    commands at once (a notebook's and a shell's) do not contend for it, and nothing listens beyond
    the loopback."""
    with connect(LocalSpec(kind="local"), input_bytes=1000) as client:
        assert isinstance(client.cluster, LocalCluster) and not client.cluster.processes
        sockets = client.cluster.scheduler.http_server._sockets.values()
        addresses = [socket.getsockname() for socket in sockets]
    assert addresses and all(host == "127.0.0.1" and port != 8787 for host, port in addresses)
