"""The worker side of encode: one task per shard, and the model as a worker plugin.

Steps of :func:`encode_shard` (a task, on a worker):

1. Skip the shard if its ``shard_done`` flag is already set.
2. Take the model from this worker's :class:`~latentdask.encode.plugin.ModelPlugin`
   (registered once per run by the client: every worker, also one that joins later, loads
   it once, on its GPU if it has one).
3. Read and decode images in a thread pool, one batch ahead of the encoder, so that
   decoding overlaps with the forward pass; bad images become invalid rows with
   their reason. On object storage a batch's images are fetched together, every
   request in flight at once (``Container.read_many``), by the pool, a batch ahead.
   A shard that killed its worker is retried with each image decoded in a child
   process (:mod:`latentdask.data.isolated`).
4. Encode each batch under ``torch.inference_mode()`` (optionally decode it again
   for the reconstruction error); the latents stay on the model's device until the
   shard is written, and the sidecar statistics are computed there.
5. If the store is still this run's, write the shard's own chunks of ``z``,
   ``valid``, ``error``, ``crop`` (and ``recon_error``) and their checksums; check
   the run once more, then set its ``shard_done`` flag.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from latentdask.data.container import Container
from latentdask.data.decode import Preprocessing, decode_rgb
from latentdask.data.isolated import IsolatedDecoder
from latentdask.data.jpeg import JpegFile, inspect_jpeg
from latentdask.data.manifest import Shard
from latentdask.data.nvjpeg import decode_on_device, require_torchvision
from latentdask.data.opencv import cpu_decoder
from latentdask.encode.plugin import job_model
from latentdask.errors import DatasetError, ImageDecodeError, LatentdaskError
from latentdask.stats.options import SummaryParams
from latentdask.stats.summary import SummaryState, summary_chunk
from latentdask.store.integrity import shard_checksums
from latentdask.store.layout import CHECKSUM_ARRAY, UNDECODABLE, StoreError, columns, store_array

if TYPE_CHECKING:
    import torch


STAGES = ("read", "decode", "encode", "write", "stats")
#: the reasons of a file that could not be read at all (an image that reads but fails to decode is not one)
READ_FAILURES = ("listed but missing", "unreadable file")


@dataclass(frozen=True)
class ShardJob:
    """Everything one shard's task needs; small enough to send to a worker."""

    store: str
    run_id: str  # the writer's: the task writes only while the store's ``writer_run`` still equals it
    shard: Shard
    names: np.ndarray
    present: np.ndarray
    container: Container
    checkpoint: str
    checkpoint_sha256: str
    preprocessing: Preprocessing
    batch_size: int | None  # None: the device's own (:func:`default_batch_size`)
    device: str
    precision: str
    #: "pil" or "opencv" (on the CPU), or "nvjpeg" (JPEGs decoded, cropped and resized on the GPU)
    decoder: str
    decode_threads: int | None
    torch_threads: int | None
    reconstruction_error: bool
    attributes: np.ndarray
    stats_params: SummaryParams | None
    #: decode each image in a child process (the retry of a shard that killed its worker)
    isolate: bool = False


@dataclass
class ShardReport:
    """What a shard's task did."""

    number: int
    images: int
    valid: int
    failures: dict[str, int]
    seconds: dict[str, float]
    skipped: bool = False
    state: SummaryState | None = None  # statistics of the shard's valid rows (the sidecar)


@dataclass
class _Loaded:
    """One row read: its pixels (uint8 HWC), or the JPEG the GPU decodes, or why it is invalid."""

    pixels: np.ndarray | None
    reason: str
    crop: str
    read_seconds: float
    decode_seconds: float
    jpeg: JpegFile | None = None


@dataclass(frozen=True)
class _Fetched:
    """A batch's files fetched together: each one's bytes or its error, and the time the fetch took."""

    data: list[bytes | ImageDecodeError]
    seconds: float


def _fetch(job: ShardJob, rows: range) -> _Fetched:
    t0 = time.perf_counter()
    data = job.container.read_many([str(job.names[i]) for i in rows])
    return _Fetched(data, time.perf_counter() - t0)


