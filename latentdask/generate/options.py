"""What the generating commands are asked, apart from the code that does it, so that reading a
workflow file imports neither torch nor scipy: the samplers (:class:`SamplerSpec`, drawn by
:mod:`~latentdask.generate.samplers`), how many points (:class:`GenerateOptions`), the scores
(:class:`ScoreOptions`, :mod:`~latentdask.generate.score`) and the decoded grid
(:class:`DecodeOptions`, :mod:`~latentdask.generate.grids`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from latentdask.errors import LatentdaskError, describe_validation_error

FaceRate = Annotated[int, Field(ge=0)]


class DecodeOptions(BaseModel):
    """The decoded grid: ``latentdask decode`` and a workflow's ``decode`` section."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    per_row: int = Field(default=12, ge=1)
    scale: int = Field(default=2, ge=1)  # pixels per image pixel
    through: Literal["centre", "origin"] = "centre"  # where a --path crosses its plane
    face_rate: FaceRate = 0  # decoded images per point set the face rate is measured on (0: none)


SamplerName = Literal["uniform", "gaussian", "empirical", "mvn", "mvn-core", "gmm"]


class GenerateError(LatentdaskError):
    """A sampler that cannot be built as asked."""


class SamplerSpec(BaseModel):
    """A sampler and its parameters."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: SamplerName
    b: float = Field(default=1.5, gt=0)  # uniform: half-width of the cube
    quantile: float = Field(default=0.9973, gt=0, lt=1)  # mvn-core: χ² quantile of the kept core


def sampler_spec(name: str, **params: float) -> SamplerSpec:
    """A validated SamplerSpec, with one clear error for an unknown name or a bad parameter."""
    try:
        return SamplerSpec(name=name, **params)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise GenerateError(f"sampler {name!r}: {describe_validation_error(exc)}") from None


class GenerateOptions(BaseModel):
    """How many points ``latentdask generate`` (and each sampler of a workflow's ``generate``) writes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n: int = Field(default=10_000, ge=1)
    seed: int = 0


class ScoreOptions(BaseModel):
    """The options of ``latentdask score`` and of a workflow's ``score`` section."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reference_size: int = Field(default=2000, ge=1)  # real points outside the fit scored beside the sets
    pair: tuple[int, int] | None = None  # None: the pair whose slice the real points fill least
    threshold: float | None = None  # None: the statistics' first slice threshold
    seed: int = 0


class GMMOptions(BaseModel):
    """The options of ``latentdask gmm`` and of a workflow's ``gmm`` sampler."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    components: Annotated[int, Field(ge=1)] | Literal["auto"] = 8
    max_components: int = Field(default=8, ge=1)  # with components="auto": K = 1 … this
    covariance: Literal["full", "diag"] = "full"
    split: str | None = None  # the rows fitted; None: train when the store has it, else fit
    where: tuple[str, ...] = ()
    seed: int = 0
    max_iter: int = Field(default=100, ge=1)
    tol: float = Field(default=1e-3, ge=0)  # on the mean log-likelihood per row
    reg_covar: float = Field(default=1e-6, ge=0)
    init_sample: int = Field(default=20_000, ge=1)
    lloyd_iterations: int = Field(default=3, ge=0)
