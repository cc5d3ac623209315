"""Encoding on real Dask worker processes into a real Zarr store on disk."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import zarr
from distributed import Client, LocalCluster, Scheduler, SchedulerPlugin
from PIL import Image

from latentdask.cluster.spec import ClusterChoice, LocalSpec
from latentdask.data.dataset import open_dataset
from latentdask.data.decode import Preprocessing
from latentdask.encode.options import EncodeOptions
from latentdask.encode.run import encode
from latentdask.errors import LatentdaskError
from latentdask.location import LocationError
from latentdask.model.checkpoint import load_checkpoint
from latentdask.output import OutputError
from latentdask.store import StoreError, open_latents
from latentdask.store.lock import StoreLockedError, lock_path
from tests.helpers import encode as encode_image
from tests.helpers import make_checkpoint, solid_jpeg, write_celeba

#: Largest difference seen between latents of the same image encoded in batches of
#: different sizes on this CPU (oneDNN picks kernels by batch shape); see
#: test_latents_do_not_depend_on_shards_workers_or_batches.
BATCH_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """Two real worker processes, shared by the tests of this module through its address."""
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
    ) as local:
        yield local


@pytest.fixture(scope="module")
def on_cluster(cluster: LocalCluster) -> ClusterChoice:
    return ClusterChoice(scheduler=cluster.scheduler_address)


def reference_latents(dataset_root: Path, checkpoint: Path) -> np.ndarray:
    """Each image decoded by decode_image and encoded alone, in this process."""
    model = load_checkpoint(checkpoint).model
    dataset = open_dataset(dataset_root)
    prep = Preprocessing(image_size=model.config.image_size)
    rows = []
    with torch.inference_mode():
        for row in range(len(dataset.manifest)):
            pixels = torch.from_numpy(dataset.load(row, prep).pixels)[None]
            rows.append(model.encode(pixels)[0].numpy())
    return np.stack(rows)


def test_encode_matches_in_process_reference(
    faces: Path, checkpoint: Path, tmp_path: Path, on_cluster: ClusterChoice
) -> None:
    out = tmp_path / "latents.zarr"
    summary = encode(
        faces,
        checkpoint,
        out,
        options=EncodeOptions(shard_size=32, batch_size=16),
        cluster=on_cluster,
        progress=False,
    )
    assert summary.images == 120 and summary.shards_run == 4 and summary.invalid == {}
    ds = open_latents(out)
    assert dict(ds.sizes) == {"image": 120, "latent": 16, "attribute": 40}  # per image: no shard bookkeeping
    assert ds.z.dims == ("image", "latent") and ds.z.dtype == np.float32
    assert ds.z.data.chunks[0] == (32, 32, 32, 24)
    np.testing.assert_allclose(
        ds.z.values, reference_latents(faces, checkpoint), atol=BATCH_TOLERANCE, rtol=0
    )
    manifest = open_dataset(faces).manifest
    assert ds.valid.values.all() and (ds.error.values == "").all() and (ds.crop.values == "box").all()
    assert ds.filename.values.tolist() == manifest.names.tolist()
    np.testing.assert_array_equal(ds.split.values, manifest.split)
    np.testing.assert_array_equal(ds.attributes.values, manifest.attributes)
    assert ds.attribute.values.tolist()[:2] == ["5_o_Clock_Shadow", "Arched_Eyebrows"]
    assert xr.open_zarr(out).shard_done.values.all()
    assert ds.attrs["manifest_sha256"] == manifest.sha256
    assert ds.attrs["model_sha256"] == load_checkpoint(checkpoint).sha256
    assert ds.attrs["preprocessing"]["image_size"] == 32 and ds.attrs["shard_size"] == 32
    # xarray's idioms: split a coordinate that says what its codes mean; grouping by it or by an
    # attribute groups as numpy does; selecting by it keeps those rows; a few images' table is theirs
    z, split, male = ds.z.values.astype(np.float64), manifest.split, manifest.attributes[:, 20]
    assert ds.attribute.values[20] == "Male" and ds.split.attrs["flag_values"] == [-1, 0, 1, 2]
    assert ds.split.attrs["flag_meanings"].split() == ["unknown", "train", "valid", "test"]
    for grouped, labels, name in (
        (ds.z.groupby("split"), split, "split"),
        (ds.z.groupby(ds.attributes.sel(attribute="Male")), male, "attributes"),
    ):
        means = grouped.mean()
        assert sorted(means[name].values.tolist()) == sorted(set(labels.tolist()))
        for label in set(labels.tolist()):
            np.testing.assert_allclose(
                means.sel({name: label}).values, z[labels == label].mean(axis=0), rtol=1e-5
            )
    assert set(ds.groupby("split").mean().data_vars) >= {"z", "valid"}
    train = ds.where(ds.split == 0, drop=True)
    assert (
        train.sizes["image"] == (split == 0).sum()
        and train.filename.values.tolist() == manifest.names[split == 0].tolist()
    )
    table = ds[["filename", "split", "valid"]].isel(image=slice(0, 3)).to_dataframe()
    assert table.index.tolist() == [0, 1, 2] and table.filename.tolist() == manifest.names[:3].tolist()
    # plain xarray gives the same named dims, with no warning about metadata
    plain = xr.open_zarr(out)
    assert plain.z.dims == ("image", "latent") and plain.attributes.dims == ("image", "attribute")


def test_existing_store_needs_resume_or_overwrite(
    faces: Path, checkpoint: Path, tmp_path: Path, on_cluster: ClusterChoice
) -> None:
    out = tmp_path / "latents.zarr"
    options = EncodeOptions(shard_size=64)
    encode(faces, checkpoint, out, options=options, cluster=on_cluster, progress=False)
    with pytest.raises(StoreError, match=r"already exists; use --resume .* EncodeOptions\(resume=True\)"):
        encode(faces, checkpoint, out, options=options, cluster=on_cluster, progress=False)
    again = encode(
        faces,
        checkpoint,
        out,
        options=EncodeOptions(shard_size=64, resume=True),
        cluster=on_cluster,
        progress=False,
    )
    assert again.shards_run == 0 and again.shards_skipped == 2
    with pytest.raises(StoreError, match=r"shard_size: store has 64, this run has 32"):
        encode(
            faces,
            checkpoint,
            out,
            options=EncodeOptions(shard_size=32, resume=True),
            cluster=on_cluster,
            progress=False,
        )
    other = make_checkpoint(tmp_path / "other", latent_dim=8)
    with pytest.raises(
        StoreError, match=r"model_sha256: store has .*latent_dim: store has 16, this run has 8"
    ):
        encode(
            faces,
            other,
            out,
            options=EncodeOptions(shard_size=64, resume=True),
            cluster=on_cluster,
            progress=False,
        )
    replaced = encode(
        faces,
        other,
        out,
        options=EncodeOptions(shard_size=64, overwrite=True),
        cluster=on_cluster,
        progress=False,
    )
    assert replaced.shards_run == 2 and open_latents(out).sizes["latent"] == 8


def test_overwrite_refuses_a_folder_that_is_not_a_store(
    faces: Path, checkpoint: Path, tmp_path: Path
) -> None:
    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "chapter1.tex").write_text("...")
    with pytest.raises(OutputError, match="is not a latentdask output; refusing to replace it"):
        encode(faces, checkpoint, precious, options=EncodeOptions(overwrite=True), progress=False)
    assert (precious / "chapter1.tex").exists()
    foreign = zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w")  # a Zarr store, not latentdask's
    foreign.create_array("x", shape=(2,), dtype="int8")[:] = 7
    with pytest.raises(OutputError, match="is not a latentdask output"):
        encode(
            faces,
            checkpoint,
            tmp_path / "foreign.zarr",
            options=EncodeOptions(overwrite=True),
            progress=False,
        )
    assert zarr.open_array(str(tmp_path / "foreign.zarr" / "x"), mode="r")[:].tolist() == [7, 7]


def test_split_and_reconstruction_error(
    faces: Path, checkpoint: Path, tmp_path: Path, on_cluster: ClusterChoice
) -> None:
    out = tmp_path / "valid.zarr"
    options = EncodeOptions(split="valid", shard_size=5, reconstruction_error=True)
    encode(faces, checkpoint, out, options=options, cluster=on_cluster, progress=False)
    ds = open_latents(out)
    manifest = open_dataset(faces, split="valid").manifest
    assert ds.sizes["image"] == 12 and (ds.split.values == 1).all()
    assert ds.image.values.tolist() == manifest.index.tolist() == list(range(96, 108))
    model = load_checkpoint(checkpoint).model
    prep = Preprocessing(image_size=32)
    dataset = open_dataset(faces, split="valid")
    with torch.inference_mode():
        images = torch.stack([torch.from_numpy(dataset.load(r, prep).pixels) for r in range(12)])
        expected = (model(images) - images).square().mean(dim=(1, 2, 3)).numpy()
    np.testing.assert_allclose(ds.recon_error.values, expected, rtol=1e-4)


def bad_input_zoo(root: Path) -> dict[str, str]:
    """A CelebA-layout dataset of awkward files; returns name → expected error ("" = valid)."""
    jpeg = solid_jpeg((90, 120, 150))
    images = {
        "01_ok.jpg": jpeg,
        "02_truncated.jpg": jpeg[: len(jpeg) // 2],
        "03_empty.jpg": b"",
        "04_text.jpg": b"not an image at all\n",
        "05_png_named_jpg.jpg": encode_image(Image.new("RGB", (178, 218), (1, 2, 3)), "PNG"),
        "06_gray.jpg": encode_image(Image.new("L", (178, 218), 128), "JPEG"),
        "07_cmyk.jpg": encode_image(Image.new("CMYK", (178, 218), (0, 50, 100, 0)), "JPEG"),
        "08_rgba.png": encode_image(Image.new("RGBA", (178, 218), (10, 20, 30, 128)), "PNG"),
        "09_tiny.jpg": encode_image(Image.new("RGB", (1, 1), (200, 0, 0)), "JPEG"),
        "10_huge.jpg": encode_image(Image.new("RGB", (4000, 4000), (0, 90, 0)), "JPEG", quality=70),
    }
    listed = [*images, "11_missing.jpg"]
    write_celeba(root, images, partition=dict.fromkeys(listed, 0), attributes=None)
    return {
        name: {
            "02_truncated.jpg": "truncated image",
            "03_empty.jpg": "empty file",
            "04_text.jpg": "not an image file",
            "11_missing.jpg": "listed but missing",
        }.get(name, "")
        for name in listed
    }


def test_bad_input_zoo(checkpoint: Path, tmp_path: Path, on_cluster: ClusterChoice) -> None:
    expected = bad_input_zoo(tmp_path / "zoo")
    summary = encode(
        tmp_path / "zoo",
        checkpoint,
        tmp_path / "zoo.zarr",
        options=EncodeOptions(shard_size=4),
        cluster=on_cluster,
        progress=False,
    )
    ds = open_latents(tmp_path / "zoo.zarr")
    got = dict(zip(ds.filename.values.tolist(), ds.error.values.tolist(), strict=True))
    assert got == expected
    np.testing.assert_array_equal(ds.valid.values, [reason == "" for reason in expected.values()])
    z = ds.z.values
    assert np.isfinite(z[ds.valid.values]).all() and np.isnan(z[~ds.valid.values]).all()
    assert ds.crop.values.tolist()[8] == "centre-square"  # 09_tiny.jpg
    assert summary.invalid == {
        "truncated image": 1,
        "empty file": 1,
        "not an image file": 1,
        "listed but missing": 1,
    }


def test_latents_do_not_depend_on_shards_workers_or_batches(
    faces: Path, checkpoint: Path, tmp_path: Path, on_cluster: ClusterChoice
) -> None:
    runs = {
        "2 workers, shards 10, batch 5": (on_cluster, EncodeOptions(shard_size=10, batch_size=5)),
        "2 workers, shards 50, batch 5": (on_cluster, EncodeOptions(shard_size=50, batch_size=5)),
        "1 worker, shards 120, batch 64": (ClusterChoice(), EncodeOptions(shard_size=120, batch_size=64)),
    }
    latents = {}
    for name, (choice, options) in runs.items():
        out = tmp_path / f"{len(latents)}.zarr"
        if choice.scheduler is None:
            spec = tmp_path / "one.yaml"
            spec.write_text("kind: local\nworkers: 1\n")
            choice = ClusterChoice(spec=spec)
        encode(faces, checkpoint, out, options=options, cluster=choice, progress=False)
        latents[name] = open_latents(out).z.values
    a, b, c = latents.values()
    # the same batches (shard sizes divisible by the batch size): bit-identical
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, c, atol=BATCH_TOLERANCE, rtol=0)


def finished_shards(store: Path) -> int:
    """How many shards a store being written has finished; 0 while its template is made."""
    try:
        return int(zarr.open_array(str(store / "shard_done"), mode="r")[:].sum())
    except FileNotFoundError:
        return 0


def z_bytes(store: Path) -> bytes:
    return np.asarray(zarr.open_array(str(store / "z"), mode="r")[:]).tobytes()


@pytest.fixture(scope="module")
def many_faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from latentdask.data.synthetic_faces import synthesize

    return synthesize(tmp_path_factory.mktemp("many") / "faces", n=1200, seed=3, progress=False)


@pytest.fixture(scope="module")
def clean_run(
    many_faces: Path, checkpoint: Path, tmp_path_factory: pytest.TempPathFactory, on_cluster: ClusterChoice
) -> Path:
    out = tmp_path_factory.mktemp("clean") / "clean.zarr"
    encode(
        many_faces,
        checkpoint,
        out,
        options=EncodeOptions(shard_size=50, batch_size=25),
        cluster=on_cluster,
        progress=False,
    )
    return out


def test_killed_worker_loses_and_duplicates_nothing(
    many_faces: Path, checkpoint: Path, clean_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "faulty.zarr"
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
        ) as local,
        Client(local) as client,
    ):
        pids = client.run(os.getpid)
        result: dict[str, object] = {}

        def run() -> None:
            result["summary"] = encode(
                many_faces,
                checkpoint,
                out,
                options=EncodeOptions(shard_size=50, batch_size=25),
                cluster=ClusterChoice(scheduler=local.scheduler_address),
                progress=False,
            )

        thread = threading.Thread(target=run)
        thread.start()
        victim = None
        deadline = time.monotonic() + 120
        while victim is None and time.monotonic() < deadline and thread.is_alive():
            done = finished_shards(out)
            busy = [w for w, keys in client.processing().items() if keys]
            if done and busy:
                victim = pids[busy[0]]
                os.kill(victim, signal.SIGKILL)
            time.sleep(0.01)
        thread.join(timeout=300)
        assert victim is not None, "the run ended before a worker could be killed"
        assert victim not in client.run(os.getpid).values()  # that worker process is gone
    summary = result["summary"]
    assert summary.shards_total == 24  # type: ignore[attr-defined]
    assert z_bytes(out) == z_bytes(clean_run)
    assert xr.open_zarr(out).shard_done.values.all()


def test_killed_client_resumes_only_unfinished_shards(
    many_faces: Path, checkpoint: Path, clean_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "interrupted.zarr"
    spec = tmp_path / "one.yaml"
    spec.write_text("kind: local\nworkers: 1\n")
    command = [
        sys.executable,
        "-m",
        "latentdask.cli",
        "encode",
        str(many_faces),
        "--model",
        str(checkpoint),
        "--out",
        str(out),
        "--shard-size",
        "50",
        "--batch-size",
        "25",
        "--cluster",
        str(spec),
    ]
    process = subprocess.Popen(
        command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if finished_shards(out) >= 3:
            break
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)  # the client and its local cluster, mid-run
    process.wait()
    finished = zarr.open_array(str(out / "shard_done"), mode="r")[:]
    assert 3 <= finished.sum() < 24, "the client was not killed mid-run"
    summary = encode(
        many_faces,
        checkpoint,
        out,
        options=EncodeOptions(shard_size=50, batch_size=25, resume=True),
        cluster=ClusterChoice(spec=spec),
        progress=False,
    )
    assert summary.shards_run == 24 - finished.sum()
    assert summary.shards_skipped == finished.sum()
    assert z_bytes(out) == z_bytes(clean_run)


@pytest.mark.parametrize("second", ["resume", "overwrite"])
def test_a_second_writer_is_refused_while_the_first_runs(
    many_faces: Path, checkpoint: Path, clean_run: Path, tmp_path: Path, cluster: LocalCluster, second: str
) -> None:
    out = tmp_path / "twice.zarr"
    choice = ClusterChoice(scheduler=cluster.scheduler_address)
    first = threading.Thread(
        target=encode,
        args=(many_faces, checkpoint, out),
        kwargs={"options": EncodeOptions(shard_size=50, batch_size=25), "cluster": choice, "progress": False},
    )
    first.start()
    while finished_shards(out) == 0:
        time.sleep(0.01)
    options = EncodeOptions(shard_size=50, batch_size=25, **{second: True})  # type: ignore[arg-type]
    with pytest.raises(
        StoreLockedError, match=f"is being written by another run: process {os.getpid()} on this"
    ):
        encode(many_faces, checkpoint, out, options=options, cluster=choice, progress=False)
    first.join()
    with Client(cluster.scheduler_address) as client:
        computed = [key for key in client.run_on_scheduler(_computed_keys) if key.startswith("encode-shard-")]
    assert z_bytes(out) == z_bytes(clean_run)
    assert len(computed) == len(set(computed))  # no shard ran twice
    assert not lock_path(out).exists()  # released when the first run ended


def _computed_keys(dask_scheduler: object) -> list[str]:
    """Keys that finished computing (processing → memory), from the scheduler's log."""
    log = dask_scheduler.transition_log  # type: ignore[attr-defined]
    return [str(entry[0]) for entry in log if entry[1] == "processing" and entry[2] == "memory"]


