"""The order and augmentation of training batches, the same in every process and on every resume.

Iteration ``i`` takes positions ``i*B .. i*B+B-1`` of a seeded per-epoch permutation, and each
sample's augmentation is seeded by (seed, position): a resumed run sees exactly the batches the
interrupted one would have seen."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from benchmarks.recipes import Recipe, RecipeError

__all__ = ["PlannedBatches", "SeededAugmentation", "stack_images"]


class PlannedBatches(Sampler[list[tuple[int, int]]]):
    """Global batches ``[(index, augmentation seed), ...]`` from ``start`` on; this process's share
    is every ``world_size``-th item."""

    def __init__(self, length: int, recipe: Recipe, seed: int, start: int, rank: int, world_size: int) -> None:
        self.length, self.recipe, self.seed, self.start = length, recipe, seed, start
        self.rank, self.world_size = rank, world_size

    def _permutation(self, epoch: int) -> np.ndarray:
        if getattr(self, "_epoch", None) != epoch:
            self._epoch, self._order = epoch, np.random.default_rng([self.seed, epoch]).permutation(self.length)
        return self._order

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        batch = self.recipe.batch_size
        for iteration in range(self.start, self.recipe.iterations):
            positions = range(iteration * batch, (iteration + 1) * batch)
            items = [(int(self._permutation(p // self.length)[p % self.length]), p) for p in positions]
            yield items[self.rank :: self.world_size]

    def __len__(self) -> int:
        return self.recipe.iterations - self.start


class SeededAugmentation(Dataset):
    """``dataset[index]`` with the random augmentation seeded by (seed, position)."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, str]:
        index, position = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + position)
            return self.dataset[index]


def stack_images(batch: list[tuple[torch.Tensor, torch.Tensor, str]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of one batch stacked; images of different sizes are a RecipeError."""
    shapes = {tuple(image.shape) for image, _, _ in batch}
    if len(shapes) > 1:
        raise RecipeError(f"images of one batch differ in size ({sorted(shapes)[:3]}); set a crop in the recipe "
                         "(--set crop=N) or use batch_size=1")
    return torch.stack([b[0] for b in batch]), torch.stack([b[1] for b in batch])
