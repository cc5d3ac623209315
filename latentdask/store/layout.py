"""The latent store: a Zarr v3 group that ``xarray.open_zarr`` opens with named dimensions.

Layout (DESIGN.md, "Formats"):

=============== ======================= ============================================
array           dims                    written by
=============== ======================= ============================================
``z``           (image, latent) float32 the shard's task; chunk = one shard
``valid``       (image) bool            the shard's task
``error``       (image) str             the shard's task; "" when valid
``crop``        (image) str             the shard's task: box, centre-square, none
``recon_error`` (image) float32         the shard's task, only when asked for
``checksum``    (shard, column) uint32  the shard's task, before ``shard_done``: CRC-32 per column
``shard_done``  (shard) bool            the shard's task, last; chunk size 1
``image``       (image) int64           the client: row in the dataset's listing
``filename``    (image) str             the client
``split``       (image) int8            the client
``attributes``  (image, attribute) int8 the client, with coordinate ``attribute``
``latent``      (latent) int32          the client: component numbers 0…N-1
=============== ======================= ============================================

Every per-image array is chunked by ``shard_size``, so a task writes only its own
chunks and no two tasks ever share one. The client writes the template and the
manifest-derived arrays under a temporary name and renames the finished template into
place (``latentdask.output``), so a half-made store never sits under the final
name; ``template_complete`` (set last) still marks stores made before that.
"""

from __future__ import annotations

import warnings
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr
from zarr.errors import ZarrUserWarning

from latentdask._version import __version__
from latentdask.data.manifest import Manifest
from latentdask.errors import LatentdaskError
from latentdask.location import Where, location

if TYPE_CHECKING:
    import xarray as xr

FORMAT = "latentdask-latents"
FORMAT_VERSION = 2  # 2: per-shard checksums
#: the kind of output a latent store is, in its ``latentdask`` attribute
STORE_KIND = "latent-store"
CHECKSUM_ARRAY = "checksum"
#: the columns a shard's checksums cover, in the order of the ``checksum`` array's second axis
CHECKSUM_COLUMNS = ("z", "valid", "error", "crop")


def columns(recon_error: bool) -> tuple[str, ...]:
    """The columns a shard's task writes and checksums."""
    return (*CHECKSUM_COLUMNS, "recon_error") if recon_error else CHECKSUM_COLUMNS


#: metadata that must agree between a store and the run that resumes it
RESUME_KEYS = (
    "model_sha256",
    "manifest_sha256",
    "preprocessing",
    "precision",
    "decoder",
    "shard_size",
    "latent_dim",
    "recon_error",
)

#: the values of resume keys added later, for stores written before them
RESUME_DEFAULTS = {"decoder": "pil"}


class StoreError(LatentdaskError):
    """A latent store is missing, half-made, or belongs to another model or dataset."""


def create_latents(group: zarr.Group, n: int, latent_dim: int, shard_size: int) -> zarr.Array:
    """The store's ``z``: float32, a shard per chunk, NaN until written, uncompressed (latents
    barely compress, and the checksums and reads go faster without a codec)."""
    return group.create_array(
        "z",
        shape=(n, latent_dim),
        chunks=(shard_size, latent_dim),
        dtype="float32",
        fill_value=np.nan,
        dimension_names=["image", "latent"],
        compressors=None,
    )


