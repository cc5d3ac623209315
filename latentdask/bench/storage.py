"""``latentdask bench storage``: a dataset on object storage, read and encoded, against local disk.

Measured in one run over the same synthetic faces, uploaded to an S3 bucket (``--bucket``,
credentials from the environment; by default a local S3-compatible server, moto, started
for the run on 127.0.0.1, so the figures say what the requests cost, not a network):

- **fetch** — every image's bytes, in the pipeline's batches:
  - *fsspec, every image at once* (baseline): ``fs.cat(paths)``, the concurrent fetch a
    person who knows fsspec writes;
  - *latentdask, per batch*: ``Container.read_many`` on each batch of ``batch_size``, as an
    encode's decode threads fetch a batch ahead of the encoder;
  - *one image at a time* (detail): ``fs.cat_file`` per image, as a decode thread reads
    images from a disk — what a batch fetch saves.
- **encode** — ``latentdask encode`` with the dataset and the store on S3, against the same
  command with both on local disk (baseline, same cluster and options): how much of the
  local speed survives the requests, the fetches overlapping the encoder. The two stores'
  latents must be byte-identical.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import zarr

from latentdask.bench.report import BenchReport, local_client, warm_up
from latentdask.data.dataset import open_dataset
from latentdask.data.decode import Preprocessing
from latentdask.data.synthetic_faces import synthesize
from latentdask.encode.options import EncodeOptions
from latentdask.encode.run import encode
from latentdask.errors import LatentdaskError
from latentdask.location import Location, is_remote, location, remove_tree
from latentdask.model.autoencoder import Autoencoder
from latentdask.model.checkpoint import save_checkpoint
from latentdask.model.config import ModelConfig
from latentdask.testing import local_s3_server

if TYPE_CHECKING:
    from upath import UPath


def bench_storage(
    *,
    bucket: str | None = None,
    n: int = 4096,
    shard_size: int = 1024,
    batch_size: int = 256,
    image_size: int = 64,
    latent_dim: int = 256,
    workers: int = 2,
) -> BenchReport:
    """Run both measurements against ``bucket`` (``s3://NAME``), or a local S3 server when None."""
    with tempfile.TemporaryDirectory() as scratch_name, contextlib.ExitStack() as stack:
        scratch = Path(scratch_name)
        if bucket is None:
            stack.enter_context(local_s3_server(scratch / "s3.log"))
            bucket = f"s3://latentdask-bench-{uuid.uuid4().hex[:8]}"
            made = location(bucket)
            if is_remote(made):
                made.fs.mkdir(made.path)
        remote = location(f"{bucket.rstrip('/')}/latentdask-bench-{uuid.uuid4().hex[:8]}")
        if not is_remote(remote):
            raise LatentdaskError(f"--bucket must be an object-storage URL (s3://...), not {bucket}")
        stack.callback(remove_tree, remote)  # only the objects this run wrote, under its own prefix
        return _measure(scratch, remote, n, shard_size, batch_size, image_size, latent_dim, workers)


def _measure(
    scratch: Path,
    remote: UPath,
    n: int,
    shard_size: int,
    batch_size: int,
    image_size: int,
    latent_dim: int,
    workers: int,
) -> BenchReport:
    root = Path(str(synthesize(scratch / "faces", n=n, seed=0, progress=False)))
    remote.fs.put(str(root), f"{remote.path}/faces", recursive=True)
    faces = open_dataset(remote / "faces")
    names = [str(name) for name in faces.manifest.names]
    keys = [f"{remote.path}/faces/img_align_celeba/{name}" for name in names]
    report = BenchReport(
        "object storage: fetch and encode",
        setup={
            "images": n,
            "image_size": image_size,
            "batch_size": batch_size,
            "shard_size": shard_size,
            "workers": workers,
            "endpoint": os.environ.get("AWS_ENDPOINT_URL", "the provider's default"),
            "bytes per image": round(sum(len(faces.read(row)) for row in range(4)) / 4),
        },
    )

    # fetch: the same bytes three ways (the first run of each warms the connections)
    fs = remote.fs
    every = "fsspec: fs.cat of every image at once"
    ours = f"latentdask: Container.read_many, batches of {batch_size}"
    serial = "one image at a time (fs.cat_file, as a thread reads a disk)"
    best: dict[str, float] = {}
    fetched: dict[str, list[bytes]] = {}
    for _ in range(2):
        for name, fetch in (
            (every, lambda: _in_order(fs.cat(keys), keys)),
            (ours, lambda: _batched(faces.container.read_many, names, batch_size)),
            (serial, lambda: [fs.cat_file(key) for key in keys]),
        ):
            started = time.perf_counter()
            fetched[name] = fetch()
            best[name] = max(best.get(name, 0.0), n / (time.perf_counter() - started))
    report.add(every, best[every], "images/s", kind="baseline")
    report.add(ours, best[ours], "images/s", vs=[every])
    report.add(serial, best[serial], "images/s", kind="detail")
    differ = sum(a != b for a, b in zip(fetched[every], fetched[ours], strict=True))
    report.check(every, "bytes of every image: images that differ", float(differ), 0.0)

    # encode: the same command, data and store on local disk, then on S3
    import torch

    torch.manual_seed(0)
    model = Autoencoder(ModelConfig(image_size=image_size, latent_dim=latent_dim)).eval()
    checkpoint = save_checkpoint(scratch / "model", model, Preprocessing(image_size=image_size))
    remote.fs.put(str(checkpoint), f"{remote.path}/model", recursive=True)
    options = EncodeOptions(shard_size=shard_size, batch_size=batch_size)
    on_disk = "latentdask encode, dataset and store on local disk"
    on_s3 = "latentdask encode, dataset and store on S3"
    with local_client(workers) as client:
        client.run(warm_up, "latentdask.encode.task")
        runs: dict[str, tuple[Location, Location, Location]] = {
            on_disk: (root, checkpoint, scratch / "latents.zarr"),
            on_s3: (remote / "faces", remote / "model", remote / "latents.zarr"),
        }
        stores = {}
        for name, (dataset, model_path, out) in runs.items():
            summary = encode(dataset, model_path, out, options=options, client=client, progress=False)
            if name == on_disk:
                report.add(name, summary.images_per_second, "images/s", kind="baseline")
            else:
                report.add(name, summary.images_per_second, "images/s", vs=[on_disk])
            report.setup[f"stage seconds, {'disk' if name == on_disk else 'S3'}"] = {
                k: round(v, 2) for k, v in summary.stage_seconds.items()
            }
            stores[name] = np.asarray(zarr.open_array(str(location(out) / "z"), mode="r")[:])
    differ = int(np.count_nonzero(stores[on_disk].view(np.uint32) != stores[on_s3].view(np.uint32)))
    report.check(on_disk, "latents: values that differ bit for bit", float(differ), 0.0)
    return report


def _in_order(found: dict[str, bytes], keys: Sequence[str]) -> list[bytes]:
    return [found[key] for key in keys]


def _batched(
    read_many: Callable[[Sequence[str]], Sequence[bytes | Exception]], names: list[str], size: int
) -> list[bytes]:
    out: list[bytes] = []
    for start in range(0, len(names), size):
        for data in read_many(names[start : start + size]):
            if isinstance(data, Exception):
                raise data
            out.append(data)
    return out
