"""``latentdask bench encode``: the Dask pipeline against a plain loop and the machine's ceiling.

Measured in one run over the same synthetic files and the same (default, 64 × 64,
256-dim) model, for each decoder (``pil``, ``opencv``): every loop decodes with the decoder
of the pipeline rows it is compared with, so a faster decoder speeds up both sides and the
ratio measures the pipeline.

- **decode only** — the decoder alone on one thread, on a thread per core in one process
  (how a worker's decode threads run: a decoder that holds the GIL does not scale there),
  and in a process per core (what the cores give a decoder that holds the GIL).
- **plain loop** — what a person writes first: one process, the decoder as the pipeline
  uses it, batched forward with torch on all cores, ``np.save`` per batch::

      for batch in batches(files):
          pixels = np.stack([decode(f) for f in batch])
          np.save(out, model.encode(torch.from_numpy(pixels)).numpy())

- **ceiling** (a bound) — cores ÷ (decode time + encoder time per image, each measured on
  one thread, the encoder as the workers run it): on a CPU machine decoding and encoding
  share the cores, so no layout of processes and threads can beat it.
- **multi-process loop** — one plain process per core, no Dask, each decoding and
  encoding whole shards with one torch thread and writing them into a Zarr array on
  disk laid out as the store's ``z`` (and ``valid``): what the cores deliver when all of
  them work at once (on a shared VM, less than the ceiling).
- **pipeline** — ``latentdask encode --decoder D`` on a LocalCluster with each worker
  layout; images/s from the first task submitted to the last result (cluster start-up
  apart), and the peak resident memory of each worker process. It also writes the error
  and crop columns and checksums and computes the sidecar statistics, which the loops do
  not (their seconds are in ``stage seconds``, of the last round).

The multi-process loop and the pipeline take turns, ``rounds`` times (a slow spell of a shared
machine then falls on both); each of their rows is the median of its rounds, and every round's
figure is in the setup.

Every process that encodes, the pipeline's workers and the loops' processes alike, keeps freed
memory for the next batch (:func:`~latentdask.encode.allocator.retain_freed_memory`), so the
ratios measure the pipeline, not the allocator.

The loops' latents must equal the pipeline's (first layout, same decoder) within float32
rounding of torch on other thread counts: largest |difference| ≤ 1e-4 × the largest |latent|.
"""

from __future__ import annotations

import copy
import functools
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import zarr

from latentdask.bench.report import BenchReport, local_client, relative_difference, warm_up
from latentdask.data.dataset import ImageDataset, open_dataset
from latentdask.data.decode import Preprocessing
from latentdask.data.opencv import cpu_decoder
from latentdask.data.synthetic_faces import synthesize
from latentdask.encode.allocator import retain_freed_memory
from latentdask.encode.options import EncodeOptions
from latentdask.encode.run import encode
from latentdask.location import Location, location
from latentdask.model.autoencoder import Autoencoder, for_inference
from latentdask.model.checkpoint import save_checkpoint
from latentdask.model.config import ModelConfig
from latentdask.store.layout import create_latents

#: float32 latents from torch on other thread counts and weight layouts: relative to the largest |latent|
LATENT_TOLERANCE = 1e-4
#: the library each decoder imports on first use: imported before the clock, on both sides
DECODER_MODULES = {"pil": "PIL.Image", "opencv": "cv2"}


class SyntheticCorpus(NamedTuple):
    """What the encode benchmarks run on: ``synth``'s faces (``root``, opened as ``dataset``), an
    untrained seeded model and its checkpoint, and every file's bytes (read once, as a loop would)."""

    root: Location
    dataset: ImageDataset
    model: Autoencoder
    prep: Preprocessing
    checkpoint: Location
    files: list[bytes]
    synth_seconds: float


def synthetic_corpus(scratch: Path, *, n: int, image_size: int, latent_dim: int) -> SyntheticCorpus:
    """``n`` synthetic faces under ``scratch/faces`` and a seeded model under ``scratch/model``."""
    started = time.perf_counter()
    root = synthesize(scratch / "faces", n=n, seed=0, progress=False)
    synth_seconds = time.perf_counter() - started
    torch.manual_seed(0)
    model = Autoencoder(ModelConfig(image_size=image_size, latent_dim=latent_dim)).eval()
    prep = Preprocessing(image_size=image_size)
    checkpoint = save_checkpoint(scratch / "model", model, prep)
    dataset = open_dataset(root)
    files = [dataset.read(row) for row in range(len(dataset.manifest))]
    return SyntheticCorpus(root, dataset, model, prep, checkpoint, files, synth_seconds)