def create_store(
    path: Where,
    manifest: Manifest,
    *,
    latent_dim: int,
    shard_size: int,
    metadata: dict[str, Any],
    recon_error: bool = False,
) -> zarr.Group:
    """Write the template of a latent store: every array, the manifest's columns, metadata.

    ``metadata`` must hold the :data:`RESUME_KEYS` other than ``shard_size``,
    ``latent_dim`` and ``recon_error``, plus whatever else describes the run.
    """
    path = location(path)
    n = len(manifest)
    n_shards = max(1, -(-n // shard_size))
    group = zarr.open_group(str(path), mode="w")

    def per_image(name: str, dtype: Any, fill_value: Any) -> None:
        group.create_array(
            name,
            shape=(n,),
            chunks=(shard_size,),
            dtype=dtype,
            fill_value=fill_value,
            dimension_names=["image"],
        )

    # 1. Arrays the tasks fill.
    create_latents(group, n, latent_dim, shard_size)
    per_image("valid", bool, False)
    per_image("error", str, "")
    per_image("crop", str, "")
    if recon_error:
        per_image("recon_error", "float32", np.nan)
    names = columns(recon_error)
    checksums = group.create_array(
        CHECKSUM_ARRAY,
        shape=(n_shards, len(names)),
        chunks=(1, len(names)),
        dtype="uint32",
        fill_value=0,
        dimension_names=["shard", "checksum_column"],
    )
    checksums.attrs["columns"] = list(names)
    group.create_array(
        "shard_done", shape=(n_shards,), chunks=(1,), dtype=bool, fill_value=False, dimension_names=["shard"]
    )

    # 2. Columns from the manifest, written once by the client.
    def column(name: str, values: np.ndarray, dtype: Any, dims: list[str], chunks: tuple[int, ...]) -> None:
        array = group.create_array(name, shape=values.shape, chunks=chunks, dtype=dtype, dimension_names=dims)
        array[...] = values

    column("image", manifest.index.astype(np.int64), "int64", ["image"], (shard_size,))
    column("filename", np.asarray(manifest.names, dtype=str), str, ["image"], (shard_size,))
    column("split", manifest.split.astype(np.int8), "int8", ["image"], (shard_size,))
    n_attr = len(manifest.attribute_names)
    column(
        "attributes",
        manifest.attributes.astype(np.int8),
        "int8",
        ["image", "attribute"],
        (shard_size, max(n_attr, 1)),
    )
    column("attribute", np.array(manifest.attribute_names, dtype=str), str, ["attribute"], (max(n_attr, 1),))
    column("latent", np.arange(latent_dim, dtype=np.int32), "int32", ["latent"], (latent_dim,))

    # 3. Metadata, with the completion flag last.
    group.attrs.update(
        metadata
        | {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "package_version": __version__,
            "shard_size": shard_size,
            "latent_dim": latent_dim,
            "n_images": n,
            "n_shards": n_shards,
            "recon_error": recon_error,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )
    group.attrs["template_complete"] = True
    # Consolidated metadata lets plain ``xarray.open_zarr(path)`` open the store in one
    # read and without a warning; tasks only write chunks, so it never goes stale.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ZarrUserWarning)
        zarr.consolidate_metadata(str(path))
    return group


def open_store(path: Where, *, mode: str = "r") -> zarr.Group:
    """Open a complete latent store's group, or raise StoreError saying what is wrong."""
    path = location(path)
    if not path.exists():
        raise StoreError(f"latent store {path} does not exist")
    try:
        group = zarr.open_group(str(path), mode=mode)  # type: ignore[arg-type]
    except (FileNotFoundError, ValueError, zarr.errors.GroupNotFoundError) as exc:
        raise StoreError(f"{path} is not a Zarr group ({exc})") from None
    attrs = group.attrs.asdict()
    if attrs.get("format") != FORMAT:
        raise StoreError(f"{path} is not a latentdask latent store (format {attrs.get('format')!r})")
    if not attrs.get("template_complete"):
        raise StoreError(f"{path} was not fully created (its creation was interrupted); use --overwrite")
    check_layout(path, group)
    return group


def check_layout(path: Where, group: zarr.Group) -> None:
    """Refuse, naming the field, a store whose layout attributes are not those of its arrays.

    The attributes are input like any file a person or a tool can edit: ``shard_size`` set to
    -5 or "ten" must be one line here, not a crash or a false report of damage later.
    """
    attrs = group.attrs.asdict()
    z = store_array(group, "z")
    truth = {"shard_size": z.chunks[0], "n_images": z.shape[0], "latent_dim": z.shape[1]}
    truth["n_shards"] = max(1, -(-truth["n_images"] // truth["shard_size"]))  # as create_store counts them
    version = attrs.get("format_version", 1)  # stores of the first format had none
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise StoreError(f"{path}: its attribute format_version is {version!r}, not a format number")
    if version > FORMAT_VERSION:  # a newer layout is not an edited one
        raise StoreError(
            f"{path} has store format {version}, newer than this latentdask reads ({FORMAT_VERSION}); "
            "upgrade latentdask"
        )
    for name, actual in truth.items():
        if name not in attrs and name == "n_shards":
            continue
        value = attrs.get(name)
        if isinstance(value, bool) or value != actual:
            raise StoreError(
                f"{path}: its attribute {name} is {value!r}, but its arrays hold {actual}; the store's "
                "metadata was edited or damaged (restore it, or encode again with --overwrite)"
            )


def check_resumable(group: zarr.Group, expected: dict[str, Any], path: Where) -> None:
    """Raise StoreError naming every resume key whose value differs from ``expected``."""
    attrs = group.attrs.asdict()
    differences = [
        f"{key}: store has {attrs.get(key)!r}, this run has {expected.get(key)!r}"
        for key in RESUME_KEYS
        if attrs.get(key, RESUME_DEFAULTS.get(key)) != expected.get(key)
    ]
    if differences:
        raise StoreError(
            f"cannot resume {path}: it was made with other settings ({'; '.join(differences)}); "
            "use --overwrite to start again"
        )


def store_array(group: zarr.Group, name: str) -> zarr.Array:
    """The array ``name`` of a store's group (typed: a group member may also be a group)."""
    member = group[name]
    if not isinstance(member, zarr.Array):
        raise StoreError(f"{name} in {group.store} is not an array")
    return member


#: what a chunk whose bytes do not decode raises (zstd's error; a chunk of the wrong size); an
#: OSError (a network or permission failure) is no damage of the store and is not caught
UNDECODABLE = (RuntimeError, ValueError)


def shard_rows(array: zarr.Array) -> tuple[np.ndarray, np.ndarray]:
    """A per-shard array's values (chunks of one shard), and which shards' chunks decode.

    A chunk that does not decode (a flipped byte in its compressed bytes) reads as the fill
    value: it is that shard's damage, not the store's, so every other shard still reads.
    """
    try:
        return np.asarray(array[...]), np.ones(array.shape[0], dtype=bool)
    except UNDECODABLE:  # a chunk that does not decode: read the shards one by one
        values = np.full(array.shape, array.fill_value, dtype=array.dtype)
        readable = np.ones(array.shape[0], dtype=bool)
        for number in range(array.shape[0]):
            try:
                values[number] = array[number]
            except UNDECODABLE:
                readable[number] = False
        return values, readable


def shards_done(group: zarr.Group) -> np.ndarray:
    """Boolean array: which shards are complete (a flag that does not decode is not complete)."""
    done, readable = shard_rows(store_array(group, "shard_done"))
    return np.asarray(done, dtype=bool) & readable


def describe_store(path: Where) -> list[str]:
    """Lines for ``latentdask info``: size, progress, validity, and what made the store."""
    group = open_store(path)
    attrs: dict[str, Any] = group.attrs.asdict()
    done = shards_done(group)
    valid = np.asarray(store_array(group, "valid")[:], dtype=bool)
    errors = np.asarray(store_array(group, "error")[:], dtype=object)
    shard_size = int(attrs["shard_size"])
    finished = np.repeat(done, shard_size)[: len(valid)]
    reasons, counts = np.unique(errors[finished & ~valid], return_counts=True)
    invalid = ", ".join(f"{r}: {c}" for r, c in zip(reasons.tolist(), counts.tolist(), strict=True))
    return [
        f"store       {path} (latentdask latents v{attrs['format_version']})",
        f"images      {attrs['n_images']} x {attrs['latent_dim']} latents, "
        f"split {attrs.get('split_selection')}",
        f"shards      {int(done.sum())}/{len(done)} done, {attrs['shard_size']} images each",
        f"valid       {int(valid.sum())}"
        + (f"; invalid {int((finished & ~valid).sum())} ({invalid})" if invalid else ""),
        f"model       {attrs.get('model_path')} (sha256 {str(attrs.get('model_sha256'))[:12]}…)",
        f"dataset     {attrs.get('dataset_root')} "
        f"(manifest sha256 {str(attrs.get('manifest_sha256'))[:12]}…)",
        f"created     {attrs.get('created')} by latentdask {attrs.get('package_version')}",
    ]


def open_latents(path: Where) -> xr.Dataset:
    """Open a latent store as an ``xarray.Dataset`` of its images, dims ``image``, ``latent`` and
    ``attribute``: ``z`` and the other per-image variables lazy, ``split`` a coordinate in memory
    whose codes say what they mean (CF ``flag_values`` and ``flag_meanings``) and ``attributes``
    in memory (one byte per image and attribute), so that grouping and selecting by them works as
    on any xarray object (``ds.where(ds.split == 0, drop=True)``; text variables are Python strings
    for it). The per-shard bookkeeping (``shard_done``, ``checksum``) is left to
    :func:`open_store` and ``verify``.

    Examples
    --------
    >>> ds = open_latents("runs/demo/latents.zarr")  # doctest: +SKIP
    >>> ds.z.where(ds.valid).mean("image")  # doctest: +SKIP
    >>> ds.z.where(ds.valid).groupby("split").mean()  # doctest: +SKIP
    >>> ds.z.groupby(ds.attributes.sel(attribute="Male")).mean()  # doctest: +SKIP
    """
    import xarray as xr

    from latentdask.data.celeba_names import SPLITS, UNKNOWN_SPLIT

    open_store(path)  # clear errors for what is not a complete store
    ds = xr.open_zarr(str(path)).drop_vars(["shard_done", "checksum"], errors="ignore")
    meanings = {UNKNOWN_SPLIT: "unknown", **{code: name for name, code in SPLITS.items()}}
    split = (
        ds["split"]
        .load()
        .assign_attrs(
            long_name="the dataset's split of the image",
            flag_values=list(meanings),
            flag_meanings=" ".join(meanings.values()),
        )
    )
    ds = ds.drop_vars("split").assign_coords(split=split)
    if "attributes" in ds:
        ds["attributes"] = ds["attributes"].load()
    for name in ("filename", "error", "crop"):  # text as Python strings: ds.where() fills them with NaN
        if name in ds and ds[name].dtype.kind == "T":
            ds[name] = ds[name].astype(object)
    return ds
