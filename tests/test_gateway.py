"""A real dask-gateway server (UnsafeLocalBackend, started here): clusters up, scaled during an encode, down.

The server's scheduler and worker commands are ``dask scheduler`` / ``dask worker`` of this
environment; the password is read from the environment as a user would set it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import zarr

from latentdask.data.dataset import open_dataset
from latentdask.data.decode import Preprocessing
from latentdask.data.synthetic_faces import synthesize
from latentdask.location import location
from latentdask.model.autoencoder import Autoencoder
from latentdask.model.checkpoint import load_checkpoint, save_checkpoint
from latentdask.model.config import ModelConfig
from latentdask.store import open_latents
from tests.conftest import S3Server
from tests.helpers import require_extra, upload

pytestmark = pytest.mark.cluster

DASK = str(Path(sys.executable).parent / "dask")
PASSWORD = "correct horse battery staple"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server) -> Iterator[Path]:
    """The server, and a spec file pointing at it; its clusters reach the S3 server as an administrator
    lets them reach object storage: the credentials in the gateway's ClusterConfig.environment."""
    require_extra("dask_gateway_server")
    require_extra("dask_gateway")
    root = tmp_path_factory.mktemp("gateway")
    api, proxy, tcp = free_port(), free_port(), free_port()
    (root / "config.py").write_text(f"""
c.Gateway.address = "127.0.0.1:{api}"
c.Proxy.address = "127.0.0.1:{proxy}"
c.Proxy.tcp_address = "127.0.0.1:{tcp}"
c.Gateway.db_url = "sqlite:///{root / "gateway.sqlite"}"
c.Gateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
c.Gateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
c.SimpleAuthenticator.password = {PASSWORD!r}
c.LocalBackend.clusters_directory = "{root / "clusters"}"
c.ClusterConfig.scheduler_cmd = [{DASK!r}, "scheduler"]
c.ClusterConfig.worker_cmd = [{DASK!r}, "worker"]
c.ClusterConfig.worker_cores = 1
c.ClusterConfig.worker_memory = "1 G"
c.ClusterConfig.environment = {s3_server.environment!r}
""")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "dask-gateway-server"), "-f", str(root / "config.py")],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the proxy answers once the gateway has routed its API
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{proxy}/api/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            time.sleep(0.3)
    else:
        server.kill()
        pytest.fail("dask-gateway-server did not start")
    spec = root / "gateway.yaml"
    spec.write_text(
        f"kind: gateway\naddress: http://127.0.0.1:{proxy}\nproxy_address: tls://127.0.0.1:{tcp}\n"
        "auth: {kind: basic, username: alice}\nworkers: 1\n"
    )
    yield spec
    server.terminate()
    server.wait(timeout=30)


def latentdask(*args: str, password: str = PASSWORD, wait: bool = True) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"DASK_GATEWAY_PASSWORD": password}
    return subprocess.run(
        [sys.executable, "-m", "latentdask.cli", *args], capture_output=True, text=True, timeout=600, env=env
    )


def test_wrong_password_is_refused(gateway: Path) -> None:
    result = latentdask("cluster", "list", "--cluster", str(gateway), password="wrong")
    assert result.returncode == 2
    assert "the gateway refused the login of user 'alice'" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr


def workers_of(spec: Path, name: str) -> int:
    from latentdask.cluster.connect import connect
    from latentdask.cluster.spec import ClusterChoice

    os.environ["DASK_GATEWAY_PASSWORD"] = PASSWORD
    with connect(ClusterChoice(spec=spec, name=name)) as client:
        return len(client.scheduler_info()["workers"])