class RestrictionRecorder(SchedulerPlugin):
    """Records the resource restrictions of encode tasks as they start processing."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.seen: list[dict[str, float]] = []

    def transition(self, key: object, start: str, finish: str, *args: object, **kwargs: object) -> None:
        if finish == "processing" and str(key).startswith("encode-shard-"):
            self.seen.append(dict(self.scheduler.tasks[key].resource_restrictions or {}))  # type: ignore[index]


def test_tasks_request_a_gpu_where_workers_declare_one(faces: Path, checkpoint: Path, tmp_path: Path) -> None:
    # CPU workers declaring a GPU resource: the scheduling path of a dask-cuda cluster
    with LocalCluster(
        n_workers=1, threads_per_worker=2, resources={"GPU": 1}, host="127.0.0.1", dashboard_address=":0"
    ) as local:
        recorder = RestrictionRecorder(local.scheduler)
        local.scheduler.add_plugin(recorder, name="restrictions")
        encode(
            faces,
            checkpoint,
            tmp_path / "g.zarr",
            options=EncodeOptions(shard_size=30),
            cluster=ClusterChoice(scheduler=local.scheduler_address),
            progress=False,
        )
    assert recorder.seen == [{"GPU": 1}] * 4
    assert xr.open_zarr(tmp_path / "g.zarr").shard_done.values.all()


def test_paths_a_worker_cannot_see_fail_early(cluster: LocalCluster, tmp_path: Path) -> None:
    from latentdask.cluster.spec import ConfigError
    from latentdask.cluster.workers import check_paths_on_workers

    with Client(cluster.scheduler_address) as client:
        check_paths_on_workers(client, [tmp_path])  # visible: nothing happens
        with pytest.raises(ConfigError, match=r"tcp://127.0.0.1:\d+ cannot see .*nowhere"):
            check_paths_on_workers(client, [tmp_path / "nowhere"])
        # fsspec URLs: checked through their file system on every worker (file:// is a local path)
        check_paths_on_workers(client, [f"file://{tmp_path}"])
        with pytest.raises(ConfigError, match=rf"cannot see {tmp_path}/nowhere, memory://bucket/data"):
            check_paths_on_workers(client, [f"file://{tmp_path}/nowhere", "memory://bucket/data"])
        with pytest.raises(LocationError, match=r"nosuchprotocol://bucket/data: no file system for"):
            check_paths_on_workers(client, ["nosuchprotocol://bucket/data"])


def test_missing_checkpoint_and_dataset(faces: Path, checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(LatentdaskError, match=r"checkpoint folder .* does not exist"):
        encode(faces, tmp_path / "none", tmp_path / "a.zarr", progress=False)
    with pytest.raises(LatentdaskError, match="does not exist"):
        encode(tmp_path / "nodata", checkpoint, tmp_path / "a.zarr", progress=False)
    assert not (tmp_path / "a.zarr").exists()


def test_cluster_spec_errors(faces: Path, checkpoint: Path, tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("kind: address\naddress: tcp://127.0.0.1:1\nworkers: 3\n")
    with pytest.raises(LatentdaskError, match=r"bad.yaml: .*'workers' cannot be set for kind 'address'"):
        encode(faces, checkpoint, tmp_path / "a.zarr", cluster=ClusterChoice(spec=spec), progress=False)
    spec.write_text("kind: local\nworkers: zero\n")
    with pytest.raises(LatentdaskError, match=r"bad.yaml: field 'local.workers'"):
        encode(faces, checkpoint, tmp_path / "b.zarr", cluster=ClusterChoice(spec=spec), progress=False)
    assert LocalSpec().host == "127.0.0.1"


#: Largest difference between bf16/fp16-autocast and fp32 latents allowed, relative to the largest
#: |z| (measured on this CPU: 0.005 for bf16, 0.0005 for fp16; bf16 keeps 8 bits of mantissa)
AUTOCAST_TOLERANCE = {"bf16": 0.02, "fp16": 0.005}


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_stays_within_its_bound(
    faces: Path, checkpoint: Path, tmp_path: Path, on_cluster: ClusterChoice, precision: str
) -> None:
    out = tmp_path / "low.zarr"
    encode(
        faces,
        checkpoint,
        out,
        options=EncodeOptions(shard_size=64, batch_size=32, precision=precision),  # type: ignore[arg-type]
        cluster=on_cluster,
        progress=False,
    )
    reference = reference_latents(faces, checkpoint)
    z = open_latents(out).z.values
    assert not np.array_equal(z, reference)  # the encoder really ran in lower precision
    assert np.abs(z - reference).max() <= AUTOCAST_TOLERANCE[precision] * np.abs(reference).max()
    with pytest.raises(StoreError, match="precision: store has '" + precision + "', this run has 'fp32'"):
        encode(
            faces,
            checkpoint,
            out,
            options=EncodeOptions(shard_size=64, resume=True),
            cluster=on_cluster,
            progress=False,
        )


def _numba_loaded() -> bool:
    return "numba" in sys.modules


def test_an_encode_worker_never_loads_numba(faces: Path, checkpoint: Path, tmp_path: Path) -> None:
    """numba's compiler and kernels are about 130 MiB of a worker: an encode's tasks compute their
    shards' statistics, and its statistics their second pass, with torch, which the worker holds."""
    from latentdask.cluster.connect import connect

    with connect(LocalSpec(workers=1)) as client:
        options = EncodeOptions(shard_size=64, batch_size=16)
        encode(faces, checkpoint, tmp_path / "z.zarr", options=options, client=client, progress=False)
        loaded = client.run(_numba_loaded)
    assert list(loaded.values()) == [False]
    assert (tmp_path / "z-stats.zarr").is_dir()
