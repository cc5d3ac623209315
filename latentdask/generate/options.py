"""The decoded grid's options, apart from the torch code that draws it (:mod:`~latentdask.generate.grids`),
so that reading a workflow file imports no torch."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

FaceRate = Annotated[int, Field(ge=0)]


class DecodeOptions(BaseModel):
    """The decoded grid: ``latentdask decode`` and a workflow's ``decode`` section."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    per_row: int = Field(default=12, ge=1)
    scale: int = Field(default=2, ge=1)  # pixels per image pixel
    through: Literal["centre", "origin"] = "centre"  # where a --path crosses its plane
    face_rate: FaceRate = 0  # decoded images per point set the face rate is measured on (0: none)
