"""Specs as data: pydantic models for cluster files, with errors that name file and field.

A cluster spec is a small YAML file::

    kind: local              # LocalCluster of worker processes on this machine
    workers: 2               # processes; default: chosen for the machine
    threads_per_worker: 1

    kind: address            # an existing scheduler
    address: tcp://10.0.0.5:8786
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from latentdask.errors import LatentdaskError, describe_validation_error


class ConfigError(LatentdaskError):
    """A spec or workflow file that cannot be used as written."""


class Adapt(BaseModel):
    """Adaptive scaling between ``minimum`` and ``maximum`` workers (jobs, for slurm)."""

    model_config = ConfigDict(extra="forbid")

    minimum: int = Field(default=0, ge=0)
    maximum: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> Adapt:
        if self.minimum > self.maximum:
            raise ValueError(f"adapt.minimum {self.minimum} is above adapt.maximum {self.maximum}")
        return self


class Scaled(BaseModel):
    """``workers: N`` or ``adapt: {minimum, maximum}``, not both."""

    model_config = ConfigDict(extra="forbid")

    workers: int | None = Field(default=None, ge=0)
    adapt: Adapt | None = None

    @model_validator(mode="after")
    def _one_way(self) -> Scaled:
        if self.workers is not None and self.adapt is not None:
            raise ValueError("give either 'workers' or 'adapt', not both")
        return self

    @property
    def scaling(self) -> Adapt | int | None:
        """How the cluster scales: ``adapt``, a fixed number of ``workers``, or not at all (None)."""
        return self.adapt if self.adapt is not None else self.workers


class LocalSpec(Scaled):
    """The embedded LocalCluster: worker processes on this machine, bound to 127.0.0.1.

    ``processes`` left out: worker processes, except for a command that only reads a small
    input (at most :data:`~latentdask.cluster.connect.IN_PROCESS_BYTES`), whose cluster runs
    inside the command's process on threads (no ports, no process start: a tiny run costs
    little). ``true`` or ``false`` decides for every command.
    """

    kind: Literal["local"] = "local"
    processes: bool | None = None
    threads_per_worker: int = Field(default=1, ge=1)
    memory_limit: str = "auto"
    host: str = "127.0.0.1"
    dashboard_address: str = "127.0.0.1:0"

    @model_validator(mode="after")
    def _adapt_needs_processes(self) -> LocalSpec:
        if self.processes is False and self.adapt is not None:
            raise ValueError("'adapt' grows and shrinks worker processes: leave 'processes' out or true")
        return self


class CudaSpec(Scaled):
    """dask-cuda's LocalCUDACluster: one worker per GPU of this machine, each declaring ``GPU: 1``."""

    kind: Literal["cuda"]
    devices: list[int] | None = None  # CUDA_VISIBLE_DEVICES; default: every GPU
    device_memory_limit: str | None = None  # spill device memory to host above this
    rmm_pool_size: str | None = None
    host: str = "127.0.0.1"
    dashboard_address: str = "127.0.0.1:0"


