"""What every session of the dashboard shares: the explorer, real images, the model, overlays."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latentdask.errors import LatentdaskError
from latentdask.location import Location, Where, location
from latentdask.render.dashboard.controls import strongest_pair
from latentdask.render.explore import Explorer, View
from latentdask.stats.describe import Corpus, warm_kernels


class ServeError(LatentdaskError):
    """A dashboard that cannot start as asked."""


@dataclass
class Sources:
    """What every session of the dashboard shares: the explorer, whose columns the cluster holds, the
    dataset and file names for real images, the model for decoding, overlays, and where exports go."""

    explorer: Explorer
    dataset: Any = None
    checkpoint: Any = None
    filenames: np.ndarray | None = None
    overlays: dict[str, np.ndarray] = field(default_factory=dict)
    selections: Location = field(default_factory=Path)
    #: every valid row's moments, from the statistics (None when they are of a split): a selection
    #: is then described from its own rows alone
    corpus: Corpus | None = None

    @classmethod
    def open(
        cls,
        store: Where,
        stats: Where | None,
        points: Sequence[Where] | None,
        dataset: Where | None,
        model: Where | None,
        client: Any,
        selections: Where,
    ) -> Sources:
        """Open what a session needs (the arguments of :func:`~latentdask.render.dashboard.app.explore`);
        the first view's columns are held before anyone asks."""
        import zarr

        from latentdask.render.projections import read_overlay
        from latentdask.store.paths import default_stats_path

        store = location(store)
        stats_path = location(stats) if stats is not None else default_stats_path(store)
        if not stats_path.exists():
            raise ServeError(f"{stats_path} does not exist; give --stats")
        explorer = Explorer(store, stats_path, client)
        client.run(warm_kernels)
        attrs = zarr.open_group(str(store), mode="r").attrs if (store / "zarr.json").exists() else {}
        dataset_root = dataset or attrs.get("dataset_root")
        model_path = model or attrs.get("model_path")
        sources = cls(
            explorer,
            selections=location(selections),
            corpus=Corpus.of(explorer.stats, explorer.points.z.shape[0]),
        )
        if dataset_root is not None and location(str(dataset_root)).exists():
            from latentdask.data.dataset import open_dataset

            sources.dataset = open_dataset(str(dataset_root))
            group = zarr.open_group(str(store), mode="r")
            sources.filenames = np.asarray(group["filename"][...]) if "filename" in group else None  # type: ignore[index]
        if model_path is not None and location(str(model_path)).exists():
            from latentdask.model.checkpoint import load_checkpoint

            sources.checkpoint = load_checkpoint(str(model_path))
            if sources.checkpoint.model.config.latent_dim != explorer.dim:
                raise ServeError(
                    f"{model_path} decodes {sources.checkpoint.model.config.latent_dim} components; "
                    f"the store has {explorer.dim}"
                )
        for path in points or ():
            overlay = read_overlay(path)
            if overlay.z.shape[1] != explorer.dim:
                raise ServeError(f"{path} has {overlay.z.shape[1]} components; the store has {explorer.dim}")
            sources.overlays[overlay.label] = overlay.z
        explorer.frame(View("pair", *strongest_pair(explorer.stats)))  # the view a session opens on
        explorer.hold_rows()  # queued behind the first view's columns: selections then read memory
        return sources

    def varying_attributes(self) -> list[str]:
        """The attributes worth colouring by: those some valid rows have and others lack (every one
        when the statistics are not of every row and cannot tell)."""
        names = list(self.explorer.points.attribute_names)
        corpus = self.corpus
        if corpus is None or corpus.with_attribute is None:
            return names
        return [
            name for name, count in zip(names, corpus.with_attribute, strict=True) if 0 < count < corpus.n
        ]

    def real_image(self, name: str) -> np.ndarray:
        """A dataset image as uint8 RGB, as its file holds it."""
        import io

        from PIL import Image

        return np.asarray(Image.open(io.BytesIO(self.dataset.container.read(name))).convert("RGB"))
