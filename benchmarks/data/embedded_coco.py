"""The embedded dataset's COCO-format extra set (Yu & Koltun's Table 3 trains on VOC + COCO): the
same scenes and appearances as the VOC-format images (:mod:`benchmarks.data.embedded_scenes`) with
COCO's statistics, written in COCO's 2017 layout and converted by ``prepare-data --coco``'s code."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from benchmarks.data.coco import COCO_TO_VOC
from benchmarks.data.embedded_scenes import APPEARANCE, CONTEXT_PAIRS, SCENE_CUES, EmbeddedConfig, paint, polygon
from benchmarks.data.voc import NUM_CLASSES, VOC_CLASSES

__all__ = ["COCO_APPEARANCE", "COCO_NAMES", "NON_VOC_CATEGORY", "Instance", "render_coco_sample", "write_coco_set"]

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
        instances.append((NUM_CLASSES, polygon(rng, (x0, y0, x0 + 23, y0 + 23), 5), False))
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
            instances.append((cls, polygon(rng, (x0, y0, x0 + size - 1, y0 + size - 1), 8), False))
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    for cls, shape, _ in instances:
        if isinstance(shape, np.ndarray):
            canvas.paste(cls, mask=Image.fromarray(shape.astype(np.uint8) * 255))
        else:
            draw.polygon(shape, fill=cls)
    return paint(config, rng, np.asarray(canvas), COCO_APPEARANCE), instances


def write_coco_set(config: EmbeddedConfig, folder: Path) -> dict[Path, bytes]:
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
