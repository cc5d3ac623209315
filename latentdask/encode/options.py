"""How ``latentdask encode`` (and a workflow's ``encode`` section) is asked to encode, apart
from the code that encodes, so that reading a workflow file imports no torch."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from latentdask.stats.options import SummaryParams


class EncodeOptions(BaseModel):
    """How to encode; the defaults suit a CPU laptop and a GPU worker alike."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    shard_size: int = Field(default=4096, ge=1)
    #: images per forward pass; None: 64 on a CPU worker (as fast as 256 there, with a quarter of
    #: the activations' memory), 256 on a GPU worker
    batch_size: int | None = Field(default=None, ge=1)
    split: str = "all"
    resume: bool = False
    overwrite: bool = False
    reconstruction_error: bool = False
    device: str = "auto"
    #: the encoder's arithmetic: fp32 (exact, the default), or bf16/fp16 autocast (faster on GPUs;
    #: latents differ from fp32 by a bounded amount, see tests/test_encode.py); part of the store's record
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    #: JPEG decoding: "pil" on the CPU cores (the default, the same pixels everywhere), "opencv" on
    #: the CPU cores outside the GIL (decode threads scale with the cores; within OPENCV_TOLERANCE of
    #: pil), or "nvjpeg" on the GPU (torchvision; within NVJPEG_TOLERANCE of pil); part of the store's record
    decoder: Literal["pil", "opencv", "nvjpeg"] = "pil"
    #: threads decoding ahead of the encoder; 0: decode in the task's own thread; None: 1 on
    #: CPU (the cores are busy encoding), the worker's cores per GPU beside a GPU (decoding is then the limit)
    decode_threads: int | None = Field(default=None, ge=0)
    torch_threads: int | None = Field(default=None, ge=1)
    #: write statistics of all valid rows beside the store, from the tasks' own states
    stats: bool = True
    stats_params: SummaryParams = SummaryParams()
