"""Mutual TLS with ``latentdask cluster certs``: a real TLS scheduler and worker in their own processes."""

from __future__ import annotations

import json
import os
import socket
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zarr
from distributed import Client
from distributed.security import Security

from latentdask.cluster.certs import CertificateError, make_certificates
from latentdask.cluster.connect import connect
from latentdask.cluster.spec import ClusterChoice, ConfigError, load_cluster_spec
from latentdask.errors import LatentdaskError

pytestmark = pytest.mark.cluster

DASK = str(Path(sys.executable).parent / "dask")


def tls_args(folder: Path, role: str) -> list[str]:
    return [
        "--tls-ca-file",
        str(folder / "ca.pem"),
        "--tls-cert",
        str(folder / f"{role}.pem"),
        "--tls-key",
        str(folder / f"{role}-key.pem"),
    ]


def tls_spec(tmp_path: Path, address: str, folder: Path) -> Path:
    """An address spec with the client's certificate, as a user writes it."""
    spec = tmp_path / "tls.yaml"
    spec.write_text(
        f"kind: address\naddress: {address}\ntls:\n  ca_file: {folder / 'ca.pem'}\n"
        f"  cert: {folder / 'client.pem'}\n  key: {folder / 'client-key.pem'}\n"
    )
    return spec


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A TLS scheduler and one TLS worker, started with the certificates the command writes."""
    folder = tmp_path_factory.mktemp("certs")
    result = subprocess.run(
        [sys.executable, "-m", "latentdask.cli", "cluster", "certs", str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    scheduler_file = folder / "scheduler.json"
    scheduler = subprocess.Popen(
        [
            DASK,
            "scheduler",
            "--protocol",
            "tls",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-dashboard",
            "--scheduler-file",
            str(scheduler_file),
            *tls_args(folder, "scheduler"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not scheduler_file.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    address = json.loads(scheduler_file.read_text())["address"]
    worker = subprocess.Popen(
        [
            DASK,
            "worker",
            address,
            "--nthreads",
            "1",
            "--no-dashboard",
            "--host",
            "127.0.0.1",
            *tls_args(folder, "worker"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    yield address, folder
    worker.terminate()
    scheduler.terminate()
    worker.wait(timeout=30)
    scheduler.wait(timeout=30)


def test_certificates_are_written_with_private_keys(tls_cluster: tuple[str, Path]) -> None:
    _, folder = tls_cluster
    names = sorted(p.name for p in folder.glob("*.pem"))
    assert names == [
        "ca-key.pem",
        "ca.pem",
        "client-key.pem",
        "client.pem",
        "scheduler-key.pem",
        "scheduler.pem",
        "worker-key.pem",
        "worker.pem",
    ]
    for key in folder.glob("*-key.pem"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    with pytest.raises(CertificateError, match="--overwrite"):
        make_certificates(folder)


def test_tls_scheduler_accepts_the_client_certificate(tls_cluster: tuple[str, Path], tmp_path: Path) -> None:
    address, folder = tls_cluster
    spec = tls_spec(tmp_path, address, folder)
    with connect(load_cluster_spec(spec)) as client:
        client.wait_for_workers(1, timeout=60)
        assert client.submit(sum, [1, 2]).result() == 3
    # a whole command over TLS: statistics of a small array on the TLS worker
    x = np.random.default_rng(0).normal(size=(500, 4)).astype(np.float32)
    zarr.open_array(str(tmp_path / "z.zarr"), mode="w", shape=x.shape, chunks=(100, 4), dtype="float32")[
        :
    ] = x
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "latentdask.cli",
            "stats",
            str(tmp_path / "z.zarr"),
            "--out",
            str(tmp_path / "stats.zarr"),
            "--cluster",
            str(spec),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "stats.json").read_text())["count"] == 500


def test_tls_scheduler_refuses_clients_without_the_right_certificate(
    tls_cluster: tuple[str, Path], tmp_path: Path
) -> None:
    address, folder = tls_cluster
    # no client certificate: the scheduler ends the handshake (distributed itself would not even try)
    host, port = address.removeprefix("tls://").rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(folder / "ca.pem"))
    with socket.create_connection((host, int(port)), timeout=10) as raw, pytest.raises(ssl.SSLError):  # noqa: SIM117
        with context.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(b"x")
            tls.recv(1)  # TLS 1.3 reports the missing certificate on the first read
    # the plain protocol is refused too
    with pytest.raises((OSError, TimeoutError)):
        Client(address.replace("tls://", "tcp://"), timeout=5, set_as_default=False)
    stranger = make_certificates(tmp_path / "other-ca")  # a valid certificate from another CA
    security = Security(
        tls_ca_file=str(folder / "ca.pem"),
        tls_client_cert=str(stranger["client"]),
        tls_client_key=str(stranger["client-key"]),
        require_encryption=True,
    )
    with pytest.raises((OSError, TimeoutError)):
        Client(address, timeout=5, security=security, set_as_default=False)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "kind: address\naddress: tcp://127.0.0.1:8786\ntls: {ca_file: ca.pem, cert: c.pem, key: k.pem}\n",
            "does not exist",
        ),
        ("kind: address\naddress: tls://127.0.0.1:8786\n", "needs 'tls: {ca_file, cert, key}'"),
        ("kind: address\naddress: tls://127.0.0.1:8786\nworkers: 3\n", "cannot be set for kind 'address'"),
    ],
)
def test_bad_tls_specs(tmp_path: Path, content: str, message: str) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_cluster_spec(spec)


def test_a_workflow_runs_unchanged_on_the_tls_cluster(tls_cluster: tuple[str, Path], tmp_path: Path) -> None:
    address, folder = tls_cluster
    spec = tls_spec(tmp_path, address, folder)
    workflow = tmp_path / "tiny.yaml"
    workflow.write_text(
        f"name: tiny\nrun_dir: {tmp_path / 'run'}\ndataset: {{synthetic: {{n: 40, seed: 2}}}}\n"
        "model: {image_size: 16, latent_dim: 4, channels: [4, 4]}\ntrain: {epochs: 1, device: cpu}\n"
        "encode: {shard_size: 20, device: cpu}\nstats: {thresholds: [1.5]}\n"
        "render: {pairs: [corr:1], top_correlated: 0, pcs: 2, slice: null}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "latentdask.cli", "run", str(workflow), "--cluster", str(spec)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    with connect(load_cluster_spec(spec)) as client:  # the shards ran on the TLS cluster's worker
        prefixes = client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.task_prefixes))
    assert "encode-shard" in prefixes
    assert (tmp_path / "run" / "report.html").is_file()
    assert json.loads((tmp_path / "run" / "latents-stats.json").read_text())["count"] == 40


def test_private_keys_are_never_readable_by_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys are created 0600: with the widest umask and every chmod disabled, the creation mode counts."""
    for name in ("chmod", "fchmod", "lchmod"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, lambda *args, **kwargs: None)
    previous = os.umask(0)
    try:
        paths = make_certificates(tmp_path / "certs")
        again = make_certificates(tmp_path / "certs", overwrite=True)  # replacing keys: the same holds
    finally:
        os.umask(previous)
    assert sorted(paths) == sorted(again)
    modes = {role: stat.S_IMODE(os.stat(path).st_mode) for role, path in again.items()}
    assert {role: oct(mode) for role, mode in modes.items() if role.endswith("-key")} == {
        f"{role}-key": oct(0o600) for role in ("ca", "scheduler", "worker", "client")
    }
    # certificates are public, but no one else may change them
    assert all(mode & 0o022 == 0 for role, mode in modes.items() if not role.endswith("-key")), modes


def test_tls_scheduler_address_without_certificates_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"tls:// scheduler needs the client's certificates") as caught:
        ClusterChoice(scheduler="tls://127.0.0.1:1").resolve()
    assert isinstance(caught.value, LatentdaskError)
    message = str(caught.value)
    assert "\n" not in message and "kind address" in message and "tls: {ca_file, cert, key}" in message
    with (
        pytest.raises(ConfigError, match="certificates"),
        connect(ClusterChoice(scheduler="tls://127.0.0.1:1")),
    ):
        pass
