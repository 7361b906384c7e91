"""``python -m benchmarks bench``: training/evaluation/CRF speed of each paper recipe on synthetic VOC-size data."""

from __future__ import annotations

import argparse
import json
import sys

import torch

from benchmarks.commands.arguments import (
    device,
    names,
    positive_int,
)
from benchmarks.errors import UsageError

NAME = "bench"
HELP = "training/evaluation/CRF speed of each paper recipe on synthetic VOC-size data"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--methods", type=names, help="comma-separated (default: every method with a recipe)")
    parser.add_argument("--device", type=device, help="cuda, cpu (default: cuda when available)")
    parser.add_argument("--size", choices=["paper", "reduced"], help="default: paper on CUDA, reduced on the CPU")
    parser.add_argument("--steps", type=positive_int, help="timed training steps per method (default 10 CUDA / 2 CPU)")
    parser.add_argument(
        "--eval-images", type=positive_int, help="images timed for the 1,449-image figure (default 50 / 4)"
    )
    parser.add_argument(
        "--eval-batch", type=positive_int, help="images per forward pass when scoring (default 8 CUDA / 1 CPU)"
    )
    parser.add_argument("--json", action="store_true")


def main(args: argparse.Namespace) -> int:
    from benchmarks.bench.methods import SIZES, run_bench
    from benchmarks.recipes import CRF_STAGE_METHODS, recipe_methods

    unknown = [name for name in args.methods or [] if name not in recipe_methods()]
    if unknown:
        raise UsageError(
            f"bench --methods: no recipe for {', '.join(unknown)}; methods with recipes: {', '.join(recipe_methods())}"
        )
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    size = SIZES[args.size or ("paper" if device.type == "cuda" else "reduced")]
    steps = args.steps or (10 if device.type == "cuda" else 2)
    eval_images = args.eval_images or (50 if device.type == "cuda" else 4)
    eval_batch = args.eval_batch or (8 if device.type == "cuda" else 1)
    result = run_bench(
        args.methods,
        size,
        device,
        steps,
        eval_images,
        CRF_STAGE_METHODS,
        eval_batch,
        progress=lambda line: print(line, file=sys.stderr),
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    peak = result["bf16_matmul_peak_tflops"]
    print(
        f"device {result['device']}, torch {result['torch']}, {result['date']}, size {size.name} "
        f"(images x{size.image_scale:g}, width {size.width:g}"
        f"{f', batch <= {size.max_batch}' if size.max_batch else ''}); bf16 matmul peak "
        f"{f'{peak:.0f} TFLOP/s' if peak else 'n/a (CPU)'}"
    )
    print("| method | batch | input | train img/s | GFLOP/step | TFLOP/s | of peak | eval 1,449 (s) | CRF ms/img |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in result["rows"]:
        fraction = f"{100 * r['fraction_of_peak']:.0f}%" if r["fraction_of_peak"] else "n/a"
        crf = f"{r['crf_ms_per_image']:.1f}" if "crf_ms_per_image" in r else ""
        print(
            f"| {r['method']} | {r['batch']} | {'x'.join(map(str, r['input']))} | {r['train_images_per_s']:.1f} | "
            f"{r['train_gflop_per_step']:.1f} | {r['train_tflops']:.3f} | {fraction} | {r['eval_s_1449']:.1f} | "
            f"{crf} |"
        )
    if "projected_paper_profile_hours" in result:
        print(
            f"projected paper profile (all methods, their recipes' iterations, scoring, +crf): "
            f"{result['projected_paper_profile_hours']:.2f} h"
        )
    if size.name != "paper":
        print("(reduced size: these figures are not the paper-size speed)")
    return 0
