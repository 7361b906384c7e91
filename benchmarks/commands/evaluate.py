"""``python -m benchmarks evaluate``: score a directory of label PNGs against ground truth."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.commands.arguments import (
    int_at_least,
)

NAME = "evaluate"
HELP = "score a directory of label PNGs against ground truth (mIoU etc.)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", required=True, help="predicted label PNGs (palette or 8-bit), matched by file stem")
    parser.add_argument("--gt", required=True, help="ground-truth label PNGs (255 = ignore)")
    parser.add_argument("--num-classes", type=_num_classes, default=21, help="2 to 255 (default 21)")
    parser.add_argument("--json", action="store_true")


def main(args: argparse.Namespace) -> int:
    from benchmarks.data.voc import VOC_CLASSES
    from benchmarks.evaluation import evaluate_directories

    result = evaluate_directories(Path(args.pred), Path(args.gt), args.num_classes)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"images {result['images']}  mIoU {100 * result['miou']:.2f}  pixel acc {100 * result['pixel_acc']:.2f}  "
        f"mean acc {100 * result['mean_acc']:.2f}  fwIoU {100 * result['fwiou']:.2f}"
    )
    names = VOC_CLASSES if args.num_classes == len(VOC_CLASSES) else [str(i) for i in range(args.num_classes)]
    for name, iou in zip(names, result["per_class_iou"], strict=True):
        print(f"  {name:<12} {'absent' if iou is None else f'{100 * iou:.2f}'}")
    return 0


def _num_classes(text: str) -> int:
    """Class indices 0..N-1 of 8-bit label maps, 255 being ignore: 2 <= N <= 255."""
    value = int_at_least(text, 2)
    if value > 255:
        raise argparse.ArgumentTypeError(f"must be at most 255 (8-bit labels, 255 = ignore), got {value}")
    return value
