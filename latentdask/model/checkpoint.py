"""Checkpoint folders: ``model.safetensors`` + ``config.json`` (+ ``training.json``).

Nothing is ever unpickled: weights are safetensors; a state_dict from elsewhere is
imported once with ``torch.load(weights_only=True)`` (:func:`import_state_dict`).
Loading checks that the weights and the config agree, tensor by tensor.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load, load_file, save

from latentdask.data.decode import Preprocessing
from latentdask.errors import CheckpointError, describe_validation_error
from latentdask.location import Location, Where, is_remote, location
from latentdask.model.autoencoder import Autoencoder
from latentdask.model.config import (
    CONFIG_FILE,
    TRAINING_FILE,
    WEIGHTS_FILE,
    CheckpointConfig,
    ModelConfig,
    checkpoint_sha256,
    read_checkpoint_config,
    read_json,
)
from latentdask.output import check_output, owned_output

#: the kind of output a checkpoint folder is, in its latentdask.json record
CHECKPOINT_KIND = "checkpoint"
_PICKLE_SUFFIXES = {".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt"}


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (in eval mode), its config, and where it came from."""

    path: Location
    model: Autoencoder
    config: CheckpointConfig
    sha256: str

    @property
    def preprocessing(self) -> Preprocessing:
        return self.config.preprocessing

    def training_history(self) -> list[dict[str, Any]]:
        """Per-epoch records from ``training.json``; empty for imported models."""
        path = self.path / TRAINING_FILE
        if not path.is_file():
            return []
        return list(json.loads(path.read_text()).get("epochs", []))

    def describe(self) -> list[str]:
        """Lines for ``latentdask info``."""
        m, p = self.config.model, self.config.preprocessing
        n_params = sum(t.numel() for t in self.model.parameters())
        history = self.training_history()
        lines = [
            f"checkpoint  {self.path}",
            f"model       conv autoencoder, channels {list(m.channels)}, strides "
            f"{list(m.layer_strides)}, latent_dim {m.latent_dim}, batch_norm {m.batch_norm}, "
            f"{n_params:,} parameters",
            f"input       {p.image_size}x{p.image_size}, crop {p.crop}, draft {p.draft}",
            f"sha256      {self.sha256}",
        ]
        if history:
            last = history[-1]
            lines.append(
                f"training    {len(history)} epoch(s), last train loss {last['train_loss']:.5f}"
                + (f", valid loss {last['valid_loss']:.5f}" if last.get("valid_loss") is not None else "")
            )
        return lines


def save_checkpoint(
    folder: Where,
    model: Autoencoder,
    preprocessing: Preprocessing,
    *,
    training: dict[str, Any] | None = None,
    history: dict[str, Any] | None = None,
    inputs: Sequence[Where] = (),
) -> Location:
    """Write ``model``'s weights and config to ``folder``, moved into place when complete.

    An existing ``folder`` is replaced only when it is a checkpoint written by latentdask
    (see :mod:`latentdask.output`); ``inputs`` (the training data) may not lie in it.
    """
    folder = location(folder)
    if model.config.image_size != preprocessing.image_size:
        raise CheckpointError(
            f"model image_size {model.config.image_size} differs from preprocessing "
            f"image_size {preprocessing.image_size}"
        )
    config = CheckpointConfig(model=model.config, preprocessing=preprocessing, training=training or {})
    with owned_output(folder, CHECKPOINT_KIND, inputs=inputs) as staged:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        (staged.path / WEIGHTS_FILE).write_bytes(save(state))
        (staged.path / CONFIG_FILE).write_text(config.model_dump_json(indent=2) + "\n")
        if history is not None:
            (staged.path / TRAINING_FILE).write_text(json.dumps(history, indent=2) + "\n")
    return folder


