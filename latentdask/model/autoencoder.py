"""The seed study's convolutional autoencoder.

Encoder: 4 ``Conv2d`` layers (64, 64, 128, 128 filters by default, kernel 3, each
halving the image with stride 2), LeakyReLU, optional batch normalization, then a
dense layer to the latent space (256 by default). Decoder: the mirror image — a dense
layer back to the last feature map, ``ConvTranspose2d`` layers (128, 128, 64, 64)
each doubling the image, and a final 3-channel convolution with a sigmoid.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from latentdask.errors import ModelConfigError, describe_validation_error


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


def _block(conv: nn.Module, out_channels: int, config: ModelConfig) -> list[nn.Module]:
    layers = [conv]
    if config.batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.LeakyReLU(config.leaky_slope))
    return layers


class Encoder(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        k, pad = config.kernel_size, config.kernel_size // 2
        layers: list[nn.Module] = []
        in_channels = 3
        for out_channels, stride in zip(config.channels, config.layer_strides, strict=True):
            conv = nn.Conv2d(in_channels, out_channels, k, stride=stride, padding=pad)
            layers += _block(conv, out_channels, config)
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        flat = config.channels[-1] * config.feature_size**2
        self.to_latent = nn.Linear(flat, config.latent_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.to_latent(self.features(images).flatten(1))


class Decoder(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        k, pad = config.kernel_size, config.kernel_size // 2
        self.shape = (config.channels[-1], config.feature_size, config.feature_size)
        self.from_latent = nn.Linear(config.latent_dim, config.channels[-1] * config.feature_size**2)
        layers: list[nn.Module] = []
        in_channels = config.channels[-1]
        for out_channels, stride in zip(
            reversed(config.channels), reversed(config.layer_strides), strict=True
        ):
            conv = nn.ConvTranspose2d(
                in_channels, out_channels, k, stride=stride, padding=pad, output_padding=stride - 1
            )
            layers += _block(conv, out_channels, config)
            in_channels = out_channels
        layers += [nn.Conv2d(in_channels, 3, k, padding=pad), nn.Sigmoid()]
        self.features = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.features(self.from_latent(z).view(-1, *self.shape))


class Autoencoder(nn.Module):
    """Encoder and decoder; ``forward`` returns the reconstruction.

    Examples
    --------
    >>> model = Autoencoder(ModelConfig(image_size=32, latent_dim=8))
    >>> model.encode(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 8])
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(images))
