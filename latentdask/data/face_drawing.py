"""Procedural faces: the drawing behind the synthetic CelebA-layout datasets.

Each image is drawn from its own random stream ``(seed, index)``, so an image never
depends on how many others were made or in which order, and the same seed gives
byte-identical files. Faces vary in placement, scale, rotation, face shape, skin tone,
hair style and colour, eyes, brows, mouth, glasses, hat, background and lighting;
the attributes the generator controls (:data:`CONTROLLED_ATTRIBUTES`) are written
true to the drawn face, the other CelebA attributes are -1.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from latentdask.data.celeba_names import ATTRIBUTE_NAMES

WIDTH, HEIGHT = 178, 218
JPEG_QUALITY = 90
GENERATOR_VERSION = 1  # bump when the drawing changes, so old datasets are not taken as new
_HEAD_BOX = (76, 92)  # half width and height of the box rotated with the head
_COARSE = (9, 11)
_BLACK = Image.new("RGB", (WIDTH, HEIGHT))  # grid of the background and light ramps before upsampling

CONTROLLED_ATTRIBUTES: tuple[str, ...] = (
    "Bald",
    "Bangs",
    "Black_Hair",
    "Blond_Hair",
    "Brown_Hair",
    "Bushy_Eyebrows",
    "Eyeglasses",
    "Goatee",
    "Gray_Hair",
    "Male",
    "Mouth_Slightly_Open",
    "Mustache",
    "Narrow_Eyes",
    "No_Beard",
    "Pale_Skin",
    "Rosy_Cheeks",
    "Smiling",
    "Wearing_Earrings",
    "Wearing_Hat",
    "Wearing_Lipstick",
    "Young",
)

_HAIR_COLOURS = {
    "Black_Hair": (28, 24, 22),
    "Brown_Hair": (98, 62, 34),
    "Blond_Hair": (222, 190, 110),
    "Gray_Hair": (170, 170, 172),
    "red": (150, 58, 30),  # CelebA has no attribute for red hair: none of the four is set
}
_SKIN_TONES = np.array(
    [(255, 224, 200), (240, 200, 170), (224, 172, 135), (198, 140, 100), (160, 105, 70), (110, 72, 48)],
    dtype=np.float64,
)
_PALE_SKIN_TONES = 1  # the first rows of _SKIN_TONES count as pale skin


@dataclass(frozen=True)
class FaceParams:
    """Everything that decides one synthetic face; ``attributes`` follows from it."""

    male: bool
    young: bool
    skin: tuple[int, int, int]
    pale: bool
    hair: str  # a key of _HAIR_COLOURS
    bald: bool
    long_hair: bool
    bangs: bool
    hat: bool
    smiling: bool
    mouth_open: bool
    lipstick: bool
    mustache: bool
    goatee: bool
    eyeglasses: bool
    narrow_eyes: bool
    bushy_brows: bool
    rosy_cheeks: bool
    earrings: bool
    centre: tuple[float, float]
    scale: float
    angle: float
    face_aspect: float
    eye_colour: tuple[int, int, int]
    background: tuple[tuple[int, int, int], tuple[int, int, int], float]
    light: tuple[float, float]
    clothes: tuple[int, int, int]
    hat_colour: tuple[int, int, int]

    @property
    def attributes(self) -> dict[str, int]:
        """The CelebA attributes (+1 / -1) of this face; uncontrolled ones are -1."""
        hair_attr = None if self.bald or self.hair == "red" else self.hair
        truth = {
            "Bald": self.bald,
            "Bangs": self.bangs,
            "Black_Hair": hair_attr == "Black_Hair",
            "Blond_Hair": hair_attr == "Blond_Hair",
            "Brown_Hair": hair_attr == "Brown_Hair",
            "Gray_Hair": hair_attr == "Gray_Hair",
            "Bushy_Eyebrows": self.bushy_brows,
            "Eyeglasses": self.eyeglasses,
            "Goatee": self.goatee,
            "Male": self.male,
            "Mouth_Slightly_Open": self.mouth_open,
            "Mustache": self.mustache,
            "Narrow_Eyes": self.narrow_eyes,
            "No_Beard": not (self.goatee or self.mustache),
            "Pale_Skin": self.pale,
            "Rosy_Cheeks": self.rosy_cheeks,
            "Smiling": self.smiling,
            "Wearing_Earrings": self.earrings,
            "Wearing_Hat": self.hat,
            "Wearing_Lipstick": self.lipstick,
            "Young": self.young,
        }
        return {name: (1 if truth.get(name, False) else -1) for name in ATTRIBUTE_NAMES}


def draw_params(seed: int, index: int) -> FaceParams:
    """Draw the parameters of image ``index`` from the stream ``(seed, index)``."""
    rng = np.random.default_rng([seed, index])

    def colour(low: int = 0, high: int = 256) -> tuple[int, int, int]:
        r, g, b = rng.integers(low, high, size=3)
        return int(r), int(g), int(b)

    male = bool(rng.random() < 0.45)
    young = bool(rng.random() < 0.75)
    tone = int(rng.integers(len(_SKIN_TONES)))
    skin_rgb = _SKIN_TONES[tone] * rng.uniform(0.94, 1.04) + rng.normal(0, 4, 3)
    skin = tuple(int(v) for v in np.clip(skin_rgb, 0, 255))
    hair_choices = ["Black_Hair", "Brown_Hair", "Blond_Hair", "red"]
    hair = (
        "Gray_Hair"
        if rng.random() < (0.05 if young else 0.6)
        else hair_choices[int(rng.integers(len(hair_choices)))]
    )
    bald = male and not young and bool(rng.random() < 0.45)
    hat = bool(rng.random() < 0.12)
    mouth_open = bool(rng.random() < 0.45)
    beard_roll = rng.random()
    return FaceParams(
        male=male,
        young=young,
        skin=skin,  # type: ignore[arg-type]
        pale=tone < _PALE_SKIN_TONES,
        hair=hair,
        bald=bald,
        long_hair=(not male and bool(rng.random() < 0.8)) or (male and bool(rng.random() < 0.1)),
        bangs=not bald and bool(rng.random() < 0.3),
        hat=hat,
        smiling=bool(rng.random() < 0.5),
        mouth_open=mouth_open,
        lipstick=not male and bool(rng.random() < 0.5),
        mustache=male and beard_roll < 0.3,
        goatee=male and 0.15 < beard_roll < 0.4,
        eyeglasses=bool(rng.random() < 0.15),
        narrow_eyes=bool(rng.random() < 0.15),
        bushy_brows=bool(rng.random() < (0.4 if male else 0.1)),
        rosy_cheeks=bool(rng.random() < 0.1),
        earrings=not male and bool(rng.random() < 0.3),
        centre=(float(89 + rng.normal(0, 4)), float(118 + rng.normal(0, 4))),
        scale=float(rng.uniform(0.88, 1.12)),
        angle=float(rng.normal(0, 5)),
        face_aspect=float(rng.uniform(0.72, 0.9)),
        eye_colour=colour(20, 150),
        background=(colour(), colour(), float(rng.uniform(0, 2 * np.pi))),
        light=(float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(0.0, 0.35))),
        clothes=colour(),
        hat_colour=colour(),
    )


def render_face(params: FaceParams) -> Image.Image:
    """Draw one face as a 178 × 218 RGB image."""
    image = _background(params)
    _draw_shoulders(ImageDraw.Draw(image), params)
    layer = Image.new("RGBA", (WIDTH, HEIGHT), (0, 0, 0, 0))
    _draw_head(ImageDraw.Draw(layer), params)
    # Rotate only the box around the head: rotation is the costliest step. PIL draws
    # shapes without antialiasing, so nearest-neighbour rotation loses nothing that
    # bilinear would keep, at a third of the cost.
    cx, cy = params.centre
    box = (
        round(cx) - _HEAD_BOX[0],
        round(cy) - _HEAD_BOX[1],
        round(cx) + _HEAD_BOX[0],
        round(cy) + _HEAD_BOX[1],
    )
    head = layer.crop(box).rotate(params.angle, Image.Resampling.NEAREST)
    image.alpha_composite(head, dest=(box[0], box[1]))
    return _light(image.convert("RGB"), params)


def render_face_jpeg(seed: int, index: int) -> tuple[bytes, dict[str, int]]:
    """The JPEG bytes and attributes of image ``index`` of the dataset with ``seed``."""
    params = draw_params(seed, index)
    buffer = io.BytesIO()
    render_face(params).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue(), params.attributes


_COARSE_Y, _COARSE_X = np.mgrid[0 : _COARSE[1], 0 : _COARSE[0]].astype(np.float64)
_COARSE_X = _COARSE_X / (_COARSE[0] - 1) - 0.5
_COARSE_Y = _COARSE_Y / (_COARSE[1] - 1) - 0.5


def _ramp(direction: float, low: float, high: float) -> Image.Image:
    """A linear ramp from ``low`` to ``high`` (0…1) along ``direction``, as an 'L' image.

    Computed on a coarse grid and resized by PIL: a ramp is linear, so bilinear
    upsampling is exact up to rounding, at a fraction of the cost of full-size numpy.
    """
    u = np.cos(direction) * _COARSE_X + np.sin(direction) * _COARSE_Y
    t = low + (high - low) * (u + 0.71) / 1.42
    coarse = Image.fromarray(np.clip(np.rint(255 * t), 0, 255).astype(np.uint8), "L")
    return coarse.resize((WIDTH, HEIGHT), Image.Resampling.BILINEAR)


def _background(p: FaceParams) -> Image.Image:
    first, second, direction = p.background
    mask = _ramp(direction, 0.0, 1.0)
    size = (WIDTH, HEIGHT)
    return Image.composite(Image.new("RGBA", size, second), Image.new("RGBA", size, first), mask)


def _light(image: Image.Image, p: FaceParams) -> Image.Image:
    """Directional light: the side away from the light is darkened by up to ``strength``."""
    direction, strength = p.light
    if strength < 0.02:
        return image
    # composite with black under a gain mask: image · gain, without converting the mask
    return Image.composite(image, _BLACK, _ramp(direction, 1.0 - strength, 1.0))


def _shade(rgb: tuple[int, int, int], factor: float) -> tuple[int, int, int, int]:
    r, g, b = (int(min(255, max(0, v * factor))) for v in rgb)
    return (r, g, b, 255)


def _draw_shoulders(draw: ImageDraw.ImageDraw, p: FaceParams) -> None:
    cx, cy = p.centre
    s = p.scale
    draw.ellipse((cx - 70 * s, cy + 57 * s, cx + 70 * s, cy + 130 * s), fill=_shade(p.clothes, 1.0))


def _draw_head(draw: ImageDraw.ImageDraw, p: FaceParams) -> None:
    cx, cy = p.centre
    s = p.scale
    half_h = 50 * s
    half_w = half_h * p.face_aspect
    skin = _shade(p.skin, 1.0)
    hair = _shade(_HAIR_COLOURS[p.hair], 1.0)
    top = cy - half_h

    # 1. Behind the face: long hair, then the neck.
    if p.long_hair and not p.bald:
        draw.rounded_rectangle(
            (cx - half_w * 1.25, top - 6 * s, cx + half_w * 1.25, cy + half_h * 1.5),
            radius=int(30 * s),
            fill=hair,
        )
    draw.rectangle((cx - 16 * s, cy + half_h * 0.6, cx + 16 * s, cy + half_h * 1.3), fill=skin)

    # 2. Ears, face, hair on top.
    for side in (-1, 1):
        ex = cx + side * half_w
        draw.ellipse((ex - 7 * s, cy - 10 * s, ex + 7 * s, cy + 12 * s), fill=_shade(p.skin, 0.92))
        if p.earrings:
            draw.ellipse((ex - 3 * s, cy + 12 * s, ex + 3 * s, cy + 18 * s), fill=(230, 200, 60, 255))
    draw.ellipse((cx - half_w, top, cx + half_w, cy + half_h), fill=skin)
    if p.rosy_cheeks:
        for side in (-1, 1):
            rx = cx + side * half_w * 0.55
            draw.ellipse((rx - 8 * s, cy + 6 * s, rx + 8 * s, cy + 16 * s), fill=(225, 110, 110, 255))
    if not p.bald:
        draw.chord(
            (cx - half_w * 1.08, top - 8 * s, cx + half_w * 1.08, cy + half_h * 0.5),
            start=180,
            end=360,
            fill=hair,
        )
        if p.bangs:
            draw.rectangle((cx - half_w * 0.85, top + 4 * s, cx + half_w * 0.85, top + 26 * s), fill=hair)
    if not p.young:
        wrinkle = _shade(p.skin, 0.75)
        for k in range(2):
            y = top + (32 + 5 * k) * s
            draw.line((cx - 14 * s, y, cx + 14 * s, y), fill=wrinkle, width=1)

    # 3. Eyes and brows.
    eye_y = cy - 8 * s
    eye_dx = half_w * 0.42
    eye_h = (3.0 if p.narrow_eyes else 6.0) * s
    brow = _shade(_HAIR_COLOURS[p.hair] if not p.bald else (60, 50, 40), 0.8)
    for side in (-1, 1):
        ex = cx + side * eye_dx
        draw.ellipse((ex - 9 * s, eye_y - eye_h, ex + 9 * s, eye_y + eye_h), fill=(245, 245, 245, 255))
        r = min(eye_h, 4.5 * s)
        draw.ellipse((ex - r, eye_y - r, ex + r, eye_y + r), fill=_shade(p.eye_colour, 1.0))
        draw.ellipse((ex - 1.6 * s, eye_y - 1.6 * s, ex + 1.6 * s, eye_y + 1.6 * s), fill=(10, 10, 10, 255))
        by = eye_y - 12 * s
        draw.line(
            (ex - 10 * s, by + 2 * s, ex + 10 * s, by - side * 0.0),
            fill=brow,
            width=max(1, round((4.5 if p.bushy_brows else 2.0) * s)),
        )
    if p.eyeglasses:
        frame = (25, 25, 25, 255)
        for side in (-1, 1):
            ex = cx + side * eye_dx
            draw.rounded_rectangle(
                (ex - 13 * s, eye_y - 9 * s, ex + 13 * s, eye_y + 9 * s),
                radius=int(4 * s),
                outline=frame,
                width=2,
            )
        draw.line((cx - eye_dx + 13 * s, eye_y, cx + eye_dx - 13 * s, eye_y), fill=frame, width=2)

    # 4. Nose, mouth, facial hair.
    nose = _shade(p.skin, 0.8)
    draw.line((cx, eye_y + 4 * s, cx - 3 * s, cy + 14 * s, cx + 3 * s, cy + 15 * s), fill=nose, width=2)
    mouth_y = cy + 27 * s
    mouth_w = (17 if p.smiling else 13) * s
    lips = (190, 30, 50, 255) if p.lipstick else _shade(p.skin, 0.65)
    if p.mouth_open:
        draw.ellipse((cx - mouth_w, mouth_y - 5 * s, cx + mouth_w, mouth_y + 7 * s), fill=lips)
        draw.ellipse(
            (cx - mouth_w * 0.8, mouth_y - 3 * s, cx + mouth_w * 0.8, mouth_y + 5 * s), fill=(60, 10, 15, 255)
        )
        draw.rectangle(
            (cx - mouth_w * 0.6, mouth_y - 3 * s, cx + mouth_w * 0.6, mouth_y),
            fill=(250, 250, 245, 255),
        )
    elif p.smiling:
        draw.arc(
            (cx - mouth_w, mouth_y - 10 * s, cx + mouth_w, mouth_y + 5 * s),
            start=15,
            end=165,
            fill=lips,
            width=max(2, round(3 * s)),
        )
    else:
        draw.line((cx - mouth_w, mouth_y, cx + mouth_w, mouth_y), fill=lips, width=max(2, round(3 * s)))
    beard = _shade(_HAIR_COLOURS[p.hair] if not p.bald else (70, 60, 50), 0.9)
    if p.mustache:
        draw.polygon(
            [
                (cx - 15 * s, mouth_y - 6 * s),
                (cx + 15 * s, mouth_y - 6 * s),
                (cx + 10 * s, mouth_y - 11 * s),
                (cx - 10 * s, mouth_y - 11 * s),
            ],
            fill=beard,
        )
    if p.goatee:
        draw.ellipse((cx - 9 * s, mouth_y + 9 * s, cx + 9 * s, mouth_y + 22 * s), fill=beard)

    # 5. A hat covers the top of the head.
    if p.hat:
        hat = _shade(p.hat_colour, 1.0)
        draw.chord(
            (cx - half_w * 1.1, top - 22 * s, cx + half_w * 1.1, cy - 8 * s),
            start=180,
            end=360,
            fill=hat,
        )
        draw.rectangle((cx - half_w * 1.35, top + 7 * s, cx + half_w * 1.35, top + 14 * s), fill=hat)
