"""Data-loading benchmark: decoded-and-augmented images per second per worker at VOC size.

    python -m benchmarks.bench.loading [--data PATH] [--split train] [--images 64] [--workers 0,2]

With ``--data`` it reads that VOC tree (e.g. ``../shared/data/voc-real-mini``, genuine VOC
images of about 500 x 375); without, a VOC-size (500 x 375) embedded dataset. For each recipe's
augmentation it times decode + checks + transform in the main process (one worker's rate) and
through a ``DataLoader`` with each worker count.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.utils.data import DataLoader

from benchmarks.data.datasets import SegmentationDataset
from benchmarks.data.embedded import embedded_root
from benchmarks.data.embedded_scenes import EmbeddedConfig
from benchmarks.data.transforms import train_transform
from benchmarks.data.voc import VOCSplit

AUGMENTATIONS = {
    "decode only": None,
    "deeplab (crop 321, flip)": train_transform(321, flip=True, image_fill=(123, 117, 104)),
    "frontend (crop 500, flip)": train_transform(500, flip=True, image_fill=(123, 117, 104)),
    "scale 0.5-1.5, crop 321, flip": train_transform(321, scale=(0.5, 1.5), flip=True),
}


def _rate(dataset: SegmentationDataset, images: int, workers: int) -> float:
    if workers == 0:
        start = time.perf_counter()
        for index in range(images):
            dataset[index % len(dataset)]
        return images / (time.perf_counter() - start)
    loader = DataLoader(torch.utils.data.Subset(dataset, [i % len(dataset) for i in range(images)]),
                        batch_size=1, num_workers=workers, collate_fn=lambda batch: batch)
    iterator = iter(loader)
    next(iterator)  # worker start-up is not data loading
    start = time.perf_counter()
    count = sum(1 for _ in iterator)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data")
    parser.add_argument("--split", default="train")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--workers", default="0,2")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = args.data or embedded_root(EmbeddedConfig(height=375, width=500, train_images=64, val_images=1))
    split = VOCSplit(root, args.split)
    rows = []
    for name, transform in AUGMENTATIONS.items():
        dataset = SegmentationDataset(split, transform)
        for workers in (int(w) for w in args.workers.split(",")):
            rate = _rate(dataset, args.images, workers)
            rows.append({"augmentation": name, "workers": workers, "images_per_s": round(rate, 1),
                         "per_worker": round(rate / max(1, workers), 1)})
    info = {"data": str(root), "split": args.split, "images": len(split), "cpu_threads": torch.get_num_threads()}
    if args.json:
        print(json.dumps({**info, "rows": rows}, indent=2))
        return
    print(json.dumps(info))
    for row in rows:
        print(f"{row['augmentation']:<32} workers {row['workers']}  {row['images_per_s']:7.1f} images/s  "
              f"({row['per_worker']:.1f} per worker)")


if __name__ == "__main__":
    main()
