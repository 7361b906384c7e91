"""``python -m benchmarks rf``: per-layer receptive fields of a stack of dilated convolutions."""

from __future__ import annotations

import argparse
import json

from benchmarks.commands.arguments import (
    positive_int,
)
from benchmarks.commands.common import (
    print_table,
)

NAME = "rf"
HELP = "per-layer receptive fields of a stack of dilated convolutions"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dilations", type=_dilations, required=True, help="e.g. 1,2,4")
    parser.add_argument("--kernel", type=_kernel, default=3, help="kernel size, 1..99")
    parser.add_argument("--json", action="store_true")


def main(args: argparse.Namespace) -> int:
    from benchmarks.catalogue import check_design_note
    from benchmarks.receptive_field import stack_table

    rows = stack_table(args.dilations, args.kernel)
    claims = check_design_note()
    if args.json:
        print(json.dumps({"layers": rows, "design_note_claims": claims}, indent=2))
        return 0
    print_table(rows, ["layer", "kernel", "dilation", "filter_span", "filter_params", "receptive_field"])
    print("\nDesign-note claims, recomputed from the modules (SPEC section 3):")
    for v in claims:
        status = "holds" if v["holds"] else "WRONG"
        print(f"  [{status}] {v['claim']}: claimed {v['claimed']}, computed {v['computed']}")
    return 0


def _dilations(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--dilations takes comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"--dilations needs at least one positive integer, got {text!r}")
    return values


def _kernel(text: str) -> int:
    kernel = positive_int(text)
    if kernel > 99:
        raise argparse.ArgumentTypeError(f"must be at most 99 (a kernel of {kernel} is not a layer of any method here)")
    return kernel
