"""Face rate: the share of decoded images in which OpenCV's Haar cascade finds a face.

The detector is the frontal-face cascade shipped inside opencv-python-headless 4.x
(``cv2.data.haarcascades``; OpenCV 5 no longer ships the XML files, hence the pin below
5). Decoded images are small (32–64 px) and the cascade's smallest window is 24 px, so
every image is upscaled to ``DETECT_SIZE`` before detection.

A face rate only means something if the detector finds faces in the model's own
reconstructions of real images; when it finds none there (synthetic faces are cartoons,
not photographs), the rates are reported as not meaningful instead of as 0.

The real images are the first ``n`` readable ones (:func:`~latentdask.generate.grids.readable_images`):
unreadable rows are skipped, and the result's ``real_images`` says how many were asked
for, used and skipped, and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from latentdask.data.manifest import REPORT_EXAMPLES
from latentdask.errors import LatentdaskError
from latentdask.generate.grids import decode_points, encode_images, readable_images, to_uint8
from latentdask.location import Location, Where, location
from latentdask.model.checkpoint import Checkpoint
from latentdask.output import write_json

#: the kind of output face_rate.json is, in its ``latentdask`` record
FACE_RATES_KIND = "face-rates"
CASCADE = "haarcascade_frontalface_default.xml"
DETECT_SIZE = 128
NOT_MEANINGFUL = "the detector finds no faces in the real reconstructions, so face rates say nothing here"


class FaceRateError(LatentdaskError):
    """The face detector cannot be loaded or used."""


def face_detector() -> Any:
    """OpenCV's shipped frontal-face Haar cascade."""
    try:
        import cv2
    except ImportError:
        raise FaceRateError(
            "the face rate needs opencv-python-headless<5 (pip install 'opencv-python-headless<5')"
        ) from None
    path = Path(cv2.data.haarcascades) / CASCADE  # type: ignore[attr-defined]
    if not path.exists():
        raise FaceRateError(f"OpenCV {cv2.__version__} ships no {CASCADE}; install opencv-python-headless<5")
    return cv2.CascadeClassifier(str(path))


def has_face(images: np.ndarray, detector: Any = None) -> np.ndarray:
    """Per uint8 image (k, size, size, 3): whether the cascade finds at least one face."""
    import cv2

    detector = detector or face_detector()
    found = np.zeros(len(images), dtype=bool)
    for k, image in enumerate(images):
        gray = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
        gray = cv2.resize(gray, (DETECT_SIZE, DETECT_SIZE), interpolation=cv2.INTER_CUBIC)
        faces = detector.detectMultiScale(
            gray, scaleFactor=1.1, minNeighbors=3, minSize=(DETECT_SIZE // 3,) * 2
        )
        found[k] = len(faces) > 0
    return found


def face_rates(
    checkpoint: Checkpoint, point_sets: Sequence[Where], dataset: Where, *, n: int = 200
) -> dict[str, Any]:
    """Face rate of the first ``n`` points of each set, beside real images and their reconstructions.

    The real images are the dataset's first ``n`` readable ones; ``real_images`` in the
    result counts those asked for, used and skipped (with examples of why).
    """
    import zarr

    detector = face_detector()
    model = checkpoint.model
    real = readable_images(checkpoint, dataset, range(n))
    real_z = encode_images(model, real.pixels)
    reconstructions = decode_points(model, real_z)
    reference = {
        "real images": _rate(to_uint8(real.pixels), detector),
        "real reconstructions": _rate(reconstructions, detector) | round_trip(model, real_z, reconstructions),
    }
    sets = {}
    for path in point_sets:
        where = location(path)
        group = zarr.open_group(str(where), mode="r")
        label = f"{group.attrs.get('sampler', where.stem)} ({where.name})"
        z = np.asarray(group["z"][:n])  # type: ignore[index]
        images = decode_points(model, z)
        sets[label] = _rate(images, detector) | round_trip(model, z, images)
    meaningful = reference["real reconstructions"]["faces"] > 0
    if not meaningful:
        sets = {label: rate | {"rate": None} for label, rate in sets.items()}
    return {
        "detector": f"OpenCV Haar cascade {CASCADE}, images upscaled to {DETECT_SIZE} px",
        "meaningful": meaningful,
        "note": None if meaningful else NOT_MEANINGFUL,
        "reference": reference,
        "sets": sets,
        "real_images": {
            "asked": n,
            "used": len(real.rows),
            "skipped": len(real.skipped),
            "skipped_examples": list(real.skipped[:REPORT_EXAMPLES]),
        },
    }


def round_trip(model: Any, z: np.ndarray, images: np.ndarray) -> dict[str, Any]:
    """How far decode → 8-bit image → encode moves each point, |E(D(z)) − z|: a point the decoder
    cannot represent moves far. ``images``: D(z) as uint8 (k, size, size, 3)."""
    pixels = images.transpose(0, 3, 1, 2).astype(np.float32) / 255
    moved = np.linalg.norm(encode_images(model, pixels) - np.asarray(z, dtype=np.float32), axis=1)
    return {"round_trip_q50": float(np.median(moved)), "round_trip_q90": float(np.quantile(moved, 0.9))}


def _rate(images: np.ndarray, detector: Any) -> dict[str, Any]:
    found = has_face(images, detector)
    return {
        "images": len(images),
        "faces": int(found.sum()),
        "rate": float(found.mean()) if len(found) else None,
    }


def format_face_rates(result: dict[str, Any]) -> str:
    lines = [f"{'face rate':<40} {'images':>7} {'faces':>6} {'rate':>6} {'round trip q50':>15}"]
    for name, s in (result["reference"] | result["sets"]).items():
        rate = "—" if s["rate"] is None else f"{s['rate']:.3f}"
        moved = "—" if s.get("round_trip_q50") is None else f"{s['round_trip_q50']:.3f}"
        lines.append(f"{name[:40]:<40} {s['images']:>7} {s['faces']:>6} {rate:>6} {moved:>15}")
    real = result.get("real_images")  # absent from files written before it was recorded
    if real and real["skipped"]:
        lines.append(
            f"note: {real['skipped']} unreadable real image(s) skipped "
            f"(e.g. {'; '.join(real['skipped_examples'])})"
        )
    if real and real["used"] < real["asked"]:
        lines.append(f"note: {real['used']} real image(s) used of {real['asked']} asked for")
    if result["note"]:
        lines.append(f"note: {result['note']}")
    return "\n".join(lines)


def write_face_rates(result: dict[str, Any], out: Where, *, inputs: Sequence[Where] = ()) -> Location:
    """Write ``face_rate.json`` (replacing only an earlier one of latentdask's)."""
    return write_json(out, result, FACE_RATES_KIND, inputs=inputs)
