"""The options of what the data stage makes, apart from the code that makes it (pydantic only): the
CLI and a workflow file read them without importing the face drawing."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, field_validator


class SynthOptions(BaseModel):
    """Synthetic faces: ``latentdask synth`` and a workflow's ``dataset.synthetic``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n: int = 2000
    seed: int = 0

    @field_validator("n")
    @classmethod
    def _at_least_one(cls, n: int) -> int:
        if n < 1:
            raise ValueError(f"must be at least 1, got {n}")
        return n
