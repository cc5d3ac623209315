"""Freed memory kept for the next batch while a worker encodes: page faults counted by the kernel."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from latentdask.encode.allocator import _mallopt

#: run in a fresh process started as distributed's nanny starts workers; prints faults per stage
PROBE = """
import ctypes, json, resource, threading
from latentdask.encode.allocator import release_freed_memory, retain_freed_memory

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
SIZE = 16 * 2**20  # the first layer's output for the CPU's batch of 64 (torch allocates with malloc)

def faults_of_ten_batches():
    def run():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(10):
            block = libc.malloc(SIZE)
            ctypes.memset(block, 1, SIZE)  # written once, as a layer's output is
            libc.free(block)
        counted.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    counted = []
    worker = threading.Thread(target=run)  # tasks run in a worker's threads, not its main thread
    worker.start()
    worker.join()
    return counted[0]

stages = {"nanny": faults_of_ten_batches()}
retain_freed_memory()
stages["retained"] = faults_of_ten_batches()
release_freed_memory()
stages["released"] = faults_of_ten_batches()
print(json.dumps(stages))
"""


@pytest.mark.skipif(_mallopt() is None, reason="glibc's mallopt is needed")
def test_retained_memory_is_reused_by_the_next_batch_and_released_after() -> None:
    environment = os.environ | {"MALLOC_TRIM_THRESHOLD_": "65536"}  # distributed's nanny default
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=environment, capture_output=True, text=True, check=True
    )
    faults = json.loads(done.stdout)
    pages = 16 * 2**20 // os.sysconf("SC_PAGE_SIZE")
    assert faults["nanny"] >= 9 * pages, faults  # every batch's pages are new ones, zeroed by the kernel
    assert faults["retained"] <= 2 * pages, faults  # the first batch's pages, reused nine times
    assert faults["released"] >= 9 * pages, faults  # the nanny's setting back once the model goes
