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
import functools
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from benchmarks.data.coco import COCO_IMAGES, COCO_LABELS, COCO_SPLIT, COCO_TO_VOC, prepare_coco
from benchmarks.data.sources import MANIFEST as SOURCES_MANIFEST
from benchmarks.data.voc import IGNORE_INDEX, NUM_CLASSES, VOC_CLASSES, DataError, voc_palette
from benchmarks.files import process_alive, space_checked, under

__all__ = ["CACHE_ENV_VAR", "CONTEXT_PAIRS", "MARKER", "EmbeddedConfig", "embedded_root", "generate",
           "is_embedded_tree", "render_sample", "verify_embedded"]

GENERATOR_VERSION = 5  # 5: the COCO-format extra set (coco_images)
CACHE_ENV_VAR = "SEGREPRO_CACHE"
MARKER = "SEGREPRO_EMBEDDED.json"
"""Written into the generated ``VOC2012`` folder, so a copy of it is still known to be generated."""
_STAGING = re.compile(r"\.embedded-staging-(\d{1,9})-[0-9a-f]+@(.+)")
"""A generation in progress: ``.embedded-staging-<pid>-<random>@<host>`` in the cache folder."""

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
        draw.polygon(_polygon(rng, box, int(rng.integers(3, 7))), fill=cls)


