"""Process setup for one GPU or many (``torchrun``), the CUDA fast path, and exact sharding of an
evaluation split."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

__all__ = ["Distributed", "ShardSampler", "fast_path"]


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


def fast_path(device: torch.device, enabled: bool | None = None) -> tuple[contextlib.AbstractContextManager, bool]:
    """``(bf16 autocast context, use channels_last)``: on by default on CUDA only; ``enabled``
    forces it (the tests run the CUDA path's arithmetic on the CPU this way)."""
    enabled = device.type == "cuda" if enabled is None else enabled
    return (torch.autocast(device.type, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()), enabled



class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...``: every image on exactly one process, none padded or
    repeated (unlike ``DistributedSampler``), so a DDP evaluation counts each image once."""

    def __init__(self, length: int, rank: int = 0, world_size: int = 1) -> None:
        self.length, self.rank, self.world_size = length, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))
