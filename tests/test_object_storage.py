"""Datasets, stores and run folders on object storage: a real S3-compatible server on 127.0.0.1.

The server is moto in server mode (a subprocess, as s3fs's own tests run it); every command
reaches it through the usual environment variables (``AWS_ENDPOINT_URL`` and the keys), the
workers too. ``memory://`` serves the quick checks that need no worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import zarr

from latentdask.data.container import ZIP_BLOCK_BYTES
from latentdask.data.dataset import open_dataset
from latentdask.location import create_exclusive, identity, inside, is_remote, location
from latentdask.output import MOVING_FILE, OutputError, owned_output, read_record, write_json
from latentdask.store.lock import StoreLockedError, acquire, release
from tests.conftest import S3Server
from tests.helpers import run_cli, run_cli_in_process, upload
from tests.test_workflow import TINY

pytestmark = pytest.mark.e2e


def z_bytes(store: str | Path) -> bytes:
    return bytes(np.asarray(zarr.open_array(f"{store}/z", mode="r")[:]).tobytes())


# --------------------------------------------------------------------------- locations


def test_locations_local_and_urls() -> None:
    assert location("runs/demo") == Path("runs/demo")
    assert location("file:///tmp/x") == Path("/tmp/x")
    assert location("~/x") == Path.home() / "x"
    memory = location("memory://bucket/latents.zarr")
    assert is_remote(memory) and str(memory) == "memory://bucket/latents.zarr"
    assert str(memory.with_name("latents-stats.zarr")) == "memory://bucket/latents-stats.zarr"
    assert identity("memory://bucket/a/") == "memory://bucket/a"
    assert inside("memory://bucket/a/b.zarr", "memory://bucket/a")
    assert not inside("memory://bucket/ab", "memory://bucket/a")
    assert not inside("s3://bucket/a", "memory://bucket/a")


def test_outputs_on_object_storage_replace_only_their_own() -> None:
    root = f"memory://outputs-{uuid.uuid4().hex[:8]}"
    target = f"{root}/figures.json"
    write_json(target, {"n": 1}, "figures")
    write_json(target, {"n": 2}, "figures")  # its own kind: replaced
    assert json.loads(location(target).read_text())["n"] == 2
    with pytest.raises(OutputError, match="refusing to replace it with a other output"):
        write_json(target, {"n": 3}, "other")
    foreign = location(f"{root}/notes.json")
    foreign.write_text('{"mine": true}')
    with pytest.raises(OutputError, match="not a latentdask output"):
        write_json(foreign, {"n": 1}, "figures")
    assert foreign.read_text() == '{"mine": true}'
    with pytest.raises(OutputError, match="is the input"):
        write_json(target, {"n": 1}, "figures", inputs=[f"{root}/figures.json/"])
    with pytest.raises(OutputError, match="contains the input"):
        write_json(f"{root}/sub", {"n": 1}, "figures", inputs=[f"{root}/sub/figures.json"])


def test_a_folder_output_on_object_storage_moves_into_place_whole() -> None:
    out = location(f"memory://folders-{uuid.uuid4().hex[:8]}/group.zarr")
    for values in (np.arange(1.0, 7.0), np.arange(1.0, 4.0)):  # the second replaces the first (more chunks)
        with owned_output(out, "example", zarr=True) as staged:
            group = zarr.open_group(str(staged.path), mode="w")
            group.attrs["latentdask"] = staged.record
            group.create_array("x", data=values, chunks=(1,))
    assert read_record(out)["kind"] == "example"  # type: ignore[index]
    np.testing.assert_array_equal(zarr.open_array(str(out / "x"), mode="r")[:], np.arange(1.0, 4.0))
    chunks = sorted(path.name for path in (out / "x" / "c").iterdir())
    assert chunks == ["0", "1", "2"]  # the first output's chunks 3..5 are gone
    assert [path.name for path in out.parent.iterdir()] == ["group.zarr"]  # no temporary name left


def test_exclusive_creation_on_s3_has_one_winner(bucket: str) -> None:
    path = location(f"{bucket}/contended")
    outcomes: list[str] = []

    def contend(number: int) -> None:
        try:
            create_exclusive(path, str(number).encode())
            outcomes.append("created")
        except FileExistsError:
            outcomes.append("refused")

    threads = [threading.Thread(target=contend, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["created"] + ["refused"] * 7
    store = f"{bucket}/latents.zarr"
    lock = acquire(store)
    with pytest.raises(StoreLockedError, match="is being written by another run"):
        acquire(store)
    release(lock)
    release(acquire(store))  # free again once released


def test_replacing_on_s3_touches_only_the_output(bucket: str) -> None:
    """The output's objects are replaced; its siblings (a lock, a longer name, someone's files) stay."""
    out = location(f"{bucket}/run/stats.zarr")
    siblings = {
        f"{bucket}/run/stats.zarr.lock": b"lock",
        f"{bucket}/run/stats.zarr2/zarr.json": b"{}",
        f"{bucket}/run/stats.json.backup": b"mine",
    }
    for url, data in siblings.items():
        location(url).write_bytes(data)
    for values in (np.arange(1.0, 7.0), np.arange(1.0, 4.0)):
        with owned_output(out, "example", zarr=True) as staged:
            group = zarr.open_group(str(staged.path), mode="w")
            group.attrs["latentdask"] = staged.record
            group.create_array("x", data=values, chunks=(1,))
    np.testing.assert_array_equal(zarr.open_array(str(out / "x"), mode="r")[:], np.arange(1.0, 4.0))
    assert sorted(path.name for path in (out / "x" / "c").iterdir()) == ["0", "1", "2"]
    assert {url: location(url).read_bytes() for url in siblings} == siblings
    assert sorted(path.name for path in out.parent.iterdir()) == sorted(
        ["stats.zarr", "stats.zarr.lock", "stats.zarr2", "stats.json.backup"]
    )
    foreign = location(f"{bucket}/run/theirs.zarr")
    (foreign / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    with pytest.raises(OutputError, match="not a latentdask output"):
        owned_output(foreign, "example", zarr=True).__enter__()
    assert (foreign / "zarr.json").read_text() == '{"zarr_format": 3, "node_type": "group"}'
    with pytest.raises(OutputError, match="is a bucket"):
        write_json(bucket, {"n": 1}, "figures")


def test_a_move_cut_short_on_s3_is_recognised_and_replaced(bucket: str) -> None:
    """A killed move leaves the marker with the record and some objects: the next run replaces them."""
    out = location(f"{bucket}/points.zarr")
    (out / MOVING_FILE).write_text(json.dumps({"kind": "example"}))
    (out / "x" / "c" / "9").write_bytes(b"half")
    assert read_record(out) == {"kind": "example"}
    with pytest.raises(OutputError, match="latentdask example output"):
        write_json(out, {"n": 1}, "figures")  # another kind: refused, as for a finished output
    with owned_output(out, "example", zarr=True) as staged:
        group = zarr.open_group(str(staged.path), mode="w")
        group.attrs["latentdask"] = staged.record
        group.create_array("x", data=np.arange(1.0, 3.0), chunks=(1,))
    assert sorted(key.rsplit("/", 1)[-1] for key in out.fs.find(out.path)) == [
        "0",
        "1",
        "zarr.json",
        "zarr.json",
    ]


def test_leftovers_and_stale_locks_on_s3_are_cleared_only_when_their_run_is_gone(bucket: str) -> None:
    from latentdask.output import _host, remove_leftovers

    out = location(f"{bucket}/figures.json")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    gone = location(f"{bucket}/.figures.json.latentdask-{_host()}-{int(dead.stdout)}-0123abcd")
    alive = location(f"{bucket}/.figures.json.latentdask-{_host()}-{os.getpid()}-0123abcd")
    for leftover in (gone, alive):
        leftover.write_text("{}")
    assert [str(path) for path in remove_leftovers(out)] == [str(gone)]
    assert alive.exists() and not gone.exists()

    store = f"{bucket}/latents.zarr"
    lock = location(f"{store}.lock")
    holder = {"host": socket.gethostname(), "pid": int(dead.stdout), "run_id": "old", "process_started": 1.0}
    lock.write_text(json.dumps(holder))
    taken = acquire(store)  # the holder's process is gone: the lock is taken over
    assert json.loads(lock.read_text())["run_id"] == taken.run_id != "old"
    release(taken)
    assert not lock.exists()


# --------------------------------------------------------------------------- datasets


def test_zip_dataset_is_read_in_place_with_range_requests(
    faces: Path, bucket: str, s3_server: S3Server, tmp_path: Path
) -> None:
    local = tmp_path / "celeba"
    local.mkdir()
    for name in ("list_eval_partition.txt", "list_attr_celeba.txt"):
        shutil.copy(faces / name, local / name)
    with zipfile.ZipFile(local / "img_align_celeba.zip", "w", zipfile.ZIP_STORED) as archive:
        for image in sorted((faces / "img_align_celeba").iterdir()):
            archive.write(image, f"img_align_celeba/{image.name}")
    root = upload(local, f"{bucket}/celeba")
    reference = open_dataset(faces)
    remote = open_dataset(root)
    assert remote.kind == "celeba" and remote.manifest.sha256 == reference.manifest.sha256
    key = f"{root.removeprefix('s3://')}/img_align_celeba.zip"
    before = len(s3_server.requests("GET", key))
    for row in range(len(reference.manifest)):
        assert remote.read(row) == reference.read(row)
    reads = s3_server.requests("GET", key)[before:]
    blocks = -(-(local / "img_align_celeba.zip").stat().st_size // ZIP_BLOCK_BYTES)
    assert set(reads) == {"206"}  # partial content: range requests, never the whole object
    assert 1 <= len(reads) <= blocks + 1, (len(reads), blocks)  # each block once, not one per image


def test_folder_dataset_on_s3_has_the_same_manifest_and_bytes(faces: Path, bucket: str) -> None:
    root = upload(faces, f"{bucket}/faces")
    reference, remote = open_dataset(faces), open_dataset(root)
    assert remote.manifest.sha256 == reference.manifest.sha256
    assert [remote.read(row) == reference.read(row) for row in (0, 7, 119)] == [True] * 3


# --------------------------------------------------------------------------- encode and statistics


def _encode(
    dataset: str | Path, model: str | Path, out: str | Path, *extra: str, runner: Callable[..., Any] = run_cli
) -> None:
    """``latentdask encode`` in its own process (``runner``: :func:`run_cli_in_process` for a reference
    on disk, which needs no process of its own)."""
    result = runner(
        "encode", str(dataset), "--model", str(model), "--out", str(out), "--shard-size", "30", *extra
    )
    assert result.returncode == 0, result.stderr


def test_encode_and_stats_on_s3_equal_those_on_disk(
    faces: Path, checkpoint: Path, bucket: str, tmp_path: Path
) -> None:
    _encode(faces, checkpoint, tmp_path / "latents.zarr", runner=run_cli_in_process)
    stats_local = run_cli_in_process(
        "stats", str(tmp_path / "latents.zarr"), "--out", str(tmp_path / "stats.zarr")
    )
    assert stats_local.returncode == 0, stats_local.stderr

    dataset = upload(faces, f"{bucket}/faces")
    model = upload(checkpoint, f"{bucket}/model")
    store = f"{bucket}/latents.zarr"
    _encode(dataset, model, store)
    assert z_bytes(store) == z_bytes(tmp_path / "latents.zarr")
    verified = run_cli_in_process("verify", store)
    assert verified.returncode == 0 and "all 4 finished shard(s) match" in verified.stdout, verified.stderr
    stats = run_cli_in_process("stats", store, "--out", f"{bucket}/stats.zarr")
    assert stats.returncode == 0, stats.stderr
    on_disk = xr.open_zarr(tmp_path / "stats.zarr").load()
    on_s3 = xr.open_zarr(f"{bucket}/stats.zarr").load()
    assert set(on_s3.data_vars) == set(on_disk.data_vars)
    for name in on_disk.data_vars:
        np.testing.assert_array_equal(on_s3[name].values, on_disk[name].values, err_msg=name)
    compared = run_cli_in_process("compare", store, store, "--out", f"{bucket}/compare.json")
    assert compared.returncode == 0, compared.stderr
    assert json.loads(location(f"{bucket}/compare.json").read_text())["linear_cka"] == pytest.approx(1.0)
    headline = json.loads(location(f"{bucket}/stats.json").read_text())
    assert headline["count"] == 120 and headline["latentdask"]["kind"] == "stats-headline"
    assert not location(f"{bucket}/latents.zarr.lock").exists()


def test_killed_encode_on_s3_resumes_byte_identical(checkpoint: Path, bucket: str, tmp_path: Path) -> None:
    from latentdask.data.synthetic_faces import synthesize

    faces = Path(str(synthesize(tmp_path / "faces", n=600, seed=3, progress=False)))
    _encode(faces, checkpoint, tmp_path / "clean.zarr", runner=run_cli_in_process)
    dataset, model = upload(faces, f"{bucket}/faces"), upload(checkpoint, f"{bucket}/model")
    store = f"{bucket}/interrupted.zarr"
    spec = tmp_path / "one.yaml"
    spec.write_text("kind: local\nworkers: 1\n")
    command = [sys.executable, "-m", "latentdask.cli", "encode", dataset, "--model", model, "--out", store]
    process = subprocess.Popen(
        [*command, "--shard-size", "30", "--cluster", str(spec)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    done = np.zeros(20, dtype=bool)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(FileNotFoundError):  # until the template is in place
            done = np.asarray(zarr.open_array(f"{store}/shard_done", mode="r")[:])
        if done.sum() >= 3:
            break
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)  # the client and its local cluster, mid-run
    process.wait()
    finished = int(np.asarray(zarr.open_array(f"{store}/shard_done", mode="r")[:]).sum())
    assert 3 <= finished < 20, "the client was not killed mid-run"
    resumed = run_cli_in_process(*command[3:], "--shard-size", "30", "--resume", "--cluster", str(spec))
    assert resumed.returncode == 0, resumed.stderr
    assert z_bytes(store) == z_bytes(tmp_path / "clean.zarr")


# --------------------------------------------------------------------------- a whole run


def test_a_workflow_runs_with_its_dataset_and_run_folder_on_s3(
    faces: Path, bucket: str, s3_server: S3Server, tmp_path: Path
) -> None:
    """The credentials come from the workflow's storage_options alone (the command's environment has
    none), reach every worker, and are recorded nowhere."""
    secret = "s3cr3t-never-recorded"
    spec = tmp_path / "two.yaml"
    spec.write_text("kind: local\nworkers: 2\n")
    workflow = tmp_path / "tiny.yaml"
    run_dir = f"{bucket}/runs/tiny"
    options = {"endpoint_url": s3_server.environment["AWS_ENDPOINT_URL"], "key": "alice", "secret": secret}
    workflow.write_text(
        TINY.format(run_dir=run_dir, spec=spec, n=80, shard_size=30)
        + f"storage_options: {{s3: {json.dumps(options)}}}\n"
    )
    dataset = upload(faces, f"{bucket}/faces")
    environment = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}

    def run() -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "latentdask.cli", "run", str(workflow)]
        return subprocess.run(
            [*command, "--set", f"dataset={{root: {dataset}}}"],
            capture_output=True,
            text=True,
            timeout=600,
            env=environment,
        )

    first = run()
    assert first.returncode == 0, first.stderr
    folder = location(run_dir)
    record: dict[str, Any] = json.loads((folder / "run.json").read_text())
    assert all(step["status"] == "done" for step in record["steps"].values()), record["steps"]
    for output in ("latents.zarr/zarr.json", "scores.json", "grids/samplers.png", "report.html"):
        assert (folder / output).exists(), output
    for written in ("run.json", "report.html", "latents.zarr/zarr.json", "latents-stats.json"):
        assert secret not in (folder / written).read_text(errors="replace"), written
    assert secret not in first.stdout + first.stderr
    again = run()
    assert again.returncode == 0, again.stderr
    said = " ".join(again.stderr.split()) + " ".join(again.stdout.split())
    assert said.count("done earlier with the same parameters, skipped") == len(record["steps"])