def plain_loop(
    files: list[bytes], model: Autoencoder, prep: Preprocessing, batch_size: int, out: Path, decoder: str
) -> None:
    decode = cpu_decoder(decoder)
    with torch.inference_mode():
        for k, start in enumerate(range(0, len(files), batch_size)):
            pixels = np.stack([decode(data, prep)[0] for data in files[start : start + batch_size]])
            images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
            np.save(out / f"{k}.npy", model.encode(images).numpy())


def encoder_seconds(files: list[bytes], model: Autoencoder, prep: Preprocessing, batch_size: int) -> float:
    """The encoder's seconds per image on one thread, as the workers run it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pixels = np.stack([cpu_decoder("pil")(data, prep)[0] for data in files[:batch_size]])
        images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
        pipeline_model = for_inference(copy.deepcopy(model), torch.device("cpu"))  # as the workers run it
        with torch.inference_mode():
            pipeline_model.encode(images)  # warm-up
            started = time.perf_counter()
            for _ in range(3):
                pipeline_model.encode(images)
            return (time.perf_counter() - started) / (3 * len(images))
    finally:
        torch.set_num_threads(threads)


def _decode_all(files: list[bytes], prep: Preprocessing, decoder: str) -> int:
    decode = cpu_decoder(decoder)
    for data in files:
        decode(data, prep)
    return len(files)


def decode_rates(files: list[bytes], prep: Preprocessing, decoder: str, cores: int) -> tuple[float, ...]:
    """Images/s of ``decoder`` alone: on one thread, a thread per core of one process, a process per core
    (each worker of a pool given its own share of the files, started and warm before the clock)."""
    import multiprocessing

    shares = [files[k::cores] for k in range(cores)]
    _decode_all(files[:8], prep, decoder)  # imports and first calls, untimed
    started = time.perf_counter()
    _decode_all(files, prep, decoder)
    one = len(files) / (time.perf_counter() - started)
    rates = [one]
    spawn = multiprocessing.get_context("spawn")
    for pool in (ThreadPoolExecutor(cores), ProcessPoolExecutor(cores, mp_context=spawn)):
        with pool:
            list(pool.map(_decode_all, [share[:8] for share in shares], [prep] * cores, [decoder] * cores))
            started = time.perf_counter()
            done = sum(pool.map(_decode_all, shares, [prep] * cores, [decoder] * cores))
            rates.append(done / (time.perf_counter() - started))
    return tuple(rates)


@functools.cache
def _inference_model(checkpoint: str) -> tuple[Autoencoder, Preprocessing]:
    """The checkpoint's model as the workers run it, loaded once per process."""
    from latentdask.model.checkpoint import load_checkpoint

    loaded = load_checkpoint(checkpoint)
    return for_inference(loaded.model, torch.device("cpu")), loaded.preprocessing


def _start_process(checkpoint: str, decoder: str) -> None:
    """Every process of the multi-process loop, before its first task (untimed): one torch
    thread, the warm-up the pipeline's workers get, the model loaded and run once."""
    torch.set_num_threads(1)
    retain_freed_memory()
    warm_up(DECODER_MODULES[decoder], kernels=False)
    model, prep = _inference_model(checkpoint)
    with torch.inference_mode():
        model.encode(torch.zeros(1, 3, prep.image_size, prep.image_size))


def _process_share(
    shards: list[tuple[int, int]],
    paths: list[str],
    checkpoint: str,
    batch_size: int,
    store: str,
    decoder: str,
) -> int:
    """One process of the multi-process loop: decode and encode its shards with one torch
    thread, and write each into the Zarr arrays ``z`` and ``valid`` at ``store``."""
    model, prep = _inference_model(checkpoint)
    decode = cpu_decoder(decoder)
    group = zarr.open_group(store, mode="r+")
    z, valid = group["z"], group["valid"]
    assert isinstance(z, zarr.Array) and isinstance(valid, zarr.Array)
    done = 0
    with torch.inference_mode():
        for start, stop in shards:
            latents = []
            for b0 in range(start, stop, batch_size):
                pixels = np.stack(
                    [decode(Path(p).read_bytes(), prep)[0] for p in paths[b0 : min(b0 + batch_size, stop)]]
                )
                images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
                latents.append(model.encode(images).numpy())
            z[start:stop] = np.concatenate(latents)
            valid[start:stop] = True
            done += stop - start
    return done


