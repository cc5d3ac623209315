"""What only a CUDA machine can check; skipped elsewhere (see conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from distributed import LocalCluster

from latentdask.cluster.connect import ClusterChoice
from latentdask.data.decode import Preprocessing
from latentdask.device import resolve_device
from latentdask.encode.run import EncodeOptions, encode
from latentdask.model.autoencoder import Autoencoder
from latentdask.model.checkpoint import save_checkpoint
from latentdask.model.config import ModelConfig
from latentdask.store import open_latents

pytestmark = pytest.mark.gpu

#: cuDNN may use TF32 for float32 convolutions: about 1e-3 relative agreement with the CPU
GPU_TOLERANCE = 5e-3


def test_auto_device_is_cuda() -> None:
    assert resolve_device("auto").type == "cuda"


def test_encode_on_gpu_worker_matches_cpu(faces: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Autoencoder(ModelConfig(image_size=64, latent_dim=32))
    checkpoint = save_checkpoint(tmp_path / "ckpt", model, Preprocessing(image_size=64))
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
    from latentdask.stats.summary import SummaryParams, summary_chunk

    x = np.random.default_rng(0).normal(0.5, 1.2, size=(5000, 16)).astype(np.float32)
    params = SummaryParams(thresholds=(1.5,))
    cpu = summary_chunk(x, params=params)
    gpu = summary_chunk(torch.from_numpy(x).cuda(), params=params)
    np.testing.assert_array_equal(cpu.hist.counts, gpu.hist.counts)
    np.testing.assert_array_equal(cpu.slices.c2, gpu.slices.c2)
    np.testing.assert_allclose(cpu.moments.m2, gpu.moments.m2, rtol=1e-10)


def test_nearest_real_neighbour_on_the_gpu_equals_the_cpu(tmp_path: Path) -> None:
    import zarr

    from latentdask.generate.score import nearest_real_distance
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
