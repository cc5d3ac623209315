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
    "ModelConfig": "latentdask.model.config",
    "Preprocessing": "latentdask.data.decode",
    "decode_image": "latentdask.data.decode",
    "open_dataset": "latentdask.data.dataset",
    "synthesize": "latentdask.data.synthetic",
    "load_checkpoint": "latentdask.model.checkpoint",
    "import_state_dict": "latentdask.model.checkpoint",
    "train": "latentdask.model.train",
    "TrainOptions": "latentdask.model.train",
    "LatentdaskError": "latentdask.errors",
    "encode": "latentdask.encode",
    "EncodeOptions": "latentdask.encode",
    "open_latents": "latentdask.store",
    "summarize": "latentdask.stats.reduce",
    "generate": "latentdask.generate",
    "sampler_spec": "latentdask.generate",
    "run_workflow": "latentdask.workflow",
    "SummaryParams": "latentdask.stats.summary",
    "open_stats": "latentdask.stats.io",
    "ImageDecodeError": "latentdask.errors",
    "score": "latentdask.score",
    "normality": "latentdask.normality",
    "render": "latentdask.render",
    "Explorer": "latentdask.explore",
    "View": "latentdask.explore",
    "write_report": "latentdask.report",
    "connect": "latentdask.cluster",
    "ClusterChoice": "latentdask.cluster",
}

__all__ = [
    "Autoencoder",
    "ClusterChoice",
    "EncodeOptions",
    "Explorer",
    "ImageDecodeError",
    "LatentdaskError",
    "ModelConfig",
    "Preprocessing",
    "SummaryParams",
    "TrainOptions",
    "View",
    "connect",
    "decode_image",
    "encode",
    "generate",
    "import_state_dict",
    "load_checkpoint",
    "normality",
    "open_dataset",
    "open_latents",
    "open_stats",
    "render",
    "run_workflow",
    "sampler_spec",
    "score",
    "summarize",
    "synthesize",
    "train",
    "write_report",
]

if TYPE_CHECKING:
    from latentdask.cluster import ClusterChoice, connect
    from latentdask.data.dataset import open_dataset
    from latentdask.data.decode import Preprocessing, decode_image
    from latentdask.data.synthetic import synthesize
    from latentdask.encode import EncodeOptions, encode
    from latentdask.errors import ImageDecodeError, LatentdaskError
    from latentdask.explore import Explorer, View
    from latentdask.generate import generate, sampler_spec
    from latentdask.model.autoencoder import Autoencoder
    from latentdask.model.checkpoint import import_state_dict, load_checkpoint
    from latentdask.model.config import ModelConfig
    from latentdask.model.train import TrainOptions, train
    from latentdask.normality import normality
    from latentdask.render import render
    from latentdask.report import write_report
    from latentdask.score import score
    from latentdask.stats.io import open_stats
    from latentdask.stats.reduce import summarize
    from latentdask.stats.summary import SummaryParams
    from latentdask.store import open_latents
    from latentdask.workflow import run_workflow


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'latentdask' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
