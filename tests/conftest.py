from __future__ import annotations

from pathlib import Path

import pytest
import torch

from latentdask.data.synthetic_faces import synthesize
from tests.helpers import make_checkpoint


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 synthetic faces in CelebA layout (96 train, 12 valid, 12 test); read-only for tests."""
    return synthesize(tmp_path_factory.mktemp("data") / "faces", n=120, seed=0, progress=False)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small seeded checkpoint of :func:`tests.helpers.make_checkpoint`; read-only for tests."""
    return make_checkpoint(tmp_path_factory.mktemp("model") / "ckpt")
