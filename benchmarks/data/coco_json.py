"""Reading and checking a COCO instances file (``instances_train2014.json``) as data, before
``prepare-data --coco`` draws anything from it (issue 26).

The format is the one of cocodataset.org's "Data format" page and ``pycocotools``: ``images``
(``id``, ``file_name``, ``height``, ``width``), ``annotations`` (``id``, ``image_id``,
``category_id``, ``segmentation``, ``iscrowd``) and ``categories`` (``id``, ``name``). A
segmentation is a list of polygons ``[x1, y1, x2, y2, ...]`` in pixels, or a run-length encoding
``{"size": [h, w], "counts": ...}`` of the column-major mask, uncompressed (a list of runs) or
compressed (``maskApi.c: rleToString``'s string).

Every fault is a :class:`DataError` of one line naming the file, the image or annotation id and
what is wrong. What is not a fault, and what is done instead:

* a polygon with an odd count or fewer than 6 numbers (fewer than three points) is dropped, and an
  instance left without a polygon with it, as detectron2's ``load_coco_json`` does ("filter out
  invalid polygons (< 3 points)"); ``pycocotools`` would read a 4-number polygon as a box. The
  number dropped is reported;
* polygon vertices outside the image are clipped by the rasteriser, as ``pycocotools``'
  ``rleFrPoly`` clips them (COCO's outlines touch or cross the border); a vertex more than one
  image size outside it is refused (an annotation error, and ``rleFrPoly`` walks every pixel of
  the edges, so such a polygon costs memory and time without bound).

A run-length encoding must have its image's size and runs that cover the image exactly (``rleDecode``
writes past its buffer when they cover more, and leaves memory unset when they cover less).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.data.voc import VOC_CLASSES, DataError, check_image_id

__all__ = ["COCO_TO_VOC", "COCOImage", "COCOInstance", "COCOInstances", "read_coco_instances"]

COCO_TO_VOC = {"airplane": "aeroplane", "motorcycle": "motorbike", "dining table": "diningtable",
               "potted plant": "pottedplant", "couch": "sofa", "tv": "tvmonitor"}
"""COCO category names that differ from VOC's; the other VOC classes have the same name in COCO."""
FIX = "correct that entry or extract the annotations archive again"


@dataclass(frozen=True)
class COCOImage:
    id: int
    image_id: str  # the file stem: the id in the coco split
    file_name: str
    height: int
    width: int


@dataclass(frozen=True)
class COCOInstance:
    id: int
    voc_class: int
    crowd: bool
    segmentation: list[list[float]] | dict[str, object]  # valid polygons only, or an RLE


@dataclass(frozen=True)
class COCOInstances:
    images: list[COCOImage]  # by id
    instances: dict[int, list[COCOInstance]]  # image id -> its instances of VOC classes, in file order
    dropped_polygons: int  # odd count or fewer than three points (detectron2's rule)
    dropped_instances: int  # left without a polygon (or listing none)


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Checker:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, what: str) -> DataError:
        return DataError(f"{self.path}: {where}: {what}; {FIX}")

    def records(self, content: dict[str, object], key: str) -> list[dict[str, object]]:
        found = content.get(key)
        if not isinstance(found, list):
            raise DataError(f"{self.path} holds no {key!r} list (a COCO instances file has 'images', 'annotations' "
                            "and 'categories'); pass the folder of instances_train2014.json (or 2017)")
        for index, record in enumerate(found):
            if not isinstance(record, dict) or not _integer(record.get("id")):
                raise self.fail(f"{key}[{index}]", "not an object with an integer 'id'")
        return found

    def image(self, record: dict[str, object]) -> COCOImage:
        where = f"image {record['id']}"
        name = record.get("file_name")
        if not isinstance(name, str) or not name.endswith(".jpg") or "/" in name or "\\" in name:
            raise self.fail(where, f"file_name {name!r} is not the name of a .jpg file")
        image_id = check_image_id(name[:-len(".jpg")], f"{self.path} {where} file_name")
        for key in ("height", "width"):
            if not _integer(record.get(key)) or record[key] <= 0:
                raise self.fail(where, f"{key} {record.get(key)!r} is not a positive integer")
        return COCOImage(record["id"], image_id, name, record["height"], record["width"])

    def polygons(self, segmentation: list[object], image: COCOImage, where: str) -> tuple[list[list[float]], int]:
        """The valid polygons, and how many were dropped (odd count or fewer than 6 numbers)."""
        kept = []
        for polygon in segmentation:
            if not isinstance(polygon, list) or not all(_number(v) for v in polygon):
                raise self.fail(where, "a polygon is not a list of numbers")
            if len(polygon) % 2 or len(polygon) < 6:
                continue
            points = np.asarray(polygon, np.float64).reshape(-1, 2)
            if not np.isfinite(points).all():
                raise self.fail(where, "a polygon holds NaN or infinite coordinates")
            size = np.array([image.width, image.height])
            outside = (points < -size) | (points > 2 * size)
            if outside.any():
                x, y = points[outside.any(axis=1)][0]
                raise self.fail(where, f"polygon vertex ({x:g}, {y:g}) lies more than the image's size outside its "
                                f"{image.width}x{image.height} pixels")
            kept.append(polygon)
        return kept, len(segmentation) - len(kept)

    def rle(self, segmentation: dict[str, object], image: COCOImage, where: str) -> None:
        if segmentation.get("size") != [image.height, image.width]:
            raise self.fail(where, f"RLE size {segmentation.get('size')!r} is not its image's [height, width] "
                            f"[{image.height}, {image.width}]")
        counts = segmentation.get("counts")
        if isinstance(counts, str):
            counts = _string_counts(counts)
        if not isinstance(counts, list) or not all(_integer(c) and 0 <= c < 2**32 for c in counts):
            raise self.fail(where, "RLE counts are neither a list of run lengths nor a compressed RLE string")
        if sum(counts) != image.height * image.width:
            raise self.fail(where, f"RLE runs cover {sum(counts)} pixels, not the image's {image.height * image.width}")


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _string_counts(text: str) -> list[int] | None:
    """The runs of a compressed RLE string (``maskApi.c: rleFrString``: 5 bits a character from
    ``'0'``, bit 6 continues, sign bit 5 of the last, runs after the second stored as differences),
    or None when it is not one."""
    counts: list[int] = []
    position = 0
    while position < len(text):
        value = shift = 0
        more = True
        while more:
            code = ord(text[position]) - 48 if position < len(text) else -1
            if not 0 <= code < 64:
                return None
            value |= (code & 0x1F) << shift
            more = bool(code & 0x20)
            position += 1
            shift += 5
            if not more and code & 0x10:
                value |= -1 << shift
        counts.append(value + counts[-2] if len(counts) > 2 else value)
    return counts


