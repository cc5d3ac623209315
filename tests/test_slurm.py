"""The ``slurm`` cluster kind for real: a single-node SLURM (Debian's slurm-wlm and munge, run by
:mod:`tests.slurm`), dask-jobqueue submitting worker jobs over TLS, and the commands as a user
runs them."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from subprocess import CompletedProcess

import numpy as np
import pytest
import yaml
import zarr
from dask import delayed

from latentdask.encode.options import EncodeOptions
from latentdask.encode.run import encode
from tests.helpers import require_extra, run_cli
from tests.slurm import Slurm, single_node_slurm
from tests.test_workflow import TINY

pytestmark = pytest.mark.cluster

SHARD = 10  # 12 shards: a job can be cancelled between two


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slurm]:
    require_extra("dask_jobqueue")
    with single_node_slurm(tmp_path_factory.mktemp("slurm")) as running, pytest.MonkeyPatch.context() as env:
        for name, value in running.env.items():
            env.setenv(name, value)  # sbatch, squeue and scancel, here and in the commands started here
        yield running


def slurm_spec(folder: Path, **fields: object) -> Path:
    """A spec for the tests' SLURM: one-core jobs of one worker, over TLS, logs kept apart."""
    spec = {
        "kind": "slurm",
        "queue": "debug",
        "cores": 1,
        "memory": "2GB",
        "walltime": "00:10:00",
        "processes": 1,
        "python": sys.executable,
        "tls": True,
        "shared_temp_directory": str(folder / "certs"),
        "log_directory": str(folder / "logs"),
        "workers": 1,
    } | fields
    path = folder / "slurm.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def local_store(faces: Path, checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("local") / "local.zarr"
    encode(faces, checkpoint, out, options=EncodeOptions(shard_size=SHARD, batch_size=16), progress=False)
    return out


def arrays(store: Path) -> dict[str, bytes]:
    group = zarr.open_group(str(store), mode="r")
    return {name: np.asarray(group[name][:]).tobytes() for name in ("z", "valid", "error", "crop")}


def encode_on(spec: Path, faces: Path, checkpoint: Path, out: Path, *more: str) -> CompletedProcess[str]:
    """``latentdask encode`` on the cluster of ``spec``, with the local store's options."""
    options = ("--shard-size", str(SHARD), "--batch-size", "16", "--cluster", str(spec), *more)
    return run_cli("encode", str(faces), "--model", str(checkpoint), "--out", str(out), *options)


def encode_cancelling_a_job(
    slurm: Slurm, spec: Path, faces: Path, checkpoint: Path, out: Path
) -> CompletedProcess[str]:
    """:func:`encode_on`, with the first running job cancelled (``scancel``) between two shards."""
    cancelled: list[str] = []
    watcher = threading.Thread(target=cancel_a_job_between_shards, args=(slurm, out, cancelled), daemon=True)
    watcher.start()
    result = encode_on(spec, faces, checkpoint, out)
    watcher.join(timeout=5)
    assert cancelled, "no job was running between two shards"
    return result


def cancel_a_job_between_shards(slurm: Slurm, out: Path, cancelled: list[str]) -> None:
    """``scancel`` the first running job once some of the store's shards are done and not all."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not cancelled:
        done = out / "shard_done"
        running = [job for job, state in slurm.jobs() if state == "RUNNING"]
        if running and done.exists():
            flags = zarr.open_array(str(done), mode="r")[:]
            if flags.any() and not flags.all():
                slurm.run("scancel", running[0])
                cancelled.append(running[0])
        time.sleep(0.2)


def test_encode_and_stats_on_slurm_jobs_equal_the_local_cluster(
    slurm: Slurm, faces: Path, checkpoint: Path, local_store: Path, tmp_path: Path
) -> None:
    spec = slurm_spec(tmp_path)
    out = tmp_path / "slurm.zarr"
    result = encode_on(spec, faces, checkpoint, out)
    assert result.returncode == 0, result.stderr
    assert arrays(out) == arrays(local_store)
    sidecar = zarr.open_group(str(tmp_path / "slurm-stats.zarr"), mode="r")
    local = zarr.open_group(str(local_store.with_name("local-stats.zarr")), mode="r")
    np.testing.assert_array_equal(sidecar["hist"][:], local["hist"][:])
    np.testing.assert_allclose(sidecar["cov"][:], local["cov"][:], rtol=1e-10, atol=1e-12)
    assert list((tmp_path / "logs").glob("*.err")) or list((tmp_path / "logs").glob("*.out"))
    assert slurm.wait_for_no_jobs()  # the command's jobs ended with it


def test_an_adaptive_slurm_cluster_starts_jobs_for_the_work_and_a_cancelled_job_loses_nothing(
    slurm: Slurm, faces: Path, checkpoint: Path, local_store: Path, tmp_path: Path
) -> None:
    """adapt from 0: the path check itself starts the first job; one job is cancelled (scancel)
    while it encodes, another takes its shards, and the store equals the local cluster's."""
    spec = slurm_spec(tmp_path, workers=None, adapt={"minimum": 0, "maximum": 1})
    out = tmp_path / "adapt.zarr"
    result = encode_cancelling_a_job(slurm, spec, faces, checkpoint, out)
    assert result.returncode == 0, result.stderr
    assert arrays(out) == arrays(local_store)


