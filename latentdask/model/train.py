"""Train the autoencoder on a dataset's images (CUDA when present, else CPU).

Steps of :func:`train`:

1. Open the dataset and pick the training rows (``split``, default ``train``) and,
   when the dataset has a partition, the validation rows.
2. Decode every image once into a uint8 cache (``workers`` processes decode in
   parallel): epochs then cost only the model's arithmetic. Images that fail to
   decode are left out and counted by reason.
3. Seed torch, build the model, and run Adam on the mean squared reconstruction
   error, shuffling with a seeded generator: the same seed on the same machine gives
   the same weights.
4. After each epoch, the validation loss; at the end, the checkpoint folder.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from latentdask.data.dataset import ImageDataset, open_dataset
from latentdask.data.decode import Preprocessing, decode_rgb
from latentdask.device import resolve_device
from latentdask.errors import DatasetError, ImageDecodeError
from latentdask.location import Where, identity
from latentdask.model.autoencoder import Autoencoder
from latentdask.model.checkpoint import CHECKPOINT_KIND, Checkpoint, load_checkpoint, save_checkpoint
from latentdask.model.config import ModelConfig, TrainOptions
from latentdask.output import check_output
from latentdask.progress import console, progress_bar


@dataclass
class PixelCache:
    """Decoded images of some manifest rows: ``pixels`` uint8 (n, 3, S, S)."""

    pixels: torch.Tensor
    rows: np.ndarray
    failures: Counter[str] = field(default_factory=Counter)


class _DecodeRows(Dataset[tuple[int, np.ndarray | None, str]]):
    def __init__(self, dataset: ImageDataset, rows: np.ndarray, prep: Preprocessing) -> None:
        self.dataset, self.rows, self.prep = dataset, rows, prep

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, str]:
        row = int(self.rows[i])
        name = self.dataset.manifest.names[row]
        try:
            rgb, _ = decode_rgb(self.dataset.container.read(name), self.prep, name)
        except ImageDecodeError as exc:
            return row, None, exc.reason
        return row, np.ascontiguousarray(rgb.transpose(2, 0, 1)), ""


def _as_list(batch: Sequence[Any]) -> Sequence[Any]:
    return batch


def decode_rows(
    dataset: ImageDataset,
    rows: np.ndarray,
    prep: Preprocessing,
    *,
    workers: int = 0,
    progress: bool = True,
    label: str = "decoding",
) -> PixelCache:
    """Decode the given manifest rows into a uint8 cache, in ``workers`` processes."""
    size = prep.image_size
    pixels = torch.empty((len(rows), 3, size, size), dtype=torch.uint8)
    kept = np.zeros(len(rows), dtype=bool)
    failures: Counter[str] = Counter()
    loader = DataLoader(
        _DecodeRows(dataset, rows, prep),
        batch_size=256,
        num_workers=workers,
        collate_fn=_as_list,
    )
    position = {int(r): i for i, r in enumerate(rows)}
    with progress_bar(label, total=len(rows), unit="images", enabled=progress) as bar:
        for batch in loader:
            for row, image, reason in batch:
                i = position[row]
                if image is None:
                    failures[reason] += 1
                else:
                    pixels[i] = torch.from_numpy(image)
                    kept[i] = True
            bar.advance(len(batch))
    return PixelCache(pixels[torch.from_numpy(kept)], rows[kept], failures)


def train(
    dataset_root: Where,
    out: Where,
    *,
    model: ModelConfig | None = None,
    preprocessing: Preprocessing | None = None,
    options: TrainOptions | None = None,
    progress: bool = True,
) -> Checkpoint:
    """Train an autoencoder on ``dataset_root`` and write a checkpoint folder to ``out``.

    Parameters
    ----------
    dataset_root
        A CelebA-layout folder or any image folder.
    out
        The checkpoint folder to write; an existing one is replaced only if it is a
        latentdask checkpoint, and it may not hold the dataset.
    model, preprocessing, options
        Architecture, input pipeline and training parameters; their image sizes must agree.

    Examples
    --------
    >>> ckpt = train("runs/demo/data", "runs/demo/model",
    ...              options=TrainOptions(epochs=2))  # doctest: +SKIP
    """
    options = options or TrainOptions()
    preprocessing = preprocessing or Preprocessing()
    model_config = model or ModelConfig(image_size=preprocessing.image_size)
    if model_config.image_size != preprocessing.image_size:
        raise DatasetError(
            f"model image_size {model_config.image_size} differs from preprocessing "
            f"image_size {preprocessing.image_size}"
        )
    device = resolve_device(options.device)
    check_output(out, CHECKPOINT_KIND, inputs=[dataset_root])  # before the training, not after

    # 1. Rows to train and validate on.
    dataset = open_dataset(dataset_root)
    manifest = dataset.manifest
    train_rows = manifest.split_rows(options.split)
    if len(train_rows) == 0:
        raise DatasetError(f"{dataset_root}: split {options.split!r} has no images")
    has_valid = options.split != "valid" and (manifest.split == 1).any()
    valid_rows = np.flatnonzero(manifest.split == 1) if has_valid else np.array([], dtype=np.int64)

    # 2. Decode once.
    started = time.perf_counter()
    train_cache = decode_rows(
        dataset, train_rows, preprocessing, workers=options.workers, progress=progress, label="decoding train"
    )
    valid_cache = decode_rows(
        dataset, valid_rows, preprocessing, workers=options.workers, progress=progress, label="decoding valid"
    )
    if len(train_cache.rows) == 0:
        raise DatasetError(
            f"{dataset_root}: no training image could be decoded ({dict(train_cache.failures)})"
        )
    decode_seconds = time.perf_counter() - started

    # 3. Seeded model and shuffling.
    torch.manual_seed(options.seed)
    net = Autoencoder(model_config).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=options.lr)
    shuffle = torch.Generator().manual_seed(options.seed)
    epochs: list[dict[str, Any]] = []
    n = len(train_cache.rows)
    for epoch in range(1, options.epochs + 1):
        net.train()
        epoch_start = time.perf_counter()
        order = torch.randperm(n, generator=shuffle)
        total = 0.0
        with progress_bar(f"epoch {epoch}/{options.epochs}", total=n, unit="images", enabled=progress) as bar:
            for start in range(0, n, options.batch_size):
                batch = _as_float(train_cache.pixels[order[start : start + options.batch_size]], device)
                loss = torch.nn.functional.mse_loss(net(batch), batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item() * len(batch)
                bar.advance(len(batch))
                bar.note(f"loss {loss.item():.5f}")
        seconds = time.perf_counter() - epoch_start
        record = {
            "epoch": epoch,
            "train_loss": total / n,
            "valid_loss": evaluate(net, valid_cache.pixels, options.batch_size, device)
            if len(valid_cache.rows)
            else None,
            "seconds": seconds,
            "images_per_s": n / seconds,
        }
        epochs.append(record)
        if progress:
            valid = f", valid {record['valid_loss']:.5f}" if record["valid_loss"] is not None else ""
            console.print(
                f"epoch {epoch}: train loss {record['train_loss']:.5f}{valid}, "
                f"{record['images_per_s']:.0f} images/s"
            )

    # 4. The checkpoint.
    training = options.model_dump() | {
        "device": str(device),
        "dataset": identity(dataset_root),
        "manifest_sha256": manifest.sha256,
        "train_images": n,
        "valid_images": len(valid_cache.rows),
        "torch": torch.__version__,
    }
    history = {
        "epochs": epochs,
        "decode_seconds": decode_seconds,
        "skipped_images": dict(train_cache.failures + valid_cache.failures),
    }
    save_checkpoint(out, net.cpu(), preprocessing, training=training, history=history, inputs=[dataset_root])
    if progress:
        skipped = sum(train_cache.failures.values()) + sum(valid_cache.failures.values())
        console.print(
            f"trained on {n} images ({len(valid_cache.rows)} for validation, {skipped} skipped) "
            f"for {options.epochs} epoch(s) on {device} in {time.perf_counter() - started:.1f} s "
            f"→ {out}"
        )
    return load_checkpoint(out)


def evaluate(net: Autoencoder, pixels: torch.Tensor, batch_size: int, device: torch.device) -> float:
    """Mean squared reconstruction error over a uint8 image cache."""
    net.eval()
    total = 0.0
    with torch.inference_mode():
        for start in range(0, len(pixels), batch_size):
            batch = _as_float(pixels[start : start + batch_size], device)
            total += float(torch.nn.functional.mse_loss(net(batch), batch)) * len(batch)
    return total / max(len(pixels), 1)


def _as_float(pixels: torch.Tensor, device: torch.device) -> torch.Tensor:
    return pixels.to(device, non_blocking=True).float().div_(255.0)
