"""The autoencoder, its training and its checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from latentdask.data.dataset import open_dataset
from latentdask.data.decode import Preprocessing
from latentdask.errors import CheckpointError, ModelConfigError
from latentdask.model.autoencoder import Autoencoder
from latentdask.model.checkpoint import import_state_dict, load_checkpoint, save_checkpoint
from latentdask.model.config import ModelConfig, TrainOptions, build_config
from latentdask.model.train import decode_rows, evaluate, train

SMALL = {"channels": (8, 8, 16, 16), "latent_dim": 16}
LEARNS = {"channels": (8, 8, 16, 16), "latent_dim": 16, "batch_norm": True}  # learns fast on 96 images


@pytest.mark.parametrize(
    ("image_size", "latent_dim", "channels", "batch_norm"),
    [
        (64, 256, (64, 64, 128, 128), False),
        (32, 8, (4, 8, 8, 16), True),
        (128, 32, (8, 8, 16, 16), False),
        (48, 12, (6, 6, 6, 6), True),
        (16, 4, (3, 5), False),
    ],
)
def test_shapes(image_size: int, latent_dim: int, channels: tuple[int, ...], batch_norm: bool) -> None:
    config = ModelConfig(
        image_size=image_size, latent_dim=latent_dim, channels=channels, batch_norm=batch_norm
    )
    model = Autoencoder(config).eval()
    images = torch.rand(3, 3, image_size, image_size)
    with torch.no_grad():
        z = model.encode(images)
        out = model.decode(z)
    assert z.shape == (3, latent_dim) and z.dtype == torch.float32
    assert out.shape == images.shape
    assert out.min().item() >= 0.0 and out.max().item() <= 1.0  # sigmoid output
    convs = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    transposed = [m for m in model.decoder.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [c.out_channels for c in convs] == list(channels)
    assert [c.out_channels for c in transposed] == list(reversed(channels))
    has_bn = any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert has_bn == batch_norm


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"image_size": 60}, "not divisible by 16"),
        ({"channels": ()}, "non-empty"),
        ({"strides": (2, 2)}, "strides has 2 entries"),
        ({"latent_dim": 0}, "latent_dim"),
    ],
)
def test_bad_config_is_a_clear_error(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ModelConfigError, match=message):
        build_config(**fields)


def test_strides_one_keep_the_size() -> None:
    config = ModelConfig(image_size=20, channels=(4, 4), strides=(1, 2), latent_dim=3)
    assert config.feature_size == 10
    assert Autoencoder(config)(torch.rand(1, 3, 20, 20)).shape == (1, 3, 20, 20)


def train_small(faces: Path, out: Path, *, epochs: int = 2, seed: int = 0) -> object:
    return train(
        faces,
        out,
        model=ModelConfig(image_size=32, **LEARNS),  # type: ignore[arg-type]
        preprocessing=Preprocessing(image_size=32),
        options=TrainOptions(epochs=epochs, batch_size=16, lr=3e-3, seed=seed, device="cpu"),
        progress=False,
    )


def test_training_lowers_the_loss_and_writes_a_checkpoint(faces: Path, tmp_path: Path) -> None:
    checkpoint = train_small(faces, tmp_path / "ckpt", epochs=6)
    history = json.loads((tmp_path / "ckpt" / "training.json").read_text())["epochs"]
    assert len(history) == 6
    # the untrained model (same seed, same initialisation) on the same validation images
    torch.manual_seed(0)
    untrained = Autoencoder(ModelConfig(image_size=32, **LEARNS))  # type: ignore[arg-type]
    dataset = open_dataset(faces)
    valid = decode_rows(
        dataset, dataset.manifest.split_rows("valid"), Preprocessing(image_size=32), progress=False
    )
    initial = evaluate(untrained, valid.pixels, 16, torch.device("cpu"))
    assert history[-1]["valid_loss"] < 0.75 * initial, (history[-1], initial)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["training"]["train_images"] == 96 and config["training"]["valid_images"] == 12
    assert checkpoint.config.model.batch_norm  # type: ignore[attr-defined]


def test_training_is_reproducible_for_a_seed(faces: Path, tmp_path: Path) -> None:
    train_small(faces, tmp_path / "a", epochs=1, seed=3)
    train_small(faces, tmp_path / "b", epochs=1, seed=3)
    train_small(faces, tmp_path / "c", epochs=1, seed=4)
    a, b, c = (load_file(str(tmp_path / k / "model.safetensors")) for k in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, Autoencoder]:
    torch.manual_seed(0)
    model = Autoencoder(ModelConfig(image_size=32, batch_norm=True, **SMALL))  # type: ignore[arg-type]
    with torch.no_grad():  # make batch-norm buffers non-trivial
        model.train()(torch.rand(4, 3, 32, 32))
    return save_checkpoint(tmp_path / "ckpt", model, Preprocessing(image_size=32)), model


def test_checkpoint_round_trip_is_bit_exact(saved: tuple[Path, Autoencoder]) -> None:
    path, model = saved
    loaded = load_checkpoint(path)
    original, restored = model.state_dict(), loaded.model.state_dict()
    assert original.keys() == restored.keys()
    for key in original:
        assert torch.equal(original[key], restored[key]), key
    assert loaded.config.model == model.config
    assert loaded.sha256 == load_checkpoint(path).sha256
    images = torch.rand(2, 3, 32, 32)
    model.eval()
    with torch.inference_mode():
        assert torch.equal(model.encode(images), loaded.model.encode(images))


def test_corrupt_weights(saved: tuple[Path, Autoencoder]) -> None:
    path, _ = saved
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        load_checkpoint(path)


def test_weights_that_disagree_with_config(saved: tuple[Path, Autoencoder]) -> None:
    path, _ = saved
    config = json.loads((path / "config.json").read_text())
    config["model"]["latent_dim"] = 17
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"shape differs .*to_latent"):
        load_checkpoint(path)


def test_missing_tensor(saved: tuple[Path, Autoencoder]) -> None:
    path, _ = saved
    state = load_file(str(path / "model.safetensors"))
    del state["encoder.to_latent.bias"]
    save_file(state, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="missing 1 tensor"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["model"].update(channels="wide"), "field 'model.channels'"),
        (lambda c: c.update(format="something-else"), "'format' must be"),
        (lambda c: c["preprocessing"].update(image_size=64), "differs from preprocessing"),
        (lambda c: c.update(surprise=1), "field 'surprise'"),
    ],
)
def test_bad_config_json(saved: tuple[Path, Autoencoder], edit: object, message: str) -> None:
    path, _ = saved
    config = json.loads((path / "config.json").read_text())
    edit(config)  # type: ignore[operator]
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_missing_pieces(tmp_path: Path, saved: tuple[Path, Autoencoder]) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")
    path, _ = saved
    (path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(path)
    (path / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"config.json is missing"):
        load_checkpoint(path)


def test_pickle_file_is_refused_without_unpickling(tmp_path: Path) -> None:
    class Boom:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("unpickled!",))

    path = tmp_path / "model.pt"
    torch.save({"x": Boom()}, path)
    with pytest.raises(CheckpointError, match="never unpickles"):
        load_checkpoint(path)
    renamed = tmp_path / "weights.data"
    renamed.write_bytes(path.read_bytes())
    with pytest.raises(CheckpointError, match="never unpickles"):
        load_checkpoint(renamed)


def test_import_state_dict(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = Autoencoder(ModelConfig(image_size=32, **SMALL))  # type: ignore[arg-type]
    torch.save(
        {"model_state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}},
        tmp_path / "theirs.pt",
    )
    (tmp_path / "config.json").write_text(json.dumps({"image_size": 32, **SMALL}))
    checkpoint = import_state_dict(tmp_path / "theirs.pt", tmp_path / "config.json", tmp_path / "ckpt")
    for key, value in model.state_dict().items():
        assert torch.equal(checkpoint.model.state_dict()[key], value)
    assert checkpoint.preprocessing.image_size == 32


def test_import_refuses_objects_and_mismatches(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"image_size": 32, **SMALL}))
    torch.save(Autoencoder(ModelConfig(image_size=32, **SMALL)), tmp_path / "whole_model.pt")  # type: ignore[arg-type]
    with pytest.raises(CheckpointError, match="tensors-only state_dict"):
        import_state_dict(tmp_path / "whole_model.pt", tmp_path / "config.json", tmp_path / "out")
    other = Autoencoder(ModelConfig(image_size=32, channels=(8, 8, 16, 32), latent_dim=16))
    torch.save(other.state_dict(), tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="does not match the model config"):
        import_state_dict(tmp_path / "other.pt", tmp_path / "config.json", tmp_path / "out")
    assert not (tmp_path / "out").exists()