class GatewayAuth(BaseModel):
    """How to authenticate to a dask-gateway server; passwords come from the environment, not the file."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["basic", "kerberos", "jupyterhub"] = "basic"
    username: str | None = None
    password_env: str = "DASK_GATEWAY_PASSWORD"


class GatewaySpec(Scaled):
    """A dask-gateway server: clusters it starts outlive a command and are scaled by name."""

    kind: Literal["gateway"]
    address: str
    proxy_address: str | None = None
    auth: GatewayAuth = GatewayAuth()
    cluster_options: dict[str, Any] = {}


#: a word written into a job script: one line, no control characters (a newline would add a command)
JobScriptWord = Annotated[str, Field(min_length=1, pattern=r"^[^\x00-\x1f\x7f]+$")]


class SlurmSpec(Scaled):
    """dask-jobqueue's SLURMCluster; with ``gpus`` each job runs dask-cuda workers, one per GPU."""

    kind: Literal["slurm"]
    queue: JobScriptWord | None = None
    account: JobScriptWord | None = None
    walltime: str = "02:00:00"
    cores: int = Field(default=8, ge=1)
    memory: JobScriptWord = "32GB"
    gpus: int = Field(default=0, ge=0)  # per job
    processes: int | None = Field(default=None, ge=1)  # per job; default: one per GPU, else 1
    interface: JobScriptWord | None = None
    python: JobScriptWord | None = None
    #: shell lines run by each job before its workers: code, trusted as the spec's author is
    job_script_prologue: list[str] = []
    local_directory: JobScriptWord | None = None
    tls: bool = True  # temporary certificates shared with the jobs: no one else can join or submit
    #: where the jobs read those (a shared file system)
    shared_temp_directory: JobScriptWord = "~/.latentdask/jobqueue"
    #: the scheduler's dashboard: on the login node's loopback (reach it through an SSH tunnel), null
    #: for none, or an address to open it on (plain HTTP: anyone who reaches it sees the cluster)
    dashboard_address: str | None = "127.0.0.1:0"
    #: more ``#SBATCH`` options, e.g. ``--qos=long`` or ``--constraint=a100``
    job_extra_directives: list[JobScriptWord] = []
    #: more arguments of each worker; with ``adapt`` (the default: ``{minimum: 0, maximum: 1}``)
    #: workers retire before their job's walltime (``--lifetime``) unless these say when
    worker_extra_args: list[JobScriptWord] = []
    #: where the jobs' ``<name>-<job id>.out`` and ``.err`` files go (default: the folder the command runs in)
    log_directory: JobScriptWord | None = None

    @model_validator(mode="after")
    def _sbatch_options(self) -> SlurmSpec:
        for directive in self.job_extra_directives:
            if not directive.startswith("-"):
                raise ValueError(
                    f"job_extra_directives: {directive!r} is not an sbatch option (--name=value)"
                )
        walltime_seconds(self.walltime)
        return self

    @property
    def scaling(self) -> Adapt | int | None:
        """``adapt``, ``workers``, or where neither is given adapt between 0 and 1 job: jobs as the
        work needs them, replaced at their walltime."""
        if self.adapt is None and self.workers is None:
            return Adapt(minimum=0, maximum=1)
        return self.adapt or self.workers


