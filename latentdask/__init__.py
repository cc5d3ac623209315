"""latentdask: the latent space of image autoencoders at full-corpus scale, on Dask clusters.

The public API is imported lazily, so that processes which only reduce arrays never
import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from latentdask._version import __version__ as __version__

_EXPORTS = {
    "Autoencoder": "latentdask.model.autoencoder",
    "ModelConfig": "latentdask.model.config",
    "Preprocessing": "latentdask.data.decode",
    "decode_image": "latentdask.data.decode",
    "open_dataset": "latentdask.data.dataset",
    "synthesize": "latentdask.data.synthetic_faces",
    "load_checkpoint": "latentdask.model.checkpoint",
    "import_state_dict": "latentdask.model.checkpoint",
    "train": "latentdask.model.train",
    "TrainOptions": "latentdask.model.train",
    "LatentdaskError": "latentdask.errors",
    "encode": "latentdask.encode.run",
    "EncodeOptions": "latentdask.encode.run",
    "open_latents": "latentdask.store",
    "summarize": "latentdask.stats.reduce",
    "generate": "latentdask.generate.samplers",
    "sampler_spec": "latentdask.generate.samplers",
    "run_workflow": "latentdask.workflow.run",
    "SummaryParams": "latentdask.stats.summary",
    "open_stats": "latentdask.stats.io",
    "ImageDecodeError": "latentdask.errors",
    "score": "latentdask.generate.score",
    "normality": "latentdask.stats.normality",
    "render": "latentdask.render.command",
    "Explorer": "latentdask.render.explore",
    "View": "latentdask.render.explore",
    "explore": "latentdask.render.dashboard",
    "write_report": "latentdask.workflow.report",
    "connect": "latentdask.cluster.connect",
    "ClusterChoice": "latentdask.cluster.connect",
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
    "explore",
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
    from latentdask.cluster.connect import connect
    from latentdask.cluster.spec import ClusterChoice
    from latentdask.data.dataset import open_dataset
    from latentdask.data.decode import Preprocessing, decode_image
    from latentdask.data.synthetic_faces import synthesize
    from latentdask.encode.options import EncodeOptions
    from latentdask.encode.run import encode
    from latentdask.errors import ImageDecodeError, LatentdaskError
    from latentdask.generate.options import sampler_spec
    from latentdask.generate.samplers import generate
    from latentdask.generate.score import score
    from latentdask.model.autoencoder import Autoencoder
    from latentdask.model.checkpoint import import_state_dict, load_checkpoint
    from latentdask.model.config import ModelConfig, TrainOptions
    from latentdask.model.train import train
    from latentdask.render.command import render
    from latentdask.render.dashboard import explore
    from latentdask.render.explore import Explorer, View
    from latentdask.stats.io import open_stats
    from latentdask.stats.normality import normality
    from latentdask.stats.options import SummaryParams
    from latentdask.stats.reduce import summarize
    from latentdask.store import open_latents
    from latentdask.workflow.report import write_report
    from latentdask.workflow.run import run_workflow


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'latentdask' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