def multi_process_loop(
    paths: list[str],
    checkpoint: str,
    *,
    batch_size: int,
    shard_size: int,
    latent_dim: int,
    store: Path,
    decoder: str,
) -> float:
    """Images/s of one plain process per core sharing the shards, no Dask: what the cores
    deliver when they all decode, encode and write at once (start-up excluded)."""
    import multiprocessing

    n, processes = len(paths), os.cpu_count() or 1
    group = zarr.open_group(str(store), mode="w")
    create_latents(group, n, latent_dim, shard_size)  # laid out as the store's own
    group.create_array("valid", shape=(n,), chunks=(shard_size,), dtype=bool, fill_value=False)
    shards = [(start, min(start + shard_size, n)) for start in range(0, n, shard_size)]
    shares = [shards[k::processes] for k in range(processes)]
    common = (
        [checkpoint] * processes,
        [batch_size] * processes,
        [str(store)] * processes,
        [decoder] * processes,
    )
    with ProcessPoolExecutor(
        processes,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_process,
        initargs=(checkpoint, decoder),
    ) as pool:
        # every process started and warm before the clock starts
        list(pool.map(_start_process, [checkpoint] * processes, [decoder] * processes))
        started = time.perf_counter()
        done = sum(pool.map(_process_share, shares, [paths] * processes, *common))
        seconds = time.perf_counter() - started  # before the pool shuts its processes down
    return done / seconds


