"""``python -m benchmarks list``: every runnable target, what it is and its geometry."""

from __future__ import annotations

import argparse
import json

from benchmarks.commands.arguments import (
    add_import_option,
)
from benchmarks.commands.common import (
    import_modules,
    print_table,
)

NAME = "list"
HELP = (
    "every runnable target (methods, staged recipes, +crf, +crfrnn, mmseg heads): "
    "what it is, parameters, score stride, receptive field"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true")
    add_import_option(parser)


def main(args: argparse.Namespace) -> int:
    from benchmarks.catalogue import list_rows

    import_modules(args.imports)
    rows = list_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print_table(rows, ["name", "kind", "in_run_all", "params", "score_stride", "receptive_field", "what"])
    return 0