def walltime_seconds(text: str) -> int:
    """Seconds of a SLURM time limit: ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM`` or
    ``D-HH:MM:SS``."""
    days, dash, clock = text.rpartition("-")
    parts = clock.split(":")
    if (dash and not days.isdigit()) or not all(p.isdigit() for p in parts) or len(parts) > 3:
        raise ValueError(f"walltime: {text!r} is not a SLURM time (HH:MM:SS, D-HH:MM:SS, MM, ...)")
    numbers = [int(p) for p in parts]
    if days:  # D-HH[:MM[:SS]]
        hours, minutes, seconds = [*numbers, 0, 0][:3]
    elif len(numbers) == 3:
        hours, minutes, seconds = numbers
    else:  # MM[:SS]
        hours, (minutes, seconds) = 0, [*numbers, 0][:2]
    total = ((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds
    if total <= 0:
        raise ValueError(f"walltime: {text!r} is no time at all")
    return total


class KubernetesSpec(Scaled):
    """A DaskCluster of the dask-kubernetes operator; with ``gpus`` a GPU worker group."""

    kind: Literal["kubernetes"]
    name: str = Field(default="latentdask", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    namespace: str | None = None
    image: str = "ghcr.io/dask/dask:latest"
    cpu: str = "4"
    memory: str = "16Gi"
    gpus: int = Field(default=0, ge=0)  # per worker
    env: dict[str, str] = {}


class TLSFiles(BaseModel):
    """The client's side of mutual TLS (``latentdask cluster certs`` writes all three)."""

    model_config = ConfigDict(extra="forbid")

    ca_file: Path
    cert: Path
    key: Path

    @model_validator(mode="after")
    def _files_exist(self) -> TLSFiles:
        for field, path in (("ca_file", self.ca_file), ("cert", self.cert), ("key", self.key)):
            if not path.is_file():
                raise ValueError(f"tls.{field}: {path} does not exist")
        return self


class AddressSpec(BaseModel):
    """A scheduler that is already running; its workers are managed elsewhere."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["address"]
    address: str
    tls: TLSFiles | None = None

    @model_validator(mode="after")
    def _tls_matches_address(self) -> AddressSpec:
        if self.tls is not None and not self.address.startswith("tls://"):
            raise ValueError(
                f"tls files are given, so the address must start with tls://, not {self.address!r}"
            )
        if self.tls is None and self.address.startswith("tls://"):
            raise ValueError(
                "a tls:// address needs 'tls: {ca_file, cert, key}' (latentdask cluster certs DIR)"
            )
        return self

    def security(self) -> Any:
        """distributed's Security for this spec: mutual TLS with the given files, or None."""
        if self.tls is None:
            return None
        from distributed.security import Security

        return Security(
            tls_ca_file=str(self.tls.ca_file),
            tls_client_cert=str(self.tls.cert),
            tls_client_key=str(self.tls.key),
            require_encryption=True,
        )

    @model_validator(mode="before")
    @classmethod
    def _no_scaling(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in ("workers", "adapt"):
                if key in data:
                    raise ValueError(
                        f"'{key}' cannot be set for kind 'address': that cluster's workers are "
                        "managed where it was started"
                    )
        return data


AnySpec = LocalSpec | CudaSpec | GatewaySpec | SlurmSpec | KubernetesSpec | AddressSpec
ClusterSpec = Annotated[AnySpec, Field(discriminator="kind")]
_CLUSTER_SPEC: TypeAdapter[AnySpec] = TypeAdapter(ClusterSpec)


def parse_cluster_spec(data: Any, *, source: str = "cluster spec") -> AnySpec:
    """Validate a mapping as a cluster spec; ``source`` names it in errors."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with a 'kind' field, got {type(data).__name__}")
    try:
        return _CLUSTER_SPEC.validate_python(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_validation_error(exc)}") from None


def read_yaml(path: str | Path, what: str) -> Any:
    """The parsed content of a YAML file; ``what`` names it in errors ("cluster spec", "workflow")."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None


def load_cluster_spec(path: str | Path) -> AnySpec:
    """Read and validate a cluster spec YAML file; relative file paths in it are relative to it."""
    data = read_yaml(path, "cluster spec")
    if isinstance(data, dict) and isinstance(data.get("tls"), dict):
        folder = Path(path).parent
        data["tls"] = {
            k: str(folder / v) if isinstance(v, str) and not Path(v).is_absolute() else v
            for k, v in data["tls"].items()
        }
    return parse_cluster_spec(data, source=str(path))


#: kinds whose clusters outlive the command that started them, and are found again by name
NAMED_KINDS = ("gateway", "kubernetes")


@dataclass(frozen=True)
class ClusterChoice:
    """What the user asked for: a spec file, a scheduler address, or neither (local); and a cluster name."""

    spec: Path | AnySpec | None = None  # a spec file, or a spec already read (a workflow's inline one)
    scheduler: str | None = None
    name: str | None = None

    def resolve(self) -> AnySpec:
        if self.spec is not None and self.scheduler is not None:
            raise ConfigError("give either --cluster or --scheduler, not both")
        if self.scheduler is not None:
            if self.name is not None:
                raise ConfigError(
                    "--cluster-name names a gateway or Kubernetes cluster; --scheduler needs none"
                )
            if self.scheduler.startswith("tls://"):
                raise ConfigError(
                    f"--scheduler {self.scheduler}: a tls:// scheduler needs the client's certificates; give "
                    f"--cluster SPEC, a spec of kind address with 'address: {self.scheduler}' and "
                    "'tls: {ca_file, cert, key}' (latentdask cluster certs DIR writes them; "
                    "see cluster/README.md)"
                )
            return AddressSpec(kind="address", address=self.scheduler)
        spec = (
            self.spec
            if not isinstance(self.spec, Path | str | type(None))
            else load_cluster_spec(self.spec)
            if self.spec is not None
            else LocalSpec()
        )
        if self.name is not None and spec.kind not in NAMED_KINDS:
            raise ConfigError(
                f"--cluster-name works with {' and '.join(NAMED_KINDS)} specs, not kind {spec.kind!r}"
            )
        return spec