def _load(
    job: ShardJob,
    i: int,
    isolated: IsolatedDecoder | None = None,
    fetched: tuple[Future[_Fetched], int] | None = None,
) -> _Loaded:
    """Read row ``i`` (or take it from ``fetched``: its batch's fetch and its place there) and decode it."""
    name = str(job.names[i])
    t0 = time.perf_counter()
    read_seconds = 0.0
    try:
        if not job.present[i]:
            raise ImageDecodeError(name, "listed but missing")
        if isolated is not None:  # read and decoded in a child process: see latentdask.data.isolated
            rgb, crop = isolated.load(job.container, name, job.preprocessing, job.decoder)
            return _Loaded(rgb, "", crop, 0.0, time.perf_counter() - t0)
        if fetched is None:
            data = job.container.read(name)
            read_seconds = time.perf_counter() - t0
        else:
            batch = fetched[0].result()
            read_seconds = batch.seconds / len(batch.data)  # the batch's fetch, shared by its images
            found = batch.data[fetched[1]]
            if isinstance(found, ImageDecodeError):
                raise found
            data = found
        t1 = time.perf_counter()
        if job.decoder == "nvjpeg" and (jpeg := inspect_jpeg(data, job.preprocessing)) is not None:
            return _Loaded(None, "", jpeg.crop, read_seconds, time.perf_counter() - t1, jpeg)
        rgb, crop = cpu_decoder(job.decoder)(data, job.preprocessing, name)
    except ImageDecodeError as exc:
        return _Loaded(None, exc.reason, "", read_seconds, 0.0)
    return _Loaded(rgb, "", crop, read_seconds, time.perf_counter() - t1)


def _load_rows(job: ShardJob, rows: range, fetched: Future[_Fetched] | None, first: int) -> list[_Loaded]:
    """:func:`_load` of each row of ``rows`` (the ``first`` of which is at that place in ``fetched``)."""
    if fetched is None:
        return [_load(job, i) for i in rows]
    return [_load(job, i, None, (fetched, first + k)) for k, i in enumerate(rows)]


