"""Build the VOC tree of CI's paper-profile run (issue 21, item 5) from the genuine images of
``../shared/data/voc-real-mini``: VOC lists (train, val, seg11valid = val), an SBD-format folder
(``cls/*.mat``, train/val lists) and a COCO-format folder (RLE instances of the VOC labels), each
from a few genuine images, so that ``prepare-data --sbd --coco`` builds small ``trainaug``,
``sbdtrain`` and ``coco`` splits as it would from the real archives.

    python .ci/paper_tree.py MINI_VOC2012 OUT   # then: prepare-data --data OUT --sbd OUT/sbd --coco OUT/coco
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
from pycocotools import mask as coco_mask
from scipy.io import savemat

from benchmarks.data.coco import COCO_TO_VOC
from benchmarks.data.voc import VOC_CLASSES, read_label

VOC_TO_COCO = {voc: coco for coco, voc in COCO_TO_VOC.items()}


def build(mini: Path, out: Path, train: int = 4, val: int = 4, sbd_train: int = 4, coco: int = 3) -> None:
    lists = mini / "ImageSets" / "Segmentation"
    train_ids, val_ids = (lists / "train.txt").read_text().split(), (lists / "val.txt").read_text().split()
    voc = out / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / folder).mkdir(parents=True, exist_ok=True)
    used = train_ids[: train + sbd_train + 1 + coco]
    for image_id in (*used, *val_ids[:val]):
        shutil.copy(mini / "JPEGImages" / f"{image_id}.jpg", voc / "JPEGImages")
        shutil.copy(mini / "SegmentationClass" / f"{image_id}.png", voc / "SegmentationClass")
    voc_train, sbd_ids = train_ids[:train], train_ids[train // 2 : train + sbd_train]  # SBD overlaps VOC train
    (voc / "ImageSets/Segmentation/train.txt").write_text("".join(f"{i}\n" for i in voc_train))
    for name in ("val", "seg11valid"):
        (voc / "ImageSets/Segmentation" / f"{name}.txt").write_text("".join(f"{i}\n" for i in val_ids[:val]))
    sbd = out / "sbd"
    (sbd / "cls").mkdir(parents=True, exist_ok=True)
    sbd_val = [train_ids[train + sbd_train]]
    for image_id in (*sbd_ids, *sbd_val):
        label = read_label(mini / "SegmentationClass" / f"{image_id}.png").copy()
        label[label == 255] = 0  # SBD has no ignore label
        savemat(sbd / "cls" / f"{image_id}.mat",
                {"GTcls": {"Segmentation": label, "Boundaries": np.zeros(1), "CategoriesPresent": 1}})
    (sbd / "train.txt").write_text("".join(f"{i}\n" for i in sbd_ids))
    (sbd / "val.txt").write_text("".join(f"{i}\n" for i in sbd_val))
    root = out / "coco"
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "train2017").mkdir(exist_ok=True)
    images, annotations = [], []
    for number, image_id in enumerate(train_ids[train + sbd_train + 1 : train + sbd_train + 1 + coco], 1):
        label = read_label(mini / "SegmentationClass" / f"{image_id}.png")
        name = f"{number:012d}.jpg"
        shutil.copy(mini / "JPEGImages" / f"{image_id}.jpg", root / "train2017" / name)
        images.append({"id": number, "file_name": name, "height": label.shape[0], "width": label.shape[1]})
        for cls in sorted(set(np.unique(label).tolist()) - {0, 255}):
            rle = coco_mask.encode(np.asfortranarray((label == cls).astype(np.uint8)))
            rle["counts"] = rle["counts"].decode()
            annotations.append({"id": len(annotations) + 1, "image_id": number, "category_id": cls,
                                "segmentation": rle, "iscrowd": 0, "area": float((label == cls).sum()),
                                "bbox": [0, 0, 1, 1]})
    categories = [{"id": i, "name": VOC_TO_COCO.get(n, n)} for i, n in enumerate(VOC_CLASSES) if i]
    (root / "annotations" / "instances_train2017.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories}))


if __name__ == "__main__":
    build(Path(sys.argv[1]), Path(sys.argv[2]))
