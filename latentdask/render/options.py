"""Render's options, apart from the datashader code (:mod:`~latentdask.render.command`), so that
reading a workflow file imports no datashader."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class RenderOptions(BaseModel):
    """Datashader projections of every z-point: ``latentdask render`` and a workflow's ``render``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pairs: tuple[str, ...] = ()  # "a,b" by number, "corr:K", "smallest-slice:K", "largest-slice:K" by rank
    top_correlated: int = Field(default=16, ge=0)
    pcs: int = Field(default=4, ge=0)
    slice: float | None = None  # slice projections at this threshold (None: none)
    slice_ranked: int = Field(default=4, ge=0)
    special: int | None = None  # the row of one real point drawn in orange
    color_by: str | None = None
    width: int = Field(default=800, ge=100)
    how: Literal["eq_hist", "log"] = "eq_hist"
    split: str = "all"
    where: tuple[str, ...] = ()
