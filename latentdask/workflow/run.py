"""Run a workflow file: the study's steps in order, each skipped when already done.

Every output lands in the run folder (:class:`~latentdask.store.paths.RunFolder`, default
``runs/<name>``). Steps, in order: ``synth`` (when the dataset is synthetic), ``train`` (unless
the model is an existing checkpoint), ``encode`` (which also writes the statistics of all valid
z-points), ``normality``, ``generate`` (artificial z-points of each listed sampler) and
``score`` (their in-distribution scores beside held-out real points), ``decode`` (a grid of
what the decoder makes of each sampler's points, above real reconstructions), ``render`` and
``report``. Each is the function of :mod:`latentdask.workflow.steps` its command calls too.

One cluster and one client serve the whole run (sweeps included): opened by the first step
that computes on it, closed after the last. A sweep (a ``matrix:``) then compares every two
runs' latent spaces (linear CKA, ``cka.json`` in its folder) and sets the runs side by side.

Each step's identity is a sha256 of its parameters and of the identities of the steps before
it. ``run.json`` records identities, timings and outputs; a step whose identity is unchanged
and whose output is complete is skipped, a step that stopped half-way continues (encode
resumes its shards), and a step whose parameters changed is redone — and, since identities
chain, so is everything after it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from latentdask.cluster.spec import NAMED_KINDS, ClusterChoice
from latentdask.location import Location, identity, is_remote, move_file, use_storage_options
from latentdask.model.config import CONFIG_FILE
from latentdask.progress import console
from latentdask.workflow import steps
from latentdask.workflow.spec import SamplerEntry, Workflow, expand_matrix, load_workflow

#: the kind of output a sweep's cka.json is, in its ``latentdask`` record
SWEEP_CKA_KIND = "sweep-cka"
#: the grid's title in a run's report
DECODE_TITLE = "each sampler's points, decoded; real images and their reconstructions"


def step_identity(params: dict[str, Any], upstream: str) -> str:
    """sha256 of a step's parameters and of the identity of the step before it."""
    canonical = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha256(f"{upstream}|{canonical}".encode()).hexdigest()


