"""The embedded default dataset (SPEC section 4): a generated, VOC-format stand-in for PASCAL VOC.

It is written once, deterministically from a seed, into a cache directory in exactly the VOC
layout (``VOCdevkit/VOC2012/{JPEGImages, SegmentationClass, SegmentationClassAug, ImageSets}``,
JPEG images, palette PNG labels with 255 boundary bands), so :class:`benchmarks.data.voc.VOCSplit`
reads it like real VOC. Its numbers are never comparable to the papers'.

Design, so that the papers' mechanisms can be measured on it:

- **Context decides some classes.** Every image belongs to one of two scenes, announced by one
  *cue object* in a strip along its top edge: a bottle (scene 0) or a tv monitor (scene 1), both
  locally distinct classes. Three pairs of classes (:data:`CONTEXT_PAIRS`) share one appearance
  (colour, texture, shapes); which member of the pair an object is depends only on the scene,
  i.e. on the cue at least ``context_distance`` pixels away (objects are placed that far below
  the strip). A network must carry class evidence over that distance to tell them apart; the
  dilated context module, which aggregates the front end's class scores, is built to do that.
- **Locally distinct classes.** The other 14 object classes each have their own colour and
  texture (stripes, checks, dots at a class-specific period), jittered per image.
- **Fine boundaries.** Objects are ellipses, polygons and thin-limbed shapes (limbs 4-5 px
  wide, so a 3-px boundary band leaves their core labelled); ground truth carries a 255 band of
  ``boundary_width`` pixels around every object, as VOC does, so upsampling quality (skip
  connections) and a CRF can matter.

Knobs are the fields of :class:`EmbeddedConfig`; a change of any knob (or of
:data:`GENERATOR_VERSION`) gives a new cache folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from benchmarks.data.voc import IGNORE_INDEX, NUM_CLASSES

__all__ = ["APPEARANCE", "CONTEXT_PAIRS", "GENERATOR_VERSION", "SCENE_CUES", "EmbeddedConfig", "paint", "polygon",
           "render_sample"]

GENERATOR_VERSION = 5  # 5: the COCO-format extra set (coco_images)

CONTEXT_PAIRS = ((4, 7), (3, 1), (17, 10))
"""(class in scene 0, class in scene 1) pairs with one shared appearance: boat/car, bird/aeroplane,
sheep/cow."""

SCENE_CUES = (5, 20)
"""The cue object class of scene 0 (bottle) and scene 1 (tvmonitor)."""
THIN_CLASSES = frozenset({2, 9, 16})  # bicycle, chair, pottedplant: drawn as thin-limbed shapes


@dataclass(frozen=True)
class EmbeddedConfig:
    """The knobs of the generated dataset (all sizes in pixels); why the defaults are what they
    are (measured): NOTES.md."""

    seed: int = 0
    train_images: int = 1500
    val_images: int = 100
    crf_holdout_images: int = 100  # `crfholdout`: never trained on, for `crf-search`
    coco_images: int = 500  # the COCO-format extra set, converted into the `coco` split (about 450 kept)
    height: int = 96
    width: int = 128
    cue_height: int = 20  # the top strip holding the scene's cue object
    context_distance: int = 24  # minimum gap between the cue strip and any other object
    objects_per_image: tuple[int, int] = (2, 4)
    object_size: tuple[int, int] = (18, 40)
    boundary_width: int = 3
    noise_std: float = 6.0
    colour_jitter: float = 0.12
    jpeg_quality: int = 90
    textured: bool = True  # class-specific textures; False: flat class colours
    object_classes: tuple[int, ...] = (4, 3, 17, 2, 15, 19)  # drawn below the strip; a pair member stands
    # for its pair (the scene picks the member)

    def fingerprint(self) -> str:
        text = json.dumps({"version": GENERATOR_VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def _appearance_table() -> dict[int, tuple[np.ndarray, str, int]]:
    """class -> (base RGB colour, texture, period). The two classes of a context pair share one."""
    rng = np.random.default_rng(12345)
    textures = ("flat", "hstripes", "vstripes", "checks", "dots")
    shared = {b: a for a, b in CONTEXT_PAIRS}
    table: dict[int, tuple[np.ndarray, str, int]] = {}
    hues = np.linspace(0.0, 1.0, 17, endpoint=False)
    order = [c for c in range(1, NUM_CLASSES) if c not in shared]
    for rank, cls in enumerate(order):
        hue = hues[rank]
        value = 0.55 + 0.35 * (rank % 2)
        rgb = _hsv_to_rgb(hue, 0.75, value)
        table[cls] = (rgb, textures[rank % len(textures)], int(rng.integers(4, 8)))
    for partner, first in shared.items():
        table[partner] = table[first]
    return table


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.array(rgb) * 255.0


APPEARANCE = _appearance_table()


def _texture(kind: str, period: int, height: int, width: int, phase: tuple[int, int]) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    yy, xx = yy + phase[0], xx + phase[1]
    half = max(1, period // 2)
    if kind == "hstripes":
        pattern = (yy // half) % 2
    elif kind == "vstripes":
        pattern = (xx // half) % 2
    elif kind == "checks":
        pattern = ((yy // half) + (xx // half)) % 2
    elif kind == "dots":
        pattern = ((yy % period) < half) & ((xx % period) < half)
    else:
        pattern = np.zeros((height, width))
    return 1.0 - 0.35 * pattern.astype(np.float64)


def _smooth_field(rng: np.random.Generator, height: int, width: int, cells: int, amplitude: float) -> np.ndarray:
    coarse = rng.uniform(-amplitude, amplitude, size=(cells, cells, 3)).astype(np.float32)
    channels = [np.asarray(Image.fromarray(coarse[..., c], mode="F").resize((width, height), Image.BICUBIC))
                for c in range(3)]
    return np.stack(channels, axis=-1).astype(np.float64)


def _draw_object(draw: ImageDraw.ImageDraw, cls: int, rng: np.random.Generator, box: tuple[int, int, int, int]) -> None:
    x0, y0, x1, y1 = box
    if cls in THIN_CLASSES:
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        for _ in range(int(rng.integers(3, 6))):
            angle = rng.uniform(0, 2 * np.pi)
            length = rng.uniform(0.35, 0.5) * (x1 - x0)
            end = (cx + length * np.cos(angle), cy + length * np.sin(angle))
            draw.line([(cx, cy), end], fill=cls, width=int(rng.integers(4, 6)))
        r = (x1 - x0) / 6
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=cls)
    elif rng.random() < 0.5:
        draw.ellipse(box, fill=cls)
    else:
        draw.polygon(polygon(rng, box, int(rng.integers(3, 7))), fill=cls)


def polygon(rng: np.random.Generator, box: tuple[int, int, int, int], corners: int) -> list[tuple[float, float]]:
    """A convex-ish polygon of ``corners`` jittered vertices on the ellipse inscribed in ``box``."""
    x0, y0, x1, y1 = box
    angles = rng.uniform(0, 2 * np.pi) + np.linspace(0, 2 * np.pi, corners, endpoint=False)
    angles += rng.uniform(-0.3, 0.3, corners) * np.pi / corners
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    return [(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in angles]


def paint(config: EmbeddedConfig, rng: np.random.Generator, appearance: np.ndarray,
           table: dict[int, tuple[np.ndarray, str, int]] = APPEARANCE) -> np.ndarray:
    """The ``H x W x 3`` uint8 image of a map of appearance classes (0: the background; a key of
    ``table`` elsewhere): grey textured background, jittered class colours and textures, noise."""
    h, w = appearance.shape
    image = np.empty((h, w, 3), dtype=np.float64)
    image[:] = rng.uniform(80, 170)
    image += _smooth_field(rng, h, w, 5, 30.0).mean(axis=-1, keepdims=True)  # luminance texture
    image += _smooth_field(rng, h, w, 4, 8.0)  # faint colour: the background is nearly grey
    for cls in np.unique(appearance).tolist():
        if cls == 0:
            continue
        colour, texture, period = table[cls]
        colour = colour * (1 + rng.uniform(-config.colour_jitter, config.colour_jitter, size=3))
        texture = texture if config.textured else "flat"
        pattern = _texture(texture, period, h, w, (int(rng.integers(period)), int(rng.integers(period))))
        mask = appearance == cls
        image[mask] = (colour[None, :] * pattern[mask][:, None])
    image += rng.normal(0.0, config.noise_std, size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def render_sample(config: EmbeddedConfig, index: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Image ``index`` of the dataset: (``H x W x 3`` uint8 RGB before JPEG, ``H x W`` uint8 label
    with 255 boundary bands, scene). A pure function of (config, index)."""
    rng = np.random.default_rng([config.seed, index])
    h, w = config.height, config.width
    scene = int(rng.integers(0, 2))
    count = int(rng.integers(*config.objects_per_image, endpoint=True))
    classes_here = np.asarray(config.object_classes)[rng.integers(0, len(config.object_classes), size=count)]
    pair_of = {c: pair for pair in CONTEXT_PAIRS for c in pair}
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    cue_size = config.cue_height - 2
    cue_x = int(rng.integers(0, w - cue_size + 1))
    draw.rectangle([cue_x, 1, cue_x + cue_size - 1, cue_size], fill=SCENE_CUES[scene])
    top = config.cue_height + config.context_distance
    for cls in classes_here.tolist():
        cls = pair_of[cls][scene] if cls in pair_of else cls
        size = int(rng.integers(*config.object_size, endpoint=True))
        size = min(size, h - top, w)
        x0 = int(rng.integers(0, w - size + 1))
        y0 = int(rng.integers(top, h - size + 1))
        _draw_object(draw, cls, rng, (x0, y0, x0 + size - 1, y0 + size - 1))
    label = np.asarray(canvas).copy()
    image = paint(config, rng, label)
    if config.boundary_width > 0:
        k = 2 * (config.boundary_width // 2) + 1
        label_image = Image.fromarray(label)
        high = np.asarray(label_image.filter(ImageFilter.MaxFilter(k)))
        low = np.asarray(label_image.filter(ImageFilter.MinFilter(k)))
        label = np.where(high != low, IGNORE_INDEX, label).astype(np.uint8)
    return image, label, scene
