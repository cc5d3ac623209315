"""Clusters that outlive a command (dask-gateway and the Kubernetes operator): ``latentdask
cluster up/scale/list/down``, by the name the cluster was given."""

from __future__ import annotations

from typing import Any

from latentdask.cluster.connect import apply_scaling, close_gateway_cluster, gateway_call, kube_cluster
from latentdask.cluster.spec import NAMED_KINDS, AnySpec, ConfigError, GatewaySpec, KubernetesSpec


def _named_spec(spec: AnySpec) -> GatewaySpec | KubernetesSpec:
    if not isinstance(spec, GatewaySpec | KubernetesSpec):
        raise ConfigError(
            f"clusters of kind {spec.kind!r} live as long as the command that starts them; "
            f"'cluster up/scale/list/down' manage {' and '.join(NAMED_KINDS)} clusters"
        )
    return spec


def cluster_up(spec: AnySpec) -> str:
    """Start a cluster that outlives this command; return the name its deployment chose."""
    named = _named_spec(spec)
    if isinstance(named, KubernetesSpec):
        kube = kube_cluster(named, shutdown_on_close=False)
        try:
            apply_scaling(kube, named)
        except BaseException:
            kube.shutdown_on_close = True  # its name was never told: nobody could stop it later
            raise
        finally:
            kube.close()
        return str(kube.name)

    def start(gateway: Any) -> str:
        cluster = gateway.new_cluster(shutdown_on_close=False, **named.cluster_options)
        started = False
        try:
            apply_scaling(cluster, named)
            started = True
        finally:
            close_gateway_cluster(cluster, shutdown=not started)  # a failed start leaves nothing running
        return str(cluster.name)

    return str(gateway_call(named, "starting a cluster", start))


def cluster_scale(spec: AnySpec, name: str, workers: int) -> None:
    named = _named_spec(spec)
    if workers < 0:
        raise ConfigError(f"cannot scale to {workers} workers")
    if isinstance(named, KubernetesSpec):
        kube = kube_cluster(named, name)
        try:
            kube.scale(workers)
        finally:
            kube.close()  # our handle only: a joined cluster lives on
        return
    gateway_call(named, f"scaling {name}", lambda gateway: gateway.scale_cluster(name, workers))


def cluster_list(spec: AnySpec) -> list[tuple[str, str]]:
    """(name, status) of the clusters this spec's gateway knows for the user."""
    named = _named_spec(spec)
    if isinstance(named, KubernetesSpec):
        raise ConfigError("list Kubernetes clusters with 'kubectl get daskclusters'")
    reports = gateway_call(named, "listing clusters", lambda gateway: gateway.list_clusters())
    return [(str(r.name), str(r.status.name if hasattr(r.status, "name") else r.status)) for r in reports]


def cluster_down(spec: AnySpec, name: str) -> None:
    named = _named_spec(spec)
    if isinstance(named, KubernetesSpec):
        kube_cluster(named, name, shutdown_on_close=True).close()
        return
    gateway_call(named, f"stopping {name}", lambda gateway: gateway.stop_cluster(name))


# ---------------------------------------------------------------------------- clients