class Runner:
    """Runs the steps of one workflow on the run's one cluster, keeping ``run.json`` up to date."""

    def __init__(self, workflow: Workflow, cluster: steps.Connection) -> None:
        self.workflow = workflow
        self.cluster = cluster
        self.paths = workflow.paths
        self.record: dict[str, Any] = self._read_record()

    def _read_record(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.paths.record.read_text()))
        except (OSError, ValueError):
            return {"steps": {}}

    def _save(self) -> None:
        if not is_remote(self.paths.root):
            self.paths.root.mkdir(parents=True, exist_ok=True)
        staged = self.paths.record.with_suffix(".json.tmp")
        staged.write_text(json.dumps(self.record, indent=2, default=str) + "\n")
        move_file(staged, self.paths.record)

    def step(
        self,
        name: str,
        params: dict[str, Any],
        upstream: str,
        output: Location,
        complete: Callable[[], bool],
        run: Callable[[bool], object],
    ) -> str:
        """Run one step unless done; ``run(same)`` is told whether the identity is unchanged."""
        ident = step_identity(params, upstream)
        previous = self.record["steps"].get(name, {})
        same = previous.get("identity") == ident
        if same and previous.get("status") == "done" and complete():
            console.print(f"{name}: done earlier with the same parameters, skipped ({output})")
            return ident
        verb = "continuing" if same and output.exists() else "running"
        console.print(f"{name}: {verb}")
        self.record["steps"][name] = {
            "identity": ident,
            "params": params,
            "status": "running",
            "output": str(output),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        self._save()
        started = time.perf_counter()
        run(same)
        self.record["steps"][name] |= {"status": "done", "seconds": round(time.perf_counter() - started, 2)}
        self._save()
        return ident

    def run(self) -> None:
        w, paths, cluster = self.workflow, self.paths, self.cluster
        self.record |= {"workflow": w.name, "definition": w.model_dump(mode="json")}
        self._save()
        upstream = ""

        # synth
        if w.dataset.synthetic is not None:
            data = w.data_dir or paths.data
            recipe = w.dataset.synthetic
            upstream = self.step(
                "synth",
                recipe.model_dump(),
                upstream,
                data,
                lambda: steps.synth_done(data, recipe),
                lambda same: steps.synth(data, recipe),
            )
        else:
            assert w.dataset.root is not None
            data = w.dataset.root
            upstream = step_identity({"root": identity(data)}, upstream)

        # train
        if w.model.checkpoint is not None:
            checkpoint = w.model.checkpoint
            upstream = step_identity({"checkpoint": identity(checkpoint)}, upstream)
        else:
            checkpoint = paths.model
            params = {
                "model": w.model.architecture().model_dump(mode="json"),
                "preprocessing": w.model.preprocessing().model_dump(mode="json"),
                "train": w.train.model_dump(mode="json"),
            }
            upstream = self.step(
                "train",
                params,
                upstream,
                checkpoint,
                lambda: (checkpoint / CONFIG_FILE).is_file(),
                lambda same: steps.train(data, checkpoint, model=w.model, options=w.train),
            )

        # encode (+ statistics of all valid z-points)
        store, stats = paths.store, paths.stats
        params = {"encode": w.encode.identity_params(), "stats": w.stats.model_dump(mode="json")}

        def encode(same: bool) -> None:
            options = w.encode.for_run(stats=w.stats, resume=same and store.exists())
            steps.encode(data, checkpoint, store, options=options, cluster=cluster)

        upstream = self.step("encode", params, upstream, store, lambda: _store_complete(store), encode)

        # normality of the real z-points (moments, Shapiro–Wilk, Mardia, Henze–Zirkler, Mahalanobis²)
        def normality(same: bool) -> None:
            from latentdask.stats.normality import format_normality

            result = steps.normality(
                store, stats, paths.normality, options=w.normality, cluster=cluster, plot=paths.normality_plot
            )
            console.print(format_normality(result))

        self.step(
            "normality",
            w.normality.model_dump(mode="json"),
            upstream,
            paths.normality,
            paths.normality.is_file,
            normality,
        )

        # generate: artificial z-points of each sampler, fitted on the statistics of the fit's rows
        samplers = w.generate.samplers
        points = [paths.sampler_points(entry.label) for entry in samplers]
        if samplers:
            from latentdask.store.points import open_zpoints
            from latentdask.store.rows import default_fit_split

            fit_stats, fit_split = paths.fit_stats, w.generate.fit or default_fit_split(open_zpoints(store))

            def gmm_options(entry: SamplerEntry) -> Any:
                from latentdask.generate.options import GMMOptions

                return GMMOptions(
                    components=entry.components,
                    max_components=entry.max_components,
                    covariance=entry.covariance,
                    split=fit_split,
                    where=(),
                    seed=w.generate.seed,
                )

            def fit(same: bool) -> None:
                figures = steps.statistics(store, fit_stats, params=w.stats, split=fit_split, cluster=cluster)
                console.print(f"fitted on {figures['count']:,} z-points ({figures['selection']})")

            upstream = self.step(
                "fit",
                {"split": fit_split, "stats": w.stats.model_dump(mode="json")},
                upstream,
                fit_stats,
                lambda: (fit_stats / "zarr.json").is_file(),
                fit,
            )

            def generate(same: bool) -> None:
                if not is_remote(paths.points):  # object storage has no folders (nor buckets to make)
                    paths.points.mkdir(parents=True, exist_ok=True)
                for entry, out in zip(
                    samplers, points, strict=True
                ):  # each replaces only its own earlier output
                    fitted = fit_stats
                    if entry.name == "gmm":
                        fitted = steps.gmm(
                            store, paths.mixture(entry.label), options=gmm_options(entry), cluster=cluster
                        )
                    steps.generate(fitted, out, sampler=entry.spec, options=w.generate)
                    console.print(f"generated {w.generate.n} {entry.label} z-points")

            upstream = self.step(
                "generate",
                w.generate.model_dump(mode="json"),
                upstream,
                paths.points,
                lambda: all((p / "z" / "zarr.json").is_file() for p in points),
                generate,
            )

            # score: each sampler's points beside held-out real points
            def score(same: bool) -> None:
                from latentdask.generate.score import format_scores

                # every set's log-likelihood under the first gmm sampler's mixture (when there is one)
                mixtures = [paths.mixture(e.label) for e in samplers if e.name == "gmm"]
                results = steps.score(
                    store,
                    fit_stats,
                    points,
                    paths.scores,
                    options=w.score,
                    cluster=cluster,
                    gmm=mixtures[0] if mixtures else None,
                )
                console.print(format_scores(results))

            self.step(
                "score", w.score.model_dump(mode="json"), upstream, paths.scores, paths.scores.is_file, score
            )

            # decode: a grid of each sampler's points, above real images and their reconstructions
            rates = paths.face_rates if w.decode.face_rate > 0 else None

            def decode(same: bool) -> None:
                from latentdask.generate.faces import format_face_rates

                decoded = steps.decode(
                    checkpoint,
                    paths.grid,
                    options=w.decode,
                    points=points,
                    reconstruct=data,
                    faces_out=rates,
                    title=DECODE_TITLE,
                )
                if decoded.note:
                    console.print(f"decode: {decoded.note}")
                if decoded.rates is not None:
                    console.print(format_face_rates(decoded.rates))

            self.step(
                "decode",
                w.decode.model_dump(mode="json"),
                upstream,
                paths.grid,
                lambda: paths.grid.is_file() and (rates is None or rates.is_file()),
                decode,
            )

        # render: datashader projections of every z-point, the chosen samplers' points drawn over the pairs
        def render(same: bool) -> None:
            overlays = [paths.sampler_points(label) for label in w.render.overlay]
            result = steps.render(
                store, paths.projections, options=w.render, cluster=cluster, stats=stats, overlays=overlays
            )
            console.print(
                f"{len(result.aggregates)} projections of every z-point → {paths.projections}",
            )

        self.step(
            "render",
            w.render.model_dump(mode="json"),
            upstream,
            paths.projections,
            lambda: (paths.projections / "render.json").is_file(),
            render,
        )

        # report: one self-contained page of everything above
        self.step(
            "report",
            {"format": 1},
            upstream,
            paths.report,
            paths.report.is_file,
            lambda same: steps.report(paths.root),
        )
        console.print(f"workflow {w.name} finished → {paths.report} (record: {paths.record})")


def _store_complete(store: Location) -> bool:
    import zarr

    from latentdask.store.layout import shards_done

    try:
        return bool(shards_done(zarr.open_group(str(store), mode="r")).all())
    except (FileNotFoundError, ValueError, KeyError):
        return False


def sweep_cka(folder: Location, runs: Sequence[Location], cluster: steps.Connection) -> Location:
    """``cka.json`` in the sweep's folder: linear CKA between every two runs' latent spaces.

    Skipped when it was computed from the same encodes (each run's encode identity in ``run.json``).
    """
    from latentdask.output import read_record, write_json
    from latentdask.stats.compare import cka_matrix
    from latentdask.store.paths import RunFolder

    out, stores = RunFolder(folder).cka, [RunFolder(run).store for run in runs]
    labels = [run.name for run in runs]
    encodes = [json.loads(RunFolder(run).record.read_text())["steps"]["encode"]["identity"] for run in runs]
    earlier = json.loads(out.read_text()) if (read_record(out) or {}).get("kind") == SWEEP_CKA_KIND else {}
    if earlier.get("runs") == labels and earlier.get("encodes") == encodes:
        console.print(f"linear CKA of the runs: done earlier from the same encodes, skipped ({out})")
        return out
    matrix = cka_matrix(stores, scheduler=cluster.client)
    payload = {"runs": labels, "encodes": encodes, "linear_cka": matrix}
    write_json(out, payload, SWEEP_CKA_KIND, inputs=stores)
    console.print(f"linear CKA between every two of the {len(runs)} runs' latent spaces → {out}")
    return out


@contextmanager
def _one_cluster_for_the_run(choice: ClusterChoice, spec: Any) -> Iterator[ClusterChoice]:
    """Gateway and Kubernetes clusters are started once for all steps (and stopped after), not per step."""
    if spec.kind not in NAMED_KINDS or choice.name is not None:
        yield choice
        return
    from latentdask.cluster.named import cluster_down, cluster_up

    name = cluster_up(spec)
    console.print(f"started cluster {name} for this run")
    try:
        yield ClusterChoice(spec=choice.spec, scheduler=choice.scheduler, name=name)
    finally:
        cluster_down(spec, name)
        console.print(f"stopped cluster {name}")


def run_workflow(
    path: str | Path, *, cluster: ClusterChoice | None = None, overrides: Sequence[str] = ()
) -> Location:
    """Run the workflow file at ``path`` (every run of its matrix) on one client; return its run folder."""
    workflow = load_workflow(path, overrides)
    if cluster is not None and (cluster.spec or cluster.scheduler):
        choice = cluster
    else:  # the workflow's own spec (or the local cluster), joined by name if one was given
        choice = ClusterChoice(spec=workflow.cluster, name=cluster.name if cluster else None)
    spec = choice.resolve()  # a bad spec fails before any step runs
    runs = expand_matrix(workflow, path)
    use_storage_options(workflow.storage_options)
    with (
        _one_cluster_for_the_run(choice, spec) as shared,
        steps.Connection(shared, for_run=True, storage_options=workflow.storage_options) as connection,
    ):
        for run in runs:
            Runner(run, connection).run()
        if workflow.matrix:
            sweep_cka(workflow.folder, [run.folder for run in runs], connection)
    if workflow.matrix:
        from latentdask.workflow.report import write_sweep_report

        page = write_sweep_report(workflow.folder, [run.folder for run in runs], workflow.matrix)
        console.print(f"sweep {workflow.name}: {len(runs)} runs side by side → {page}")
    return workflow.folder