def load_checkpoint(path: Where, *, device: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint folder, checking that weights and config agree.

    Raises
    ------
    CheckpointError
        For a missing folder or file, a pickle file, invalid JSON or config fields,
        corrupt weights, or weights whose names or shapes differ from the config's.

    Examples
    --------
    >>> ckpt = load_checkpoint("runs/demo/model")  # doctest: +SKIP
    >>> ckpt.model.encode(images)  # doctest: +SKIP
    """
    path = location(path)
    if path.is_file():
        if path.suffix.lower() in _PICKLE_SUFFIXES or _looks_pickled(path):
            raise CheckpointError(
                f"{path} is a pickled PyTorch file; latentdask never unpickles checkpoints. "
                f"Convert it once with: latentdask import-model {path} --config CONFIG.json --out CKPT"
            )
        raise CheckpointError(
            f"{path} is a file; a checkpoint is a folder with {WEIGHTS_FILE} and {CONFIG_FILE}"
        )
    if not path.is_dir():
        raise CheckpointError(f"checkpoint folder {path} does not exist")
    config = read_checkpoint_config(path)
    weights_path = path / WEIGHTS_FILE
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path} is missing")
    try:
        # a local file is memory-mapped; an object is read whole (a checkpoint is small)
        state = load(weights_path.read_bytes()) if is_remote(weights_path) else load_file(weights_path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights_path} is not a valid safetensors file ({exc})") from None
    model = Autoencoder(config.model)
    check_state_dict(model, state, source=str(weights_path))
    model.load_state_dict(state)
    model.to(device).eval()
    return Checkpoint(path=path, model=model, config=config, sha256=checkpoint_sha256(path, config))


def check_state_dict(model: Autoencoder, state: dict[str, torch.Tensor], *, source: str) -> None:
    """Raise CheckpointError naming the first differences between ``state`` and ``model``."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if state[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensor(s): {', '.join(missing[:4])}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} tensor(s): {', '.join(unexpected[:4])}")
    if mismatched:
        problems.append(f"shape differs (weights vs config) for {', '.join(mismatched[:4])}")
    if problems:
        raise CheckpointError(f"{source} does not match the model config: " + "; ".join(problems))


def import_state_dict(state_dict_path: Where, config_path: Where, out: Where) -> Checkpoint:
    """Turn a PyTorch state_dict of a compatible autoencoder into a checkpoint folder.

    ``config_path`` is a JSON file holding either a latentdask ``config.json`` (with
    ``model`` and ``preprocessing``) or just the model fields (``latent_dim``,
    ``channels``, ...), with the default preprocessing at the model's image size.
    The state_dict is read with ``torch.load(weights_only=True)``: tensors only,
    never arbitrary objects. A ``state_dict`` or ``model_state_dict`` entry and a
    ``module.`` prefix (from DataParallel) are unwrapped.
    """
    state_dict_path, config_path = location(state_dict_path), location(config_path)
    for p in (state_dict_path, config_path):
        if not p.is_file():
            raise CheckpointError(f"{p} does not exist")
    check_output(out, CHECKPOINT_KIND, inputs=[state_dict_path, config_path])
    raw = read_json(config_path)
    try:
        if isinstance(raw, dict) and "model" in raw:
            model_config = ModelConfig.model_validate(raw["model"])
            prep = Preprocessing.model_validate(
                raw.get("preprocessing", {"image_size": model_config.image_size})
            )
        else:
            model_config = ModelConfig.model_validate(raw)
            prep = Preprocessing(image_size=model_config.image_size)
    except ValidationError as exc:
        raise CheckpointError(f"{config_path}: {describe_validation_error(exc)}") from None
    try:
        with state_dict_path.open("rb") as file:
            loaded = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or unsafe files
        raise CheckpointError(
            f"{state_dict_path} cannot be read as a tensors-only state_dict ({type(exc).__name__}: {exc})"
        ) from None
    state = _unwrap_state_dict(loaded, state_dict_path)
    model = Autoencoder(model_config)
    check_state_dict(model, state, source=str(state_dict_path))
    model.load_state_dict(state)
    save_checkpoint(
        out,
        model,
        prep,
        training={"imported_from": str(state_dict_path)},
        inputs=[state_dict_path, config_path],
    )
    return load_checkpoint(out)


def _unwrap_state_dict(loaded: Any, source: Location) -> dict[str, torch.Tensor]:
    if isinstance(loaded, dict):
        for key in ("state_dict", "model_state_dict"):
            if isinstance(loaded.get(key), dict):
                loaded = loaded[key]
                break
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise CheckpointError(f"{source} does not hold a state_dict (a mapping of names to tensors)")
    if loaded and all(k.startswith("module.") for k in loaded):
        loaded = {k.removeprefix("module."): v for k, v in loaded.items()}
    return loaded


def _looks_pickled(path: Location) -> bool:
    with path.open("rb") as f:
        head = f.read(4)
    # a pickle stream starts with PROTO (0x80); torch.save writes a zip ("PK")
    return head[:1] == b"\x80" or head[:2] == b"PK"
