"""From images to a latent store, and whole workflows: synth, train, import-model, info, verify,
encode, run, report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from latentdask.cli.options import (
    ClusterNameOption,
    ClusterOption,
    Defaults,
    SchedulerOption,
    SplitOption,
    cluster_choice,
    comma_separated,
    options_from,
    parse_crop,
    parse_ints,
    user_errors,
)
from latentdask.data.options import SynthOptions
from latentdask.encode.options import EncodeOptions
from latentdask.errors import LatentdaskError
from latentdask.location import location
from latentdask.model.config import ModelOptions, TrainOptions
from latentdask.progress import console

SYNTH = Defaults(SynthOptions)
MODEL = Defaults(ModelOptions)
TRAIN = Defaults(TrainOptions)
ENCODE = Defaults(EncodeOptions)


@user_errors
def synth(
    out: Annotated[str, typer.Argument(help="Folder to create (CelebA layout).")],
    n: Annotated[int, typer.Option("--n", help="Number of images.")] = SYNTH.n,
    seed: Annotated[int, typer.Option(help="Same seed, byte-identical files.")] = SYNTH.seed,
) -> None:
    """Write synthetic faces in CelebA's official layout (images, partition, attributes)."""
    from latentdask.data.options import SynthOptions
    from latentdask.workflow import steps

    seconds = steps.synth(location(out), options_from(SynthOptions, locals()))
    if seconds is None:
        console.print(f"{out} already holds {n} synthetic faces with seed {seed}; nothing to do")
    else:
        console.print(f"wrote {n} synthetic faces in {seconds:.1f} s ({n / seconds:.0f} images/s) → {out}")


@user_errors
def train(
    dataset: Annotated[str, typer.Argument(help="CelebA-layout folder or any image folder.")],
    out: Annotated[str, typer.Option("--out", help="Checkpoint folder to write.")],
    epochs: Annotated[int, typer.Option(help="Passes over the training images.")] = TRAIN.epochs,
    batch_size: Annotated[int, typer.Option(help="Images per optimizer step.")] = TRAIN.batch_size,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = TRAIN.lr,
    image_size: Annotated[int, typer.Option(help="Side of the square model input.")] = MODEL.image_size,
    latent_dim: Annotated[int, typer.Option(help="Dimension of the latent space.")] = MODEL.latent_dim,
    channels: Annotated[str, typer.Option(help="Encoder filters per conv layer.")] = comma_separated(
        MODEL.channels
    ),
    batch_norm: Annotated[
        bool,
        typer.Option("--batch-norm/--no-batch-norm", help="Batch normalization after every convolution."),
    ] = MODEL.batch_norm,
    crop: Annotated[str, typer.Option(help="left,top,right,bottom or 'none'.")] = comma_separated(MODEL.crop),
    draft: Annotated[
        bool, typer.Option("--draft/--no-draft", help="JPEG draft-mode decoding.")
    ] = MODEL.draft,
    split: Annotated[str, typer.Option(help="Rows to train on: train, valid, test or all.")] = TRAIN.split,
    device: Annotated[str, typer.Option(help="auto (CUDA if present), cpu, cuda, cuda:N.")] = TRAIN.device,
    seed: Annotated[int, typer.Option(help="Seed of initialisation and shuffling.")] = TRAIN.seed,
    workers: Annotated[int, typer.Option(help="Processes decoding images (0: this one).")] = TRAIN.workers,
) -> None:
    """Train the convolutional autoencoder; writes model.safetensors, config.json, training.json."""
    from latentdask.model.config import ModelOptions, TrainOptions
    from latentdask.workflow import steps

    parameters = locals()
    model = options_from(
        ModelOptions, parameters, channels=parse_ints(channels, "--channels"), crop=parse_crop(crop)
    )
    steps.train(location(dataset), location(out), model=model, options=options_from(TrainOptions, parameters))


@user_errors
def info(
    given: Annotated[str, typer.Argument(metavar="PATH", help="A dataset, checkpoint or latent store.")],
) -> None:
    """Describe a dataset, a checkpoint or a latent store."""
    from latentdask.model.config import CONFIG_FILE

    path = location(given)
    if not path.exists():
        raise LatentdaskError(f"{path} does not exist")
    if (path / "zarr.json").is_file():
        from latentdask.store import describe_store

        lines = describe_store(path)
    elif (path / CONFIG_FILE).is_file() or path.is_file():
        from latentdask.model.checkpoint import load_checkpoint

        lines = load_checkpoint(path).describe()
    else:
        from latentdask.data.dataset import open_dataset

        lines = open_dataset(path).describe()
    typer.echo("\n".join(lines))


