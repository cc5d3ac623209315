"""Model and checkpoint configuration: pure data, no torch.

Kept apart from the modules that build and load models so that processes which
only need a checkpoint's identity (the encode client, reducers) never import torch.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from latentdask.data.decode import Preprocessing
from latentdask.errors import CheckpointError, ModelConfigError, describe_validation_error
from latentdask.location import Location

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TRAINING_FILE = "training.json"
FORMAT = "latentdask-checkpoint"
FORMAT_VERSION = 1


class ModelConfig(BaseModel):
    """The architecture; two equal configs build models with identical parameter shapes.

    Examples
    --------
    >>> ModelConfig(image_size=64).feature_size
    4
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    image_size: int = Field(default=64, ge=1)
    latent_dim: int = Field(default=256, ge=1)
    channels: tuple[int, ...] = (64, 64, 128, 128)
    strides: tuple[int, ...] | None = None  # None: 2 for every layer
    kernel_size: int = Field(default=3, ge=1)
    batch_norm: bool = False
    leaky_slope: float = Field(default=0.2, ge=0.0)

    @field_validator("channels")
    @classmethod
    def _positive_channels(cls, channels: tuple[int, ...]) -> tuple[int, ...]:
        if not channels or any(c < 1 for c in channels):
            raise ValueError(f"channels must be a non-empty list of positive integers, got {channels}")
        return channels

    @model_validator(mode="after")
    def _strides_divide_image(self) -> ModelConfig:
        strides = self.layer_strides
        if len(strides) != len(self.channels):
            raise ValueError(f"strides has {len(strides)} entries but channels has {len(self.channels)}")
        if any(s < 1 for s in strides):
            raise ValueError(f"strides must be positive, got {strides}")
        reduction = 1
        for s in strides:
            reduction *= s
        if self.image_size % reduction:
            raise ValueError(
                f"image_size {self.image_size} is not divisible by {reduction}, the product of "
                f"the strides {strides}; use a multiple of {reduction} (e.g. "
                f"{max(reduction, self.image_size // reduction * reduction)})"
            )
        return self

    @property
    def layer_strides(self) -> tuple[int, ...]:
        return self.strides if self.strides is not None else (2,) * len(self.channels)

    @property
    def feature_size(self) -> int:
        """Side of the encoder's last feature map."""
        size = self.image_size
        for s in self.layer_strides:
            size //= s
        return size


def build_config(**fields: Any) -> ModelConfig:
    """A :class:`ModelConfig`, with validation errors turned into one clear message."""
    try:
        return ModelConfig(**fields)
    except ValueError as exc:
        raise ModelConfigError(f"invalid model configuration: {describe_validation_error(exc)}") from None


def _default(model: type[BaseModel], field: str) -> Any:
    return model.model_fields[field].get_default(call_default_factory=True)


class ModelOptions(BaseModel):
    """The autoencoder to train and how it reads images: ``latentdask train`` and a workflow's ``model``.

    The fields a user sets of :class:`~latentdask.model.config.ModelConfig` and
    :class:`~latentdask.data.decode.Preprocessing`, with their defaults.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    image_size: int = _default(ModelConfig, "image_size")
    latent_dim: int = _default(ModelConfig, "latent_dim")
    channels: tuple[int, ...] = _default(ModelConfig, "channels")
    batch_norm: bool = _default(ModelConfig, "batch_norm")
    crop: tuple[int, int, int, int] | None = _default(Preprocessing, "crop")
    draft: bool = _default(Preprocessing, "draft")

    def architecture_fields(self) -> dict[str, Any]:
        return {
            "image_size": self.image_size,
            "latent_dim": self.latent_dim,
            "channels": self.channels,
            "batch_norm": self.batch_norm,
        }

    def architecture(self) -> ModelConfig:
        """The ModelConfig; an architecture that cannot be built is one clear ModelConfigError."""
        return build_config(**self.architecture_fields())

    def preprocessing(self) -> Preprocessing:
        return Preprocessing(crop=self.crop, image_size=self.image_size, draft=self.draft)


class CheckpointConfig(BaseModel):
    """What ``config.json`` holds."""

    model_config = ConfigDict(extra="forbid")

    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    model: ModelConfig
    preprocessing: Preprocessing
    training: dict[str, Any] = {}


def read_json(path: Location) -> Any:
    """The parsed content of a JSON file, or CheckpointError naming it."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc})") from None


def read_checkpoint_config(folder: Location) -> CheckpointConfig:
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise CheckpointError(f"{config_path} is missing")
    raw = read_json(config_path)
    if isinstance(raw, dict) and raw.get("format") != FORMAT:
        raise CheckpointError(f"{config_path}: 'format' must be {FORMAT!r}, got {raw.get('format')!r}")
    try:
        config = CheckpointConfig.model_validate(raw)
    except ValidationError as exc:
        raise CheckpointError(f"{config_path}: {describe_validation_error(exc)}") from None
    if config.format_version > FORMAT_VERSION:
        raise CheckpointError(
            f"{config_path}: format_version {config.format_version} is newer than this "
            f"latentdask understands ({FORMAT_VERSION}); upgrade latentdask"
        )
    if config.model.image_size != config.preprocessing.image_size:
        raise CheckpointError(
            f"{config_path}: model.image_size {config.model.image_size} differs from "
            f"preprocessing.image_size {config.preprocessing.image_size}"
        )
    return config


def checkpoint_sha256(folder: Location, config: CheckpointConfig) -> str:
    """The identity of a checkpoint: its weights' bytes, architecture and preprocessing."""
    digest = hashlib.sha256()
    with (folder / WEIGHTS_FILE).open("rb") as weights:
        for block in iter(lambda: weights.read(1 << 20), b""):
            digest.update(block)
    digest.update(config.model.model_dump_json().encode())
    digest.update(config.preprocessing.model_dump_json().encode())
    return digest.hexdigest()


class TrainOptions(BaseModel):
    """Training parameters, recorded in the checkpoint's ``config.json``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=128, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    split: str = "train"
    seed: int = 0
    device: str = "auto"
    workers: int = Field(default=0, ge=0)
