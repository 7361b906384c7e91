"""Limits before work (issue 26): a recipe or CRF value whose cost can be computed (``crop``,
``scale``, ``width``, ``batch_size``, iterations of any kind) is checked against a memory and a
time estimate before anything runs, and refused with the estimate in one line; ``--set crop=``,
``scale=`` or ``width=`` with huge values ended in a memory traceback, and a stored CRF search of
``iterations: 1000000000`` ran until killed.

- **Memory**: one training step's bytes (:func:`benchmarks.bench.methods.recipe_step_bytes`:
  float32 state, activations kept for the backward, the batch before cropping) against the memory
  available now (``MemAvailable`` on a CPU, ``torch.cuda.mem_get_info`` on a GPU).
- **Time**: the FLOPs ``bench`` counts (training steps; dense-CRF mean-field iterations at
  :data:`CRF_FLOPS_PER_PIXEL_CLASS`) at an optimistic rate (:data:`OPTIMISTIC_TFLOPS`, above any
  speed measured here: ``benchmarks/bench/PERF.md``) against :data:`MAX_DAYS`: a command refused
  would take longer than that even at that rate.
"""

from __future__ import annotations

import os

import torch

from benchmarks.data.voc import NUM_CLASSES, VOC_HEIGHT, VOC_WIDTH
from benchmarks.errors import RecipeError

__all__ = ["CRF_FLOPS_PER_PIXEL_CLASS", "MAX_DAYS", "OPTIMISTIC_TFLOPS", "available_memory", "check_crf_cost",
           "crf_flops", "days_at_best", "step_memory_problem", "time_problem", "training_time_problem"]

MAX_DAYS = 30.0
OPTIMISTIC_TFLOPS = {"cpu": 1.0, "cuda": 1000.0}
"""TFLOP/s no device reaches on this work: PERF.md measured 0.03-0.07 on the CPU; 1,000 is above
an H100/H200's dense bf16 peak (989)."""
CRF_FLOPS_PER_PIXEL_CLASS = 100
"""A lower bound on one mean-field iteration's FLOPs per pixel and class: splat, blur and slice on
the permutohedral lattice of the bilateral kernel (d = 5: 6 vertices, 6 directions of 3 taps)
alone take more."""


def available_memory(device: torch.device) -> int:
    """Bytes that can be allocated now on ``device``."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def days_at_best(flops: float, device: torch.device) -> float:
    """Days ``flops`` take at the optimistic rate of ``device``'s kind."""
    return flops / (OPTIMISTIC_TFLOPS.get(device.type, OPTIMISTIC_TFLOPS["cuda"]) * 1e12) / 86400


def step_memory_problem(method: str, step_bytes: dict[str, int], device: torch.device) -> str | None:
    """The line refusing a training step of ``step_bytes`` that does not fit ``device`` now, or None
    (also when ``device`` is a GPU this machine lacks: SLURM jobs run elsewhere)."""
    if device.type == "cuda" and not torch.cuda.is_available():
        return None
    needed, free = sum(step_bytes.values()), available_memory(device)
    if needed <= free:
        return None
    parts = ", ".join(f"{name} {value / 1e9:.3g}" for name, value in step_bytes.items())
    return (f"{method}: one training step needs an estimated {needed / 1e9:.3g} GB ({parts}) but {free / 1e9:.3g} "
            f"GB are available on {device}; lower crop, scale, width or batch_size (--set)")


def time_problem(what: str, flops: float, device: torch.device, fix: str) -> str | None:
    """The line refusing work of ``flops`` (``what`` says which) that takes more than
    :data:`MAX_DAYS` even at the optimistic rate, ending with ``fix``; or None."""
    days = days_at_best(flops, device)
    if days <= MAX_DAYS:
        return None
    return (f"{what} are {flops / 1e15:.3g} PFLOP, at least {days:.3g} days on {device} even at "
            f"{OPTIMISTIC_TFLOPS.get(device.type, OPTIMISTIC_TFLOPS['cuda']):g} TFLOP/s (the limit is {MAX_DAYS:g} "
            f"days); {fix}")


def training_time_problem(method: str, flops: float, iterations: int, device: torch.device) -> str | None:
    """The line refusing ``iterations`` training steps of ``flops`` in all that take too long, or None."""
    return time_problem(f"{method}: {iterations} iterations", flops, device,
                        "lower iterations (--set iterations=N) or the crop, width or batch_size")


def crf_flops(mean_field_iterations: int, images: int) -> float:
    """A lower bound on the FLOPs of ``mean_field_iterations`` dense-CRF iterations on each of
    ``images`` VOC images of the largest size (500 x 375, 21 classes)."""
    return float(mean_field_iterations) * images * VOC_HEIGHT * VOC_WIDTH * NUM_CLASSES * CRF_FLOPS_PER_PIXEL_CLASS


def check_crf_cost(iterations: int, images: int, what: str, device: torch.device) -> None:
    """Refuse (:class:`RecipeError`) ``iterations`` dense-CRF mean-field iterations on each of
    ``images`` that take too long; ``what`` says where the number comes from."""
    problem = time_problem(f"{what}: {iterations} mean-field iterations on {images} images",
                           crf_flops(iterations, images), device, "the papers use 10")
    if problem:
        raise RecipeError(problem)
