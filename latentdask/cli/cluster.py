"""Clusters that outlive one command, and certificates: ``latentdask cluster certs|up|scale|list|down``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from latentdask.cli.options import user_errors
from latentdask.progress import console

app = typer.Typer(help="Certificates, and clusters that outlive one command.", no_args_is_help=True)


@app.command("certs")
@user_errors
def cluster_certs(
    folder: Annotated[Path, typer.Argument(help="Folder for ca.pem and the scheduler/worker/client pairs.")],
    host: Annotated[
        list[str] | None,
        typer.Option("--host", help="Host names or IPs the certificates are valid for (repeat)."),
    ] = None,
    days: Annotated[int, typer.Option(help="Days of validity.")] = 365,
    overwrite: Annotated[bool, typer.Option(help="Replace certificates already in FOLDER.")] = False,
) -> None:
    """A private CA and scheduler, worker and client certificates for mutual TLS."""
    from latentdask.cluster.certs import make_certificates

    paths = make_certificates(
        folder, hosts=host or ["127.0.0.1", "localhost"], days=days, overwrite=overwrite
    )
    console.print(f"wrote {', '.join(p.name for p in paths.values())} → {folder}")
    ca = paths["ca"]
    console.print(
        f"scheduler: dask scheduler --protocol tls --tls-ca-file {ca} --tls-cert {paths['scheduler']} "
        f"--tls-key {paths['scheduler-key']}\n"
        f"workers:   dask worker tls://HOST:8786 --tls-ca-file {ca} --tls-cert {paths['worker']} "
        f"--tls-key {paths['worker-key']}\n"
        f"clients:   a spec of kind address with "
        f"tls: {{ca_file: {ca}, cert: {paths['client']}, key: {paths['client-key']}}}",
    )


SpecArgument = Annotated[Path, typer.Option("--cluster", help="The gateway or Kubernetes cluster spec YAML.")]


@app.command("up")
@user_errors
def cluster_up(
    spec: Annotated[Path, typer.Argument(help="A gateway or Kubernetes cluster spec YAML.")],
) -> None:
    """Start a cluster that outlives this command and print its name (use it with --cluster-name)."""
    from latentdask.cluster.named import cluster_up
    from latentdask.cluster.spec import ClusterChoice

    name = cluster_up(ClusterChoice(spec=spec).resolve())
    typer.echo(name)
    console.print(
        f"started {name}; computing commands join it with --cluster {spec} --cluster-name {name}",
    )


@app.command("scale")
@user_errors
def cluster_scale(
    name: Annotated[str, typer.Argument(help="Cluster name (from 'cluster up' or 'cluster list').")],
    workers: Annotated[int, typer.Argument(help="Workers wanted.")],
    spec: SpecArgument,
) -> None:
    """Scale a running cluster to N workers: an encode in progress spreads its remaining shards over them."""
    from latentdask.cluster.named import cluster_scale
    from latentdask.cluster.spec import ClusterChoice

    cluster_scale(ClusterChoice(spec=spec).resolve(), name, workers)
    console.print(f"{name}: scaling to {workers} worker(s)")


@app.command("list")
@user_errors
def cluster_list(spec: SpecArgument) -> None:
    """The clusters the gateway runs for you."""
    from latentdask.cluster.named import cluster_list
    from latentdask.cluster.spec import ClusterChoice

    for name, status in cluster_list(ClusterChoice(spec=spec).resolve()):
        typer.echo(f"{name}\t{status}")


@app.command("down")
@user_errors
def cluster_down(name: Annotated[str, typer.Argument(help="Cluster name.")], spec: SpecArgument) -> None:
    """Stop a cluster and its workers."""
    from latentdask.cluster.named import cluster_down
    from latentdask.cluster.spec import ClusterChoice

    cluster_down(ClusterChoice(spec=spec).resolve(), name)
    console.print(f"{name}: stopped")
