"""How a recipe trains, as one object chosen once from its flags (:func:`training_mode`).

``Recipe.__post_init__`` checks that the flags go together (``padded_crops``, ``loss_on_score_map``,
``cached_features``, ``tile_features``, ``train_only``); the mode chosen here checks that the
network offers what it needs (and, before caching features, that they come from a trained part:
``init_from``) and is the one place that acts on them:

* :class:`WholeNetwork`: augmented images in, the loss on the full-resolution scores (FCN);
* :class:`ScoreMapLoss`: the loss on the score map against the labels subsampled by the score
  stride (DeepLab, ``loss_on_score_map``);
* :class:`PaddedCrops`: the crop of the reflection-padded image is the input, the loss on its
  score map (fyu/dilation ``train.py``, ``padded_crops``);
* :class:`CachedImageFeatures`: the head trained on the frozen stem's cached whole-image maps, the
  loss on its scores zoomed to the labels (``cached_features``; the quick profile);
* :class:`CachedTiles`: the head's training form on cached 66 x 66 tile maps, the loss on the map
  (fyu/dilation ``docs/training.md``, ``tile_features``).

Every mode trains only the parameters under ``train_only`` when it is set (the frozen trunk:
:meth:`TrainingMode.freeze`, :meth:`TrainingMode.enter_training`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from benchmarks.batches import PlannedBatches, SeededAugmentation, stack_images
from benchmarks.data.datasets import DatasetSource, SegmentationDataset
from benchmarks.data.embedded import default_cache_dir
from benchmarks.data.transforms import train_transform
from benchmarks.data.voc import NUM_CLASSES, VOC_HEIGHT, VOC_WIDTH
from benchmarks.distributed import Distributed
from benchmarks.feature_cache import ImageFeatures, TileFeatures, cache_bytes, image_feature_cache, tile_feature_cache
from benchmarks.files import file_sha256
from benchmarks.recipes import Recipe, RecipeError

__all__ = ["CachedImageFeatures", "CachedTiles", "PaddedCrops", "ScoreMapLoss", "TrainedPart", "TrainingData",
           "TrainingMode", "WholeNetwork", "training_mode"]

Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class TrainingData:
    """Where a run's batches come from: the data, the seed of their order and augmentation, the
    processes, the DataLoader workers and the weights the run starts from (``init_from``'s)."""

    source: DatasetSource
    seed: int
    dist_info: Distributed
    workers: int = 0
    dependency_weights: Path | None = None


class TrainingMode:
    """What every mode shares: the recipe, and the frozen trunk (``train_only``)."""

    on_images = True
    """Whether the batches are images (normalised on the device) rather than cached maps."""

    def __init__(self, recipe: Recipe, model: nn.Module) -> None:
        self.recipe = recipe

    def _error(self, what: str) -> RecipeError:
        return RecipeError(f"recipe {self.recipe.method} ({self.recipe.profile}): {what}")

    def trains(self, name: str) -> bool:
        """Whether the parameter ``name`` trains: all of them, or those under ``train_only``."""
        return self.recipe.train_only is None or name.startswith(self.recipe.train_only)

    def freeze(self, model: nn.Module) -> None:
        """Stop the gradient of every parameter that does not train (the optimiser leaves them out)."""
        for name, parameter in model.named_parameters():
            if not self.trains(name):
                parameter.requires_grad_(False)

    def enter_training(self, model: nn.Module, part: nn.Module) -> None:
        """Training mode for what trains; a frozen trunk stays in evaluation mode."""
        model.train()
        if self.recipe.train_only is not None:
            model.eval()
            part.train()

    def trained_network(self, model: nn.Module) -> nn.Module:
        """The module the optimiser steps (all of the network, or the head on cached maps)."""
        return model

    def forward(self, network: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        """The forward of ``network`` (:meth:`trained_network`) that a training step runs."""
        return network

    def scores(self, part: TrainedPart, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The scores the loss compares with ``labels``."""
        raise NotImplementedError

    def batches(self, model: nn.Module, data: TrainingData, start: int) -> Batches:
        """The batches ``(inputs, labels)`` of iterations ``start`` on (this process's share)."""
        raise NotImplementedError

    def cache_bytes_per_image(self, model: nn.Module) -> dict[str, int]:
        """Disk the mode caches for one 500 x 375 training image, by cache (none: batches are images)."""
        return {}

    def _splits(self, data: TrainingData, transform: Callable | None = None) -> Dataset:
        return ConcatDataset([SegmentationDataset(data.source.split(name), transform)
                              for name in self.recipe.training_splits])

    def _sampler(self, length: int, data: TrainingData, start: int) -> PlannedBatches:
        return PlannedBatches(length, self.recipe, data.seed, start, data.dist_info.rank, data.dist_info.world_size)


class WholeNetwork(TrainingMode):
    """The whole network on augmented images (uint8, normalised on the device), the loss on its
    full-resolution scores (FCN)."""

    def label_factor(self, model: nn.Module) -> int:
        return 1

    def margin(self, model: nn.Module) -> int:
        return 0

    def transform(self, model: nn.Module) -> Callable:
        """The recipe's augmentation for ``model``: scale, crop, flip; labels subsampled by
        ``label_factor`` from ``margin`` on."""
        convention = model.input_convention
        mean = convention.mean[::-1] if convention.channel_order == "BGR" else convention.mean
        try:
            return train_transform(self.recipe.crop, self.recipe.scale, self.recipe.flip, tuple(round(m) for m in mean),
                                   self.label_factor(model), margin=self.margin(model))
        except ValueError as error:
            raise self._error(f"{error} (--set crop=...)") from None

    def scores(self, part: TrainedPart, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.forward(part.network)(part.images(inputs))

    def batches(self, model: nn.Module, data: TrainingData, start: int) -> Batches:
        dataset = self._splits(data, self.transform(model))
        sampler = self._sampler(len(dataset), data, start)
        return iter(DataLoader(SeededAugmentation(dataset, data.seed), batch_sampler=sampler,
                               num_workers=data.workers, collate_fn=stack_images,
                               pin_memory=data.dist_info.device.type == "cuda", persistent_workers=False))


class ScoreMapLoss(WholeNetwork):
    """DeepLab: the loss on the score map, cropped to the labels subsampled by the score stride."""

    def label_factor(self, model: nn.Module) -> int:
        return model.score_stride

    def forward(self, network: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        return network.score_map

    def scores(self, part: TrainedPart, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.forward(part.network)(part.images(inputs))[..., : labels.shape[-2], : labels.shape[-1]]


class PaddedCrops(ScoreMapLoss):
    """fyu/dilation: the crop of the padded image is the input; the loss on its score map against
    the labels at the model's input margin, stride 8."""

    def __init__(self, recipe: Recipe, model: nn.Module) -> None:
        super().__init__(recipe, model)
        if not model.input_margin:
            raise self._error("padded_crops=True needs a network that pads its input (an input margin); set "
                              "padded_crops=false")

    def margin(self, model: nn.Module) -> int:
        return model.input_margin

    def forward(self, network: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        return network.score_map_of_padded

    def scores(self, part: TrainedPart, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        images = part.images(inputs)
        scores = self.forward(part.network)(images)
        if scores.shape[-2:] != labels.shape[-2:]:
            raise RecipeError(f"score map {tuple(scores.shape[-2:])} of a {tuple(images.shape[-2:])} padded crop "
                              f"does not match the {tuple(labels.shape[-2:])} labels")
        return scores


class CachedImageFeatures(TrainingMode):
    """The head of a network trained in stages, on the frozen stem's output for every training
    image, computed once onto disk (``benchmarks.feature_cache``, named by the weights they came
    from and the training splits; the main process writes them, the others then read them); the
    loss on the head's scores zoomed to the labels."""

    def __init__(self, recipe: Recipe, model: nn.Module) -> None:
        super().__init__(recipe, model)
        if model.staged_split() is None:
            raise self._not_staged()

    def _not_staged(self) -> RecipeError:
        return self._error("cached_features=True trains a head on the cached output of a part trained before; it "
                           "needs init_from and a method trained in stages (context_basic, context_large); set "
                           "cached_features=false")

    on_images = False

    def trained_network(self, model: nn.Module) -> nn.Module:
        return model.staged_split()[1]

    def scores(self, part: TrainedPart, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return part.final_upsample(self.forward(part.network)(inputs), labels[:, None])

    def features(self, model: nn.Module, image: torch.Tensor) -> torch.Tensor:
        """What is cached of one normalised image: the stem's output."""
        return model.staged_split()[0](image)

    def cache_bytes_per_image(self, model: nn.Module) -> dict[str, int]:
        """The stem's map of a 500 x 375 image (float32) and its labels."""
        image = torch.zeros(1, 3, VOC_HEIGHT, VOC_WIDTH, device=next(model.parameters()).device)
        with torch.no_grad():
            stem = model.staged_split()[0](image)
        return {"image_feature_cache": stem.numel() * 4 + VOC_HEIGHT * VOC_WIDTH}

    def _cache(self, compute: Callable[[torch.Tensor], torch.Tensor], dataset: Dataset, identity: dict[str, object],
               data: TrainingData, main: bool) -> ImageFeatures | TileFeatures:
        return image_feature_cache(compute, dataset, identity, default_cache_dir(), device=data.dist_info.device,
                                   description=f"{self.recipe.method}: caching features", main=main)

    def batches(self, model: nn.Module, data: TrainingData, start: int) -> Batches:
        if self.recipe.init_from is None:  # the maps would come from an untrained stem
            raise self._not_staged()
        dataset = self._splits(data)
        weights = {"weights_sha256": file_sha256(data.dependency_weights)} if data.dependency_weights is not None \
            else {"weights": "initial", "recipe": self.recipe.as_dict()}
        identity = {**weights, "convention": model.input_convention.name, "tiles": self.recipe.tile_features,
                    "data": [{k: v for k, v in data.source.facts(split).items() if k != "root"}
                             for split in self.recipe.training_splits]}
        model.eval()

        def compute(image: torch.Tensor) -> torch.Tensor:
            return self.features(model, model.input_convention.normalize(image))

        if data.dist_info.is_main:
            cache = self._cache(compute, dataset, identity, data, True)
        data.dist_info.barrier()
        if not data.dist_info.is_main:
            cache = self._cache(compute, dataset, identity, data, False)
        return (cache.batch(items, data.seed) for items in self._sampler(len(dataset), data, start))


class CachedTiles(CachedImageFeatures):
    """fyu/dilation's context-module protocol: the head's training form (where it has one) on
    each image's cached 66 x 66 tile map, against the labels of the map's size."""

    def __init__(self, recipe: Recipe, model: nn.Module) -> None:
        super().__init__(recipe, model)
        if not hasattr(model, "tile_features"):
            raise self._error("tile_features=True needs a network that defines tile_features (the context networks); "
                              "set tile_features=false")

    def features(self, model: nn.Module, image: torch.Tensor) -> torch.Tensor:
        return model.tile_features(image)

    def cache_bytes_per_image(self, model: nn.Module) -> dict[str, int]:
        return {"tile_feature_cache": cache_bytes(1, NUM_CLASSES)}

    def _cache(self, compute: Callable[[torch.Tensor], torch.Tensor], dataset: Dataset, identity: dict[str, object],
               data: TrainingData, main: bool) -> ImageFeatures | TileFeatures:
        return tile_feature_cache(compute, dataset, identity, default_cache_dir(), device=data.dist_info.device,
                                  description=f"{self.recipe.method}: caching features", main=main)

    def forward(self, network: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        return getattr(network, "training_form", network)

    def scores(self, part: TrainedPart, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        scores = self.forward(part.network)(inputs)
        if scores.shape[-2:] != labels.shape[-2:]:
            raise RecipeError(f"the head maps {tuple(inputs.shape[-2:])} tile features to "
                              f"{tuple(scores.shape[-2:])} scores, not the {tuple(labels.shape[-2:])} labels; "
                              "set tile_features=false")
        return scores


def training_mode(recipe: Recipe, model: nn.Module) -> TrainingMode:
    """The mode ``recipe`` trains ``model`` in; a network that lacks what the mode needs is a
    RecipeError naming the flag to change."""
    if recipe.tile_features:
        return CachedTiles(recipe, model)
    if recipe.cached_features:
        return CachedImageFeatures(recipe, model)
    if recipe.padded_crops:
        return PaddedCrops(recipe, model)
    if recipe.loss_on_score_map:
        return ScoreMapLoss(recipe, model)
    return WholeNetwork(recipe, model)


class TrainedPart(nn.Module):
    """What a recipe trains, as the one module the optimizer steps and DDP wraps: it maps a batch
    (uint8 images, or the frozen stem's cached outputs) and its labels to the scores the loss
    sees, as the recipe's :func:`training_mode` says; it freezes what the mode does not train."""

    def __init__(self, model: nn.Module, recipe: Recipe, *, channels_last: bool = False) -> None:
        super().__init__()
        self.mode = training_mode(recipe, model)
        self.mode.freeze(model)
        self.network = self.mode.trained_network(model)
        self.final_upsample = model.final_upsample
        self.normalize = model.input_convention.normalize
        self.channels_last = channels_last

    def images(self, inputs: torch.Tensor) -> torch.Tensor:
        """uint8 images normalised by the model's input convention (channels-last on the fast path)."""
        images = self.normalize(inputs)
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.mode.scores(self, inputs, labels)
