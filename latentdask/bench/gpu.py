"""``latentdask bench encode --device cuda`` and ``bench stats --device cuda``: a CUDA GPU.

**encode** — a synthetic corpus of 178 × 218 JPEGs (``synth``, one file per image)
encoded at 64 × 64 into a store, with, in the same run and over the same files:

- *CPU decode only* — per CPU decoder (``pil``, the PIL path in draft mode; ``opencv``,
  outside the GIL) on as many threads as cores, files in memory: the rate that decoder
  can feed a GPU;
- *nvJPEG decode only* — header checks on the same threads, then batched nvJPEG, crop
  and resize on the GPU (:mod:`latentdask.data.nvjpeg`), files in memory;
- *encoder only* — the model on device-resident uint8 batches (conversion included);
- *ceiling* (a bound) per decoder — the slower of its decode stage and the encoder:
  the pipeline runs both at once, so it cannot beat the slower;
- *plain GPU loop* (a baseline) per CPU decoder — what a skilled person writes: the same
  decode on as many threads as cores, a batch ahead, pinned memory, the model on the GPU,
  latents back per batch, ``np.save`` per batch; its latents must equal the store's of
  the same decoder;
- *latentdask encode* per decoder, on a ``LocalCluster`` of one GPU worker
  (``resources={"GPU": 1}``): images/s from the first task to the last result; it also
  reads the files, writes every column with checksums and computes the sidecar statistics.

**stats** — the statistics pass over device-resident float32 blocks: latentdask's
:func:`~latentdask.stats.summary.summary_chunk` on torch tensors (per block, states back
on the host, merged) against a torch baseline of the same figures written
independently: raw power sums in float64 and ``XᵀX`` by ``torch.mm``,
``torch.bucketize`` + ``bincount`` histograms, slice pairs as ``OᵀO`` of the outside
indicators. Counts must be equal and moments agree to float64 rounding.
"""

from __future__ import annotations

import os
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr

from latentdask.bench.encode import synthetic_corpus
from latentdask.bench.report import BenchReport, count_difference, relative_difference, warm_up
from latentdask.data.decode import Preprocessing
from latentdask.data.jpeg import inspect_jpeg
from latentdask.data.nvjpeg import decode_on_device
from latentdask.data.opencv import cpu_decoder
from latentdask.encode.options import EncodeOptions
from latentdask.encode.run import encode
from latentdask.encode.task import encoder_autocast
from latentdask.errors import LatentdaskError
from latentdask.model.autoencoder import Autoencoder, for_inference
from latentdask.progress import console
from latentdask.stats.options import SummaryParams
from latentdask.stats.summary import SummaryState, summary_chunk, summary_combine

#: float32 latents of the same pixels from the same GPU in other batch shapes (cuDNN picks
#: kernels per shape, TF32 included): relative to the largest |latent|
GPU_LATENT_TOLERANCE = 5e-3

#: the decoders that decode on the CPU's threads, each measured alone, in a plain loop and in the pipeline
CPU_DECODERS = ("pil", "opencv")
#: moments of a baseline that sums raw powers in float64, relative to latentdask's
MOMENT_TOLERANCE = 1e-8


def cuda_device() -> torch.device:
    if not torch.cuda.is_available():
        raise LatentdaskError("--device cuda needs a CUDA GPU (torch sees none)")
    return torch.device("cuda")


def _synchronized_seconds(device: torch.device, started: float) -> float:
    torch.cuda.synchronize(device)
    return time.perf_counter() - started


def _measured(report: BenchReport, name: str, value: float, unit: str, **kwargs: Any) -> None:
    """Record a row and say it at once: a long run shows each figure as it comes."""
    report.add(name, value, unit, **kwargs)
    console.print(f"  {name}: {value:,.0f} {unit}")


def _batched(items: list[Any], size: int) -> list[list[Any]]:
    return [items[k : k + size] for k in range(0, len(items), size)]


