"""``python -m benchmarks compare``: a new registered head against baselines: paired bootstrap CI of the mIoU gap."""

from __future__ import annotations

import argparse
import json

import methods
from benchmarks.commands.arguments import (
    add_run_options,
    names,
    positive_int,
)
from benchmarks.commands.common import (
    check_outputs,
    data_source,
    import_modules,
    profile_of,
    run_plan,
)
from benchmarks.errors import UsageError

NAME = "compare"
HELP = "a new registered head against baselines: paired bootstrap CI of the mIoU gap"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("new")
    parser.add_argument("--baseline", type=names, required=True, help="comma-separated baseline methods")
    parser.add_argument(
        "--recipe-from",
        help="whose recipe the new head uses (default: the baseline sharing its trunk, staged the same way; printed)",
    )
    parser.add_argument("--resamples", type=positive_int, default=2000)
    parser.add_argument("--json", action="store_true")
    add_run_options(parser)


def main(args: argparse.Namespace) -> int:
    from benchmarks.compare import compare_to_baselines
    from benchmarks.distributed import Distributed

    import_modules(args.imports)
    if args.new not in methods.list_methods():
        raise UsageError(
            f"unknown method {args.new!r}; registered methods: {', '.join(methods.list_methods())} "
            "(register a new head in a module and pass --import MODULE)"
        )
    check_outputs(args)
    source = data_source(args.data)
    rows = compare_to_baselines(
        args.new,
        args.baseline,
        source,
        run_plan(args, profile_of(args)),
        Distributed.from_environment(args.device),
        recipe_from=args.recipe_from,
        resamples=args.resamples,
    )
    for row in rows:
        print(
            f"{row['new']} - {row['baseline']} (seed {row['seed']}, {row['images']} images): mIoU difference "
            f"{100 * row['difference']:+.2f} points, 95% paired bootstrap CI "
            f"[{100 * row['low']:+.2f}, {100 * row['high']:+.2f}]"
        )
    if not source.comparable_to_paper:
        print("(embedded dataset: these differences are not comparable to the papers)")
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0
