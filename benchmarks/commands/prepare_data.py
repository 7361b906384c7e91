"""``python -m benchmarks prepare-data``: SBD (the trainaug split) and COCO (the coco split) as VOC labels."""

from __future__ import annotations

import argparse

from benchmarks.commands.arguments import (
    folder_name,
)
from benchmarks.errors import UsageError

NAME = "prepare-data"
HELP = "SBD (trainaug split), COCO (coco split) -> VOC labels"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=folder_name, help="folder holding VOCdevkit (default $SEGREPRO_DATA)")
    parser.add_argument("--sbd", help="the extracted SBD archive (benchmark_RELEASE or its dataset folder)")
    parser.add_argument(
        "--coco",
        help="the COCO folder holding annotations/instances_train2014.json and train2014/ "
        "(or the 2017 names): the coco split of the *_coco recipes",
    )
    parser.add_argument(
        "--embedded", action="store_true", help="generate the embedded dataset into the cache and say where"
    )


def main(args: argparse.Namespace) -> int:
    from benchmarks.data.coco import prepare_coco
    from benchmarks.data.embedded import embedded_root
    from benchmarks.data.prepare_data import prepare_data
    from benchmarks.data.voc import resolve_voc_root

    if args.embedded:
        print(f"embedded dataset (generated, not comparable to the papers): {embedded_root()}")
        return 0
    if not (args.sbd or args.coco):
        raise UsageError(
            "pass --sbd PATH (the extracted SBD benchmark.tgz) and/or --coco PATH (the COCO training "
            "set), or --embedded"
        )
    if args.sbd:
        done = prepare_data(args.data, args.sbd)
        print(
            f"{done.voc_root}: trainaug {done.trainaug} ids; SegmentationClassAug written from VOC {done.from_voc}, "
            f"from SBD {done.from_sbd}, already there {done.kept}; SegmentationClassSBD (sbdtrain, FCN's labels) "
            f"written {done.fcn_written}, already there {done.fcn_kept}"
        )
    if args.coco:
        coco = prepare_coco(resolve_voc_root(args.data), args.coco)
        print(coco.summary())
    return 0
