"""latentdask: the latent space of image autoencoders at full-corpus scale, on Dask clusters.

The public API is imported lazily, so that processes which only reduce arrays never
import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Autoencoder": "latentdask.model.autoencoder",
    "ModelConfig": "latentdask.model.autoencoder",
    "Preprocessing": "latentdask.data.decode",
    "decode_image": "latentdask.data.decode",
    "open_dataset": "latentdask.data.dataset",
    "synthesize": "latentdask.data.synthetic",
    "load_checkpoint": "latentdask.model.checkpoint",
    "import_state_dict": "latentdask.model.checkpoint",
    "train": "latentdask.model.train",
    "TrainOptions": "latentdask.model.train",
    "LatentdaskError": "latentdask.errors",
    "ImageDecodeError": "latentdask.errors",
}

__all__ = [
    "Autoencoder",
    "ImageDecodeError",
    "LatentdaskError",
    "ModelConfig",
    "Preprocessing",
    "TrainOptions",
    "decode_image",
    "import_state_dict",
    "load_checkpoint",
    "open_dataset",
    "synthesize",
    "train",
]

if TYPE_CHECKING:
    from latentdask.data.dataset import open_dataset
    from latentdask.data.decode import Preprocessing, decode_image
    from latentdask.data.synthetic import synthesize
    from latentdask.errors import ImageDecodeError, LatentdaskError
    from latentdask.model.autoencoder import Autoencoder, ModelConfig
    from latentdask.model.checkpoint import import_state_dict, load_checkpoint
    from latentdask.model.train import TrainOptions, train


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'latentdask' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