@user_errors
def verify(
    store: Annotated[str, typer.Argument(help="A latent store.")],
    cluster: ClusterOption = None,
    scheduler: SchedulerOption = None,
    cluster_name: ClusterNameOption = None,
) -> None:
    """Check every finished shard of a latent store against its checksums; exit 1 naming the damaged ones."""
    from latentdask.cluster.connect import connect
    from latentdask.cluster.workers import paths_on_workers
    from latentdask.store.integrity import verify_store

    with (
        connect(cluster_choice(cluster, scheduler, cluster_name)) as client,
        paths_on_workers(client, [store]),
    ):
        found = verify_store(store, client=client)
    typer.echo("\n".join(found.lines()))
    if found.damaged:
        typer.echo(
            f"'latentdask encode ... --out {store} --resume' encodes the damaged shards again", err=True
        )
        raise typer.Exit(1)


@user_errors
def import_model(
    state_dict: Annotated[str, typer.Argument(help="A torch.save()d state_dict (.pt/.pth).")],
    config: Annotated[str, typer.Option("--config", help="JSON: model fields, or model + preprocessing.")],
    out: Annotated[str, typer.Option("--out", help="Checkpoint folder to write.")],
) -> None:
    """Turn a compatible PyTorch state_dict into a checkpoint folder (loaded tensors-only)."""
    from latentdask.model.checkpoint import import_state_dict

    checkpoint = import_state_dict(state_dict, config, out)
    typer.echo("\n".join(checkpoint.describe()))


@user_errors
def encode(
    dataset: Annotated[str, typer.Argument(help="CelebA-layout folder or any image folder.")],
    model: Annotated[str, typer.Option("--model", help="Checkpoint folder.")],
    out: Annotated[str, typer.Option("--out", help="Latent store to write (a .zarr folder).")],
    shard_size: Annotated[
        int, typer.Option(help="Images per shard = per task = per Zarr chunk.")
    ] = ENCODE.shard_size,
    batch_size: Annotated[
        int | None,
        typer.Option(help="Images per forward pass (default: 64 on CPU workers, 256 on GPU workers)."),
    ] = ENCODE.batch_size,
    split: SplitOption = ENCODE.split,
    resume: Annotated[bool, typer.Option("--resume", help="Finish an interrupted store.")] = ENCODE.resume,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing store.")
    ] = ENCODE.overwrite,
    reconstruction_error: Annotated[
        bool, typer.Option("--reconstruction-error", help="Also store each image's reconstruction MSE.")
    ] = ENCODE.reconstruction_error,
    device: Annotated[str, typer.Option(help="auto (CUDA if present), cpu, cuda.")] = ENCODE.device,
    precision: Annotated[
        str, typer.Option(help="The encoder's arithmetic: fp32, or bf16/fp16 autocast (faster on GPUs).")
    ] = ENCODE.precision,
    decoder: Annotated[
        str,
        typer.Option(
            help="JPEG decoding: pil (CPU cores), opencv (CPU cores, outside the GIL: decode threads "
            "scale with the cores; within 1.5/255 of pil), or nvjpeg (on the GPU; needs torchvision)."
        ),
    ] = ENCODE.decoder,
    decode_threads: Annotated[
        int | None,
        typer.Option(
            help="Threads decoding ahead of the encoder (default: 1 on CPU, the cores per GPU with one)."
        ),
    ] = ENCODE.decode_threads,
    torch_threads: Annotated[
        int | None, typer.Option(help="Torch threads per worker (default: torch's).")
    ] = ENCODE.torch_threads,
    cluster: ClusterOption = None,
    scheduler: SchedulerOption = None,
    cluster_name: ClusterNameOption = None,
) -> None:
    """Encode every image into a chunked Zarr latent store, on Dask workers; resumable."""
    from latentdask.encode.options import EncodeOptions
    from latentdask.workflow import steps

    options = options_from(EncodeOptions, locals())
    with steps.Connection(cluster_choice(cluster, scheduler, cluster_name)) as connection:
        steps.encode(location(dataset), location(model), location(out), options=options, cluster=connection)


@user_errors
def run(
    workflow: Annotated[Path, typer.Argument(help="Workflow file (workflows/*.yaml).")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="key=value override, e.g. train.epochs=3.")
    ] = None,
    cluster: ClusterOption = None,
    scheduler: SchedulerOption = None,
    cluster_name: ClusterNameOption = None,
) -> None:
    """Run a workflow's steps in order; finished steps with the same parameters are skipped."""
    from latentdask.workflow.run import run_workflow

    run_workflow(workflow, cluster=cluster_choice(cluster, scheduler, cluster_name), overrides=set_ or [])


@user_errors
def report(
    folder: Annotated[str, typer.Argument(help="A workflow's run folder (holding run.json).")],
) -> None:
    """Write report.html in a run folder: every figure and table of the study, images embedded."""
    from latentdask.workflow import steps

    console.print(f"report → {steps.report(location(folder))}")
