"""Where one method's paper-recipe training step (or, with ``--scoring``, its scoring of a batch of
VOC-size images) spends its time, on the inputs of ``bench``: the wall time against the time
kernels ran on the device, and a ``torch.profiler`` table of the operators, device time first.

    python -m benchmarks.bench.profile_method fcn8s [--device cuda] [--size paper] [--steps 5] [--scoring]

A step whose kernel time is far under its wall time is bound by the host (kernel launches, Python,
synchronisation), not by arithmetic; figures in ``benchmarks/bench/PERF.md``.
"""

from __future__ import annotations

import argparse

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from benchmarks.bench.methods import SIZES, training_bench
from benchmarks.data.voc import VOC_HEIGHT, VOC_WIDTH
from benchmarks.evaluation import class_probabilities
from benchmarks.recipes import recipe_methods


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("method")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", choices=sorted(SIZES), help="default: paper on CUDA, reduced on the CPU")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--scoring", action="store_true", help="profile scoring 8 images a pass instead of training")
    args = parser.parse_args()
    if args.method not in recipe_methods():
        parser.error(f"{args.method!r} has no recipe; methods with recipes: {', '.join(recipe_methods())}")
    device = torch.device(args.device)
    size = SIZES[args.size or ("paper" if device.type == "cuda" else "reduced")]
    bench = training_bench(args.method, size, device)
    step, what = bench.step, "training step"
    if args.scoring:
        bench.model.eval()
        images = torch.randint(0, 256, (8, 3, size.side(VOC_HEIGHT), size.side(VOC_WIDTH)), dtype=torch.uint8)
        step, what = lambda: class_probabilities(bench.model, images, device, bench.recipe.precision), "scoring pass"
    for _ in range(3):  # warm-up: cudnn autotuning, allocator
        step()
    on_cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if on_cuda else [])]
    with profile(activities=activities) as profiled:
        for _ in range(args.steps):
            step()
        if on_cuda:
            torch.cuda.synchronize(device)
    events = profiled.key_averages()
    wall_us = max(e.time_range.end for e in profiled.events()) - min(e.time_range.start for e in profiled.events())
    device_us = sum(e.time_range.elapsed_us() for e in profiled.events() if e.device_type == DeviceType.CUDA)
    if args.scoring:
        shape = f"8 images {size.side(VOC_HEIGHT)}x{size.side(VOC_WIDTH)}"
    else:
        shape = f"batch {bench.recipe.batch_size}, input {list(bench.inputs.shape[1:])}, " \
                f"{bench.flops_per_step / 1e12:.3f} TFLOP a step"
    kernels = f", kernels {device_us / 1e3:.1f} ms ({100 * device_us / wall_us:.0f}%)" if on_cuda else ""
    print(f"{args.method} {what}, {size.name} size, {shape}, {device}: {args.steps} in {wall_us / 1e3:.1f} ms wall "
          f"({wall_us / 1e3 / args.steps:.2f} ms each){kernels}")
    sort = "self_device_time_total" if on_cuda else "self_cpu_time_total"
    print(events.table(sort_by=sort, row_limit=args.rows))


if __name__ == "__main__":
    main()
