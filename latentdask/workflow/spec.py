"""A workflow file: the pydantic model of ``workflows/*.yaml``, its ``--set`` overrides and its matrix.

A workflow names the dataset, the model, and the parameters of each step. Each step's section
*is* the options model of the command that runs the step alone (``encode:`` is
:class:`~latentdask.encode.run.EncodeOptions`, ``render:`` is
:class:`~latentdask.render.options.RenderOptions`, ...), so every default is written once; a
section adds only what exists in a workflow alone (the model's ``checkpoint``, generate's
``samplers``, render's ``overlay``) and says so where a run's default differs from the command's.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SkipValidation,
    ValidationError,
    model_validator,
)
from upath import UPath

from latentdask.cluster.spec import ClusterSpec, ConfigError, read_yaml
from latentdask.data.options import SynthOptions
from latentdask.encode.options import EncodeOptions
from latentdask.errors import describe_validation_error
from latentdask.generate.options import DecodeOptions, FaceRate, GenerateOptions, SamplerSpec, ScoreOptions
from latentdask.location import Location, LocationError, location
from latentdask.model.config import ModelConfig, ModelOptions, TrainOptions
from latentdask.render.options import RenderOptions
from latentdask.stats.options import NormalityOptions, SummaryParams
from latentdask.store.paths import RunFolder


def _location(value: Any) -> Location:
    if not isinstance(value, str | Path):
        raise ValueError(f"expected a path or a URL, got {value!r}")
    try:
        return location(value)
    except LocationError as exc:
        raise ValueError(str(exc)) from None


#: a local path or an fsspec URL (``s3://bucket/runs``) in a workflow file, written back as given
LocationField = Annotated[SkipValidation[Path | UPath], BeforeValidator(_location), PlainSerializer(str)]


class DatasetSection(BaseModel):
    """Either ``root`` (a CelebA-layout or image folder) or ``synthetic`` faces made by the run."""

    model_config = ConfigDict(extra="forbid")

    root: LocationField | None = None
    synthetic: SynthOptions | None = None

    @model_validator(mode="after")
    def _one_source(self) -> DatasetSection:
        if (self.root is None) == (self.synthetic is None):
            raise ValueError(
                "give exactly one of 'root' (a dataset folder) or 'synthetic' (faces made by the run)"
            )
        return self


class ModelSection(ModelOptions):
    """The architecture to train, or ``checkpoint``: an existing checkpoint folder to use as it is."""

    checkpoint: LocationField | None = None


#: encode options the runner decides: a stopped encode resumes, a changed one starts again, and the
#: statistics are always written, with the ``stats`` section's parameters
RUNNER_DECIDES = frozenset({"resume", "overwrite", "stats", "stats_params"})
#: encode options that change how fast, not what comes out: left out of the step's identity
SPEED_ONLY = frozenset({"decode_threads", "torch_threads", "batch_size"})


class EncodeSection(EncodeOptions):
    """The encode step's options; resuming, replacing and the statistics' parameters are the run's."""

    @model_validator(mode="after")
    def _runner_decides(self) -> EncodeSection:
        if self.resume or self.overwrite or not self.stats or self.stats_params != SummaryParams():
            raise ValueError(
                "resume, overwrite, stats and stats_params are decided by the run: a stopped encode "
                "resumes, a changed one starts again, and the statistics take the 'stats' section"
            )
        return self

    def identity_params(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude=set(RUNNER_DECIDES | SPEED_ONLY))

    def for_run(self, *, stats: SummaryParams, resume: bool) -> EncodeOptions:
        """The options of the run's encode: resume what stopped, or start again (replacing an older store)."""
        own = self.model_dump(exclude=set(RUNNER_DECIDES))
        return EncodeOptions(**own, stats_params=stats, resume=resume, overwrite=not resume)


def _one_path_component(name: str) -> str:
    if name in (".", ".."):  # runs/.. would make the run folder the current directory
        raise ValueError(f"{name!r} is not a name; use letters, digits, '_', '.' or '-'")
    return name


#: a name from a workflow that becomes one component of a path (a run folder, a sampler's points)
PathComponent = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$"), AfterValidator(_one_path_component)]


class SamplerEntry(SamplerSpec):
    """A sampler of the generate step; ``label`` names its output (default: the sampler's name).

    ``gmm`` fits its mixture in the run (on the fit's rows) with ``components`` and ``covariance``.
    """

    label_: PathComponent | None = Field(default=None, alias="label")
    # gmm: K, or picked by held-out log-likelihood; a run's default (auto) differs from the command's (8)
    components: int | Literal["auto"] = "auto"
    max_components: int = Field(default=8, ge=1)  # gmm, components="auto": K = 1 … this
    covariance: Literal["full", "diag"] = "full"  # gmm

    @property
    def label(self) -> str:
        return self.label_ or self.name

    @property
    def spec(self) -> SamplerSpec:
        return SamplerSpec(name=self.name, b=self.b, quantile=self.quantile)


class GenerateSection(GenerateOptions):
    samplers: tuple[SamplerEntry, ...] = ()
    # the rows the samplers are fitted on and scores measured against (the others are held out):
    # a split, or "fit" (all but a seeded 10 %); None: train when the dataset has it, else fit
    fit: Literal["train", "fit"] | None = None


class DecodeSection(DecodeOptions):
    """The decode step: each sampler's points above real images and their reconstructions."""

    # a run always measures the face rate of each sampler, on 200 decoded images (the command: on request)
    face_rate: FaceRate = 200