def _duplicates(pairs: Iterable[tuple[object, int]]) -> tuple[int, int, object] | None:
    """The first two ids sharing a key: ``(first id, second id, key)``."""
    seen: dict[object, int] = {}
    for key, ident in pairs:
        if key in seen:
            return seen[key], ident, key
        seen[key] = ident
    return None


def read_coco_instances(path: Path) -> COCOInstances:
    """The images of the COCO instances file ``path`` and their instances of VOC classes
    (categories mapped by :data:`COCO_TO_VOC`, the rest by name), every field used checked."""
    check = _Checker(path)
    try:
        with path.open("rb") as file:
            content = json.load(file)
    except (ValueError, RecursionError) as error:
        raise DataError(f"{path} is not JSON ({type(error).__name__}); extract the annotations archive "
                        "again") from None
    if not isinstance(content, dict):
        raise DataError(f"{path} holds a JSON {type(content).__name__}, not an object with 'images', 'annotations' "
                        "and 'categories'; pass the folder of instances_train2014.json (or 2017)")
    records = {key: check.records(content, key) for key in ("images", "annotations", "categories")}
    for key, one in (("images", "image"), ("annotations", "annotation"), ("categories", "category")):
        if (twice := _duplicates((r["id"], r["id"]) for r in records[key])) is not None:
            raise check.fail(f"{one} {twice[0]}", "its id is listed twice")
    images = sorted((check.image(r) for r in records["images"]), key=lambda image: image.id)
    if (twice := _duplicates((image.image_id, image.id) for image in images)) is not None:
        raise check.fail(f"images {twice[0]} and {twice[1]}", f"both are the file {twice[2]}.jpg (one label each "
                         "would be written over the other)")
    classes = {name: index for index, name in enumerate(VOC_CLASSES) if index}
    categories = {}
    for record in records["categories"]:
        if not isinstance(record.get("name"), str):
            raise check.fail(f"category {record['id']}", f"name {record.get('name')!r} is not a string")
        categories[record["id"]] = classes.get(COCO_TO_VOC.get(record["name"], record["name"]), 0)
    if not any(categories.values()):
        raise DataError(f"no category of {path} is one of the 20 VOC classes (by COCO name, e.g. 'person', "
                        "'airplane', 'tv'); is it an instances_*.json file (not captions or keypoints)?")
    by_id = {image.id: image for image in images}
    instances: dict[int, list[COCOInstance]] = {}
    dropped_polygons = dropped_instances = 0
    for record in records["annotations"]:
        where = f"annotation {record['id']}"
        image = by_id.get(record["image_id"]) if _integer(record.get("image_id")) else None
        if image is None:
            raise check.fail(where, f"image_id {record.get('image_id')!r} is not the id of a listed image")
        if not _integer(record.get("category_id")) or record["category_id"] not in categories:
            raise check.fail(where, f"category_id {record.get('category_id')!r} is not the id of a listed category")
        if not categories[record["category_id"]]:
            continue
        where = f"annotation {record['id']} (image {image.id})"
        crowd, segmentation = record.get("iscrowd", 0), record.get("segmentation")
        if crowd not in (0, 1):
            raise check.fail(where, f"iscrowd {crowd!r} is neither 0 nor 1")
        if isinstance(segmentation, dict):
            check.rle(segmentation, image, where)
        elif isinstance(segmentation, list):
            segmentation, dropped = check.polygons(segmentation, image, where)
            dropped_polygons += dropped
            if not segmentation:
                dropped_instances += 1
                continue
        else:
            raise check.fail(where, "segmentation is neither a list of polygons nor an RLE object")
        instances.setdefault(image.id, []).append(COCOInstance(record["id"], categories[record["category_id"]],
                                                               bool(crowd), segmentation))
    return COCOInstances(images, instances, dropped_polygons, dropped_instances)