def _batches(
    job: ShardJob,
    batch_size: int,
    pool: ThreadPoolExecutor | None,
    threads: int,
    isolated: IsolatedDecoder | None,
) -> Iterator[tuple[int, list[_Loaded]]]:
    """Yield (offset, loaded images) per batch; with a pool, the next batch is already decoding.

    A pool's task decodes a run of rows, not one: a task's own Python costs about as much as
    OpenCV's decode of a CelebA image, and would hold the GIL for all of the threads' share.
    """
    size = job.shard.size
    starts = list(range(0, size, batch_size))
    if pool is None:
        for start in starts:
            yield start, [_load(job, i, isolated) for i in range(start, min(start + batch_size, size))]
        return

    def submit(start: int) -> list[Future[list[_Loaded]]]:
        rows = range(start, min(start + batch_size, size))
        # queued first: the decodes that wait on it come after
        fetched = pool.submit(_fetch, job, rows) if job.container.fetches_together else None
        step = -(-len(rows) // (2 * threads))  # two runs a thread: an even share when some run long
        return [
            pool.submit(_load_rows, job, rows[k : k + step], fetched, k) for k in range(0, len(rows), step)
        ]

    ahead = submit(starts[0]) if starts else []
    for k, start in enumerate(starts):
        current = ahead
        ahead = submit(starts[k + 1]) if k + 1 < len(starts) else []
        yield start, [item for future in current for item in future.result()]


def _on_device(job: ShardJob, loaded: list[_Loaded], start: int, device: torch.device) -> torch.Tensor:
    """The batch's valid images as uint8 (n, 3, size, size) on ``device``, in row order.

    JPEGs left for the GPU are decoded there; one that nvJPEG cannot decode is decoded by
    PIL here, or becomes an invalid row with PIL's reason (``loaded`` is updated in place).
    """
    import torch

    jpegs = [(k, item.jpeg) for k, item in enumerate(loaded) if item.jpeg is not None]
    decoded = None
    if jpegs:
        decoded, failed = decode_on_device([jpeg for _, jpeg in jpegs], job.preprocessing, device)
        for k, jpeg in (jpegs[f] for f in failed):
            item = loaded[k]
            item.jpeg = None
            try:
                item.pixels, item.crop = decode_rgb(jpeg.data, job.preprocessing, str(job.names[start + k]))
            except ImageDecodeError as exc:
                item.reason = exc.reason
    on_gpu = [k for k, item in enumerate(loaded) if item.jpeg is not None]
    on_host = [k for k, item in enumerate(loaded) if item.pixels is not None]
    if decoded is not None and not on_host:
        return decoded
    side = job.preprocessing.image_size
    if not on_host:  # every image of the batch invalid
        return torch.empty((0, 3, side, side), dtype=torch.uint8, device=device)
    pixels = torch.from_numpy(np.stack([item.pixels for item in loaded if item.pixels is not None]))
    if device.type == "cuda":  # pinned host memory: the copy overlaps with the GPU's work
        pixels = pixels.pin_memory()
    # (n, H, W, C) seen as (n, C, H, W): channels-last strides, the model's layout, without a copy
    on_device = pixels.to(device, non_blocking=True).permute(0, 3, 1, 2)
    if decoded is None:
        return on_device
    images = torch.empty(
        (len(on_gpu) + len(on_host), 3, side, side),
        dtype=torch.uint8,
        device=device,
        memory_format=torch.channels_last,
    )
    position = {k: p for p, k in enumerate(sorted(on_gpu + on_host))}
    images[torch.as_tensor([position[k] for k in on_host], dtype=torch.long, device=device)] = on_device
    images[torch.as_tensor([position[k] for k in on_gpu], dtype=torch.long, device=device)] = decoded
    return images


def default_batch_size(device: torch.device) -> int:
    """Images per forward pass where the options name none: 256 on a GPU; 64 on a CPU, as fast as
    256 there with a quarter of the activations' memory (``latentdask bench encode``)."""
    return 256 if device.type == "cuda" else 64


def encoder_autocast(precision: str, device: torch.device) -> Any:
    """bf16/fp16 autocast for the encoder on ``device``; fp32 computes as the model is."""
    import contextlib

    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(
        device_type=device.type, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    )


def _check_still_writer(job: ShardJob) -> None:
    """Stop if another run has taken the store over (a resume or overwrite after this run's client died)."""
    attrs = zarr.open_group(job.store, mode="r").attrs.asdict()
    if attrs.get("writer_run") != job.run_id or attrs.get("model_sha256") != job.checkpoint_sha256:
        raise StoreError(
            f"{job.store} was taken over by another run; shard {job.shard.number} of this run is not written"
        )


def _finished(group: zarr.Group, number: int) -> bool:
    """Whether shard ``number`` is done; a flag whose chunk does not decode is not (it is written anew)."""
    try:
        return bool(store_array(group, "shard_done")[number])
    except UNDECODABLE:  # a chunk that does not decode: this shard's damage, encoded again
        return False


def _check_images_visible(job: ShardJob, failures: Counter[str]) -> None:
    """Refuse to write a shard none of whose images can be read here although the client listed
    some: this worker cannot see the dataset (a mount missing on a cluster's node, no credentials
    for a bucket), and the shard would be done with no valid row. The shard stays to do; the run
    stops with this line. (The client lists the files anew each run: files deleted since are
    rows it knows missing, not this.)"""
    listed = int(np.count_nonzero(job.present))
    unread = sum(n for reason, n in failures.items() if reason.startswith(READ_FAILURES))
    if listed and unread == job.shard.size:
        from distributed import get_worker

        try:
            where = f"worker {get_worker().address}"
        except ValueError:
            where = "this process"
        root = getattr(job.container, "folder", job.container)
        raise DatasetError(
            f"{where} cannot read the images of shard {job.shard.number}: none of the {listed} files "
            f"the client found under {root} can be read there (missing, or no access); the dataset must "
            "be at the same path, readable, on every worker"
        )


def encode_shard(job: ShardJob) -> ShardReport:
    """Encode one shard and write its chunks; see the module docstring for the steps."""
    import torch

    group = zarr.open_group(job.store, mode="r+")
    shard = job.shard
    if _finished(group, shard.number):
        return ShardReport(shard.number, shard.size, 0, {}, {}, skipped=True)
    model, device = job_model(job.checkpoint, job.checkpoint_sha256, job.device, job.torch_threads)
    batch_size = job.batch_size or default_batch_size(device)
    if job.decoder == "nvjpeg":
        if device.type != "cuda":
            raise LatentdaskError(f"--decoder nvjpeg decodes on the GPU; this worker's device is {device}")
        require_torchvision()

    n = shard.size
    # the latents stay on the model's device until the shard is written (and its statistics computed)
    z = torch.full((n, model.config.latent_dim), torch.nan, dtype=torch.float32, device=device)
    valid = np.zeros(n, dtype=bool)
    error = np.full(n, "", dtype=object)
    crop = np.full(n, "", dtype=object)
    recon = np.full(n, np.nan, dtype=np.float32)
    seconds = dict.fromkeys(STAGES, 0.0)
    failures: Counter[str] = Counter()

    threads = job.decode_threads
    if threads is None:  # beside a GPU decoding is the limit: the worker's share of cores per GPU
        threads = (
            max(1, (os.cpu_count() or 1) // max(torch.cuda.device_count(), 1)) if device.type == "cuda" else 1
        )
    isolated = IsolatedDecoder() if job.isolate else None
    pool = ThreadPoolExecutor(threads, "latentdask-decode") if threads and not isolated else None
    try:
        for start, loaded in _batches(job, batch_size, pool, threads, isolated):
            t0 = time.perf_counter()
            pixels = _on_device(job, loaded, start, device)
            seconds["decode"] += time.perf_counter() - t0
            rows = []
            for offset, item in enumerate(loaded):
                seconds["read"] += item.read_seconds
                seconds["decode"] += item.decode_seconds
                if item.reason:
                    error[start + offset] = item.reason
                    failures[item.reason] += 1
                else:
                    rows.append(start + offset)
                    crop[start + offset] = item.crop
            if not rows:
                continue
            t0 = time.perf_counter()
            with torch.inference_mode(), encoder_autocast(job.precision, device):
                images = pixels.float() / 255.0
                latents = model.encode(images)
                z[torch.as_tensor(rows, device=device)] = latents.float()
                if job.reconstruction_error:
                    squared = (model.decode(latents) - images).square()
                    recon[rows] = squared.mean(dim=(1, 2, 3)).float().cpu().numpy()
            valid[rows] = True
            seconds["encode"] += time.perf_counter() - t0
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        if isolated is not None:
            isolated.close()

    _check_images_visible(job, failures)
    t0 = time.perf_counter()
    region = slice(shard.start, shard.stop)
    values = {"z": z.cpu().numpy(), "valid": valid, "error": error.astype(str), "crop": crop.astype(str)}
    if job.reconstruction_error:
        values["recon_error"] = recon
    _check_still_writer(job)
    for name, column in values.items():
        store_array(group, name)[region] = column
    store_array(group, CHECKSUM_ARRAY)[shard.number] = shard_checksums(
        values, columns(job.reconstruction_error)
    )
    _check_still_writer(job)
    store_array(group, "shard_done")[shard.number] = True  # last: the shard's data is on disk
    seconds["write"] = time.perf_counter() - t0
    state = None
    if job.stats_params is not None:
        t0 = time.perf_counter()
        # computed by torch where the latents are (on a GPU worker, the GPU): no numba in an encode worker
        state = summary_chunk(z, valid, job.attributes, params=job.stats_params)
        seconds["stats"] = time.perf_counter() - t0
    return ShardReport(shard.number, n, int(valid.sum()), dict(failures), seconds, state=state)
