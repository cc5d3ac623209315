"""The model of an encode on its workers: a worker plugin that loads one checkpoint once per worker
(on its GPU if it has one), for every shard task the worker runs."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from distributed import WorkerPlugin

from latentdask.encode.allocator import release_freed_memory, retain_freed_memory
from latentdask.errors import CheckpointError

if TYPE_CHECKING:
    import torch

    from latentdask.model.autoencoder import Autoencoder


class ModelPlugin(WorkerPlugin):
    """The model of one checkpoint on a worker: loaded once when the plugin reaches the worker.

    The client registers it once per run; the scheduler hands it to every worker,
    including workers that join later (a cluster scaled up during an encode). Only the
    checkpoint's path and identity travel; the weights are read by each worker.
    """

    def __init__(self, checkpoint: str, sha256: str, device: str, torch_threads: int | None) -> None:
        self.checkpoint = checkpoint
        self.sha256 = sha256
        self.device = device
        self.torch_threads = torch_threads
        self.name = plugin_name(sha256, device)
        self._lock = threading.Lock()
        self._loaded: tuple[Autoencoder, torch.device] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_loaded")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._loaded = None

    def setup(self, worker: Any) -> None:
        self.load()

    def teardown(self, worker: Any) -> None:
        self._loaded = None
        release_freed_memory()

    def load(self) -> tuple[Autoencoder, torch.device]:
        """The model ready for inference and its device, loaded on first use."""
        import torch

        from latentdask.device import resolve_device
        from latentdask.model.autoencoder import for_inference
        from latentdask.model.checkpoint import load_checkpoint

        with self._lock:
            if self._loaded is None:
                if self.torch_threads is not None:
                    torch.set_num_threads(self.torch_threads)
                retain_freed_memory()  # each batch's activations reuse the last one's pages
                device = resolve_device(self.device)
                checkpoint = load_checkpoint(self.checkpoint)
                if checkpoint.sha256 != self.sha256:
                    raise CheckpointError(f"{self.checkpoint} changed while the run was going on")
                self._loaded = (for_inference(checkpoint.model, device), device)
            return self._loaded


def plugin_name(sha256: str, device: str) -> str:
    return f"latentdask-model-{sha256[:16]}-{device}"


def job_model(
    checkpoint: str, sha256: str, device: str, torch_threads: int | None
) -> tuple[Autoencoder, torch.device]:
    """A shard's model: from this worker's plugin, or loaded here when not run on a worker."""
    from distributed import get_worker

    plugin = ModelPlugin(checkpoint, sha256, device, torch_threads)
    try:
        worker = get_worker()
    except ValueError:  # called outside a worker (a test, a local call): load it here
        return plugin.load()
    installed = worker.plugins.get(plugin.name)
    if not isinstance(installed, ModelPlugin):  # not registered by this run's client: install it now
        worker.plugins[plugin.name] = installed = plugin
    return installed.load()
