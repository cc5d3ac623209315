"""``latentdask bench encode``: the Dask pipeline against a plain loop and the machine's ceiling.

Measured in one run over the same synthetic files and the same (default, 64 × 64,
256-dim) model:

- **plain loop** — what a person writes first: one process, PIL decode as the
  pipeline does it, batched forward with torch on all cores, ``np.save`` per batch::

      for batch in batches(files):
          pixels = np.stack([decode(f) for f in batch])
          np.save(out, model.encode(torch.from_numpy(pixels)).numpy())

- **ceiling** — cores ÷ (decode time + encoder time per image, each measured on one
  thread, the encoder as the workers run it): on a CPU machine decoding and encoding
  share the cores, so no layout of processes and threads can beat it.
- **multi-process loop** — one plain process per core, each decoding and encoding its
  share of the files with one torch thread, no Dask: what the cores deliver when all
  of them work at once (on a shared VM, less than the ceiling).
- **pipeline** — ``latentdask encode`` on a LocalCluster with each worker layout;
  images/s from the first task submitted to the last result (cluster start-up apart),
  and the peak resident memory of each worker process.
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from latentdask.bench.report import BenchReport, local_client
from latentdask.data.dataset import open_dataset
from latentdask.data.decode import Preprocessing, decode_rgb
from latentdask.data.synthetic_faces import synthesize
from latentdask.encode.run import EncodeOptions, encode
from latentdask.model.autoencoder import Autoencoder, for_inference
from latentdask.model.checkpoint import save_checkpoint
from latentdask.model.config import ModelConfig


def plain_loop(
    files: list[bytes], model: Autoencoder, prep: Preprocessing, batch_size: int, out: Path
) -> None:
    with torch.inference_mode():
        for k, start in enumerate(range(0, len(files), batch_size)):
            pixels = np.stack([decode_rgb(data, prep)[0] for data in files[start : start + batch_size]])
            images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
            np.save(out / f"{k}.npy", model.encode(images).numpy())


def single_thread_seconds(
    files: list[bytes], model: Autoencoder, prep: Preprocessing, batch_size: int
) -> tuple[float, float]:
    """(decode seconds per image, encoder seconds per image), each on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sample = files[: min(len(files), 1024)]
        started = time.perf_counter()
        pixels = np.stack([decode_rgb(data, prep)[0] for data in sample])
        decode = (time.perf_counter() - started) / len(sample)
        images = torch.from_numpy(pixels[:batch_size]).permute(0, 3, 1, 2).float() / 255.0
        pipeline_model = for_inference(copy.deepcopy(model), torch.device("cpu"))  # as the workers run it
        with torch.inference_mode():
            pipeline_model.encode(images)  # warm-up
            started = time.perf_counter()
            for _ in range(3):
                pipeline_model.encode(images)
            encoder = (time.perf_counter() - started) / (3 * len(images))
    finally:
        torch.set_num_threads(threads)
    return decode, encoder


def _process_share(paths: list[str], checkpoint: str, batch_size: int) -> int:
    """One process of the multi-process loop: decode and encode its files, one torch thread."""
    torch.set_num_threads(1)
    from latentdask.model.checkpoint import load_checkpoint

    loaded = load_checkpoint(checkpoint)
    model = for_inference(loaded.model, torch.device("cpu"))
    prep = loaded.preprocessing
    with torch.inference_mode():
        for start in range(0, len(paths), batch_size):
            pixels = np.stack(
                [decode_rgb(Path(p).read_bytes(), prep)[0] for p in paths[start : start + batch_size]]
            )
            model.encode(torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0)
    return len(paths)


def multi_process_loop(paths: list[str], checkpoint: str, batch_size: int, processes: int) -> float:
    """Images/s of ``processes`` plain processes sharing the files, no Dask: what the
    cores deliver when they all decode and encode at once (start-up excluded)."""
    import multiprocessing

    shares = [paths[k::processes] for k in range(processes)]
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(
            pool.map(
                _process_share,
                [s[:batch_size] for s in shares],
                [checkpoint] * processes,
                [batch_size] * processes,
            )
        )
        started = time.perf_counter()
        done = sum(pool.map(_process_share, shares, [checkpoint] * processes, [batch_size] * processes))
    return done / (time.perf_counter() - started)


