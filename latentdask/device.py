"""The one place that picks a torch device: CUDA when present, else CPU."""

from __future__ import annotations

from typing import Literal

import torch

from latentdask.errors import LatentdaskError

DeviceChoice = Literal["auto", "cpu", "cuda"] | str


def resolve_device(choice: DeviceChoice = "auto") -> torch.device:
    """``auto`` → ``cuda`` if a CUDA device is usable, else ``cpu``; ``cuda:1`` etc. pass through.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(choice)
    except RuntimeError:
        raise LatentdaskError(f"unknown device {choice!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LatentdaskError(f"device {choice!r} asked for, but no CUDA device is available")
    return device
