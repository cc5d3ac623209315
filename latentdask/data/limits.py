"""What one image may cost: limits users set through the environment (each worker reads its own).

``LATENTDASK_MAX_FILE_BYTES`` (bytes read per file), ``LATENTDASK_MAX_PIXELS`` (width ×
height decoded) and ``LATENTDASK_ISOLATED_DECODE_BYTES`` (memory of the child process that
decodes the images of a shard that killed its worker) are read by :func:`env_limit`.
"""

from __future__ import annotations

import os

from latentdask.errors import LatentdaskError


def env_limit(name: str, unit: str) -> int | None:
    """``$name`` as a positive whole number (``_`` separators allowed), or None when it is not set.

    Examples
    --------
    >>> env_limit("LATENTDASK_NO_SUCH_LIMIT", "bytes") is None
    True
    """
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        limit = int(value.replace("_", ""))
    except ValueError:
        limit = 0
    if limit < 1:
        raise LatentdaskError(f"{name} must be a positive number of {unit}, got {value!r}")
    return limit
