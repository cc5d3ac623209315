"""``latentdask bench train``: training images/s of the default autoencoder on this machine."""

from __future__ import annotations

import time

import torch

from latentdask.bench.report import BenchReport
from latentdask.device import resolve_device
from latentdask.model.autoencoder import Autoencoder
from latentdask.model.config import ModelConfig


def bench_train(
    *,
    image_size: int = 64,
    latent_dim: int = 256,
    batch_size: int = 128,
    steps: int = 10,
    device: str = "auto",
) -> BenchReport:
    """Forward + backward + Adam step on random batches; the first two steps are warm-up."""
    dev = resolve_device(device)
    torch.manual_seed(0)
    model = Autoencoder(ModelConfig(image_size=image_size, latent_dim=latent_dim)).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = torch.rand(batch_size, 3, image_size, image_size, device=dev)

    def step() -> None:
        loss = torch.nn.functional.mse_loss(model(batch), batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(2):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    report = BenchReport(
        "autoencoder training throughput",
        setup={
            "device": str(dev),
            "torch_threads": torch.get_num_threads(),
            "image_size": image_size,
            "latent_dim": latent_dim,
            "batch_size": batch_size,
            "steps": steps,
        },
    )
    report.add("training", steps * batch_size / seconds, "images/s")
    with torch.inference_mode():
        model.eval()
        started = time.perf_counter()
        for _ in range(steps):
            model.encode(batch)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        report.add(
            "encoder forward (inference)",
            steps * batch_size / (time.perf_counter() - started),
            "images/s",
        )
    return report
