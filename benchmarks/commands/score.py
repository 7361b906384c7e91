"""``python -m benchmarks score``: given weights scored with the method's published test procedure."""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.commands.arguments import (
    add_import_option,
    device,
    folder_name,
    positive_int,
)
from benchmarks.commands.common import (
    data_source,
    import_modules,
    writable_folder,
)

NAME = "score"
HELP = (
    "evaluate given weights (e.g. a converted released model) with the method's "
    "published test procedure; writes a record under the `released` profile"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("method", help="the registered method the weights belong to")
    parser.add_argument("--weights", required=True, help="a state dict of the method (convert-caffe writes one)")
    parser.add_argument("--data", type=folder_name, help="folder holding VOCdevkit (default: the embedded dataset)")
    parser.add_argument("--split", default="val", help="e.g. val, seg11valid (FCN's released models), test (no labels)")
    parser.add_argument(
        "--save-predictions",
        metavar="OUT",
        help="also write each image's labels as a palette PNG under "
        "OUT/results/VOC2012/Segmentation/comp6_test_cls/ (the VOC server's layout)",
    )
    parser.add_argument(
        "--crf", action="store_true", help="add the dense CRF (the paper recipe's parameters): NAME+crf"
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="builder option the weights were made with (width=0.0625, at_once=true)",
    )
    parser.add_argument(
        "--convention",
        choices=["paper", "torchvision"],
        default="paper",
        help="input convention of the weights: paper (Caffe-trained releases) or torchvision",
    )
    parser.add_argument(
        "--condition",
        type=_condition,
        action="append",
        default=[],
        metavar="NAME=true|false",
        help="how the weights were trained, as a reference needs it (e.g. coco_pretraining=true)",
    )
    parser.add_argument("--results", default="results")
    parser.add_argument("--device", type=device, help="cuda, cuda:1, cpu (default: cuda when available)")
    parser.add_argument("--eval-batch", type=positive_int, default=1, help="images of one size scored together")
    parser.add_argument("--crf-backend", choices=["pydensecrf", "torch"], default="pydensecrf")
    add_import_option(parser)


def main(args: argparse.Namespace) -> int:
    from benchmarks.convert_caffe import parse_options
    from benchmarks.distributed import Distributed
    from benchmarks.score import score_weights

    import_modules(args.imports)
    writable_folder(Path(args.results), "--results")
    if args.save_predictions:
        writable_folder(Path(args.save_predictions), "--save-predictions")
    dist_info = Distributed.from_environment(args.device)
    score_weights(
        args.method,
        Path(args.weights),
        data_source(args.data),
        split=args.split,
        crf=args.crf,
        results=Path(args.results),
        dist_info=dist_info,
        options=parse_options(args.option),
        convention=args.convention,
        conditions=dict(args.condition),
        crf_backend=args.crf_backend,
        eval_batch=args.eval_batch,
        save_predictions=Path(args.save_predictions) if args.save_predictions else None,
        progress=print if dist_info.is_main else (lambda _: None),
    )
    return 0


def _condition(text: str) -> tuple[str, bool]:
    key, _, value = text.partition("=")
    if not key or value.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected NAME=true or NAME=false (e.g. coco_pretraining=true), got {text!r}")
    return key, value.lower() == "true"
