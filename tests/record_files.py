"""Hand-made records that pass the record schema (``benchmarks/record_schema.py``): a JSON record
and its ``.npz`` counts, whose mIoU is the one stored (close to the one asked for)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmarks.stats import miou_from_counts

PIXELS = 10_000


def counts_for(miou: float, images: int = 2, classes: int = 21) -> np.ndarray:
    """``images x 3 x classes`` counts of one labelled class whose IoU is ``miou`` (to 1e-4):
    intersection a of ground truth = prediction = PIXELS gives a / (2 PIXELS - a)."""
    counts = np.zeros((images, 3, classes), np.int64)
    hit = round(2 * PIXELS * miou / (1 + miou))
    counts[:, 0, 0], counts[:, 1, 0], counts[:, 2, 0] = hit, PIXELS, PIXELS
    return counts


def make_record(method: str, miou: float, *, seed: int = 0, profile: str = "paper", images: int = 2,
                **fields: object) -> tuple[dict[str, object], np.ndarray]:
    """A valid record of ``method`` at ``miou`` percent on VOC 2012 val (comparable), with
    ``fields`` replacing its top-level keys; and its counts."""
    counts = counts_for(miou / 100, images)
    value = float(miou_from_counts(counts.sum(0)))
    record = {"schema": 2, "method": method, "base_method": method.split("+")[0], "profile": profile, "seed": seed,
              "dataset": {"name": "voc2012", "split": "val", "images": images, "list_sha256": "a" * 64},
              "metrics": {"miou": value, "pixel_acc": value, "mean_acc": value, "fwiou": value,
                          "per_class_iou": [value] + [None] * (counts.shape[2] - 1)},
              "comparable_to_paper": True, "comparable_reason": "ok",
              "trained_weights_sha256": f"{seed:02d}{sum(map(ord, method)):04d}".ljust(64, "0"),
              "run_key": f"{method.split('+')[0]}-{seed}", "hardware": {"name": "test", "device": "cpu"},
              "overrides": [], "protocol_version": 1}
    return {**record, **fields}, counts


def write_record_files(path: Path, record: dict[str, object], counts: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    np.savez_compressed(path.with_suffix(".npz"), counts=counts,
                        image_ids=np.array([f"img{i}" for i in range(counts.shape[0])]))
    return path


def write_valid_record(results: Path, method: str, miou: float, **fields: object) -> Path:
    """``results/records/<profile>-<dataset>/<method>/seed<k>.json`` and its counts."""
    record, counts = make_record(method, miou, **fields)
    folder = f"{record['profile']}-{record['dataset']['name']}"
    return write_record_files(results / "records" / folder / method / f"seed{record['seed']}.json", record, counts)
