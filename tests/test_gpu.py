"""What only a CUDA machine can check; skipped elsewhere (see conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from distributed import LocalCluster

from latentdask.cluster.spec import ClusterChoice
from latentdask.data.decode import Preprocessing
from latentdask.device import resolve_device
from latentdask.encode.options import EncodeOptions
from latentdask.encode.run import encode
from latentdask.location import Location
from latentdask.model.autoencoder import Autoencoder
from latentdask.model.checkpoint import save_checkpoint
from latentdask.model.config import ModelConfig
from latentdask.store import open_latents

pytestmark = pytest.mark.gpu

#: cuDNN may use TF32 for float32 convolutions: about 1e-3 relative agreement with the CPU
GPU_TOLERANCE = 5e-3


def _checkpoint(tmp_path: Path) -> Location:
    """A seeded 64 × 64 model with 32 latents."""
    torch.manual_seed(0)
    model = Autoencoder(ModelConfig(image_size=64, latent_dim=32))
    return save_checkpoint(tmp_path / "ckpt", model, Preprocessing(image_size=64))


def test_auto_device_is_cuda() -> None:
    assert resolve_device("auto").type == "cuda"


def test_encode_on_gpu_worker_matches_cpu(faces: Path, tmp_path: Path) -> None:
    checkpoint = _checkpoint(tmp_path)
    with LocalCluster(
        n_workers=1, threads_per_worker=1, resources={"GPU": 1}, host="127.0.0.1", dashboard_address=":0"
    ) as cluster:
        choice = ClusterChoice(scheduler=cluster.scheduler_address)
        encode(
            faces,
            checkpoint,
            tmp_path / "gpu.zarr",
            options=EncodeOptions(shard_size=64),
            cluster=choice,
            progress=False,
        )
        encode(
            faces,
            checkpoint,
            tmp_path / "cpu.zarr",
            options=EncodeOptions(shard_size=64, device="cpu"),
            cluster=choice,
            progress=False,
        )
    gpu, cpu = (open_latents(tmp_path / f"{k}.zarr").z.values for k in ("gpu", "cpu"))
    np.testing.assert_allclose(gpu, cpu, atol=GPU_TOLERANCE, rtol=GPU_TOLERANCE)


def test_statistics_on_the_gpu_equal_the_cpu() -> None:
    from latentdask.stats.options import SummaryParams
    from latentdask.stats.summary import summary_chunk

    x = np.random.default_rng(0).normal(0.5, 1.2, size=(5000, 16)).astype(np.float32)
    params = SummaryParams(thresholds=(1.5,))
    cpu = summary_chunk(x, params=params)
    gpu = summary_chunk(torch.from_numpy(x).cuda(), params=params)
    np.testing.assert_array_equal(cpu.hist.counts, gpu.hist.counts)
    np.testing.assert_array_equal(cpu.slices.c2, gpu.slices.c2)
    np.testing.assert_allclose(cpu.moments.m2, gpu.moments.m2, rtol=1e-10)


def test_nearest_real_neighbour_on_the_gpu_equals_the_cpu(tmp_path: Path) -> None:
    import zarr

    from latentdask.stats.nearest import nearest_real_distance
    from latentdask.store.points import open_zpoints

    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, 32)).astype(np.float32)
    valid = np.ones(len(x), dtype=bool)
    valid[::7] = False
    group = zarr.open_group(str(tmp_path / "store.zarr"), mode="w")
    group.create_array("z", shape=x.shape, chunks=(6000, 32), dtype="float32")[:] = x
    group.create_array("valid", shape=valid.shape, chunks=(6000,), dtype=bool)[:] = valid
    corpus = open_zpoints(tmp_path / "store.zarr")
    queries, rows = x[:500], np.arange(500)
    gpu = nearest_real_distance(corpus, queries, query_rows=rows, device="cuda")
    cpu = nearest_real_distance(corpus, queries, query_rows=rows, device="cpu")
    np.testing.assert_allclose(gpu, cpu, rtol=1e-6)


def _jpegs_of_every_shape(faces: Path) -> list[bytes]:
    """CelebA-size faces, a gray JPEG and one smaller than the crop box (centre-square crop)."""
    from latentdask.data.dataset import open_dataset
    from tests.helpers import banded_image
    from tests.helpers import encode as encode_image

    dataset = open_dataset(faces)
    files = [dataset.read(row) for row in range(40)]
    return [
        *files,
        encode_image(banded_image("L"), "JPEG", quality=90),
        encode_image(banded_image().resize((150, 120)), "JPEG", quality=90),
    ]


@pytest.mark.parametrize("resample", ["bilinear", "bicubic"])
def test_nvjpeg_pixels_equal_the_pil_paths_within_tolerance(faces: Path, resample: str) -> None:
    from latentdask.data.decode import decode_rgb
    from latentdask.data.jpeg import inspect_jpeg
    from latentdask.data.nvjpeg import NVJPEG_TOLERANCE, decode_on_device

    prep = Preprocessing(image_size=64, resample=resample)  # type: ignore[arg-type]
    files = _jpegs_of_every_shape(faces)
    jpegs = [inspect_jpeg(data, prep) for data in files]
    assert all(j is not None for j in jpegs)
    pixels, failed = decode_on_device([j for j in jpegs if j is not None], prep, torch.device("cuda"))
    assert failed == []
    decoded = [decode_rgb(data, prep) for data in files]
    assert [j.crop for j in jpegs if j is not None] == [crop for _, crop in decoded]
    reference = np.stack([rgb for rgb, _ in decoded]).transpose(0, 3, 1, 2).astype(np.float64)
    per_image = np.abs(pixels.cpu().numpy() - reference).mean(axis=(1, 2, 3)) / 255
    print(f"nvJPEG vs PIL ({resample}): mean |difference| per image, largest {per_image.max() * 255:.3f}/255")
    assert per_image.max() <= NVJPEG_TOLERANCE


def test_nvjpeg_decoder_encodes_like_the_pil_decoder(faces: Path, tmp_path: Path) -> None:
    """Every row valid, invalid and cropped alike; the latents within the pixels' tolerance."""
    from latentdask.data.dataset import open_dataset

    folder = tmp_path / "images"
    folder.mkdir()
    dataset = open_dataset(faces)
    for row in range(90):
        (folder / f"{row:03d}.jpg").write_bytes(dataset.read(row))
    face = dataset.read(90)
    (folder / "100-truncated.jpg").write_bytes(face[: len(face) // 2])
    (folder / "101-not-an-image.jpg").write_bytes(b"\xff\xd8 nothing \xff\xd9")
    (folder / "102-gray.jpg").write_bytes(_jpegs_of_every_shape(faces)[-2])
    checkpoint = _checkpoint(tmp_path)
    with LocalCluster(
        n_workers=1, threads_per_worker=1, resources={"GPU": 1}, host="127.0.0.1", dashboard_address=":0"
    ) as cluster:
        choice = ClusterChoice(scheduler=cluster.scheduler_address)
        for decoder in ("pil", "nvjpeg"):
            encode(
                folder,
                checkpoint,
                tmp_path / f"{decoder}.zarr",
                options=EncodeOptions(shard_size=40, batch_size=16, decoder=decoder),
                cluster=choice,
                progress=False,
            )
    pil, nv = (open_latents(tmp_path / f"{d}.zarr") for d in ("pil", "nvjpeg"))
    for column in ("valid", "error", "crop"):
        np.testing.assert_array_equal(pil[column].values, nv[column].values)
    assert int(nv["valid"].values.sum()) == 91
    z_pil, z_nv = pil.z.values, nv.z.values
    valid = pil["valid"].values
    difference = np.abs(z_nv[valid] - z_pil[valid]).max() / np.abs(z_pil[valid]).max()
    print(f"nvjpeg vs pil latents: largest |difference| / largest |latent| = {difference:.4f}")
    assert 0 < difference <= 0.05


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_on_the_gpu_stays_within_its_bound(
    faces: Path, tmp_path: Path, precision: str
) -> None:
    """The CPU test's bound (tests/test_encode.py), on the GPU's autocast kernels."""
    checkpoint = _checkpoint(tmp_path)
    bound = {"bf16": 0.02, "fp16": 0.005}[precision]
    with LocalCluster(
        n_workers=1, threads_per_worker=1, resources={"GPU": 1}, host="127.0.0.1", dashboard_address=":0"
    ) as cluster:
        choice = ClusterChoice(scheduler=cluster.scheduler_address)
        for name, chosen in (("fp32", "fp32"), ("low", precision)):
            encode(
                faces,
                checkpoint,
                tmp_path / f"{name}.zarr",
                options=EncodeOptions(shard_size=64, precision=chosen),  # type: ignore[arg-type]
                cluster=choice,
                progress=False,
            )
    reference, z = (open_latents(tmp_path / f"{k}.zarr").z.values for k in ("fp32", "low"))
    relative = np.abs(z - reference).max() / np.abs(reference).max()
    print(f"{precision} on the GPU: largest |difference| / largest |latent| = {relative:.5f}")
    assert 0 < relative <= bound


def test_local_cuda_cluster_runs_encode(faces: Path, tmp_path: Path) -> None:
    """The cuda cluster kind for real: dask-cuda's LocalCUDACluster, a worker per GPU declaring GPU: 1."""
    pytest.importorskip("dask_cuda")
    checkpoint = _checkpoint(tmp_path)
    spec = Path(__file__).parents[1] / "cluster" / "cuda.yaml"
    summary = encode(
        faces,
        checkpoint,
        tmp_path / "cuda.zarr",
        options=EncodeOptions(shard_size=64),
        cluster=ClusterChoice(spec=spec),
        progress=False,
    )
    assert summary.images == 120
    assert bool(open_latents(tmp_path / "cuda.zarr")["valid"].values.all())
