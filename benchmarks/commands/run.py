"""``python -m benchmarks run``: train and score methods (one record per run), or print the plan."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from benchmarks.commands.arguments import add_run_options, positive_int
from benchmarks.commands.common import (
    check_outputs,
    data_source,
    import_modules,
    profile_of,
    run_plan,
    write_report_files,
)
from benchmarks.errors import UsageError

NAME = "run"
HELP = "train and evaluate methods; one record per run under results/"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "methods", nargs="*", help="method names, NAME+crf for the CRF variant, NAME+crfrnn for CRF-RNN"
    )
    parser.add_argument(
        "--all", action="store_true", help="every method with a recipe and every +crf and +crfrnn variant"
    )
    add_run_options(parser)
    parser.add_argument("--rerun", action="store_true", help="train and score again, replacing existing records")
    parser.add_argument("--reports", default="reports")
    parser.add_argument("--no-report", action="store_true")
    parser.add_argument(
        "--plan",
        action="store_true",
        help="print every stage in order with what it needs (weights, "
        "splits, FLOPs, disk) and what is missing; train nothing",
    )
    parser.add_argument("--json", action="store_true", help="with --plan: the plan as JSON")
    _add_launch_options(parser)


def _add_launch_options(parser: argparse.ArgumentParser) -> None:
    """``run``'s scale-out options (``benchmarks.launch``)."""
    parser.add_argument("--stage", help="run only this stage of the command (one node of its graph; what each job "
                                        "runs)")
    parser.add_argument("--launcher", choices=["local", "slurm"],
                        help="run the stages as a graph of jobs: on this machine (submitit LocalExecutor) or on SLURM")
    parser.add_argument("--jobs", type=positive_int, default=1,
                        help="with --launcher local: stages run at the same time")
    parser.add_argument("--threads-per-job", type=positive_int,
                        help="torch threads of each job (default with --launcher local: this command's threads "
                             "divided by --jobs; records depend on it)")
    parser.add_argument("--gpus", type=positive_int, help="CUDA devices to use, one stage each (--per-run K: K each)")
    parser.add_argument("--per-run", type=positive_int, default=1,
                        help="GPUs per stage (torchrun); with --gpus or slurm")
    parser.add_argument("--partition", help="--launcher slurm: the partition")
    parser.add_argument("--time", type=positive_int, default=24 * 60, help="--launcher slurm: minutes per job")
    parser.add_argument("--nodes", type=positive_int, default=1, help="--launcher slurm: nodes per run (torchrun)")


def main(args: argparse.Namespace) -> int:
    import torch

    from benchmarks import preemption
    from benchmarks.distributed import Distributed
    from benchmarks.resolve import main_command_targets
    from benchmarks.run import run

    import_modules(args.imports)
    if args.all and args.methods:
        raise UsageError(f"pass either --all or method names, not both (got --all and {' '.join(args.methods)})")
    if args.all:
        targets = main_command_targets()
    elif args.methods:
        targets = args.methods
    else:
        raise UsageError("name methods to run, or pass --all")
    if args.gpus and torch.cuda.device_count() < args.gpus:
        raise UsageError(f"--gpus {args.gpus}: this machine has {torch.cuda.device_count()} CUDA device(s); pass "
                         "--gpus N with N at most that, or run on the CPU with --launcher local --jobs K")
    if args.plan:
        return _print_plan(targets, args)
    check_outputs(args, reports=not args.no_report)
    if args.launcher or args.gpus:
        from benchmarks.launch import launch

        run_parser = argparse.ArgumentParser(prog=f"python -m benchmarks {NAME}")
        add_arguments(run_parser)
        launch(targets, args, run_plan(args, profile_of(args)), data_source(args.data), run_parser=run_parser)
        if args.launcher != "slurm" and not args.no_report:
            write_report_files(args)
        return 0
    dist_info = Distributed.from_environment(args.device)
    with preemption.handled():
        source = data_source(args.data)
        if not source.comparable_to_paper and dist_info.is_main:
            print("NOTE: no VOC data given (--data / $SEGREPRO_DATA): using the embedded generated dataset at "
                  f"{source.root}. Its numbers are NOT comparable to the papers.", file=sys.stderr)
        run(targets, source, run_plan(args, profile_of(args)), dist_info,
            progress=print if dist_info.is_main else (lambda _: None), stage=args.stage)
    if dist_info.is_main and not args.no_report:
        write_report_files(args)
    return 0


def _print_plan(targets: list[str], args: argparse.Namespace) -> int:
    """``run --plan [--json]``: the stages, in order; exit 2 (one ``error:`` line each) when inputs are missing."""
    import torch

    from benchmarks.launch import stage_dependencies
    from benchmarks.plan import PlanIncomplete, check_plan
    from benchmarks.resolve import expand_targets
    from benchmarks.run import command_plan

    plan = run_plan(args, profile_of(args))
    stages = command_plan(targets, data_source(args.data), plan, int(os.environ.get("WORLD_SIZE", "1")))
    after = stage_dependencies(expand_targets(targets, plan), plan)  # of each seed (benchmarks.launch)
    try:
        check_plan(stages, plan.runs, torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu")))
        problems = []
    except PlanIncomplete as error:
        problems = str(error).splitlines()
    if args.json:
        print(
            json.dumps(
                {
                    "profile": plan.profile,
                    "seeds": list(plan.seeds),
                    "stages": [{**dataclasses.asdict(stage), "after": after[stage.target]} for stage in stages],
                    "missing": problems,
                },
                indent=1,
            )
        )
    else:
        print(f"profile {plan.profile}, seeds {','.join(map(str, plan.seeds))}; {len(stages)} stages:")
        for number, stage in enumerate(stages, 1):
            flops = (
                ""
                if stage.tflop_per_step is None
                else f"; {stage.tflop_per_step:.3g} TFLOP/step"
                + (f", {stage.pflop_total:.3g} PFLOP in all" if stage.pflop_total is not None else "")
            ) + (
                f"; at least {stage.post_processing_pflop:.3g} PFLOP in the CRF"
                + (" and the CRF-RNN's training" if stage.target.endswith("+crfrnn") else "")
                if stage.post_processing_pflop is not None else ""
            )
            splits = ", ".join(
                f"{name} {count if count is not None else 'MISSING'}" for name, count in stage.splits.items()
            )
            disk = ", ".join(f"{k} {v / 1e9:.2f} GB" for k, v in stage.disk_bytes.items())
            print(
                f"{number:2d}. {stage.target}: {stage.action}; {stage.iterations} it x batch {stage.batch}, crop "
                f"{stage.crop or 'none'}{flops}\n    after: {', '.join(after[stage.target]) or 'nothing'}"
                f"\n    init: {stage.init}\n    data: {splits}"
                + (f"\n    disk: {disk}" if disk else "")
                + f"\n    recipe: {stage.recipe_source}"
            )
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    return 2 if problems else 0
