"""``python -m benchmarks prepare-data --coco ROOT``: Microsoft COCO instance annotations as
VOC-format label maps, the extra training data of Yu & Koltun's front end (ICLR 2016, Sec 5:
"we use the Microsoft COCO dataset ... with the 20 PASCAL VOC categories", the others
background).

Input: the COCO training set in the 2014 layout (``annotations/instances_train2014.json`` and
``train2014/``) or the 2017 layout (``annotations/instances_train2017.json``, ``train2017/``); the
2014 set (the paper's) is taken when both are there. Masks come from ``pycocotools``
(polygons, compressed and uncompressed RLE). Output, inside ``VOC2012``:

- ``SegmentationClassCOCO/<id>.png``: a palette PNG per kept image (``<id>`` is the COCO file
  stem); ``JPEGImagesCOCO/<id>.jpg``: a relative symlink to the COCO image;
- ``ImageSets/Segmentation/coco.txt``: the kept ids, the ``coco`` split.

Rules: the COCO categories are mapped by :data:`COCO_TO_VOC` (the rest by name; every other
category is background and not drawn). An image is kept when it has at least one non-crowd
instance of a VOC category: an image whose VOC objects are all crowd regions is skipped (its label
would hold no object to learn, only ignore) and counted. Crowd regions (``iscrowd``) of a VOC
category are 255 (ignore); instances are drawn over them, largest mask first, so a smaller
instance stays on top of a larger one it overlaps (ties: annotation id). Masks are
``pycocotools``' (``frPyObjects``, ``merge``, ``decode``: what ``COCO.annToMask`` does).

The annotation file is checked as data first (:mod:`benchmarks.data.coco_json`: what is refused,
and the invalid polygons dropped as detectron2 drops them), then every kept image must be in the
image folder at the size its entry declares; only then is anything written. Files are written to
a temporary name and renamed, so an interrupted run resumes where it stopped (a label PNG is kept
while its image's annotation entries hash as when it was written: :mod:`benchmarks.data.sources`).
An empty split is an error, never a silent exit 0.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.data.coco_json import COCO_TO_VOC, COCOImage, COCOInstance, read_coco_instances
from benchmarks.data.prepare_data import palette_png
from benchmarks.data.sources import SourceManifest, bytes_sha256
from benchmarks.data.voc import IGNORE_INDEX, IMAGE_FOLDERS, SPLITS, DataError, id_path
from benchmarks.files import write_bytes_atomic

__all__ = ["COCO_LABELS", "COCO_SPLIT", "COCO_TO_VOC", "PreparedCOCO", "coco_annotations", "coco_label",
           "prepare_coco"]

COCO_SPLIT = "coco"
COCO_LABELS, COCO_IMAGES = SPLITS[COCO_SPLIT][1], IMAGE_FOLDERS[COCO_SPLIT]
LAYOUTS = (("annotations/instances_train2014.json", "train2014"), ("annotations/instances_train2017.json", "train2017"))
"""(annotation file, image folder) under the COCO root, in order of preference (2014: the paper's)."""


def coco_annotations(root: Path) -> tuple[Path, Path]:
    """The (annotation file, image folder) of the COCO training set under ``root``."""
    for annotation_file, images in LAYOUTS:
        if (root / annotation_file).is_file():
            return root / annotation_file, root / images
    raise DataError(f"{root} holds no COCO annotation file (looked for {' and '.join(a for a, _ in LAYOUTS)}); "
                    "extract annotations_trainval2014.zip (or 2017) there and pass that folder with --coco")


def _mask(instance: COCOInstance, image: COCOImage) -> np.ndarray:
    from pycocotools import mask as coco_mask

    segmentation = instance.segmentation
    if isinstance(segmentation, list):
        rle = coco_mask.merge(coco_mask.frPyObjects(segmentation, image.height, image.width))
    elif isinstance(segmentation["counts"], list):
        rle = coco_mask.frPyObjects(segmentation, image.height, image.width)
    else:
        rle = segmentation
    return coco_mask.decode(rle).astype(bool)


def coco_label(image: COCOImage, instances: list[COCOInstance]) -> np.ndarray:
    """The VOC label map of one COCO image from its checked ``instances`` of VOC classes (the rules
    of the module docstring: crowd regions 255, instances over them, largest first)."""
    label = np.zeros((image.height, image.width), np.uint8)
    masks = [(instance, _mask(instance, image)) for instance in instances]
    for instance, mask in masks:
        if instance.crowd:
            label[mask] = IGNORE_INDEX
    drawn = sorted(((i, m) for i, m in masks if not i.crowd), key=lambda item: (-int(item[1].sum()), item[0].id))
    for instance, mask in drawn:
        label[mask] = instance.voc_class
    return label


def _check_image_files(images: list[COCOImage], folder: Path, annotation_file: Path) -> None:
    """Every image is a readable JPEG in ``folder`` of the size its entry in ``annotation_file``
    declares (the label is drawn at that size), before anything is written."""
    missing = [image for image in images if not id_path(folder, image.image_id, ".jpg").is_file()]
    if missing:
        named = ", ".join(f"image {i.id} ({i.file_name})" for i in missing[:3])
        raise DataError(f"{annotation_file}: {len(missing)} COCO images with VOC categories are missing from {folder}, "
                        f"e.g. {named}; extract the COCO training images ({folder.name}.zip) there")
    for image in images:
        path = id_path(folder, image.image_id, ".jpg")
        try:
            with Image.open(path) as opened:
                size = opened.size
        except OSError as error:
            raise DataError(f"{path} does not read as an image ({type(error).__name__}); extract {folder.name}.zip "
                            "again") from None
        if size != (image.width, image.height):
            raise DataError(f"{annotation_file}: image {image.id} ({image.file_name}) is {size[0]}x{size[1]} in "
                            f"{folder}, its entry says {image.width}x{image.height} (width x height); correct that "
                            "entry or extract the annotations archive again")


def _symlink_atomic(target: Path, source: Path) -> None:
    """``target`` -> ``source`` as a relative symlink (survives moving the common parent)."""
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    os.symlink(os.path.relpath(source, target.parent), temporary)
    os.replace(temporary, target)


@dataclass(frozen=True)
class PreparedCOCO:
    annotation_file: Path
    kept: int  # images with a non-crowd VOC instance: the coco split
    skipped: int  # images without one
    crowd_only: int  # of the skipped: images whose VOC objects are all crowd regions
    dropped_polygons: int  # polygons of an odd count or fewer than three points, dropped as detectron2 drops them
    dropped_instances: int  # instances left without a polygon, dropped with them
    written: int
    already_there: int

    def summary(self) -> str:
        dropped = (f"; {self.dropped_polygons} polygons of fewer than three points or an odd count dropped, as "
                   f"detectron2 drops them, and {self.dropped_instances} instances left without one"
                   if self.dropped_polygons or self.dropped_instances else "")
        return (f"{self.annotation_file}: coco split {self.kept} images with a VOC category ({self.skipped} without, "
                f"skipped, {self.crowd_only} of them with VOC crowd regions only{dropped}); SegmentationClassCOCO "
                f"written {self.written}, already there {self.already_there}")


def prepare_coco(voc: Path, coco_root: str | os.PathLike[str]) -> PreparedCOCO:
    """Write the ``coco`` split into the ``VOC2012`` folder ``voc`` from the COCO set at ``coco_root``."""
    annotation_file, image_folder = coco_annotations(Path(coco_root).expanduser())
    found = read_coco_instances(annotation_file)
    with_voc = [image for image in found.images if image.id in found.instances]
    kept = [image for image in with_voc if any(not i.crowd for i in found.instances[image.id])]
    if not kept:
        raise DataError(f"{annotation_file}: no image has a non-crowd instance of a VOC class (of "
                        f"{len(found.images)} images), so the coco split would be empty; pass the COCO training set's "
                        "instances file")
    _check_image_files(kept, image_folder, annotation_file)
    labels, links = voc / COCO_LABELS, voc / COCO_IMAGES
    labels.mkdir(exist_ok=True)
    links.mkdir(exist_ok=True)
    written = already = 0
    manifest = SourceManifest(labels)
    try:
        for image in kept:
            target = id_path(labels, image.image_id, ".png")
            if not id_path(links, image.image_id, ".jpg").is_file():
                _symlink_atomic(id_path(links, image.image_id, ".jpg"), id_path(image_folder, image.image_id, ".jpg"))
            source = json.dumps([dataclasses.asdict(image), [dataclasses.asdict(i) for i in found.instances[image.id]]],
                                sort_keys=True)
            digest = bytes_sha256(source.encode())
            if manifest.is_current(target, image.image_id, digest):
                already += 1
                continue
            write_bytes_atomic(target, palette_png(coco_label(image, found.instances[image.id])))
            manifest.record(image.image_id, digest)
            written += 1
    finally:
        manifest.save()
    split_list = voc / "ImageSets" / "Segmentation" / f"{COCO_SPLIT}.txt"
    write_bytes_atomic(split_list, "".join(f"{image.image_id}\n" for image in kept).encode())
    return PreparedCOCO(annotation_file, len(kept), len(found.images) - len(kept), len(with_voc) - len(kept),
                        found.dropped_polygons, found.dropped_instances, written, already)
