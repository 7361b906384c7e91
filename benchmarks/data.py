"""The one data path every method is trained and scored through: which dataset, its splits as
torch datasets, and the evaluation sampler that scores each image exactly once under DDP."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset, Sampler

from benchmarks.embedded import EmbeddedConfig, embedded_root, is_embedded_tree
from benchmarks.transforms import to_tv_tensors
from benchmarks.voc import DATA_ENV_VAR, VOCSplit, resolve_voc_root

__all__ = ["DatasetSource", "SegmentationDataset", "ShardSampler", "resolve_dataset", "split_checksum"]


@dataclass(frozen=True)
class DatasetSource:
    """Where the data comes from: ``name`` is ``voc2012`` (real data, possibly comparable to the
    papers) or ``embedded`` (generated, never comparable)."""

    name: str
    root: Path
    comparable_to_paper: bool

    def split(self, split: str) -> VOCSplit:
        return VOCSplit(self.root, split)


def resolve_dataset(data: str | os.PathLike[str] | None = None,
                    embedded: EmbeddedConfig | None = None) -> DatasetSource:
    """Real VOC from ``--data`` or ``$SEGREPRO_DATA`` when given, else the embedded dataset; a
    given folder holding the generated dataset is the embedded dataset too."""
    given = data or os.environ.get(DATA_ENV_VAR)
    if given:
        voc = resolve_voc_root(given)
        if is_embedded_tree(voc):
            return DatasetSource("embedded", voc, comparable_to_paper=False)
        return DatasetSource("voc2012", voc, comparable_to_paper=True)
    return DatasetSource("embedded", embedded_root(embedded), comparable_to_paper=False)


def split_checksum(split: VOCSplit) -> str:
    """sha256 of the split's id list (the record's dataset checksum)."""
    return hashlib.sha256("\n".join(split.ids).encode()).hexdigest()


class SegmentationDataset(Dataset):
    """``(image uint8 3xHxW RGB, label int64 HxW, image_id)`` from a :class:`VOCSplit`, through an
    optional joint transform."""

    def __init__(self, split: VOCSplit, transform: Callable | None = None) -> None:
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        sample = self.split[index]
        image, label = to_tv_tensors(sample.image, sample.label)
        if self.transform is not None:
            image, label = self.transform(image, label)
        return image.as_subclass(torch.Tensor), label.as_subclass(torch.Tensor).long(), sample.image_id


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...``: every image on exactly one process, none padded or
    repeated (unlike ``DistributedSampler``), so a DDP evaluation counts each image once."""

    def __init__(self, length: int, rank: int = 0, world_size: int = 1) -> None:
        self.length, self.rank, self.world_size = length, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))
