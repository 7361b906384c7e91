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
instance of a VOC category. Crowd regions (``iscrowd``) of a VOC category are 255 (ignore);
instances are drawn over them, largest mask first, so a smaller instance stays on top of a larger
one it overlaps (ties: annotation id). Files are written to a temporary name and renamed, so an
interrupted run resumes where it stopped (existing label PNGs are kept).
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.data.prepare_data import palette_png
from benchmarks.data.voc import IGNORE_INDEX, IMAGE_FOLDERS, SPLITS, VOC_CLASSES, DataError, check_image_id, id_path
from benchmarks.files import write_bytes_atomic

__all__ = ["COCO_LABELS", "COCO_SPLIT", "COCO_TO_VOC", "PreparedCOCO", "coco_annotations", "coco_label",
           "prepare_coco"]

COCO_TO_VOC = {"airplane": "aeroplane", "motorcycle": "motorbike", "dining table": "diningtable",
               "potted plant": "pottedplant", "couch": "sofa", "tv": "tvmonitor"}
"""COCO category names that differ from VOC's; the other VOC classes have the same name in COCO."""
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


def _load(annotation_file: Path) -> object:
    from pycocotools.coco import COCO

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            return COCO(str(annotation_file))
    except (ValueError, KeyError, TypeError, AssertionError) as error:
        raise DataError(f"COCO annotation file {annotation_file} does not read as COCO instances "
                        f"({type(error).__name__}: {error}); re-extract the annotations archive") from None


def _voc_categories(coco: object, annotation_file: Path) -> dict[int, int]:
    """COCO category id -> VOC class index, for the categories that are VOC classes."""
    classes = {name: index for index, name in enumerate(VOC_CLASSES) if index}
    mapping = {c["id"]: classes[COCO_TO_VOC.get(c["name"], c["name"])] for c in coco.loadCats(coco.getCatIds())
               if COCO_TO_VOC.get(c["name"], c["name"]) in classes}
    if not mapping:
        raise DataError(f"no category of {annotation_file} is one of the 20 VOC classes (by COCO name, e.g. 'person', "
                        "'airplane', 'tv'); is it an instances_*.json file (not captions or keypoints)?")
    return mapping


def _voc_annotations(coco: object, image: dict[str, object], categories: dict[int, int]) -> list[dict[str, object]]:
    found = coco.loadAnns(coco.getAnnIds(imgIds=image["id"], iscrowd=None))
    return [a for a in found if a["category_id"] in categories]


def _has_instance(annotations: list[dict[str, object]]) -> bool:
    return any(not a.get("iscrowd", 0) for a in annotations)


def coco_label(coco: object, image: dict[str, object], annotations: list[dict[str, object]],
               categories: dict[int, int]) -> np.ndarray:
    """The VOC label map of one COCO image from its ``annotations`` of VOC categories (the rules of
    the module docstring: crowd regions 255, instances over them, largest first)."""
    label = np.zeros((image["height"], image["width"]), np.uint8)
    masks = [(a, coco.annToMask(a).astype(bool)) for a in annotations]
    for annotation, mask in masks:
        if annotation.get("iscrowd", 0):
            label[mask] = IGNORE_INDEX
    instances = [(a, m) for a, m in masks if not a.get("iscrowd", 0)]
    for annotation, mask in sorted(instances, key=lambda item: (-int(item[1].sum()), item[0]["id"])):
        label[mask] = categories[annotation["category_id"]]
    return label


def _symlink_atomic(target: Path, source: Path) -> None:
    """``target`` -> ``source`` as a relative symlink (survives moving the common parent)."""
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    os.symlink(os.path.relpath(source, target.parent), temporary)
    os.replace(temporary, target)


@dataclass(frozen=True)
class PreparedCOCO:
    annotation_file: Path
    kept: int  # images with a VOC instance: the coco split
    skipped: int  # images without one
    written: int
    already_there: int


def prepare_coco(voc: Path, coco_root: str | os.PathLike[str]) -> PreparedCOCO:
    """Write the ``coco`` split into the ``VOC2012`` folder ``voc`` from the COCO set at ``coco_root``."""
    annotation_file, image_folder = coco_annotations(Path(coco_root).expanduser())
    coco = _load(annotation_file)
    categories = _voc_categories(coco, annotation_file)
    images = sorted(coco.loadImgs(coco.getImgIds()), key=lambda image: image["id"])
    candidates = [(i, found) for i in images if _has_instance(found := _voc_annotations(coco, i, categories))]
    missing = [i["file_name"] for i, _ in candidates if not id_path(image_folder, Path(i["file_name"]).stem, ".jpg")
               .is_file()]
    if missing:
        raise DataError(f"{len(missing)} COCO images with VOC categories are missing from {image_folder}, e.g. "
                        f"{missing[:3]}; extract the COCO training images ({image_folder.name}.zip) there")
    labels, links = voc / COCO_LABELS, voc / COCO_IMAGES
    labels.mkdir(exist_ok=True)
    links.mkdir(exist_ok=True)
    ids, written, already = [], 0, 0
    for image, found in candidates:
        image_id = check_image_id(Path(image["file_name"]).stem, f"{annotation_file} file_name")
        ids.append(image_id)
        target = id_path(labels, image_id, ".png")
        if not id_path(links, image_id, ".jpg").is_file():
            _symlink_atomic(id_path(links, image_id, ".jpg"), id_path(image_folder, image_id, ".jpg"))
        if target.is_file():
            already += 1
            continue
        write_bytes_atomic(target, palette_png(coco_label(coco, image, found, categories)))
        written += 1
    split_list = voc / "ImageSets" / "Segmentation" / f"{COCO_SPLIT}.txt"
    write_bytes_atomic(split_list, "".join(f"{i}\n" for i in ids).encode())
    return PreparedCOCO(annotation_file, len(ids), len(images) - len(ids), written, already)
