"""Damaged, unfinished and contested stores: checksums, verify, resume, the writer lock, the run id.

The truth is a clean copy of the same store and numpy over its rows.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zarr
from distributed import LocalCluster

from latentdask.cluster.spec import ClusterChoice, ConfigError
from latentdask.encode.options import EncodeOptions
from latentdask.encode.run import _job, encode
from latentdask.encode.task import ShardJob, encode_shard
from latentdask.errors import DatasetError
from latentdask.stats.io import stats_of
from latentdask.stats.options import SummaryParams
from latentdask.store.integrity import DamagedShardError, verify_store
from latentdask.store.layout import StoreError
from latentdask.store.lock import StoreLockedError, lock_path
from latentdask.store.points import open_zpoints
from tests.helpers import run_cli

SHARD = 32  # 120 faces: shards of 32, 32, 32 and 24 rows


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterChoice]:
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
    ) as local:
        yield ClusterChoice(scheduler=local.scheduler_address)


@pytest.fixture(scope="module")
def clean(
    faces: Path, checkpoint: Path, cluster: ClusterChoice, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("clean") / "clean.zarr"
    encode(
        faces,
        checkpoint,
        out,
        options=EncodeOptions(shard_size=SHARD, batch_size=16, stats=False),
        cluster=cluster,
        progress=False,
    )
    return out


def copy_of(store: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(store, tmp_path / store.name))


def damage(store: Path) -> None:
    """Shard 1 loses its z chunk; shard 2's valid chunk becomes garbage."""
    (store / "z" / "c" / "1" / "0").unlink()
    (store / "valid" / "c" / "2").write_bytes(b"\x00garbage" * 5)


def z_of(store: Path) -> np.ndarray:
    return np.asarray(zarr.open_array(str(store / "z"), mode="r")[:])


def test_verify_names_every_damaged_shard(clean: Path, tmp_path: Path) -> None:
    assert verify_store(clean).damaged == {}
    store = copy_of(clean, tmp_path)
    damage(store)
    found = verify_store(store)
    assert found.checked == 4
    assert sorted(found.damaged) == [1, 2]
    assert found.damaged[1] == "z does not match its checksum"
    assert found.damaged[2].startswith("valid unreadable (")
    result = run_cli("verify", str(store))
    assert result.returncode == 1, result.stderr
    assert (
        "2 of 4 finished shard(s) damaged" in result.stdout and "shard 1: z does not match" in result.stdout
    )
    assert run_cli("verify", str(clean)).returncode == 0


def test_garbage_of_the_right_length_is_caught(clean: Path, tmp_path: Path) -> None:
    store = copy_of(clean, tmp_path)
    chunk = store / "z" / "c" / "3" / "0"  # uncompressed: same size, other bytes still decode
    data = bytearray(chunk.read_bytes())
    data[100] ^= 0xFF
    chunk.write_bytes(bytes(data))
    assert verify_store(store).damaged == {3: "z does not match its checksum"}


