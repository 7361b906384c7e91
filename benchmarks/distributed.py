"""Process setup for one GPU or many (``torchrun``), the arithmetic precision of a run, and exact
sharding of an evaluation split."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from benchmarks.errors import UsageError

__all__ = ["PRECISIONS", "Distributed", "ShardSampler", "effective_precision", "precision_path"]

PRECISIONS = ("fp32", "tf32", "bf16")
"""A run's arithmetic: ``fp32`` as the papers trained (Caffe, float32; TF32 off for matrix products
and cuDNN convolutions), ``tf32`` (float32 storage, TF32 tensor-core products on CUDA), ``bf16``
(autocast to bfloat16 where PyTorch's autocast lists an op, float32 elsewhere)."""


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls, device: str | None = None) -> Distributed:
        """Single process, or the process group ``torchrun`` describes (NCCL on CUDA, gloo on CPU)."""
        wanted = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1:
            return cls(0, 1, wanted)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if wanted.type == "cuda" else "gloo")
        rank = dist.get_rank()
        if wanted.type == "cuda":
            wanted = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(wanted)
        return cls(rank, world_size, wanted)

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def effective_precision(device: torch.device, precision: str) -> str:
    """What ``precision`` is on ``device``: a CPU has no TF32, so ``tf32`` there is ``fp32``."""
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    return "fp32" if precision == "tf32" and device.type != "cuda" else precision


@contextlib.contextmanager
def _tf32(enabled: bool) -> Iterator[None]:
    backends = (torch.backends.cuda.matmul, torch.backends.cudnn)
    before = [backend.allow_tf32 for backend in backends]
    for backend in backends:
        backend.allow_tf32 = enabled
    try:
        yield
    finally:
        for backend, value in zip(backends, before, strict=True):
            backend.allow_tf32 = value


def precision_path(device: torch.device, precision: str = "fp32") -> tuple[contextlib.AbstractContextManager, bool]:
    """``(context that runs the forward pass in precision, use channels_last)``; channels_last on CUDA
    only. On CUDA, TF32 is on only for ``tf32`` (PyTorch's default allows it in cuDNN convolutions,
    which ``fp32`` must not). ``bf16`` autocasts on the CPU too (the tests run the CUDA arithmetic there)."""
    precision = effective_precision(device, precision)
    channels_last = device.type == "cuda"
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16), channels_last
    return (_tf32(precision == "tf32") if device.type == "cuda" else contextlib.nullcontext()), channels_last



class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...``: every image on exactly one process, none padded or
    repeated (unlike ``DistributedSampler``), so a DDP evaluation counts each image once."""

    def __init__(self, length: int, rank: int = 0, world_size: int = 1) -> None:
        self.length, self.rank, self.world_size = length, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))
