"""Exceptions that carry a message meant for the user.

The CLI prints a :class:`LatentdaskError` as one line and exits with code 2;
anything else is a bug and shows its traceback.
"""

from __future__ import annotations


class LatentdaskError(Exception):
    """An error whose message tells the user what is wrong and where."""


class DatasetError(LatentdaskError):
    """A dataset folder or its listing files cannot be read as promised."""


class CheckpointError(LatentdaskError):
    """A checkpoint folder is missing, corrupt, or its weights and config disagree."""


class ModelConfigError(LatentdaskError):
    """An autoencoder configuration that cannot be built (e.g. an image size the strides do not divide)."""


class StatsError(LatentdaskError):
    """z-points, a row selection or statistics that cannot be used as given."""


class ImageDecodeError(LatentdaskError):
    """One image could not be decoded; ``reason`` is a short, stable description.

    Callers decide what to do: the encoder records ``reason`` in the store's
    ``error`` column and goes on.
    """

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


def describe_validation_error(exc: Exception) -> str:
    """One line for all pydantic errors: ``field 'a.b': message; ...`` (a check of the whole: its message)."""
    errors = getattr(exc, "errors", None)
    if errors is None:
        return str(exc)
    parts = []
    for error in errors():
        where = ".".join(str(p) for p in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"field {where!r}: {message}" if where else message)
    return "; ".join(parts)
