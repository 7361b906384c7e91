"""Predicted label maps saved for the PASCAL VOC evaluation server: one palette PNG per image
(class indices, the VOC colour map), ``<id>.png`` under ``results/VOC2012/Segmentation/
comp6_test_cls/`` of the folder given (the devkit's layout for the segmentation challenge,
competition 6: trained with data beyond VOC's, as every network here is: ImageNet, SBD, COCO).
The server takes that ``results/`` tree as a tar archive; ``evaluate --pred`` reads the same
PNGs back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from benchmarks.data.prepare_data import palette_png
from benchmarks.data.voc import NUM_CLASSES
from benchmarks.files import write_bytes_atomic

__all__ = ["VOC_SERVER_FOLDER", "PredictionWriter"]

VOC_SERVER_FOLDER = Path("results", "VOC2012", "Segmentation", "comp6_test_cls")


class PredictionWriter:
    """``writer(image_id, labels)`` writes ``labels`` (H x W class indices) to
    ``out/results/VOC2012/Segmentation/comp6_test_cls/<image_id>.png``, atomically."""

    def __init__(self, out: Path) -> None:
        self.folder = out / VOC_SERVER_FOLDER
        self.written = 0

    def __call__(self, image_id: str, labels: torch.Tensor) -> None:
        array = labels.to("cpu", torch.uint8).numpy()
        if array.ndim != 2 or int(array.max(initial=0)) >= NUM_CLASSES:
            raise ValueError(f"prediction of {image_id} is not an H x W map of class indices below {NUM_CLASSES}")
        write_bytes_atomic(self.folder / f"{image_id}.png", palette_png(np.ascontiguousarray(array)))
        self.written += 1
