"""``python -m benchmarks crf-search``: DeepLab's CRF parameter search for METHOD."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from benchmarks.commands.arguments import (
    add_run_options,
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

NAME = "crf-search"
HELP = "DeepLab's CRF parameter search for METHOD; +crf then uses the result"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("method")
    parser.add_argument("--split", default="crfholdout", help="images to search on (default: the held-out list)")
    parser.add_argument("--images", type=positive_int, default=100)
    for name in ("w1", "theta_alpha", "theta_beta"):
        parser.add_argument(
            f"--{name.replace('_', '-')}", dest=name, type=_crf_values(name), help="coarse grid (default: recipe)"
        )
    add_run_options(parser, crf_backend="torch")


def main(args: argparse.Namespace) -> int:
    from benchmarks.crf_search import SEARCHED, search_method
    from benchmarks.distributed import Distributed

    import_modules(args.imports)
    check_outputs(args)
    dist_info = Distributed.from_environment(args.device)
    if dist_info.world_size > 1:
        raise UsageError("crf-search runs in one process (it is a loop over a small grid); launch it without torchrun")
    source = data_source(args.data)
    grid = {name: values for name in SEARCHED if (values := getattr(args, name)) is not None}
    for found in search_method(
        args.method,
        source,
        run_plan(args, profile_of(args)),
        dist_info,
        split_name=args.split,
        images=args.images,
        grid=grid,
        backend=args.crf_backend,
    ):
        best = found.result.best
        print(
            f"{args.method} seed {found.seed}: w1={best.w1:g} theta_alpha={best.theta_alpha:g} "
            f"theta_beta={best.theta_beta:g} (mIoU {100 * found.result.best_miou:.2f} on {found.images} "
            f"{args.split} images, {found.in_training} of them in the training split) -> {found.record}; "
            f"`run {args.method}+crf` uses them"
        )
    return 0


def _crf_values(name: str) -> Callable[[str], tuple[float, ...]]:
    """The parser of ``--NAME v1,v2,...``: each value a valid CRF parameter ``name`` (finite, in range)."""
    from benchmarks.crf.dense_crf import CRFParams

    def parse(text: str) -> tuple[float, ...]:
        try:
            values = tuple(float(v) for v in text.split(","))
            for value in values:
                CRFParams(**{name: value})
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        return values

    return parse
