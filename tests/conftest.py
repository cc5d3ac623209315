from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from latentdask.data.synthetic_faces import synthesize
from tests.helpers import make_checkpoint, require_extra

#: the marks of the slow parts: ``pytest -m "not e2e and not browser and not cluster"`` runs the rest
SLOW = ("e2e", "browser", "cluster")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """GPU tests skipped without a CUDA device; the files that hold slow tests collected first, each
    file's tests in their order, so that spread over processes (``-n 2 --dist loadfile``) they start
    early instead of ending the run one after another."""
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
    slow = {item.path for item in items if any(item.get_closest_marker(name) for name in SLOW)}
    items.sort(key=lambda item: item.path not in slow)


@pytest.fixture(scope="session")
def faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 synthetic faces in CelebA layout (96 train, 12 valid, 12 test); read-only for tests."""
    return synthesize(tmp_path_factory.mktemp("data") / "faces", n=120, seed=0, progress=False)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small seeded checkpoint of :func:`tests.helpers.make_checkpoint`; read-only for tests."""
    return make_checkpoint(tmp_path_factory.mktemp("model") / "ckpt")


@dataclass(frozen=True)
class S3Server:
    """A running moto server: the environment that reaches it, and its request log (one line per request)."""

    environment: dict[str, str]
    log: Path

    def requests(self, method: str, key: str) -> list[str]:
        """The status codes of the ``method`` requests for the object ``key`` (``bucket/path``) so far."""
        request = re.compile(rf"{method} /{re.escape(key)} HTTP/[0-9.]+\S*\" (?P<status>\d+)")
        return [match["status"] for match in request.finditer(self.log.read_text())]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto in server mode on 127.0.0.1 (a subprocess, as s3fs's own tests run it) for the session;
    this process, the commands it starts and their workers reach it through the environment."""
    require_extra("moto.server")
    require_extra("s3fs")
    from latentdask.testing import local_s3_server

    log = tmp_path_factory.mktemp("s3") / "requests.log"
    with local_s3_server(log) as environment:
        yield S3Server(environment, log)


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    """A new, empty bucket: ``s3://NAME``."""
    import s3fs

    name = f"test-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(use_listings_cache=False).mkdir(name)
    return f"s3://{name}"