def _decode_run(decoder: str, files: list[bytes], prep: Preprocessing) -> list[np.ndarray]:
    decode = cpu_decoder(decoder)
    return [decode(data, prep)[0] for data in files]


def _runs(files: list[bytes], threads: int) -> list[list[bytes]]:
    """Two runs of files a thread, as the pipeline's decode threads take them (a task a file would
    cost as much Python, under the GIL, as a GIL-free decoder's whole decode)."""
    step = max(1, -(-len(files) // (2 * threads)))
    return [files[k : k + step] for k in range(0, len(files), step)]


def cpu_decode_rate(files: list[bytes], prep: Preprocessing, threads: int, decoder: str) -> float:
    """Images/s of the CPU ``decoder`` on ``threads`` threads (files in memory, runs of them a task)."""
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(_decode_run, [decoder] * threads, [[f] for f in files[:threads]], [prep] * threads))
        started = time.perf_counter()
        batches = _batched(files, 1024)
        for batch in batches:
            runs = _runs(batch, threads)
            list(pool.map(_decode_run, [decoder] * len(runs), runs, [prep] * len(runs)))
        return len(files) / (time.perf_counter() - started)


def nvjpeg_decode_rate(
    files: list[bytes], prep: Preprocessing, threads: int, batch_size: int, device: torch.device
) -> float:
    """Images/s of header checks on ``threads`` threads and nvJPEG + crop + resize on ``device``."""

    def one_batch(batch: list[bytes]) -> torch.Tensor:
        jpegs = [j for j in pool.map(inspect_jpeg, batch, [prep] * len(batch)) if j is not None]
        return decode_on_device(jpegs, prep, device)[0]

    with ThreadPoolExecutor(threads) as pool:
        one_batch(files[:batch_size])  # nvJPEG's handles and buffers made
        torch.cuda.synchronize(device)
        started = time.perf_counter()
        for batch in _batched(files, batch_size):
            one_batch(batch)
        return len(files) / _synchronized_seconds(device, started)


def encoder_rate(
    model: Autoencoder, pixels: torch.Tensor, precision: str, repeats: int, device: torch.device
) -> float:
    """Images/s of the encoder on a device-resident uint8 batch (conversion to float included)."""
    with torch.inference_mode(), encoder_autocast(precision, device):
        model.encode(pixels.float() / 255.0)
        torch.cuda.synchronize(device)
        started = time.perf_counter()
        for _ in range(repeats):
            model.encode(pixels.float() / 255.0)
        return repeats * len(pixels) / _synchronized_seconds(device, started)


def plain_gpu_loop(
    files: list[bytes],
    model: Autoencoder,
    prep: Preprocessing,
    *,
    batch_size: int,
    threads: int,
    precision: str,
    device: torch.device,
    out: Path,
    decoder: str,
) -> float:
    """Images/s of the skilled person's loop (see the module docstring); latents in ``out``."""

    def submit(batch: list[bytes]) -> list[Future[list[np.ndarray]]]:
        return [pool.submit(_decode_run, decoder, run, prep) for run in _runs(batch, threads)]

    batches = _batched(files, batch_size)
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool, torch.inference_mode(), encoder_autocast(precision, device):
        # the batch's images decoded by all threads at once, the next batch's already queued
        ahead = submit(batches[0])
        for k in range(len(batches)):
            current = ahead
            if k + 1 < len(batches):
                ahead = submit(batches[k + 1])
            pixels = torch.from_numpy(np.stack([p for f in current for p in f.result()])).pin_memory()
            images = pixels.to(device, non_blocking=True).permute(0, 3, 1, 2).float() / 255.0
            np.save(out / f"{k}.npy", model.encode(images).float().cpu().numpy())
    return len(files) / (time.perf_counter() - started)


def bench_encode_gpu(
    *,
    n: int = 200_000,
    shard_size: int = 16_384,
    batch_size: int = 1024,
    image_size: int = 64,
    latent_dim: int = 256,
    precision: str = "fp32",
    sample: int = 50_000,
    decoders: tuple[str, ...] = ("pil", "opencv", "nvjpeg"),
) -> BenchReport:
    """The measurements of the module docstring, for ``decoders`` (in that order); ``sample`` images
    for the stage-only rates."""
    from distributed import Client, LocalCluster

    device = cuda_device()
    cores = os.cpu_count() or 1
    report = BenchReport(
        "encode pipeline on a GPU",
        setup={
            "images": n,
            "image_size": image_size,
            "latent_dim": latent_dim,
            "shard_size": shard_size,
            "batch_size": batch_size,
            "precision": precision,
            "cores": cores,
            "gpu": torch.cuda.get_device_name(device),
            "torch": torch.__version__,
        },
    )
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        root, _, model, prep, checkpoint, files, synth_seconds = synthetic_corpus(
            scratch, n=n, image_size=image_size, latent_dim=latent_dim
        )
        report.setup["synth seconds"] = round(synth_seconds, 1)
        console.print(f"  {n:,} faces synthesized in {report.setup['synth seconds']} s")
        stage = files[: min(sample, n)]
        on_device = for_inference(model, device)

        on_cpu = [decoder for decoder in decoders if decoder in CPU_DECODERS]
        rates = {decoder: cpu_decode_rate(stage, prep, cores, decoder) for decoder in on_cpu}
        if "nvjpeg" in decoders:
            rates["nvjpeg"] = nvjpeg_decode_rate(stage, prep, cores, batch_size, device)
        # one batch on the device as the pipeline puts decoded images there (NHWC → NCHW, channels last)
        pixels = np.stack([cpu_decoder("pil")(data, prep)[0] for data in stage[:batch_size]])
        resident = torch.from_numpy(pixels).to(device).permute(0, 3, 1, 2)
        enc_rate = encoder_rate(on_device, resident, precision, max(1, sample // batch_size), device)
        for decoder, rate in rates.items():
            alone = "nvJPEG, headers" if decoder == "nvjpeg" else decoder
            _measured(report, f"decode only ({alone} on {cores} threads)", rate, "images/s", kind="detail")
        encoder = f"encoder only ({precision}, device-resident batches)"
        _measured(report, encoder, enc_rate, "images/s", kind="detail")
        for decoder, rate in rates.items():
            report.add(
                f"ceiling, {decoder}: min(decode, encoder)", min(rate, enc_rate), "images/s", kind="bound"
            )

        plains: dict[str, str] = {}
        plain_z: dict[str, np.ndarray] = {}
        for decoder in on_cpu:
            plains[decoder] = (
                f"plain GPU loop ({decoder} on {cores} threads a batch ahead, np.save per batch)"
            )
            (scratch / f"plain-{decoder}").mkdir()
            rate = plain_gpu_loop(
                files,
                on_device,
                prep,
                batch_size=batch_size,
                threads=cores,
                precision=precision,
                device=device,
                out=scratch / f"plain-{decoder}",
                decoder=decoder,
            )
            _measured(report, plains[decoder], rate, "images/s", kind="baseline")
            saved = sorted((scratch / f"plain-{decoder}").glob("*.npy"), key=lambda path: int(path.stem))
            plain_z[decoder] = np.concatenate([np.load(path) for path in saved])
        del on_device, resident
        torch.cuda.empty_cache()

        stores: dict[str, np.ndarray] = {}
        with (
            LocalCluster(
                n_workers=1,
                threads_per_worker=1,
                resources={"GPU": 1},
                host="127.0.0.1",
                dashboard_address=":0",
            ) as cluster,
            Client(cluster) as client,
        ):
            client.run(warm_up, "latentdask.encode.task", "latentdask.data.nvjpeg")
            for decoder in decoders:
                summary = encode(
                    root,
                    checkpoint,
                    scratch / f"{decoder}.zarr",
                    options=EncodeOptions(
                        shard_size=shard_size,
                        batch_size=batch_size,
                        device="cuda",
                        precision=precision,  # type: ignore[arg-type]
                        decoder=decoder,  # type: ignore[arg-type]
                        decode_threads=cores,
                    ),
                    client=client,
                    progress=False,
                )
                name = f"latentdask encode, {decoder} decoder (1 GPU worker, {cores} decode threads)"
                vs = [f"ceiling, {decoder}: min(decode, encoder)"] + (
                    [plains[decoder]] if decoder in plains else []
                )
                _measured(report, name, summary.images_per_second, "images/s", vs=vs)
                report.setup[f"stage seconds, {decoder}"] = {
                    k: round(v, 2) for k, v in summary.stage_seconds.items()
                }
                stores[decoder] = np.asarray(zarr.open_array(str(summary.store / "z"), mode="r")[:])
    for decoder, plain in plains.items():
        report.check(
            plain,
            "latents: largest |difference| / largest |latent|",
            relative_difference(stores[decoder], plain_z[decoder]),
            GPU_LATENT_TOLERANCE,
        )
    scale = float(np.abs(stores["pil"]).max()) if "pil" in stores else 0.0
    for decoder in (d for d in stores if d != "pil" and scale):
        report.setup[f"{decoder} vs pil latents: mean |difference| / largest |latent|"] = float(
            np.abs(stores[decoder] - stores["pil"]).mean() / scale
        )
    return report


# ----------------------------------------------------------------------------- statistics


def torch_summary(blocks: list[torch.Tensor], params: SummaryParams) -> dict[str, np.ndarray]:
    """The baseline: the pass's figures written in torch from scratch (see the module docstring)."""
    device = blocks[0].device
    dim = blocks[0].shape[1]
    edges = torch.as_tensor(params.edges, dtype=torch.float64, device=device)
    radius_edges = torch.as_tensor(params.radius_edges, dtype=torch.float64, device=device)
    thresholds = np.asarray(params.thresholds, dtype=np.float64)

    def bins(values: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """numpy's histogram rule: [e_k, e_k+1), the last bin closed; -1 below, len(e) - 1 above."""
        index = torch.bucketize(values, e, right=True) - 1
        return torch.where(values == e[-1], torch.full_like(index, len(e) - 2), index)

    def zeros(*shape: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        return torch.zeros(shape, dtype=dtype, device=device)

    n = 0
    s1, s2, s3, s4 = zeros(dim), zeros(dim, dim), zeros(dim), zeros(dim)
    low = torch.full((dim,), torch.inf, dtype=torch.float64, device=device)
    high = -low
    hist = zeros(dim * (len(edges) + 1), dtype=torch.int64)
    radius = zeros(len(radius_edges) + 1, dtype=torch.int64)
    radius_total = zeros(1)
    n0 = zeros(len(thresholds), dtype=torch.int64)
    c1 = zeros(len(thresholds), dim, dtype=torch.int64)
    c2 = zeros(len(thresholds), dim, dim)
    offsets = torch.arange(dim, device=device)[:, None] * (len(edges) + 1)
    for block in blocks:
        x = block.double()
        n += len(x)
        squares = x * x
        s1 += x.sum(dim=0)
        s2 += x.T @ x
        s3 += (squares * x).sum(dim=0)
        s4 += (squares * squares).sum(dim=0)
        low = torch.minimum(low, x.min(dim=0).values)
        high = torch.maximum(high, x.max(dim=0).values)
        hist += torch.bincount((bins(x.T.contiguous(), edges) + 1 + offsets).reshape(-1), minlength=len(hist))
        length = squares.sum(dim=1).sqrt()
        radius += torch.bincount(bins(length, radius_edges) + 1, minlength=len(radius))
        radius_total += length.sum()
        magnitude = x.abs()
        for k, t in enumerate(thresholds):
            outside = magnitude >= t
            count = outside.sum(dim=1)
            n0[k] += (count == 0).sum()
            c1[k] += outside[count == 1].sum(dim=0)
            pairs = outside[count == 2].double()
            c2[k] += torch.triu(pairs.T @ pairs, diagonal=1)
    mean = s1 / n
    m2 = s2 - n * torch.outer(mean, mean)
    second = torch.diagonal(s2)
    m3 = s3 - 3 * mean * second + 3 * mean**2 * s1 - n * mean**3
    m4 = s4 - 4 * mean * s3 + 6 * mean**2 * second - 4 * mean**3 * s1 + n * mean**4
    table = hist.reshape(dim, len(edges) + 1)
    figures = {
        "mean": mean,
        "m2": m2,
        "m3": m3,
        "m4": m4,
        "min": low,
        "max": high,
        "histogram": table[:, 1:-1],
        "radius histogram": radius[1:-1],
        "radius total": radius_total,
        "n0": n0,
        "c1": c1,
        "c2": c2.round().long(),
    }
    return {name: value.cpu().numpy() for name, value in figures.items()}


def latentdask_figures(state: SummaryState) -> dict[str, np.ndarray]:
    m = state.moments
    return {
        "mean": m.mean,
        "m2": m.m2,
        "m3": m.m3,
        "m4": m.m4,
        "min": m.min,
        "max": m.max,
        "histogram": state.hist.counts,
        "radius histogram": state.radius.counts,
        "radius total": np.asarray([state.radius.total]),
        "n0": state.slices.n0,
        "c1": state.slices.c1,
        "c2": state.slices.c2,
    }


COUNT_FIGURES = ("histogram", "radius histogram", "n0", "c1", "c2")


def bench_stats_gpu(*, n: int = 10_000_000, dim: int = 256, chunk_rows: int = 65_536) -> BenchReport:
    """latentdask's statistics of device-resident blocks against the torch baseline."""
    device = cuda_device()
    params = SummaryParams()
    report = BenchReport(
        "statistics pass on a GPU (device-resident float32 blocks)",
        setup={
            "rows": n,
            "dim": dim,
            "chunk_rows": chunk_rows,
            "bins per component": len(params.edges) - 1,
            "thresholds": list(params.thresholds),
            "gpu": torch.cuda.get_device_name(device),
            "torch": torch.__version__,
        },
    )
    generator = torch.Generator(device=device).manual_seed(0)
    scale = torch.linspace(0.25, 0.75, dim, device=device)  # slices near the origin populated
    blocks = [
        (torch.randn(min(chunk_rows, n - start), dim, device=device, generator=generator) * scale + 0.1)
        for start in range(0, n, chunk_rows)
    ]
    summary_chunk(blocks[0], params=params)  # warm-up (kernels loaded)
    torch_summary(blocks[:1], params)
    torch.cuda.synchronize(device)
    started = time.perf_counter()
    state = summary_combine([summary_chunk(block, params=params) for block in blocks])
    ours = n / _synchronized_seconds(device, started)
    started = time.perf_counter()
    theirs_figures = torch_summary(blocks, params)
    theirs = n / _synchronized_seconds(device, started)
    baseline = "torch baseline (float64 power sums, torch.mm, bucketize + bincount)"
    report.add(baseline, theirs, "rows/s", kind="baseline")
    report.add("latentdask summary_chunk on torch blocks", ours, "rows/s", vs=[baseline])
    mine = latentdask_figures(state)
    for figure, values in theirs_figures.items():
        if figure in COUNT_FIGURES:
            report.check(baseline, figure, count_difference(mine[figure], values), 0)
        else:
            report.check(baseline, figure, relative_difference(mine[figure], values), MOMENT_TOLERANCE)
    return report
