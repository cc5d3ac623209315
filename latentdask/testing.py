"""Servers that tests and benchmarks run against: a local S3-compatible server (moto in server mode,
a subprocess, as s3fs's own tests run it)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from latentdask.errors import LatentdaskError


@contextlib.contextmanager
def local_s3_server(log: Path) -> Iterator[dict[str, str]]:
    """A moto S3 server on 127.0.0.1 for the block (its requests logged to ``log``), reached by this
    process and every process it starts through the usual variables; yields them."""
    try:
        import moto.server  # noqa: F401
    except ImportError:
        raise LatentdaskError(
            "a local S3 server needs moto: pip install 'moto[server]' (or give --bucket s3://...)"
        ) from None
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with log.open("w") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    environment = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise LatentdaskError(
                        f"the local S3 server did not start: {log.read_text()[-500:]}"
                    ) from None
                time.sleep(0.1)
        yield environment
    finally:
        server.terminate()
        server.wait(timeout=30)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