def test_fixed_jobs_that_end_stop_the_command_with_one_line_and_the_store_resumes(
    slurm: Slurm,
    faces: Path,
    checkpoint: Path,
    local_store: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``workers: 1``: a job that ends (at its walltime, or cancelled as here) is not replaced; the
    command waited forever and printed nothing. Now it stops once the scheduler has had no worker
    for LATENTDASK_WORKER_WAIT seconds, and --resume finishes the same store."""
    monkeypatch.setenv("LATENTDASK_WORKER_WAIT", "5")
    spec = slurm_spec(tmp_path, workers=1)
    out = tmp_path / "ended.zarr"
    result = encode_cancelling_a_job(slurm, spec, faces, checkpoint, out)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0] == result.stderr.strip().splitlines()[-1], result.stderr
    assert "the cluster has had no worker for 5 s" in errors[0] and "encode --resume" in errors[0]
    resumed = encode_on(spec, faces, checkpoint, out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert arrays(out) == arrays(local_store)


def test_the_tiny_workflow_runs_on_adaptive_slurm_jobs(slurm: Slurm, tmp_path: Path) -> None:
    """Every step of a workflow on the default kind of SLURM cluster (adapt, here up to one job),
    whose jobs come and go between steps: the run finishes with its report and a store that
    verifies, and leaves no job behind."""
    spec = slurm_spec(tmp_path, workers=None, adapt={"minimum": 0, "maximum": 1})
    workflow = tmp_path / "tiny.yaml"
    workflow.write_text(TINY.format(run_dir=tmp_path / "run", spec=spec, n=80, shard_size=10))
    result = run_cli("run", str(workflow))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "run" / "report.html").exists()
    verified = run_cli("verify", str(tmp_path / "run" / "latents.zarr"))
    assert verified.returncode == 0, verified.stderr
    assert slurm.wait_for_no_jobs()


def test_jobs_at_a_one_minute_walltime_retire_first_and_new_jobs_finish_the_work(
    slurm: Slurm, tmp_path: Path
) -> None:
    """The default kind of spec (adapt) with a one-minute walltime: each worker retires 15 to 45 s
    into its job (dask's worker lifetime, written into the job script: half the walltime here,
    staggered by a quarter), before SLURM would end the job; adapt starts the next job, and a
    minute of work for one worker all finishes."""
    from latentdask.cluster.connect import connect
    from latentdask.cluster.spec import load_cluster_spec
    from latentdask.cluster.watch import compute

    spec = slurm_spec(tmp_path, workers=None, walltime="00:01:00", adapt={"minimum": 0, "maximum": 1})
    work = [delayed(time.sleep)(4.0, dask_key_name=f"pause-{k}") for k in range(15)]
    with connect(load_cluster_spec(spec)) as client:
        assert compute(*work, scheduler=client) == (None,) * len(work)
    logs = sorted((tmp_path / "logs").glob("*.err"))
    assert len(logs) >= 2, logs  # a second job took over
    assert any("worker-lifetime-reached" in log.read_text() for log in logs)
    assert slurm.wait_for_no_jobs()
