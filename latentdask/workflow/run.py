"""Run a workflow file: the study's steps in order, each skipped when already done.

A workflow (``workflows/*.yaml``) names the dataset, the model, and the parameters of
each step; every output lands under ``run_dir`` (default ``runs/<name>``). Steps, in
order: ``synth`` (when the dataset is synthetic), ``train`` (unless the model is an
existing checkpoint), ``encode`` (which also writes the statistics of all valid
z-points), ``generate`` (artificial z-points of each listed sampler) and ``score``
(their in-distribution scores beside held-out real points), ``decode`` (a grid of
what the decoder makes of each sampler's points, above real reconstructions).

Each step's identity is a sha256 of its parameters and of the identities of the
steps before it. ``run.json`` records identities, timings and outputs; a step whose
identity is unchanged and whose output is complete is skipped, a step that stopped
half-way continues (encode resumes its shards), and a step whose parameters changed
is redone — and, since identities chain, so is everything after it.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from latentdask.cluster.connect import NAMED_KINDS, ClusterChoice, cluster_down, cluster_up
from latentdask.cluster.spec import ClusterSpec, ConfigError, read_yaml
from latentdask.data.decode import Preprocessing
from latentdask.errors import describe_validation_error
from latentdask.generate.samplers import SamplerSpec
from latentdask.model.config import ModelConfig
from latentdask.model.train import TrainOptions
from latentdask.progress import console
from latentdask.stats.summary import SummaryParams
from latentdask.store.paths import default_stats_path
from latentdask.workflow.report import write_report

RUN_RECORD = "run.json"
#: decoded images per sampler (and real reconstructions) the face rate is measured on
FACE_RATE_IMAGES = 200
NORMALITY_PARAMS: dict[str, Any] = {"sample_size": 5000, "hz_size": 2000, "alpha": 0.01}


class SyntheticData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(default=2000, ge=1)
    seed: int = 0


class DatasetSection(BaseModel):
    """Either ``root`` (a CelebA-layout or image folder) or ``synthetic`` faces made by the run."""

    model_config = ConfigDict(extra="forbid")

    root: Path | None = None
    synthetic: SyntheticData | None = None

    @model_validator(mode="after")
    def _one_source(self) -> DatasetSection:
        if (self.root is None) == (self.synthetic is None):
            raise ValueError(
                "give exactly one of 'root' (a dataset folder) or 'synthetic' (faces made by the run)"
            )
        return self


class ModelSection(BaseModel):
    """The architecture to train, or ``checkpoint``: an existing checkpoint folder to use as it is."""

    model_config = ConfigDict(extra="forbid")

    checkpoint: Path | None = None
    image_size: int = 64
    latent_dim: int = 256
    channels: tuple[int, ...] = (64, 64, 128, 128)
    batch_norm: bool = False
    crop: tuple[int, int, int, int] | None = (0, 20, 178, 198)
    draft: bool = True


class EncodeSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shard_size: int = Field(default=4096, ge=1)
    batch_size: int = Field(default=256, ge=1)
    split: str = "all"
    reconstruction_error: bool = False
    device: str = "auto"


class SamplerEntry(SamplerSpec):
    """A sampler of the generate step; ``label`` names its output (default: the sampler's name)."""

    label_: str | None = Field(default=None, alias="label")

    @property
    def label(self) -> str:
        return self.label_ or self.name


class GenerateSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    samplers: list[SamplerEntry] = []
    n: int = Field(default=10_000, ge=1)
    seed: int = 0


class ScoreSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reference_size: int = Field(default=2000, ge=1)
    pair: tuple[int, int] | None = None  # default: the least filled slice
    threshold: float | None = None  # default: the first slice threshold
    seed: int = 0


class RenderSection(BaseModel):
    """Datashader projections of every z-point (``latentdask render``); pairs by number or by rank."""

    model_config = ConfigDict(extra="forbid")

    pairs: list[str] = ["corr:1", "corr:2", "smallest-slice:1"]
    top_correlated: int = Field(default=16, ge=0)
    pcs: int = Field(default=4, ge=0)
    slice: float | None = 1.5
    slice_ranked: int = Field(default=4, ge=0)
    color_by: str | None = None
    width: int = Field(default=800, ge=100)
    how: Literal["eq_hist", "log"] = "eq_hist"
    overlay: list[str] = []  # labels of generate's samplers whose points are drawn in red


class Workflow(BaseModel):
    """A workflow file, validated before anything runs."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    run_dir: Path | None = None
    #: a cluster spec file, or the spec inline (then ``--set cluster.workers=8`` scales it)
    cluster: Path | ClusterSpec | None = None
    dataset: DatasetSection
    model: ModelSection = ModelSection()
    train: TrainOptions = TrainOptions()
    encode: EncodeSection = EncodeSection()
    stats: SummaryParams = SummaryParams()
    generate: GenerateSection = GenerateSection()
    score: ScoreSection = ScoreSection()
    render: RenderSection = RenderSection()
    #: where synthetic faces go (default: ``<run folder>/data``); the runs of a sweep share one
    data_dir: Path | None = None
    #: ``section.key: [values]``: one run per combination (see :func:`expand_matrix`)
    matrix: dict[str, list[Any]] = {}

    @field_validator("name")
    @classmethod
    def _not_a_relative_folder(cls, name: str) -> str:
        if name in (".", ".."):  # runs/.. would make the run folder the current directory
            raise ValueError(f"{name!r} is not a run name; use letters, digits, '_', '.' or '-'")
        return name

    @model_validator(mode="after")
    def _model_builds(self) -> Workflow:
        """The architecture is checked with the file, not after the synth step has run."""
        if self.model.checkpoint is None:
            try:
                ModelConfig(image_size=self.model.image_size, latent_dim=self.model.latent_dim,
                            channels=self.model.channels, batch_norm=self.model.batch_norm)  # fmt: skip
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
    def folder(self) -> Path:
        return self.run_dir if self.run_dir is not None else Path("runs") / self.name


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
        data |= {"name": f"{workflow.name}.{label}", "run_dir": str(workflow.folder / label),
                 "data_dir": str(workflow.data_dir or workflow.folder / "data")}  # fmt: skip
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


def identity(params: dict[str, Any], upstream: str) -> str:
    """sha256 of a step's parameters and of the identity of the step before it."""
    canonical = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha256(f"{upstream}|{canonical}".encode()).hexdigest()


class Runner:
    """Runs the steps of one workflow, keeping ``run.json`` up to date."""

    def __init__(self, workflow: Workflow, cluster: ClusterChoice) -> None:
        self.workflow = workflow
        self.cluster = cluster
        self.folder = workflow.folder
        self.record_path = self.folder / RUN_RECORD
        self.record: dict[str, Any] = self._read_record()

    def _read_record(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.record_path.read_text()))
        except (OSError, ValueError):
            return {"steps": {}}

    def _save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        staged = self.record_path.with_suffix(".json.tmp")
        staged.write_text(json.dumps(self.record, indent=2, default=str) + "\n")
        staged.replace(self.record_path)

    def step(self, name: str, params: dict[str, Any], upstream: str, output: Path,
             complete: Callable[[], bool], run: Callable[[bool], object]) -> str:  # fmt: skip
        """Run one step unless done; ``run(same)`` is told whether the identity is unchanged."""
        ident = identity(params, upstream)
        previous = self.record["steps"].get(name, {})
        same = previous.get("identity") == ident
        if same and previous.get("status") == "done" and complete():
            console.print(f"{name}: done earlier with the same parameters, skipped ({output})")
            return ident
        verb = "continuing" if same and output.exists() else "running"
        console.print(f"{name}: {verb}")
        self.record["steps"][name] = {"identity": ident, "params": params, "status": "running", "output": str(output),
                                      "started": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
        self._save()
        started = time.perf_counter()
        run(same)
        self.record["steps"][name] |= {"status": "done", "seconds": round(time.perf_counter() - started, 2)}
        self._save()
        return ident

    def run(self) -> None:
        w = self.workflow
        self.record |= {"workflow": w.name, "definition": w.model_dump(mode="json")}
        self._save()
        upstream = ""

        # synth
        if w.dataset.synthetic is not None:
            data = w.data_dir or self.folder / "data"
            recipe = w.dataset.synthetic
            upstream = self.step("synth", recipe.model_dump(), upstream, data, lambda: _synthetic_complete(data, recipe),
                                 lambda same: _synth(data, recipe))  # fmt: skip
        else:
            assert w.dataset.root is not None
            data = w.dataset.root
            upstream = identity({"root": str(data.resolve())}, upstream)

        # train
        prep = Preprocessing(crop=w.model.crop, image_size=w.model.image_size, draft=w.model.draft)
        if w.model.checkpoint is not None:
            checkpoint = w.model.checkpoint
            upstream = identity({"checkpoint": str(checkpoint.resolve())}, upstream)
        else:
            checkpoint = self.folder / "model"
            architecture = ModelConfig(image_size=w.model.image_size, latent_dim=w.model.latent_dim,
                                       channels=w.model.channels, batch_norm=w.model.batch_norm)  # fmt: skip
            params = {"model": architecture.model_dump(mode="json"), "preprocessing": prep.model_dump(mode="json"),
                      "train": w.train.model_dump(mode="json")}  # fmt: skip
            upstream = self.step("train", params, upstream, checkpoint, lambda: (checkpoint / "config.json").is_file(),
                                 lambda same: _train(data, checkpoint, architecture, prep, w.train))  # fmt: skip

        # encode (+ statistics of all valid z-points)
        store = self.folder / "latents.zarr"
        params = {"encode": w.encode.model_dump(mode="json"), "stats": w.stats.model_dump(mode="json")}
        upstream = self.step("encode", params, upstream, store, lambda: _store_complete(store),
                             lambda same: _encode(data, checkpoint, store, w, self.cluster, resume=same))  # fmt: skip

        stats = default_stats_path(store)
        # normality of the real z-points (moments, Shapiro–Wilk, Henze–Zirkler, Mahalanobis² vs χ²)
        normal = self.folder / "normality.json"
        self.step("normality", NORMALITY_PARAMS, upstream, normal, normal.is_file,
                  lambda same: _normality(store, stats, normal, self.cluster))  # fmt: skip

        # generate: artificial z-points of each sampler, fitted on the statistics
        if w.generate.samplers:
            folder = self.folder / "points"
            upstream = self.step("generate", w.generate.model_dump(mode="json"), upstream, folder,
                lambda: all((folder / f"{s.label}.zarr" / "z" / "zarr.json").is_file() for s in w.generate.samplers),
                lambda same: _generate(stats, folder, w.generate))  # fmt: skip

            # score: each sampler's points beside held-out real points
            scores = self.folder / "scores.json"
            points = [folder / f"{entry.label}.zarr" for entry in w.generate.samplers]
            self.step("score", w.score.model_dump(mode="json"), upstream, scores, scores.is_file,
                      lambda same: _score(store, stats, points, scores, w.score, self.cluster))  # fmt: skip

            # decode: a grid of each sampler's points, above real images and their reconstructions
            grid = self.folder / "grids" / "samplers.png"
            rates = grid.with_name("face_rate.json")
            self.step("decode", {"per_row": 12, "face_rate_images": FACE_RATE_IMAGES}, upstream, grid,
                      lambda: grid.is_file() and rates.is_file(),
                      lambda same: _decode_grid(checkpoint, points, data, grid))  # fmt: skip
        # render: datashader projections of every z-point, the chosen samplers' points drawn over the pairs
        images = self.folder / "projections"
        overlays = [self.folder / "points" / f"{label}.zarr" for label in w.render.overlay]
        self.step("render", w.render.model_dump(mode="json"), upstream, images,
                  lambda: (images / "render.json").is_file(),
                  lambda same: _render(store, stats, images, w.render, overlays, self.cluster))  # fmt: skip

        # report: one self-contained page of everything above
        page = self.folder / "report.html"
        self.step(
            "report", {"format": 1}, upstream, page, page.is_file, lambda same: write_report(self.folder)
        )
        console.print(f"workflow {w.name} finished → {page} (record: {self.record_path})")


def _synthetic_complete(folder: Path, recipe: SyntheticData) -> bool:
    from latentdask.data.synthetic_faces import read_recipe, synthetic_recipe

    return read_recipe(folder) == synthetic_recipe(recipe.n, recipe.seed)


def _synth(folder: Path, recipe: SyntheticData) -> None:
    from latentdask.data.synthetic_faces import synthesize

    synthesize(folder, n=recipe.n, seed=recipe.seed)  # replaces only synthetic faces made earlier


def _train(
    data: Path, checkpoint: Path, architecture: ModelConfig, prep: Preprocessing, options: TrainOptions
) -> None:
    from latentdask.model.train import train

    train(data, checkpoint, model=architecture, preprocessing=prep, options=options)


def _store_complete(store: Path) -> bool:
    import numpy as np
    import zarr

    try:
        return bool(np.asarray(zarr.open_array(str(store / "shard_done"), mode="r")[:]).all())
    except (FileNotFoundError, ValueError, KeyError):
        return False


def _encode(
    data: Path, checkpoint: Path, store: Path, w: Workflow, cluster: ClusterChoice, *, resume: bool
) -> None:
    from latentdask.encode.run import EncodeOptions, encode

    options = EncodeOptions(**w.encode.model_dump(), stats_params=w.stats, resume=resume and store.exists(),
                            overwrite=not resume)  # fmt: skip
    encode(data, checkpoint, store, options=options, cluster=cluster)


def _generate(stats: Path, folder: Path, section: GenerateSection) -> None:
    from latentdask.generate.samplers import generate

    folder.mkdir(parents=True, exist_ok=True)
    for entry in section.samplers:  # each POINTS.zarr replaces only points generated earlier
        spec = SamplerSpec(name=entry.name, b=entry.b, quantile=entry.quantile)
        generate(stats, folder / f"{entry.label}.zarr", spec=spec, n=section.n, seed=section.seed)
        console.print(f"generated {section.n} {entry.label} z-points")


def _score(
    store: Path, stats: Path, points: list[Path], out: Path, section: ScoreSection, cluster: ClusterChoice
) -> None:
    from latentdask.cluster.connect import connect
    from latentdask.generate.score import format_scores, score, write_scores

    with connect(cluster) as client:
        results = score(store, stats, points, reference_size=section.reference_size, pair=section.pair,
                        threshold=section.threshold, seed=section.seed, scheduler=client)  # fmt: skip
    write_scores(results, out, inputs=[store, stats, *points])
    console.print(format_scores(results), highlight=False)


def _render(
    store: Path, stats: Path, out: Path, section: RenderSection, overlays: list[Path], cluster: ClusterChoice
) -> None:
    from latentdask.cluster.connect import connect
    from latentdask.render.command import render

    with connect(cluster) as client:
        result = render(store, out, stats=stats, pairs=section.pairs, top_correlated=section.top_correlated,
                        pcs=section.pcs, slice_threshold=section.slice, slice_ranked=section.slice_ranked,
                        overlays=overlays, color_by=section.color_by, width=section.width, how=section.how,
                        scheduler=client)  # fmt: skip
    console.print(f"{len(result.aggregates)} projections of every z-point → {out}", highlight=False)


def _normality(store: Path, stats: Path, out: Path, cluster: ClusterChoice) -> None:
    from latentdask.cluster.connect import connect
    from latentdask.stats.normality import format_normality, normality, plot_qq, write_normality

    with connect(cluster) as client:
        result = normality(store, stats, **NORMALITY_PARAMS, scheduler=client)
    write_normality(result, out, inputs=[store, stats])
    plot_qq(result, out.with_name("normality-qq.png"), inputs=[store, stats])
    console.print(format_normality(result), highlight=False)


def _decode_grid(checkpoint: Path, points: list[Path], data: Path, out: Path) -> None:
    from latentdask.generate.faces import face_rates, format_face_rates, write_face_rates
    from latentdask.generate.grids import (
        DECODED_GRID_KIND,
        point_rows,
        reconstruction_rows,
        render_grid,
        skipped_note,
    )
    from latentdask.model.checkpoint import load_checkpoint
    from latentdask.store.output import save_png

    loaded = load_checkpoint(checkpoint)
    rows = point_rows(loaded.model, points, 12) + reconstruction_rows(loaded, data, list(range(12)))
    title = "each sampler's points, decoded; real images and their reconstructions"
    save_png(render_grid(rows, title=title), out, DECODED_GRID_KIND, inputs=[checkpoint, data, *points])
    note = skipped_note(rows)
    if note:
        console.print(f"decode: {note}")
    rates = face_rates(loaded, points, data, n=FACE_RATE_IMAGES)
    write_face_rates(rates, out.with_name("face_rate.json"), inputs=[checkpoint, data, *points])
    console.print(format_face_rates(rates), highlight=False)


@contextmanager
def _one_cluster_for_the_run(choice: ClusterChoice, spec: Any) -> Iterator[ClusterChoice]:
    """Gateway and Kubernetes clusters are started once for all steps (and stopped after), not per step."""
    if spec.kind not in NAMED_KINDS or choice.name is not None:
        yield choice
        return
    name = cluster_up(spec)
    console.print(f"started cluster {name} for this run")
    try:
        yield ClusterChoice(spec=choice.spec, scheduler=choice.scheduler, name=name)
    finally:
        cluster_down(spec, name)
        console.print(f"stopped cluster {name}")


def run_workflow(
    path: str | Path, *, cluster: ClusterChoice | None = None, overrides: Sequence[str] = ()
) -> Path:
    """Run the workflow file at ``path``; return its run folder."""
    workflow = load_workflow(path, overrides)
    if cluster is not None and (cluster.spec or cluster.scheduler):
        choice = cluster
    else:  # the workflow's own spec (or the local cluster), joined by name if one was given
        choice = ClusterChoice(spec=workflow.cluster, name=cluster.name if cluster else None)
    spec = choice.resolve()  # a bad spec fails before any step runs
    runs = expand_matrix(workflow, path)
    with _one_cluster_for_the_run(choice, spec) as shared:
        for run in runs:
            Runner(run, shared).run()
    if workflow.matrix:
        from latentdask.workflow.report import write_sweep_report

        page = write_sweep_report(workflow.folder, [run.folder for run in runs], workflow.matrix)
        console.print(f"sweep {workflow.name}: {len(runs)} runs side by side → {page}")
    return workflow.folder