def _import_torch() -> None:
    """Warm-up: a fresh worker process pays ~1 s to import torch, once in its life."""
    import torch  # noqa: F401

    import latentdask.model.checkpoint  # noqa: F401


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
    batch_size: int = 256,
    image_size: int = 64,
    latent_dim: int = 256,
    layouts: tuple[tuple[int, int, int], ...] = ((1, 2, 2), (2, 1, 1), (2, 1, 0)),
) -> BenchReport:
    """Run the three measurements; ``layouts`` are (workers, torch threads, decode threads)."""
    cores = os.cpu_count() or 1
    report = BenchReport(
        "encode pipeline",
        setup={
            "images": n,
            "image_size": image_size,
            "latent_dim": latent_dim,
            "shard_size": shard_size,
            "batch_size": batch_size,
            "cores": cores,
        },
    )
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        root = synthesize(scratch / "faces", n=n, seed=0, progress=False)
        torch.manual_seed(0)
        model = Autoencoder(ModelConfig(image_size=image_size, latent_dim=latent_dim)).eval()
        prep = Preprocessing(image_size=image_size)
        checkpoint = save_checkpoint(scratch / "model", model, prep)
        dataset = open_dataset(root)
        files = [dataset.read(row) for row in range(len(dataset.manifest))]

        # ceiling
        decode, encoder = single_thread_seconds(files, model, prep, batch_size)
        report.add("ceiling: cores / (decode + encode per image)", cores / (decode + encoder), "images/s")
        report.setup |= {
            "decode_ms_per_image": round(decode * 1e3, 3),
            "encode_ms_per_image": round(encoder * 1e3, 3),
        }

        # plain loop (files already in memory would flatter it: it reads them like the pipeline)
        (scratch / "plain").mkdir()
        torch.set_num_threads(cores)
        started = time.perf_counter()
        plain_loop([dataset.read(row) for row in range(n)], model, prep, batch_size, scratch / "plain")
        report.add(
            "plain loop (one process, torch on all cores)", n / (time.perf_counter() - started), "images/s"
        )

        # all cores busy at once, no Dask: shows what sharing the cores costs on this machine
        folder = Path(getattr(dataset.container, "folder", root))
        paths = [str(folder / name) for name in dataset.manifest.names]
        report.add(
            f"multi-process loop ({cores} processes x 1 thread, no Dask)",
            multi_process_loop(paths, str(checkpoint), batch_size, cores),
            "images/s",
            baseline="ceiling: cores / (decode + encode per image)",
        )

        # the pipeline, per layout
        for workers, torch_threads, decode_threads in layouts:
            name = (
                f"latentdask encode: {workers} worker(s) x torch {torch_threads} "
                f"+ decode {decode_threads} threads"
            )
            with local_client(workers) as client:
                client.run(_import_torch)
                options = EncodeOptions(
                    shard_size=shard_size,
                    batch_size=batch_size,
                    torch_threads=torch_threads,
                    decode_threads=decode_threads,
                )
                summary = encode(
                    root,
                    checkpoint,
                    scratch / f"{name}.zarr",
                    options=options,
                    client=client,
                    progress=False,
                )
                peaks = client.run(_peak_rss_mib)
            row = report.add(
                name,
                summary.images_per_second,
                "images/s",
                baseline="plain loop (one process, torch on all cores)",
            )
            report.add(
                f"{name}: share of ceiling",
                row.value,
                "images/s",
                baseline="ceiling: cores / (decode + encode per image)",
            )
            report.add(
                f"{name}: share of multi-process loop",
                row.value,
                "images/s",
                baseline=f"multi-process loop ({cores} processes x 1 thread, no Dask)",
            )
            report.add(f"{name}: peak RSS per worker", max(peaks.values()), "MiB")
            report.setup[f"stage seconds, {workers} worker(s)"] = {
                k: round(v, 2) for k, v in summary.stage_seconds.items()
            }
    return report