def test_scale_up_and_down_during_an_encode_loses_nothing(gateway: Path, tmp_path: Path) -> None:
    data = synthesize(tmp_path / "faces", n=1500, seed=3, progress=False)
    # the CelebA study's full-width model, small batches: slow enough to scale during the encode
    torch.manual_seed(0)
    model = Autoencoder(ModelConfig(image_size=256, latent_dim=16))  # ~130 images/s per worker
    checkpoint = save_checkpoint(tmp_path / "model", model, Preprocessing(image_size=256))

    up = latentdask("cluster", "up", str(gateway))
    assert up.returncode == 0, up.stderr
    name = up.stdout.strip()
    listed = latentdask("cluster", "list", "--cluster", str(gateway))
    assert f"{name}\tRUNNING" in listed.stdout

    store = tmp_path / "latents.zarr"
    env = os.environ | {"DASK_GATEWAY_PASSWORD": PASSWORD}
    encode = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "latentdask.cli",
            "encode",
            str(data),
            "--model",
            str(checkpoint),
            "--out",
            str(store),
            "--shard-size",
            "25",
            "--batch-size",
            "5",
            "--device",
            "cpu",
            "--cluster",
            str(gateway),
            "--cluster-name",
            name,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def done() -> int:
        try:
            return int(zarr.open_array(str(store / "shard_done"), mode="r")[:].sum())
        except (FileNotFoundError, KeyError, ValueError):
            return 0

    deadline = time.monotonic() + 300
    while done() < 2 and encode.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert latentdask("cluster", "scale", name, "2", "--cluster", str(gateway)).returncode == 0
    seen = 1
    while encode.poll() is None and seen < 2 and time.monotonic() < deadline:
        seen = max(seen, workers_of(gateway, name))
        time.sleep(0.5)
    at_scale_down = done()
    assert latentdask("cluster", "scale", name, "1", "--cluster", str(gateway)).returncode == 0
    _, stderr = encode.communicate(timeout=600)
    assert encode.returncode == 0, stderr
    assert seen == 2, "the second worker never joined"
    assert at_scale_down < 60, "the encode ended before the scale-down: nothing was tested"

    # nothing lost, nothing duplicated: every shard once, every row equal to a direct encode
    latents = open_latents(store)
    assert bool(xr.open_zarr(str(store)).shard_done.all()) and int(latents.valid.sum()) == 1500
    loaded = load_checkpoint(checkpoint)
    dataset = open_dataset(data)
    rows = [0, 749, 1499]
    pixels = np.stack([dataset.load(r, loaded.preprocessing).pixels for r in rows])
    with torch.inference_mode():
        expected = loaded.model.eval().encode(torch.from_numpy(pixels)).numpy()
    np.testing.assert_allclose(latents.z.values[rows], expected, rtol=1e-4, atol=1e-4)

    down = latentdask("cluster", "down", name, "--cluster", str(gateway))
    assert down.returncode == 0, down.stderr
    assert f"{name}\tRUNNING" not in latentdask("cluster", "list", "--cluster", str(gateway)).stdout


def test_a_workflow_runs_unchanged_on_the_gateway(gateway: Path, tmp_path: Path) -> None:
    workflow = tmp_path / "tiny.yaml"
    workflow.write_text(
        f"name: tiny\nrun_dir: {tmp_path / 'run'}\ndataset: {{synthetic: {{n: 40, seed: 2}}}}\n"
        "model: {image_size: 16, latent_dim: 4, channels: [4, 4]}\ntrain: {epochs: 1, device: cpu}\n"
        "encode: {shard_size: 20, device: cpu}\nstats: {thresholds: [1.5]}\n"
        "render: {pairs: [corr:1], top_correlated: 0, pcs: 2, slice: null}\n"
    )
    result = latentdask("run", str(workflow), "--cluster", str(gateway))
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stderr.split())
    started = text.split("started cluster ")[1].split(" ")[0]  # one cluster for every step, stopped after
    assert text.count("started cluster") == 1 and f"stopped cluster {started}" in text
    assert (tmp_path / "run" / "report.html").is_file()
    assert "Exception ignored" not in result.stderr  # dask-gateway's finalizers stay quiet
    assert f"{started}\tRUNNING" not in latentdask("cluster", "list", "--cluster", str(gateway)).stdout


def test_a_workflow_with_its_data_on_s3_runs_on_the_gateway(
    gateway: Path, faces: Path, bucket: str, tmp_path: Path
) -> None:
    dataset = upload(faces, f"{bucket}/faces")
    run_dir = f"{bucket}/runs/tiny"
    workflow = tmp_path / "tiny.yaml"
    workflow.write_text(
        f"name: tiny\nrun_dir: {run_dir}\ndataset: {{root: {dataset}}}\n"
        "model: {image_size: 16, latent_dim: 4, channels: [4, 4]}\ntrain: {epochs: 1, device: cpu}\n"
        "encode: {shard_size: 40, device: cpu}\nstats: {thresholds: [1.5]}\n"
        "render: {pairs: [corr:1], top_correlated: 0, pcs: 2, slice: null}\n"
    )
    result = latentdask("run", str(workflow), "--cluster", str(gateway))
    assert result.returncode == 0, result.stderr
    folder = location(run_dir)
    record = json.loads((folder / "run.json").read_text())
    assert all(step["status"] == "done" for step in record["steps"].values()), record["steps"]
    assert json.loads((folder / "latents-stats.json").read_text())["count"] == 120
    assert (folder / "report.html").is_file()
