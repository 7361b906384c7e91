"""``python -m benchmarks convert-caffe``: a .caffemodel (or vgg16_from_caffe.pth) as a method's state dict."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import methods
from benchmarks.commands.arguments import (
    add_import_option,
)
from benchmarks.commands.common import (
    import_modules,
)
from benchmarks.errors import UsageError

NAME = "convert-caffe"
HELP = "a .caffemodel (or vgg16_from_caffe.pth) as a method's state dict"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="a .caffemodel, or pytorch-fcn's vgg16_from_caffe.pth (torchvision layout)")
    parser.add_argument("--method", required=True, help="the registered method whose layers the blobs fill")
    parser.add_argument("--out", required=True, help="the state dict to write (.pt)")
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="builder argument, e.g. at_once=true for fcn8s-atonce-pascal, width=0.0625",
    )
    parser.add_argument("--json", action="store_true")
    add_import_option(parser)


def main(args: argparse.Namespace) -> int:
    from benchmarks.convert_caffe import convert_caffe, parse_options

    import_modules(args.imports)
    if args.method not in methods.list_methods():
        raise UsageError(f"unknown method {args.method!r}; registered methods: {', '.join(methods.list_methods())}")
    report = convert_caffe(args.file, args.method, Path(args.out), parse_options(args.option))
    if args.json:
        print(json.dumps({"out": args.out, **dataclasses.asdict(report)}, indent=2))
        return 0
    print(f"{report.summary()} -> {args.out}")
    for name, reason in report.dropped.items():
        print(f"  dropped {name}: {reason}")
    if report.initialised:
        print(f"  not in the source, kept at {args.method}'s initialisation: {', '.join(report.initialised)}")
    return 0