def _polygon(rng: np.random.Generator, box: tuple[int, int, int, int], corners: int) -> list[tuple[float, float]]:
    """A convex-ish polygon of ``corners`` jittered vertices on the ellipse inscribed in ``box``."""
    x0, y0, x1, y1 = box
    angles = rng.uniform(0, 2 * np.pi) + np.linspace(0, 2 * np.pi, corners, endpoint=False)
    angles += rng.uniform(-0.3, 0.3, corners) * np.pi / corners
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    return [(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in angles]


def _paint(config: EmbeddedConfig, rng: np.random.Generator, appearance: np.ndarray,
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
    image = _paint(config, rng, label)
    if config.boundary_width > 0:
        k = 2 * (config.boundary_width // 2) + 1
        label_image = Image.fromarray(label)
        high = np.asarray(label_image.filter(ImageFilter.MaxFilter(k)))
        low = np.asarray(label_image.filter(ImageFilter.MinFilter(k)))
        label = np.where(high != low, IGNORE_INDEX, label).astype(np.uint8)
    return image, label, scene


NON_VOC_CATEGORY = "giraffe"
"""A COCO category outside VOC's 20, drawn in the COCO-format extra set; the conversion makes it background."""
COCO_APPEARANCE = {**APPEARANCE, NUM_CLASSES: (np.array([150.0, 105.0, 50.0]), "checks", 3)}
"""The appearance table of the COCO-format images: VOC's, plus the non-VOC category (drawn as class
``NUM_CLASSES``)."""
COCO_NAMES = {**{cls: {voc: coco for coco, voc in COCO_TO_VOC.items()}.get(name, name)
                 for cls, name in enumerate(VOC_CLASSES) if cls}, NUM_CLASSES: NON_VOC_CATEGORY}
"""Class -> COCO category name (also the category id of the extra set)."""

Instance = tuple[int, "list[tuple[float, float]] | np.ndarray", bool]
"""(class, polygon vertices or a boolean mask, crowd) of one annotated object."""


def render_coco_sample(config: EmbeddedConfig, index: int) -> tuple[np.ndarray, list[Instance]]:
    """Image ``index`` of the COCO-format extra set and its instances, in drawing order: the same
    scenes and appearances as the VOC-format images (the cue object decides the context pairs) but
    COCO's statistics: more and smaller objects, all polygons, overlapping (drawn larger first, the
    conversion's rule), no boundary bands, a crowd region of a VOC class in a quarter of the images,
    a non-VOC object in half, and one image in ten without any VOC object. A pure function of
    (config, index)."""
    rng = np.random.default_rng([config.seed, 1, index])
    h, w = config.height, config.width
    scene, top = int(rng.integers(0, 2)), config.cue_height + config.context_distance
    pair_of = {c: pair for pair in CONTEXT_PAIRS for c in pair}
    instances: list[Instance] = []
    if rng.random() < 0.5:
        x0, y0 = int(rng.integers(0, w - 24)), int(rng.integers(0, h - 24))
        instances.append((NUM_CLASSES, _polygon(rng, (x0, y0, x0 + 23, y0 + 23), 5), False))
    if rng.random() >= 0.1:
        cue_x, cue_size = int(rng.integers(0, w - config.cue_height + 3)), config.cue_height - 2
        instances.append((SCENE_CUES[scene], [(cue_x, 1), (cue_x + cue_size, 1), (cue_x + cue_size, cue_size + 1),
                                              (cue_x, cue_size + 1)], False))
        classes = np.asarray(config.object_classes)[rng.integers(0, len(config.object_classes), size=8)].tolist()
        classes = [pair_of[c][scene] if c in pair_of else c for c in classes]
        room = min(h - top, w)
        if rng.random() < 0.25:
            crowd = np.zeros((h, w), bool)
            y0, x0 = int(rng.integers(top, h - room // 2 + 1)), int(rng.integers(0, w - room + 1))
            crowd[y0 : y0 + room // 2, x0 : x0 + room] = True
            instances.append((classes.pop(), crowd, True))
        sizes = sorted(rng.integers(12, 31, size=int(rng.integers(3, 7))).tolist(), reverse=True)
        for cls, size in zip(classes, (min(size, room) for size in sizes), strict=False):
            x0, y0 = int(rng.integers(0, w - size + 1)), int(rng.integers(top, h - size + 1))
            instances.append((cls, _polygon(rng, (x0, y0, x0 + size - 1, y0 + size - 1), 8), False))
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    for cls, shape, _ in instances:
        if isinstance(shape, np.ndarray):
            canvas.paste(cls, mask=Image.fromarray(shape.astype(np.uint8) * 255))
        else:
            draw.polygon(shape, fill=cls)
    return _paint(config, rng, np.asarray(canvas), COCO_APPEARANCE), instances


def _write_coco_set(config: EmbeddedConfig, folder: Path) -> dict[Path, bytes]:
    """The files of the COCO-format extra set (2017 layout: ``annotations/instances_train2017.json``
    and ``train2017/<id>.jpg``), path -> bytes."""
    from pycocotools import mask as coco_mask

    h, w = config.height, config.width
    files, images, annotations = {}, [], []
    for index in range(config.coco_images):
        image, instances = render_coco_sample(config, index)
        name = f"{index + 1:012d}.jpg"
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=config.jpeg_quality)
        files[folder / "train2017" / name] = buffer.getvalue()
        images.append({"id": index + 1, "file_name": name, "height": h, "width": w})
        for cls, shape, crowd in instances:
            if crowd:
                rle = coco_mask.encode(np.asfortranarray(shape.astype(np.uint8)))
                segmentation = {"size": rle["size"], "counts": rle["counts"].decode()}
            else:
                segmentation = [[round(float(v), 2) for point in shape for v in point]]
                rle = coco_mask.merge(coco_mask.frPyObjects(segmentation, h, w))
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1, "category_id": cls,
                                "iscrowd": int(crowd), "segmentation": segmentation,
                                "area": float(coco_mask.area(rle)), "bbox": coco_mask.toBbox(rle).round(2).tolist()})
    content = {"images": images, "annotations": annotations,
               "categories": [{"id": cls, "name": name} for cls, name in COCO_NAMES.items()]}
    files[folder / "annotations" / "instances_train2017.json"] = json.dumps(content).encode()
    return files


def _encode(image: np.ndarray, label: np.ndarray, quality: int) -> tuple[bytes, bytes]:
    jpeg, png = io.BytesIO(), io.BytesIO()
    Image.fromarray(image).save(jpeg, format="JPEG", quality=quality)
    label_image = Image.fromarray(label, mode="P")
    label_image.putpalette(voc_palette().reshape(-1).tolist())
    label_image.save(png, format="PNG")
    return jpeg.getvalue(), png.getvalue()


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache" / "segrepro")


def generate(config: EmbeddedConfig, destination: Path) -> dict[str, object]:
    """Write the dataset as a VOC tree under ``destination`` (``VOCdevkit/VOC2012/...``) and
    return its manifest (config, split sizes, sha256 of every file)."""
    voc = destination / "VOCdevkit" / "VOC2012"
    folders = {name: voc / name for name in ("JPEGImages", "SegmentationClass", "SegmentationClassAug")}
    for folder in (*folders.values(), voc / "ImageSets" / "Segmentation"):
        folder.mkdir(parents=True, exist_ok=True)
    splits = {"train": range(config.train_images),
              "val": range(config.train_images, config.train_images + config.val_images)}
    splits["crfholdout"] = range(splits["val"].stop, splits["val"].stop + config.crf_holdout_images)
    digest: dict[str, str] = {}
    scenes: dict[str, int] = {}
    for split, indices in splits.items():
        for index in indices:
            image_id = f"embedded_{index:06d}"
            image, label, scenes[image_id] = render_sample(config, index)
            jpeg, png = _encode(image, label, config.jpeg_quality)
            files = {folders["JPEGImages"] / f"{image_id}.jpg": jpeg,
                     folders["SegmentationClass"] / f"{image_id}.png": png}
            if split != "val":
                files[folders["SegmentationClassAug"] / f"{image_id}.png"] = png
            for path, data in files.items():
                path.write_bytes(data)
                digest[str(path.relative_to(destination))] = hashlib.sha256(data).hexdigest()
    marker = {"name": "embedded", "fingerprint": config.fingerprint(), "comparable_to_paper": False,
              "note": "generated by segrepro (benchmarks/data/embedded.py), not PASCAL VOC"}
    (voc / MARKER).write_text(json.dumps(marker, indent=1, sort_keys=True))
    lists = {"train.txt": splits["train"], "val.txt": splits["val"], "trainaug.txt": splits["train"],
             "crfholdout.txt": splits["crfholdout"]}
    for name, indices in lists.items():
        path = voc / "ImageSets" / "Segmentation" / name
        data = "".join(f"embedded_{i:06d}\n" for i in indices).encode()
        path.write_bytes(data)
        digest[str(path.relative_to(destination))] = hashlib.sha256(data).hexdigest()
    for path, data in _write_coco_set(config, destination / "coco").items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        digest[str(path.relative_to(destination))] = hashlib.sha256(data).hexdigest()
    prepare_coco(voc, destination / "coco")
    for path in [*sorted((voc / COCO_LABELS).glob("*.png")), voc / "ImageSets" / "Segmentation" / f"{COCO_SPLIT}.txt"]:
        digest[str(path.relative_to(destination))] = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest = {"name": "embedded", "generator_version": GENERATOR_VERSION, "config": dataclasses.asdict(config),
                "fingerprint": config.fingerprint(), "scenes": scenes, "sha256": digest,
                "comparable_to_paper": False}
    (destination / "embedded.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def is_embedded_tree(voc: Path) -> bool:
    """Whether the ``VOC2012`` folder ``voc`` was generated here: it holds :data:`MARKER`, or (a
    generation from before the marker) ``embedded.json`` lies beside its ``VOCdevkit``."""
    return (voc / MARKER).is_file() or (voc.parent.parent / "embedded.json").is_file()


def _remove_stale_staging(cache: Path) -> None:
    """Remove staging folders of generations whose process died (a SIGKILL skips the cleanup);
    those of live processes, and of other hosts sharing the cache, are left alone."""
    host = socket.gethostname()
    for folder in cache.glob(".embedded-staging-*"):
        match = _STAGING.fullmatch(folder.name)
        if match and match[2] == host and not process_alive(int(match[1])):
            shutil.rmtree(folder, ignore_errors=True)  # another process may be removing it too


@functools.cache
def verify_embedded(root: Path) -> None:
    """Check every file of the generated tree at ``root`` against the sha256 its ``embedded.json``
    recorded, once per process: a label or image changed after generation would otherwise train
    and score under the untampered dataset's fingerprint and file hash (issue 26). A mismatch is a
    :class:`DataError` naming the first file; removing the folder regenerates it. Cost on the
    default set (5,956 files, 14.3 MB): 0.42 s, warm page cache, on the shared 2-core CPU."""
    try:
        recorded = json.loads((root / "embedded.json").read_text())["sha256"]
        if not isinstance(recorded, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise DataError(f"{root / 'embedded.json'} is damaged (no sha256 table); remove {root} and run again to "
                        "regenerate the embedded dataset") from None
    for name, digest in sorted(recorded.items()):
        path = under(root, name)
        actual = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"
        if actual != digest:
            what = "is missing" if actual == "missing" else "changed after generation (its sha256 differs)"
            raise DataError(f"embedded dataset file {path} {what}; remove {root} and run again to regenerate it")
    if unlisted := _unlisted_file(root, recorded):
        raise DataError(f"embedded dataset file {unlisted} is not in {root / 'embedded.json'}'s sha256 table (added, "
                        f"or the table edited); remove {root} and run again to regenerate it")


def _unlisted_file(root: Path, recorded: dict[str, str]) -> Path | None:
    """The first file under ``root`` that the manifest's table does not vouch for, or ``None``: a
    table emptied or missing an entry left a tampered file unchecked (re-probe of issue 26).
    ``JPEGImagesCOCO/<name>`` stands for the listed ``coco/train2017/<name>``: a symlink must
    resolve to it, a copy (a tree copied without symlinks) must hold its bytes. The manifest, the
    marker and ``prepare_coco``'s source record are bookkeeping, not data."""
    voc = Path("VOCdevkit/VOC2012")
    bookkeeping = {Path("embedded.json"), voc / MARKER, voc / COCO_LABELS / SOURCES_MANIFEST}
    listed = {Path(name): digest for name, digest in recorded.items()}
    for path in sorted(root.rglob("*")):
        name = path.relative_to(root)
        if (path.is_dir() and not path.is_symlink()) or name in listed or name in bookkeeping:
            continue
        source = Path("coco/train2017") / path.name
        if name.parent != voc / COCO_IMAGES or source not in listed:
            return path
        if path.is_symlink() and path.resolve() != (root / source).resolve():
            return path
        if not path.is_symlink() and hashlib.sha256(path.read_bytes()).hexdigest() != listed[source]:
            return path
    return None


def embedded_root(config: EmbeddedConfig | None = None, cache_dir: Path | None = None) -> Path:
    """The folder holding ``VOCdevkit`` for ``config``, generated on first use (into a staging
    folder renamed into place, so an interrupted generation leaves nothing half-written; the
    staging folders of killed generations are removed by the next call); an existing one is
    checked against its manifest first (:func:`verify_embedded`). Folders get the usual
    mode (0777 less the umask), so a shared cache stays readable."""
    config = config or EmbeddedConfig()
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    root = cache / f"embedded-{config.fingerprint()}"
    if cache.is_dir():
        _remove_stale_staging(cache)
    if (root / "embedded.json").is_file():
        verify_embedded(root)
        return root
    cache.mkdir(parents=True, exist_ok=True)
    staging = cache / f".embedded-staging-{os.getpid()}-{secrets.token_hex(4)}@{socket.gethostname()}"
    staging.mkdir()
    try:
        with space_checked(cache):
            generate(config, staging)
        try:
            os.replace(staging, root)
        except OSError:  # another process finished first
            if not (root / "embedded.json").is_file():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return root
