"""Decoding in a child process, for the shard whose images killed its worker.

When a shard's task kills its worker repeatedly (distributed gives up with
``KilledWorker``), the shard is encoded once more with every image read and decoded in
a child process under a memory limit. An image that still exhausts memory, or kills the
child any other way, becomes an invalid row with its reason; the child is started
again and the shard's other images are encoded as usual.

The child is a plain subprocess (dask worker processes are daemons, which may not
start ``multiprocessing`` children); requests and answers are pickles over its pipes,
exchanged only between this process and the child it started.
"""

from __future__ import annotations

import os
import pickle
import resource
import signal
import subprocess
import sys
from typing import Any, BinaryIO

import numpy as np

from latentdask.data.limits import env_limit
from latentdask.errors import ImageDecodeError

#: address space the child may use; override with ``LATENTDASK_ISOLATED_DECODE_BYTES``
MEMORY_ENV = "LATENTDASK_ISOLATED_DECODE_BYTES"
DEFAULT_MEMORY_BYTES = 4 * 2**30


def memory_limit() -> int:
    return env_limit(MEMORY_ENV, "bytes") or DEFAULT_MEMORY_BYTES


class IsolatedDecoder:
    """Reads and decodes one image at a time in a child process; a dying child costs one row."""

    def __init__(self, memory_bytes: int | None = None) -> None:
        self.memory_bytes = memory_bytes or memory_limit()
        self._child: subprocess.Popen[bytes] | None = None

    def load(self, container: Any, name: str, preprocessing: Any, decoder: str) -> tuple[np.ndarray, str]:
        """``(rgb, crop)`` as the store's ``decoder`` gives them on the CPU (see
        :func:`~latentdask.data.opencv.cpu_decoder`); ImageDecodeError for a bad image or a dead child."""
        child = self._start()
        assert child.stdin is not None and child.stdout is not None
        try:
            pickle.dump((container, name, preprocessing, decoder), child.stdin)
            child.stdin.flush()
            kind, *answer = pickle.load(child.stdout)
        except (EOFError, BrokenPipeError, pickle.UnpicklingError):
            code = child.wait()
            self._child = None
            died = signal.Signals(-code).name if code < 0 else f"exit code {code}"
            raise ImageDecodeError(name, f"decoding killed its isolated process ({died})") from None
        if kind == "error":
            raise ImageDecodeError(name, answer[0])
        return answer[0], answer[1]

    def _start(self) -> subprocess.Popen[bytes]:
        if self._child is None or self._child.poll() is not None:
            limit = self.memory_bytes

            def bounded() -> None:
                resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

            environment = os.environ | {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
            self._child = subprocess.Popen(
                [sys.executable, "-m", "latentdask.data.isolated"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                preexec_fn=bounded,
                env=environment,
            )
        return self._child

    def close(self) -> None:
        if self._child is not None:
            if self._child.stdin is not None:
                self._child.stdin.close()
            self._child.wait()
            self._child = None

    def __enter__(self) -> IsolatedDecoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serve(requests: BinaryIO, answers: BinaryIO) -> None:
    """The child's loop: one (container, name, preprocessing, decoder) in, one answer out, until stdin
    closes."""
    from latentdask.data.opencv import cpu_decoder

    while True:
        try:
            container, name, preprocessing, decoder = pickle.load(requests)
        except EOFError:
            return
        try:
            rgb, crop = cpu_decoder(decoder)(container.read(name), preprocessing, name)
            answer: tuple[Any, ...] = ("ok", rgb, crop)
        except ImageDecodeError as exc:
            answer = ("error", exc.reason)
        except MemoryError:
            answer = ("error", "decoding needs more memory than the isolated decoder may use")
        pickle.dump(answer, answers)
        answers.flush()


if __name__ == "__main__":
    _serve(sys.stdin.buffer, sys.stdout.buffer)
