"""Encode every image of a dataset on Dask workers into a Zarr latent store: the client's side.

Steps of :func:`encode`:

1. Open the dataset (restricted to ``split``) and read the checkpoint's identity
   (config and sha256) without importing torch.
2. Check the outputs (the store, its statistics) before anything runs.
3. Hold the store's writer lock (``latents.zarr.lock``: one writer per store); create
   the store's template under a temporary name — or, with ``resume``, check that the
   existing store was made with the same model, manifest, preprocessing and shard
   size, then every finished shard's checksums (damaged shards are encoded again) —
   and stamp the store with this run's id.
4. Register the model as a worker plugin and submit one task per unfinished shard
   (:func:`latentdask.encode.task.encode_shard`), under a key naming this run: tasks
   left running by a killed earlier run are never adopted, and they stop before
   writing because the store's ``writer_run`` is no longer theirs.
5. Follow the tasks as they finish (progress, images/s, ETA), merge their statistics
   into the sidecar, and end with a summary.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import zarr

from latentdask.cluster.connect import connect, local_torch_threads
from latentdask.cluster.spec import ClusterChoice, LocalSpec
from latentdask.cluster.watch import WorkerWatch
from latentdask.cluster.workers import paths_on_workers
from latentdask.data.container import Container
from latentdask.data.dataset import open_dataset
from latentdask.data.manifest import Shard
from latentdask.data.nvjpeg import check_nvjpeg
from latentdask.data.opencv import check_opencv
from latentdask.encode.options import EncodeOptions
from latentdask.encode.plugin import ModelPlugin
from latentdask.encode.summary import EncodeSummary
from latentdask.encode.task import STAGES, ShardJob, ShardReport, encode_shard
from latentdask.errors import CheckpointError, LatentdaskError
from latentdask.location import Location, Where, identity, location
from latentdask.model.config import CheckpointConfig, checkpoint_sha256, read_checkpoint_config
from latentdask.output import RECORD_KEY, check_output, owned_output
from latentdask.progress import console, progress_bar
from latentdask.stats.io import KnownStates, check_stats_output, store_fingerprint
from latentdask.stats.options import SummaryParams
from latentdask.store.layout import (
    CHECKSUM_ARRAY,
    FORMAT_VERSION,
    STORE_KIND,
    StoreError,
    check_resumable,
    create_store,
    open_store,
    shards_done,
    store_array,
)
from latentdask.store.lock import writer_lock
from latentdask.store.paths import default_stats_path
from latentdask.store.points import zpoint_bytes

# ----------------------------------------------------------------------------- client


def encode(
    dataset: Where,
    checkpoint: Where,
    out: Where,
    *,
    options: EncodeOptions | None = None,
    cluster: ClusterChoice | None = None,
    client: Any = None,
    progress: bool = True,
) -> EncodeSummary:
    """Encode ``dataset`` with the model in ``checkpoint`` into the latent store ``out``.

    Parameters
    ----------
    dataset
        A CelebA-layout folder or any image folder.
    checkpoint
        A checkpoint folder (``model.safetensors`` + ``config.json``).
    out
        The store to write (a folder ending in ``.zarr`` by convention).
    options
        Shard and batch size, split, resume/overwrite, device and threads.
    cluster
        Where to run; default the embedded local cluster.
    client
        A Dask client to run on (a workflow's one client); then ``cluster`` only
        describes it (its spec sets torch's threads) and no cluster is started.

    Examples
    --------
    >>> summary = encode("data/faces", "models/ae", "latents.zarr")  # doctest: +SKIP
    >>> latentdask.open_latents("latents.zarr").z  # doctest: +SKIP
    """
    options = options or EncodeOptions()
    started = time.perf_counter()
    out = location(out)
    choice = cluster or ClusterChoice()
    spec = choice.resolve()  # a bad spec fails before anything is written

    # 1. Dataset and model identity.
    data = open_dataset(dataset, split=options.split)
    manifest = data.manifest
    checkpoint = location(checkpoint)
    config = _checkpoint_config(checkpoint)
    model_sha256 = checkpoint_sha256(checkpoint, config)
    metadata = {
        "model_sha256": model_sha256,
        "model_path": identity(checkpoint),
        "model_config": config.model.model_dump(mode="json"),
        "manifest_sha256": manifest.sha256,
        "dataset_root": identity(dataset),
        "dataset_kind": data.kind,
        "split_selection": options.split,
        "preprocessing": config.preprocessing.model_dump(mode="json"),
        "precision": options.precision,
        "decoder": options.decoder,
    }
    expected = metadata | {
        "shard_size": options.shard_size,
        "latent_dim": config.model.latent_dim,
        "recon_error": options.reconstruction_error,
    }

    if options.decoder == "nvjpeg":
        if options.device == "cpu":
            raise LatentdaskError("--decoder nvjpeg decodes on the GPU: it needs --device cuda or auto")
        check_nvjpeg(config.preprocessing)
    elif options.decoder == "opencv":
        check_opencv(config.preprocessing)

    # 2. The outputs: refused before anything runs if they are someone else's or an input.
    if options.resume and options.overwrite:
        raise StoreError("give either --resume or --overwrite, not both (resume, overwrite of EncodeOptions)")
    if out.exists() and not (options.resume or options.overwrite):
        raise StoreError(
            f"{out} already exists; use --resume to finish it or --overwrite to replace it "
            "(from Python: EncodeOptions(resume=True) or EncodeOptions(overwrite=True))"
        )
    inputs = [data.root, checkpoint]
    if not (options.resume and out.exists()):
        check_output(out, STORE_KIND, inputs=inputs)
    stats_path = default_stats_path(out) if options.stats else None
    if stats_path is not None:
        check_stats_output(stats_path, inputs=[out, *inputs])
    if isinstance(spec, LocalSpec) and options.torch_threads is None:
        # the nanny sets OMP/MKL threads to 1 per worker; give torch the worker's share of cores
        options = options.model_copy(update={"torch_threads": local_torch_threads(spec)})

    reports: list[ShardReport] = []
    known = KnownStates()  # the tasks' statistics, merged as they arrive
    compute_seconds = 0.0
    shards = manifest.shards(options.shard_size)
    with writer_lock(out) as lock, contextlib.ExitStack() as stack:
        # 3. The store: a new template, or the existing store checked (settings, then checksums).
        group = _prepare_store(out, expected | {"writer_run": lock.run_id}, options, manifest, config, inputs)
        reading = stack.enter_context(contextlib.ExitStack())
        only_read = client is None and bool(shards_done(group).all())
        if client is None:  # a finished store is only read (checksums, statistics): a small one in-process
            small = zpoint_bytes(out) if only_read else None
            client = reading.enter_context(connect(choice, input_bytes=small))
        needed = [data.root, checkpoint, out]
        reading.enter_context(paths_on_workers(client, needed))
        if options.resume:
            _reset_damaged(out, group, client, progress)
        done = shards_done(group)
        pending = [s for s in shards if not done[s.number]]
        if pending and only_read and client.scheduler.address.startswith("inproc://"):
            reading.close()  # damaged shards to encode again: on worker processes, as every encode
            client = stack.enter_context(connect(choice))
            stack.enter_context(paths_on_workers(client, needed))

        # 4. Run the pending shards: keys name this run, so tasks of a killed run are never adopted.
        resources = {"GPU": 1} if _cluster_has_gpus(client) else None
        if progress and pending:
            console.print(
                f"encoding {len(pending)} shard(s) on {_describe(client)}; dashboard {client.dashboard_link}"
            )

        def submit(job: ShardJob) -> Any:
            key = f"encode-shard-{lock.run_id}-{job.shard.number:06d}" + ("-isolated" if job.isolate else "")
            return client.submit(encode_shard, job, key=key, resources=resources, pure=False)

        jobs = [
            _job(out, s, data.container, manifest, checkpoint, model_sha256, config, options, lock.run_id)
            for s in pending
        ]
        if jobs:
            plugin = ModelPlugin(jobs[0].checkpoint, model_sha256, options.device, options.torch_threads)
            client.register_plugin(plugin)  # every worker loads the model once, joiners too
            submitted = time.perf_counter()
            try:
                reports = _follow(
                    client,
                    {submit(job): job for job in jobs},
                    submit,
                    sum(s.size for s in pending),
                    progress,
                    known,
                )
                compute_seconds = time.perf_counter() - submitted
            finally:
                client.unregister_worker_plugin(plugin.name)  # the workers let the model go
        if stats_path is not None:
            _write_sidecar_stats(
                out, stats_path, known, bool(reports), options.stats_params, client, progress, inputs
            )
    invalid: Counter[str] = Counter()
    stage_seconds: Counter[str] = Counter(dict.fromkeys(STAGES, 0.0))
    for report in reports:
        invalid.update(report.failures)
        stage_seconds.update(report.seconds)
    summary = EncodeSummary(
        store=out,
        images=sum(r.images for r in reports if not r.skipped),
        shards_total=len(shards),
        shards_run=sum(not r.skipped for r in reports),
        shards_skipped=len(shards) - sum(not r.skipped for r in reports),
        invalid=dict(invalid),
        wall_seconds=time.perf_counter() - started,
        compute_seconds=compute_seconds,
        stage_seconds=dict(stage_seconds),
    )
    if progress:
        console.print("\n".join(summary.lines()))
    return summary


def _write_sidecar_stats(
    store: Location,
    out: Location,
    known: KnownStates,
    encoded: bool,
    params: SummaryParams,
    client: Any,
    progress: bool,
    inputs: list[Location],
) -> None:
    """Write the statistics from the tasks' merged states, reading only shards finished by an earlier run.

    Statistics that already describe exactly the store's finished shards (their checksums and
    these parameters: :func:`store_fingerprint`) are kept as they are when nothing was ``encoded``.
    """
    from latentdask.stats.io import FINGERPRINT_ATTR, stats_fingerprint, stats_of, write_stats
    from latentdask.store.points import open_zpoints

    fingerprint = store_fingerprint(store, params)
    if not encoded and fingerprint is not None and stats_fingerprint(out) == fingerprint:
        if progress:
            console.print(f"statistics {out} are up to date (same finished shards, same checksums)")
        return
    started = time.perf_counter()
    stats = stats_of(open_zpoints(store), params=params, known=known, scheduler=client)
    if fingerprint is not None:
        stats.attrs[FINGERPRINT_ATTR] = fingerprint
    write_stats(stats, out, source=str(store), inputs=[store, *inputs])
    if progress:
        console.print(
            f"statistics of {int(stats['count'])} valid z-points in {time.perf_counter() - started:.1f} s "
            f"({len(known.shards)} shard(s) from the tasks, the rest read from the store) → {out}"
        )


def _checkpoint_config(checkpoint: Location) -> CheckpointConfig:
    if not checkpoint.is_dir():
        raise CheckpointError(f"checkpoint folder {checkpoint} does not exist")
    return read_checkpoint_config(checkpoint)


def _prepare_store(
    out: Location,
    expected: dict[str, Any],
    options: EncodeOptions,
    manifest: Any,
    config: CheckpointConfig,
    inputs: list[Location],
) -> zarr.Group:
    """The store to resume (stamped with this run's id), or its new template, made under a temporary name."""
    if options.resume and out.exists():
        group = open_store(out, mode="r+")
        if int(group.attrs.get("format_version", 1)) < FORMAT_VERSION:  # type: ignore[arg-type]
            raise StoreError(
                f"{out} was made by an older latentdask (store format {group.attrs.get('format_version')}, "
                f"without checksums); encode it again with --overwrite"
            )
        check_resumable(group, expected, out)
        group.attrs["writer_run"] = expected["writer_run"]
        return group
    metadata = {k: v for k, v in expected.items() if k not in ("shard_size", "latent_dim", "recon_error")}
    with owned_output(out, STORE_KIND, inputs=inputs, zarr=True) as staged:
        create_store(
            staged.path,
            manifest,
            latent_dim=config.model.latent_dim,
            shard_size=options.shard_size,
            metadata=metadata | {RECORD_KEY: staged.record},
            recon_error=options.reconstruction_error,
        )
    return open_store(out, mode="r+")


def _reset_damaged(out: Location, group: zarr.Group, client: Any, progress: bool) -> None:
    """Before resuming, check the finished shards' checksums; damaged ones are encoded again."""
    from latentdask.store.integrity import verify_store

    if CHECKSUM_ARRAY not in set(group.array_keys()):
        return  # a store made before checksums: nothing to check against
    verification = verify_store(out, client=client)
    for number in verification.damaged:
        store_array(group, "shard_done")[number] = False
    if verification.damaged and progress:
        console.print("\n".join([*verification.lines(), "these shards are encoded again"]))


def _job(
    out: Location,
    shard: Shard,
    container: Container,
    manifest: Any,
    checkpoint: Location,
    sha256: str,
    config: CheckpointConfig,
    options: EncodeOptions,
    run_id: str,
) -> ShardJob:
    return ShardJob(
        store=identity(out),
        run_id=run_id,
        shard=shard,
        names=manifest.names[shard.start : shard.stop],
        present=manifest.present[shard.start : shard.stop],
        container=container,
        checkpoint=identity(checkpoint),
        checkpoint_sha256=sha256,
        preprocessing=config.preprocessing,
        batch_size=options.batch_size,
        device=options.device,
        precision=options.precision,
        decoder=options.decoder,
        decode_threads=options.decode_threads,
        torch_threads=options.torch_threads,
        reconstruction_error=options.reconstruction_error,
        attributes=manifest.attributes[shard.start : shard.stop],
        stats_params=options.stats_params if options.stats else None,
    )


def _cluster_has_gpus(client: Any) -> bool:
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    return any(w.get("resources", {}).get("GPU", 0) >= 1 for w in workers)


def _describe(client: Any) -> str:
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    threads = sum(w["nthreads"] for w in workers)
    return f"{len(workers)} worker(s), {threads} thread(s)"


def _follow(
    client: Any,
    futures: dict[Any, ShardJob],
    submit: Callable[[ShardJob], Any],
    total_images: int,
    progress: bool,
    known: KnownStates,
) -> list[ShardReport]:
    """Collect the shards' reports, their statistics merged into ``known`` and each result released
    once read (one state in memory, not one per shard, on the client and on the workers); a shard
    that killed its worker is encoded again with isolated decoding."""
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    reports = []
    started = time.perf_counter()
    encoded = 0
    shards = len(futures)
    watch = WorkerWatch(client)
    with progress_bar("encoding", total=total_images, unit="images", enabled=progress) as bar:
        completed = as_completed(list(futures), loop=client.loop)

        def waiting() -> str:
            return f"{len(futures)} shard(s) to encode (the store is resumable: encode --resume)"

        while not completed.is_empty():
            watch.check(waiting())  # at most once a second it asks the scheduler
            if not completed.has_ready():
                with completed.thread_condition:  # woken by the next result, as as_completed's own loop is
                    completed.thread_condition.wait(timeout=0.1)
                continue
            future = next(completed)
            try:
                # a report whose worker left before it was read is computed again: that needs a worker
                report: ShardReport = watch.result(future, waiting())
            except KilledWorker:
                job = futures.pop(future)
                if job.isolate:
                    raise StoreError(
                        f"shard {job.shard.number} killed its worker even with every image decoded "
                        "in a child process; see the workers' logs"
                    ) from None
                console.print(
                    f"shard {job.shard.number} killed its worker repeatedly; encoding it again with each "
                    "image decoded in a child process"
                )
                retry = submit(dataclasses.replace(job, isolate=True))
                futures[retry] = dataclasses.replace(job, isolate=True)
                completed.add(retry)
                continue
            futures.pop(future)
            future.release()  # the worker lets the report (and its statistics state) go
            if report.state is not None:
                known.add(report.number, report.state)
                report = dataclasses.replace(report, state=None)
            reports.append(report)
            encoded += report.images
            bar.advance(report.images)
            rate = encoded / max(time.perf_counter() - started, 1e-9)
            bar.note(f"shards {len(reports)}/{shards}, {rate:.0f} images/s")
    return reports
