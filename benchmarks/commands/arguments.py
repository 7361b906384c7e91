"""Options and argument types several commands share, each checked before any work."""

from __future__ import annotations

import argparse

import torch


def add_import_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--import", dest="imports", action="append", default=[], help="module registering new methods")


def add_run_options(p: argparse.ArgumentParser, crf_backend: str = "pydensecrf") -> None:
    p.add_argument(
        "--data", type=folder_name, help="folder holding VOCdevkit (default $SEGREPRO_DATA; else the embedded dataset)"
    )
    p.add_argument("--profile", choices=["paper", "quick"], help="default: paper with VOC data, quick without")
    p.add_argument("--device", type=device, help="cuda, cuda:1, cpu (default: cuda when available)")
    p.add_argument("--seeds", type=seeds, default=[0], help="e.g. 0,1,2")
    p.add_argument("--workers", type=nonnegative_int, default=0, help="DataLoader worker processes")
    p.add_argument("--results", default="results")
    p.add_argument("--runs", default="runs", help="checkpoints, weights and logs (not committed)")
    add_import_option(p)
    p.add_argument("--eval-batch", type=positive_int, default=1, help="images of one size scored together (GPU: 8-16)")
    p.add_argument(
        "--crf-backend",
        choices=["pydensecrf", "torch"],
        default=crf_backend,
        help=f"dense CRF: pydensecrf (the reference) or torch (same lattice, runs on the GPU); default {crf_backend}",
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe field")
    p.add_argument(
        "--precision",
        choices=["fp32", "tf32", "bf16"],
        help="arithmetic of training and scoring (default fp32, as the papers trained; tf32 and bf16 "
        "are the recipe override precision=..., and the record is not comparable)",
    )
    p.add_argument(
        "--allow-train-eval-overlap",
        action="store_true",
        help="score on a split that shares images with the training split (the record is not comparable)",
    )
    p.add_argument(
        "--no-sanity-gate",
        action="store_true",
        help="train on even when the first loss is far from ln(21) or flat at the first checkpoint",
    )


def int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
    return value


def positive_int(text: str) -> int:
    return int_at_least(text, 1)


def nonnegative_int(text: str) -> int:
    return int_at_least(text, 0)


def seeds(text: str) -> list[int]:
    seeds = [nonnegative_int(v) for v in text.split(",")]
    if max(seeds) >= 2**32:
        raise argparse.ArgumentTypeError(f"seeds must be below 2**32, got {max(seeds)}")
    if len(set(seeds)) < len(seeds):
        raise argparse.ArgumentTypeError(f"names a seed twice: {text!r}")
    return seeds


def folder_name(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "is empty; name the folder holding VOCdevkit, or leave --data out for the embedded dataset"
        )
    return text


def names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"names no method ({text!r}); pass comma-separated method names")
    return names


def device(text: str) -> str:
    """``--device``, checked before any work: cpu, or a CUDA GPU this process sees."""
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"the harness runs on cpu or cuda, not {text!r}")
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    if device.type == "cuda" and (device.index or 0) >= count:
        seen = f"{count} CUDA GPUs (cuda:0 to cuda:{count - 1})" if count else "no CUDA GPU"
        raise argparse.ArgumentTypeError(f"{text}: this machine has {seen}; pass --device cpu or leave it out")
    return text
