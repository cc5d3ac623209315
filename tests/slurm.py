"""A real single-node SLURM for the tests: Debian's ``slurm-wlm`` and ``munge``, run as this test
session's own processes from a configuration in a temporary folder, and stopped by pid.

Nothing is installed here (``.ci/run`` installs the packages with apt, as it installs
Chromium); without them the tests that need SLURM are skipped, or fail under
``LATENTDASK_REQUIRE_EXTRAS=1``. The daemons run as root with ``proctrack/linuxproc`` and
``task/none``: no cgroups, no system service, nothing outside the folder but two ports.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

#: the programs the packages provide
PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")
NODE = "latentdask-node"
PARTITION = "debug"


@dataclass(frozen=True)
class Slurm:
    """A running single-node SLURM: its configuration file and its node's resources."""

    conf: Path
    folder: Path
    cpus: int
    memory_mb: int

    @property
    def env(self) -> dict[str, str]:
        """What a process needs to talk to this SLURM (``sbatch``, ``squeue``, ``scancel``)."""
        return {"SLURM_CONF": str(self.conf)}

    def run(self, *words: str) -> str:
        result = subprocess.run(
            list(words), env=os.environ | self.env, capture_output=True, text=True, timeout=60, check=True
        )
        return result.stdout

    def jobs(self) -> list[tuple[str, str]]:
        """(job id, state) of every job in the queue."""
        lines = self.run("squeue", "--noheader", "--format=%i %T").split("\n")
        return [(line.split()[0], line.split()[1]) for line in lines if line.strip()]

    def wait_for_no_jobs(self, seconds: float = 60) -> bool:
        """Whether the queue empties within ``seconds`` (a cancelled job completes in a few)."""
        deadline = time.monotonic() + seconds
        while self.jobs():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
        return True


def require_slurm() -> None:
    missing = [name for name in PROGRAMS if shutil.which(name) is None]
    if not missing:
        return
    if os.environ.get("LATENTDASK_REQUIRE_EXTRAS") == "1":
        pytest.fail(f"SLURM is required here (apt-get install slurm-wlm munge): no {', '.join(missing)}")
    pytest.skip("needs SLURM (apt-get install slurm-wlm munge)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(folder: Path, cpus: int, memory_mb: int) -> str:
    return "\n".join(
        [
            "ClusterName=latentdask-tests",
            "SlurmctldHost=localhost(127.0.0.1)",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"AuthInfo=socket={folder / 'munge.socket'}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "MpiDefault=none",
            "ReturnToService=2",
            "SchedulerType=sched/backfill",
            "JobCompType=jobcomp/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "SwitchType=switch/none",
            "MinJobAge=30",
            "KillWait=5",
            "InactiveLimit=0",
            f"StateSaveLocation={folder / 'state'}",
            f"SlurmdSpoolDir={folder / 'spool'}",
            f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
            f"SlurmdPidFile={folder / 'slurmd.pid'}",
            f"SlurmctldLogFile={folder / 'slurmctld.log'}",
            f"SlurmdLogFile={folder / 'slurmd.log'}",
            f"NodeName={NODE} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


def _wait(condition: Callable[[], bool], what: str, logs: list[Path], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    tails = "\n".join(f"--- {log}\n{log.read_text()[-2000:]}" for log in logs if log.exists())
    raise RuntimeError(f"SLURM for the tests: {what} within {seconds:.0f} s\n{tails}")


@contextmanager
def single_node_slurm(folder: Path, *, cpus: int = 2, memory_mb: int = 8000) -> Iterator[Slurm]:
    """munged, slurmctld and slurmd started from ``folder``; every job they ran is cancelled and
    the three are stopped on exit."""
    require_slurm()
    for sub in ("state", "spool"):
        (folder / sub).mkdir(parents=True)
    key = folder / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    conf = folder / "slurm.conf"
    conf.write_text(_config(folder, cpus, memory_mb))
    slurm = Slurm(conf, folder, cpus, memory_mb)
    env = os.environ | slurm.env
    started: list[subprocess.Popen[bytes]] = []
    logs = [folder / "munged.log", folder / "slurmctld.log", folder / "slurmd.log"]
    try:
        started.append(
            subprocess.Popen(
                [
                    "munged",
                    "--foreground",
                    "--force",
                    f"--socket={folder / 'munge.socket'}",
                    f"--key-file={key}",
                    f"--pid-file={folder / 'munged.pid'}",
                    f"--log-file={folder / 'munged.log'}",
                    f"--seed-file={folder / 'munged.seed'}",
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        _wait(lambda: (folder / "munge.socket").exists(), "munged's socket", logs)
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}  # their logs are files
        started.append(subprocess.Popen(["slurmctld", "-D", "-i", "-f", str(conf)], env=env, **quiet))
        started.append(subprocess.Popen(["slurmd", "-D", "-N", NODE, "-f", str(conf)], env=env, **quiet))

        def idle() -> bool:
            try:
                return "idle" in slurm.run("sinfo", "--noheader", "--format=%T")
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                return False

        _wait(idle, "the node idle", logs)
        yield slurm
    finally:
        try:
            slurm.run("scancel", "--partition", PARTITION)
            slurm.wait_for_no_jobs(30)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError):
            pass
        for process in reversed(started):
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