def _peak_rss_mib() -> float:
    """This process's resident-memory high-water mark (VmHWM; ru_maxrss would count the
    parent a spawned worker was forked from)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_encode(
    *,
    n: int = 8192,
    shard_size: int = 1024,
    batch_size: int = 64,
    image_size: int = 64,
    latent_dim: int = 256,
    layouts: tuple[tuple[int, int, int], ...] = ((1, 2, 2), (2, 1, 1), (2, 1, 0)),
    decoders: tuple[str, ...] = ("pil", "opencv"),
    rounds: int = 3,
) -> BenchReport:
    """Run the measurements per decoder; ``layouts`` are (workers, torch threads, decode threads);
    the multi-process loop and the pipeline take ``rounds`` turns each (the median is reported)."""
    if rounds < 1:
        raise ValueError(f"bench encode needs at least one round, got {rounds}")
    cores = os.cpu_count() or 1
    retain_freed_memory()  # as the workers do: this process runs the plain loop and times the encoder
    report = BenchReport(
        "encode pipeline",
        setup={
            "images": n,
            "image_size": image_size,
            "latent_dim": latent_dim,
            "shard_size": shard_size,
            "batch_size": batch_size,
            "cores": cores,
            "rounds": rounds,
        },
    )
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        root, dataset, model, prep, checkpoint, files, _ = synthetic_corpus(
            scratch, n=n, image_size=image_size, latent_dim=latent_dim
        )
        encoder = encoder_seconds(files, model, prep, batch_size)
        report.setup["encode_ms_per_image"] = round(encoder * 1e3, 3)
        folder = location(getattr(dataset.container, "folder", root))
        paths = [str(folder / name) for name in dataset.manifest.names]
        for decoder in decoders:
            _bench_decoder(
                report,
                decoder,
                scratch,
                root,
                dataset,
                model,
                prep,
                checkpoint,
                files,
                paths,
                encoder=encoder,
                cores=cores,
                batch_size=batch_size,
                shard_size=shard_size,
                latent_dim=latent_dim,
                layouts=layouts,
                rounds=rounds,
            )
    return report


def _bench_decoder(
    report: BenchReport,
    decoder: str,
    scratch: Path,
    root: Location,
    dataset: ImageDataset,
    model: Autoencoder,
    prep: Preprocessing,
    checkpoint: Location,
    files: list[bytes],
    paths: list[str],
    *,
    encoder: float,
    cores: int,
    batch_size: int,
    shard_size: int,
    latent_dim: int,
    layouts: tuple[tuple[int, int, int], ...],
    rounds: int,
) -> None:
    """The rows of one decoder: decode alone, the ceiling, both loops and the pipeline per layout."""
    n = len(files)
    one, threads, processes = decode_rates(files, prep, decoder, cores)
    report.add(f"{decoder}: decode only, 1 thread", one, "images/s")
    report.add(f"{decoder}: decode only, {cores} threads of one process", threads, "images/s")
    report.add(f"{decoder}: decode only, {cores} processes", processes, "images/s")
    report.setup[f"{decoder}: decode_ms_per_image"] = round(1e3 / one, 3)
    ceiling = f"{decoder}: ceiling: cores / (decode + encode per image, one thread each)"
    plain = f"{decoder}: plain loop (one process, torch on all cores, np.save per batch)"
    multi = f"{decoder}: multi-process loop ({cores} processes x 1 thread, no Dask, Zarr on disk)"
    report.add(ceiling, cores / (1 / one + encoder), "images/s", kind="bound")

    # plain loop (files already in memory would flatter it: it reads them like the pipeline)
    (scratch / f"plain-{decoder}").mkdir()
    torch.set_num_threads(cores)
    started = time.perf_counter()
    plain_loop(
        [dataset.read(row) for row in range(n)],
        model,
        prep,
        batch_size,
        scratch / f"plain-{decoder}",
        decoder,
    )
    report.add(plain, n / (time.perf_counter() - started), "images/s", kind="baseline")
    batches = sorted((scratch / f"plain-{decoder}").glob("*.npy"), key=lambda path: int(path.stem))
    plain_z = np.concatenate([np.load(path) for path in batches])

    # the multi-process loop and the pipeline alternate, round after round: a slow spell of a
    # shared machine falls on both, and each row is the median of its rounds
    names = {
        layout: f"{decoder}: latentdask encode: {layout[0]} worker(s) x torch {layout[1]} "
        f"+ decode {layout[2]} threads"
        for layout in layouts
    }
    rates: dict[str, list[float]] = {multi: [], **{name: [] for name in names.values()}}
    peaks: dict[str, float] = {}
    reference: np.ndarray | None = None
    for k in range(rounds):
        loop_store = scratch / f"loop-{decoder}-{k}.zarr"
        rates[multi].append(
            multi_process_loop(
                paths,
                str(checkpoint),
                batch_size=batch_size,
                shard_size=shard_size,
                latent_dim=latent_dim,
                store=loop_store,
                decoder=decoder,
            )
        )
        if k == 0:
            multi_z = np.asarray(zarr.open_array(str(loop_store / "z"), mode="r")[:])
        for (workers, torch_threads, decode_threads), name in names.items():
            with local_client(workers) as client:
                client.run(warm_up, "latentdask.encode.task", DECODER_MODULES[decoder], kernels=False)
                options = EncodeOptions(
                    shard_size=shard_size,
                    batch_size=batch_size,
                    torch_threads=torch_threads,
                    decode_threads=decode_threads,
                    decoder=decoder,  # type: ignore[arg-type]
                )
                summary = encode(
                    root,
                    checkpoint,
                    scratch / f"{decoder}-{workers}-{torch_threads}-{decode_threads}-{k}.zarr",
                    options=options,
                    client=client,
                    progress=False,
                )
                peaks[name] = max(peaks.get(name, 0.0), *client.run(_peak_rss_mib).values())
            if reference is None:
                reference = np.asarray(zarr.open_array(str(summary.store / "z"), mode="r")[:])
            rates[name].append(summary.images_per_second)
            report.setup[
                f"{decoder}: stage seconds, {workers} worker(s) x {decode_threads} decode threads"
            ] = {stage: round(v, 2) for stage, v in summary.stage_seconds.items()}
    report.add(multi, float(np.median(rates[multi])), "images/s", kind="baseline", vs=[ceiling])
    for name in names.values():
        report.add(name, float(np.median(rates[name])), "images/s", vs=[plain, multi, ceiling])
        report.add(f"{name}: peak RSS per worker", peaks[name], "MiB")
    report.setup[f"{decoder}: images/s per round"] = {
        name: [round(rate) for rate in values] for name, values in rates.items()
    }
    if reference is not None:
        for baseline, theirs in ((plain, plain_z), (multi, multi_z)):
            report.check(
                baseline,
                "latents: largest |difference| / largest |latent|",
                relative_difference(reference, theirs),
                LATENT_TOLERANCE,
            )
