"""Freed memory kept for the next batch in a process that encodes: glibc's thresholds, while it encodes.

distributed's nanny starts its workers with ``MALLOC_TRIM_THRESHOLD_=65536``, so that freed
memory goes back to the operating system at once (``distributed.nanny.pre-spawn-environ``).
Setting any threshold also stops glibc from raising its mmap threshold as large blocks are
freed: every allocation above 128 KiB is then a fresh mapping. An encoder's activations are
such blocks (16 MiB for the first convolution of a batch of 64 at 64 × 64), so each batch
touches new pages that the kernel must zero: measured on a 2-core VM, the encoder took
0.8–0.9 ms an image with the nanny's setting and 0.45–0.5 ms with these thresholds, at the
same peak resident memory.

A task runs in a worker's thread, and glibc gives each thread an arena of heaps of at most
64 MiB: a block near that size is mapped afresh whatever the thresholds. Hence the CPU's
batch of 64 images (:func:`~latentdask.encode.task.default_batch_size`): as fast as 256, and
each of its blocks fits.

:func:`retain_freed_memory` raises both thresholds while a model is loaded on a worker (the
encode's worker plugin) and :func:`release_freed_memory` puts the nanny's back when it goes;
the benchmarks' loops call it too, so that their ratios measure the pipeline, not the
allocator. Both do nothing where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import functools
import os
from typing import Any

#: mallopt's parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

#: blocks below this come from the heap and are reused (a batch's activations); glibc refuses more
#: than half its largest heap, 32 MiB on 64-bit machines (a worker thread's arena maps larger ones anyway)
MMAP_THRESHOLD = 32 * 2**20
#: freed memory at the top of the heap kept up to this much
TRIM_THRESHOLD = 512 * 2**20
#: glibc's own mmap threshold, which stays fixed once any threshold is set
_DEFAULT_MMAP_THRESHOLD = 128 * 2**10


@functools.cache
def _mallopt() -> Any:
    """glibc's ``mallopt``, or None under another C library (``CS_GNU_LIBC_VERSION`` is glibc's alone)."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
        return ctypes.CDLL(None).mallopt
    except (AttributeError, ValueError, OSError):
        return None


def retain_freed_memory() -> bool:
    """Keep freed blocks of up to :data:`MMAP_THRESHOLD` for reuse; True where both thresholds took."""
    mallopt = _mallopt()
    if mallopt is None:
        return False
    mapped = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    return bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and mapped


def release_freed_memory() -> None:
    """Give freed memory back as the process was told to (``MALLOC_TRIM_THRESHOLD_``, else glibc's)."""
    mallopt = _mallopt()
    if mallopt is None:
        return
    trim = os.environ.get("MALLOC_TRIM_THRESHOLD_", "")
    mallopt(_M_MMAP_THRESHOLD, _DEFAULT_MMAP_THRESHOLD)
    mallopt(_M_TRIM_THRESHOLD, int(trim) if trim.isdigit() else 128 * 2**10)