def test_stats_refuse_a_damaged_store_or_leave_its_damaged_shards_out(clean: Path, tmp_path: Path) -> None:
    store = copy_of(clean, tmp_path)
    damage(store)
    with pytest.raises(DamagedShardError):
        stats_of(open_zpoints(store), params=SummaryParams())
    result = run_cli("stats", str(store), "--out", str(tmp_path / "s.zarr"))
    assert result.returncode == 2
    assert "2 damaged shard(s): 1 (z does not match its checksum), 2 (valid unreadable" in result.stderr
    assert "(stats, select and render can leave them out with --skip-damaged)" in result.stderr
    assert not (tmp_path / "s.zarr").exists()
    result = run_cli("stats", str(store), "--out", str(tmp_path / "s.zarr"), "--skip-damaged")
    assert result.returncode == 0, result.stderr
    assert "leaving out 2 damaged shard(s): 1, 2" in result.stderr
    kept = np.r_[0:SHARD, 3 * SHARD : 120]
    reference = z_of(clean)[kept].astype(np.float64)
    figures = json.loads((tmp_path / "s.json").read_text())
    assert figures["count"] == len(kept)
    stats = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    np.testing.assert_allclose(stats["mean"][:], reference.mean(axis=0), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(stats["max"][:], reference.max(axis=0))


@pytest.mark.parametrize("embedded", [False, True], ids=["running-cluster", "embedded"])
def test_resume_encodes_damaged_shards_again(
    faces: Path,
    checkpoint: Path,
    clean: Path,
    cluster: ClusterChoice,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    embedded: bool,
) -> None:
    """Embedded: the cluster starts in-process to check a small finished store, and the damaged
    shards found there are encoded on worker processes, as every encode is."""
    from latentdask.cluster.connect import default_local_workers

    store = copy_of(clean, tmp_path)
    damage(store)
    summary = encode(
        faces,
        checkpoint,
        store,
        options=EncodeOptions(shard_size=SHARD, batch_size=16, resume=True, stats=False),
        cluster=ClusterChoice() if embedded else cluster,
        progress=embedded,
    )
    assert summary.shards_run == 2
    assert verify_store(store).damaged == {}
    assert z_of(store).tobytes() == z_of(clean).tobytes()
    if embedded:
        printed = " ".join(capsys.readouterr().err.split())
        assert f"encoding 2 shard(s) on {default_local_workers()} worker(s)" in printed


def test_damaged_integrity_records_are_damaged_shards_and_resume_mends_them(
    faces: Path, checkpoint: Path, clean: Path, cluster: ClusterChoice, tmp_path: Path
) -> None:
    """A checksum chunk or a shard_done chunk that does not decode blocks neither verify, nor stats, nor
    the resume: each is its shard's damage, named, and encoded again to the clean store's bytes."""
    store = copy_of(clean, tmp_path)
    (store / "checksum" / "c" / "1" / "0").write_bytes(b"\x00garbage" * 3)
    (store / "shard_done" / "c" / "2").write_bytes(b"\x00garbage")
    found = verify_store(store)
    assert sorted(found.damaged) == [1, 2], found.damaged
    assert found.damaged[1].startswith("checksums unreadable") and found.damaged[2] == "shard_done unreadable"
    result = run_cli("verify", str(store))
    assert result.returncode != 0 and "shard 1: checksums unreadable" in result.stdout + result.stderr
    result = run_cli("stats", str(store), "--out", str(tmp_path / "s.zarr"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "2 damaged shard(s): 1 (checksums unreadable" in result.stderr
    summary = encode(
        faces,
        checkpoint,
        store,
        options=EncodeOptions(shard_size=SHARD, batch_size=16, resume=True, stats=False),
        cluster=cluster,
        progress=False,
    )
    assert summary.shards_run == 2
    assert verify_store(store).damaged == {}
    assert z_of(store).tobytes() == z_of(clean).tobytes()
    for name in ("checksum", "shard_done"):
        mended = zarr.open_array(str(store / name), mode="r")[...]
        np.testing.assert_array_equal(mended, zarr.open_array(str(clean / name), mode="r")[...])
    # a flag alone that does not decode is damage too, not an unfinished shard whose rows quietly go
    flagged = copy_of(clean, tmp_path / "flag")
    (flagged / "shard_done" / "c" / "2").write_bytes(b"\x00garbage")
    with pytest.raises(DamagedShardError, match=r"shard_done flag of shard\(s\) 2 does not decode"):
        open_zpoints(flagged)
    assert open_zpoints(flagged, skip_shards=[2]).shards == 4


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("shard_size", None),
        ("shard_size", "ten"),
        ("shard_size", -5),
        ("shard_size", 0),
        ("shard_size", 1e300),
        ("shard_size", 16),
        ("n_images", 7),
        ("format_version", None),
        ("format_version", "2"),
    ],
)
def test_edited_store_metadata_is_one_line_naming_the_field(
    clean: Path, tmp_path: Path, name: str, value: object
) -> None:
    """A store's attributes are input: edited, they are refused on open, never a crash or false damage."""
    store = copy_of(clean, tmp_path)
    zarr.open_group(str(store), mode="r+").attrs[name] = value
    for read in (verify_store, open_zpoints):
        with pytest.raises(StoreError, match=f"its attribute {name} is {re.escape(repr(value))}"):
            read(store)
    if name == "shard_size" and value == -5:  # and through the commands, as a person meets it
        for command in ("verify", "info", "stats"):
            result = run_cli(
                command, str(store), *(("--out", str(tmp_path / "s.zarr")) if command == "stats" else ())
            )
            assert result.returncode == 2 and "Traceback" not in result.stderr, (command, result.stderr)
            assert f"its attribute shard_size is -5, but its arrays hold {SHARD}" in result.stderr


def test_the_fingerprint_of_a_whole_store_is_the_one_selections_recorded(clean: Path) -> None:
    """Selections and sidecar statistics record this digest; its formula for a store whose every
    shard reads must not change, or every existing selection would be refused after an upgrade."""
    import hashlib

    from latentdask.store.integrity import finished_fingerprint

    group = zarr.open_group(str(clean), mode="r")
    done = np.asarray(group["shard_done"][:], dtype=bool)
    recorded = np.asarray(group["checksum"][:])
    digest = hashlib.sha256(done.tobytes())
    digest.update(np.where(done[:, None], recorded, 0).astype("<u4").tobytes())
    assert finished_fingerprint(group) == digest.hexdigest()


def test_unfinished_shards_are_left_out_unless_asked(clean: Path, tmp_path: Path) -> None:
    store = copy_of(clean, tmp_path)
    zarr.open_array(str(store / "shard_done"), mode="r+")[3] = False  # its rows are written, its flag is not
    points = open_zpoints(store)
    assert points.unfinished_note() == f"1 of 4 shards of {store} unfinished: their rows are left out"
    assert int(stats_of(points, params=SummaryParams())["count"]) == 3 * SHARD
    assert int(stats_of(open_zpoints(store, include_unfinished=True), params=SummaryParams())["count"]) == 120
    result = run_cli("stats", str(store), "--out", str(tmp_path / "s.zarr"))
    assert result.returncode == 0 and "1 of 4 shards" in result.stderr
    assert json.loads((tmp_path / "s.json").read_text())["count"] == 3 * SHARD


def test_a_task_of_a_superseded_run_writes_nothing(
    faces: Path, checkpoint: Path, clean: Path, tmp_path: Path
) -> None:
    from latentdask.data.dataset import open_dataset
    from latentdask.model.config import read_checkpoint_config

    store = copy_of(clean, tmp_path)
    zarr.open_array(str(store / "shard_done"), mode="r+")[0] = False
    zarr.open_array(str(store / "z"), mode="r+")[:SHARD] = 0.0
    data = open_dataset(faces)
    config = read_checkpoint_config(checkpoint)
    sha = str(zarr.open_group(str(store), mode="r").attrs["model_sha256"])
    shard = data.manifest.shards(SHARD)[0]
    job: ShardJob = _job(
        store,
        shard,
        data.container,
        data.manifest,
        checkpoint,
        sha,
        config,
        EncodeOptions(shard_size=SHARD, batch_size=16, stats=False),
        run_id="an-earlier-run",
    )
    with pytest.raises(StoreError, match="was taken over by another run; shard 0 of this run is not written"):
        encode_shard(job)
    assert not zarr.open_array(str(store / "shard_done"), mode="r")[0]
    assert (z_of(store)[:SHARD] == 0).all()
    current = str(zarr.open_group(str(store), mode="r").attrs["writer_run"])
    encode_shard(dataclasses.replace(job, run_id=current))  # the store's own run writes
    assert z_of(store).tobytes() == z_of(clean).tobytes()


def test_a_shard_whose_images_the_worker_cannot_see_is_an_error_not_done(
    faces: Path, checkpoint: Path, clean: Path, tmp_path: Path
) -> None:
    """A worker that does not see the dataset the client listed (a mount missing on its node) found
    every image "listed but missing" and marked the shard done with no valid row; now the task
    stops with one line naming the worker's view, and the shard stays to do."""
    from latentdask.data.dataset import open_dataset
    from latentdask.model.config import read_checkpoint_config

    store = copy_of(clean, tmp_path)
    zarr.open_array(str(store / "shard_done"), mode="r+")[1] = False
    seen = tmp_path / "faces"
    shutil.copytree(faces, seen)
    data = open_dataset(seen)  # the client's listing
    config = read_checkpoint_config(checkpoint)
    attrs = zarr.open_group(str(store), mode="r").attrs
    job: ShardJob = _job(
        store,
        data.manifest.shards(SHARD)[1],
        data.container,
        data.manifest,
        checkpoint,
        str(attrs["model_sha256"]),
        config,
        EncodeOptions(shard_size=SHARD, batch_size=16, stats=False),
        run_id=str(attrs["writer_run"]),
    )
    shutil.rmtree(seen)  # what the worker sees
    with pytest.raises(DatasetError, match=f"cannot read the images of shard 1: none of the {SHARD} files"):
        encode_shard(job)
    assert not zarr.open_array(str(store / "shard_done"), mode="r")[1]
    # a shard whose images the client itself found missing is done, with their reasons
    listed_missing = dataclasses.replace(job, present=np.zeros(SHARD, bool))
    report = encode_shard(listed_missing)
    assert report.valid == 0 and report.failures == {"listed but missing": SHARD}


def test_an_encode_whose_cluster_loses_every_worker_stops_and_resumes(
    faces: Path,
    checkpoint: Path,
    clean: Path,
    cluster: ClusterChoice,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Workers that end (SLURM jobs at their walltime) and are not replaced left the command
    waiting forever, printing nothing; now it stops with one line once the scheduler has had no
    worker for LATENTDASK_WORKER_WAIT seconds, and the store resumes to the same bytes."""
    from distributed import Client

    monkeypatch.setenv("LATENTDASK_WORKER_WAIT", "3")
    out = tmp_path / "lost.zarr"
    options = EncodeOptions(shard_size=SHARD, batch_size=16, stats=False)
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as local,
        Client(local) as client,
    ):

        def end_the_workers_after_a_shard() -> None:
            while not (out / "shard_done").exists() or not zarr.open_array(str(out / "shard_done"))[:].any():
                time.sleep(0.05)
            local.scale(0)

        ender = threading.Thread(target=end_the_workers_after_a_shard, daemon=True)
        ender.start()
        with pytest.raises(
            ConfigError, match=r"the cluster has had no worker for 3 s .* shard\(s\) to encode"
        ):
            encode(faces, checkpoint, out, options=options, client=client, progress=False)
        ender.join()
    assert not zarr.open_array(str(out / "shard_done"), mode="r")[:].all()
    resume = options.model_copy(update={"resume": True})
    encode(faces, checkpoint, out, options=resume, cluster=cluster, progress=False)
    assert z_of(out).tobytes() == z_of(clean).tobytes()


def test_a_stale_lock_is_taken_over_and_a_foreign_one_is_not(
    faces: Path, checkpoint: Path, clean: Path, cluster: ClusterChoice, tmp_path: Path
) -> None:
    store = copy_of(clean, tmp_path)
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    holder = {
        "host": socket.gethostname(),
        "pid": int(gone.stdout),
        "process_started": 1.0,
        "run_id": "x",
        "command": "latentdask encode",
        "since": "2026-01-01T00:00:00+00:00",
    }
    lock_path(store).write_text(json.dumps(holder))
    options = EncodeOptions(shard_size=SHARD, batch_size=16, resume=True, stats=False)
    encode(faces, checkpoint, store, options=options, cluster=cluster, progress=False)
    assert not lock_path(store).exists()
    lock_path(store).write_text(json.dumps(holder | {"host": "another-machine", "pid": os.getpid()}))
    with pytest.raises(StoreLockedError, match=f"on host another-machine .* delete {lock_path(store)}"):
        encode(faces, checkpoint, store, options=options, cluster=cluster, progress=False)
    assert lock_path(store).exists()


def test_an_interrupted_template_never_sits_under_the_final_name(
    faces: Path, checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "latents.zarr"
    args = ("encode", str(faces), "--model", str(checkpoint), "--out", str(out), "--shard-size", str(SHARD))
    failed = run_cli(*args, limit_file_bytes=2000)  # the template's writes hit the file-size limit
    assert failed.returncode == 2 and "File too large" in failed.stderr, failed.stderr
    assert not out.exists()
    done = run_cli(*args)  # no --overwrite needed: nothing half-made is in the way
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "latents-stats.json",
        "latents-stats.zarr",
        "latents.zarr",
    ]


def test_an_image_that_kills_its_worker_costs_only_its_row(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dask

    from tests.helpers import png_zeros16, solid_jpeg, write_celeba

    # 30000 × 30000 16-bit pixels: 1.8 GB once decoded, from a 2 MB file; the pixel limit is
    # raised so that decoding is tried, and the worker's memory limit stops it
    names = [f"{i:06d}.jpg" for i in range(1, 9)]
    images = {name: solid_jpeg((30 * i, 60, 90)) for i, name in enumerate(names)}
    images["000004.jpg"] = png_zeros16(30_000, 30_000)
    root = write_celeba(tmp_path / "data", images, partition=dict.fromkeys(names, 0), attributes=None)
    monkeypatch.setenv("LATENTDASK_MAX_PIXELS", str(10**10))
    monkeypatch.setenv("LATENTDASK_ISOLATED_DECODE_BYTES", str(1536 * 2**20))
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 1}),
        LocalCluster(
            n_workers=1, threads_per_worker=1, memory_limit="1GiB", host="127.0.0.1", dashboard_address=":0"
        ) as local,
    ):
        summary = encode(
            root,
            checkpoint,
            tmp_path / "l.zarr",
            options=EncodeOptions(shard_size=4, stats=False),
            cluster=ClusterChoice(scheduler=local.scheduler_address),
            progress=False,
        )
    store = zarr.open_group(str(tmp_path / "l.zarr"), mode="r")
    valid = np.asarray(store["valid"][:])
    assert valid.tolist() == [True, True, True, False, True, True, True, True]
    assert str(store["error"][3]) == "decoding needs more memory than the isolated decoder may use"
    assert summary.shards_run == 2 and verify_store(tmp_path / "l.zarr").damaged == {}


def test_render_refuses_a_damaged_store_with_the_list(clean: Path, tmp_path: Path) -> None:
    from latentdask.stats.io import write_stats

    store = copy_of(clean, tmp_path)
    write_stats(stats_of(open_zpoints(store), params=SummaryParams()), tmp_path / "s.zarr", source="clean")
    damage(store)
    result = run_cli(
        "render", str(store), "--stats", str(tmp_path / "s.zarr"), "--out", str(tmp_path / "figures")
    )
    assert result.returncode == 2
    assert "2 damaged shard(s): 1 (z does not match its checksum), 2 (valid unreadable" in result.stderr
    assert not (tmp_path / "figures").exists()