class RenderSection(RenderOptions):
    """Datashader projections of every z-point (``latentdask render``); pairs by number or by rank."""

    # A run's defaults differ from the command's on purpose: the command draws what it is asked
    # for, a study draws the pairs that mean something across models (ranked by correlation and
    # by slice population, not by component number) and the CelebA study's slices at |x_j| < 1.5.
    pairs: tuple[str, ...] = ("corr:1", "corr:2", "smallest-slice:1")
    slice: float | None = 1.5
    overlay: tuple[str, ...] = ()  # labels of generate's samplers whose points are drawn in red


class Workflow(BaseModel):
    """A workflow file, validated before anything runs."""

    model_config = ConfigDict(extra="forbid")

    name: PathComponent
    run_dir: LocationField | None = None
    #: a cluster spec file, or the spec inline (then ``--set cluster.workers=8`` scales it)
    cluster: Path | ClusterSpec | None = None
    dataset: DatasetSection
    model: ModelSection = ModelSection()
    train: TrainOptions = TrainOptions()
    encode: EncodeSection = EncodeSection()
    stats: SummaryParams = SummaryParams()
    normality: NormalityOptions = NormalityOptions()
    generate: GenerateSection = GenerateSection()
    score: ScoreOptions = ScoreOptions()
    decode: DecodeSection = DecodeSection()
    render: RenderSection = RenderSection()
    #: where synthetic faces go (default: ``<run folder>/data``); the runs of a sweep share one
    data_dir: LocationField | None = None
    #: ``section.key: [values]``: one run per combination (see :func:`expand_matrix`)
    matrix: dict[str, list[Any]] = {}
    #: fsspec options per protocol for object storage (``{s3: {endpoint_url: …, key: …, secret: …}}``),
    #: on the client and every worker; never shown nor recorded (``run.json``), for they hold credentials
    storage_options: dict[str, dict[str, Any]] = Field(default_factory=dict, exclude=True, repr=False)

    @model_validator(mode="after")
    def _model_builds(self) -> Workflow:
        """The architecture is checked with the file, not after the synth step has run."""
        if self.model.checkpoint is None:
            try:
                ModelConfig(**self.model.architecture_fields())
            except ValidationError as exc:
                raise ValueError(f"model: {describe_validation_error(exc)}") from None
        return self

    @model_validator(mode="after")
    def _overlays_are_samplers(self) -> Workflow:
        labels = [entry.label for entry in self.generate.samplers]
        unknown = [label for label in self.render.overlay if label not in labels]
        if unknown:
            raise ValueError(
                f"render.overlay names {unknown}, which are not among generate's samplers {labels}"
            )
        return self

    @property
    def folder(self) -> Location:
        return self.run_dir if self.run_dir is not None else Path("runs") / self.name

    @property
    def paths(self) -> RunFolder:
        return RunFolder(self.folder)


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``["dataset.root=/data/celeba", "train.epochs=3"]`` applied to the raw mapping; values are YAML."""
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value (e.g. train.epochs=3), got {override!r}")
        set_key(data, key, yaml.safe_load(text), what=f"--set {override!r}")
    return data


def set_key(data: dict[str, Any], key: str, value: Any, *, what: str) -> None:
    """``data["section"]["key"] = value`` for ``key="section.key"``; ``what`` names the source in errors."""
    target = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = target.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{what}: {part!r} is not a section")
        target = node
    target[parts[-1]] = value


def expand_matrix(workflow: Workflow, source: str | Path = "workflow") -> list[Workflow]:
    """One workflow per combination of the matrix's values, each in ``<run folder>/<combination>``.

    ``matrix: {model.latent_dim: [64, 128], model.batch_norm: [true, false]}`` gives four
    runs named like ``sweep.latent_dim-64.batch_norm-true``; synthetic faces are made once,
    in ``<run folder>/data``, for all of them. Without a matrix: the workflow itself.
    """
    if not workflow.matrix:
        return [workflow]
    for key, values in workflow.matrix.items():
        if not values:
            raise ConfigError(f"{source}: matrix.{key} lists no values")
    base = workflow.model_dump(mode="json", by_alias=True, exclude={"matrix"})
    runs = []
    for combination in itertools.product(*workflow.matrix.values()):
        data = copy.deepcopy(base)
        label = ".".join(
            f"{key.split('.')[-1]}-{str(value).lower()}"
            for key, value in zip(workflow.matrix, combination, strict=True)
        )
        for key, value in zip(workflow.matrix, combination, strict=True):
            set_key(data, key, value, what=f"matrix key {key!r}")
        data |= {
            "storage_options": workflow.storage_options,  # left out of the dump: never recorded
            "name": f"{workflow.name}.{label}",
            "run_dir": str(workflow.folder / label),
            "data_dir": str(workflow.data_dir or workflow.paths.data),
        }
        try:
            runs.append(Workflow.model_validate(data))
        except ValidationError as exc:
            raise ConfigError(f"{source} (matrix {label}): {describe_validation_error(exc)}") from None
    return runs


def load_workflow(path: str | Path, overrides: Sequence[str] = ()) -> Workflow:
    """Read, override and validate a workflow file; errors name the file and the field."""
    path = Path(path)
    data = read_yaml(path, "workflow")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (name, dataset, model, ...)")
    data = apply_overrides(data, overrides)
    try:
        # relative paths in the file are relative to where the command runs, like the CLI's
        return Workflow.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_validation_error(exc)}") from None
