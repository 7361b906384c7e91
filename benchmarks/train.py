"""The training loop: plain PyTorch, one GPU or many through ``torchrun``.

Training is deterministic in the data it sees: iteration ``i`` takes positions ``i*B .. i*B+B-1``
of a seeded per-epoch permutation, and each sample's augmentation is seeded by (seed, position).
Together with the model/optimizer/RNG state in the checkpoint, a resumed run continues exactly
where the interrupted one stopped.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler

from benchmarks.data.datasets import DatasetSource, SegmentationDataset
from benchmarks.data.embedded import default_cache_dir
from benchmarks.data.transforms import train_transform
from benchmarks.data.voc import IGNORE_INDEX, NUM_CLASSES
from benchmarks.distributed import Distributed, precision_path
from benchmarks.feature_cache import ImageFeatures, TileFeatures, image_feature_cache, tile_feature_cache
from benchmarks.files import file_sha256, load_torch, save_torch
from benchmarks.networks import build_model
from benchmarks.preemption import Preempted, deferred, requested
from benchmarks.progress import bar, beside_bars
from benchmarks.recipes import Recipe, RecipeError
from benchmarks.sanity import SanityGate
from methods.errors import SegreproError

__all__ = ["TrainedPart", "TrainingError", "build_optimizer", "set_learning_rate", "train", "training_step",
           "training_transform"]


class TrainingError(SegreproError, RuntimeError):
    """A run that cannot go on (NaN loss, exploding gradients); the message says what to change."""


def parameter_groups(model: nn.Module, recipe: Recipe) -> list[dict[str, object]]:
    """Caffe's convention: biases at ``bias_lr_multiplier`` x lr without weight decay; parameters
    under a prefix of ``recipe.lr_multipliers`` at that multiple; frozen parameters left out."""
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if recipe.train_only is not None and not name.startswith(recipe.train_only):
            parameter.requires_grad_(False)
            continue
        multiplier = next((m for prefix, m in recipe.lr_multipliers if name.startswith(prefix)), 1.0)
        is_bias = name.endswith("bias")
        key = (multiplier * (recipe.bias_lr_multiplier if is_bias else 1.0), 0.0 if is_bias else recipe.weight_decay)
        groups.setdefault(key, []).append(parameter)
    return [{"params": params, "lr_scale": scale, "weight_decay": decay, "lr": recipe.lr * scale}
            for (scale, decay), params in groups.items()]


def build_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """SGD with momentum (the papers), or Adam (a named quick-profile option), over ``parameter_groups``."""
    groups = parameter_groups(model, recipe)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(groups, lr=recipe.lr, betas=(recipe.momentum, 0.999))
    raise RecipeError(f"unknown optimizer {recipe.optimizer!r}; use sgd or adam")


def set_learning_rate(optimizer: torch.optim.Optimizer, recipe: Recipe, iteration: int) -> None:
    """Each group's lr for ``iteration`` (``learning_rate`` x its ``lr_scale``). Caffe's SGD keeps the
    lr inside its momentum history (``sgd_solver.cpp``: V = momentum V + lr (grad + decay W); W -= V),
    torch's outside it (buffer = momentum buffer + grad; W -= lr buffer): when the lr changes (a
    ``step`` or ``poly`` schedule) each momentum buffer is scaled by old lr / new lr, which makes
    the two updates the same (checked against genuine Caffe: tests/test_caffe_goldens.py)."""
    for group in optimizer.param_groups:
        new = learning_rate(recipe, iteration) * group["lr_scale"]
        old, group["lr"] = group["lr"], new
        if isinstance(optimizer, torch.optim.SGD) and new != old and new > 0:
            for parameter in group["params"]:
                buffer = optimizer.state.get(parameter, {}).get("momentum_buffer")
                if buffer is not None:
                    buffer.mul_(old / new)


def learning_rate(recipe: Recipe, iteration: int) -> float:
    if recipe.schedule == "fixed":
        return recipe.lr
    if recipe.schedule == "step":
        return recipe.lr * recipe.gamma ** (iteration // recipe.step_size)
    if recipe.schedule == "poly":
        return recipe.lr * (1 - iteration / recipe.iterations) ** recipe.poly_power
    raise RecipeError(f"unknown schedule {recipe.schedule!r}; use fixed, step or poly")


class _PlannedBatches(Sampler[list[tuple[int, int]]]):
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


class _SeededAugmentation(Dataset):
    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, str]:
        index, position = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + position)
            return self.dataset[index]


def _stack(batch: list[tuple[torch.Tensor, torch.Tensor, str]]) -> tuple[torch.Tensor, torch.Tensor]:
    shapes = {tuple(image.shape) for image, _, _ in batch}
    if len(shapes) > 1:
        raise RecipeError(f"images of one batch differ in size ({sorted(shapes)[:3]}); set a crop in the recipe "
                         "(--set crop=N) or use batch_size=1")
    return torch.stack([b[0] for b in batch]), torch.stack([b[1] for b in batch])


def _loss(scores: torch.Tensor, labels: torch.Tensor, recipe: Recipe, world_size: int) -> torch.Tensor:
    """Summed over pixels, or the mean over the valid pixels of the whole global batch. Under DDP
    (which averages gradients over processes) each process scales its part so the gradient is
    the one of the single-process loss on the same global batch."""
    total = F.cross_entropy(scores.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")
    if recipe.loss == "sum":
        return total * world_size
    valid = (labels != IGNORE_INDEX).sum()
    if world_size > 1:
        dist.all_reduce(valid)
    return total * world_size / valid.clamp(min=1)


class _CsvLog:
    """``log.csv`` of the run (kept up to the resume point when resuming), mirrored to TensorBoard
    when ``tensorboard`` is installed."""

    FIELDS = ("iteration", "loss", "grad_norm", "lr", "images_per_s", "elapsed_s")

    def __init__(self, path: Path, resume_from: int) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(path.parent / "tensorboard"), purge_step=resume_from + 1)
        except ImportError:
            self.tensorboard = None
        rows = []
        if path.is_file() and resume_from > 0:
            with path.open() as file:
                rows = [r for r in csv.DictReader(file) if int(r["iteration"]) <= resume_from]
        self.file = path.open("w", newline="")
        self.writer = csv.DictWriter(self.file, self.FIELDS)
        self.writer.writeheader()
        self.writer.writerows(rows)
        self.file.flush()

    def write(self, row: dict[str, object]) -> None:
        self.writer.writerow(row)
        self.file.flush()
        if self.tensorboard is not None:
            for key in ("loss", "grad_norm", "lr", "images_per_s"):
                self.tensorboard.add_scalar(f"train/{key}", row[key], row["iteration"])

    def close(self) -> None:
        self.file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


def _cached_features(model: nn.Module, dataset: Dataset, recipe: Recipe, source: DatasetSource,
                     dependency_weights: Path | None, dist_info: Distributed) -> TileFeatures | ImageFeatures:
    """The frozen part's output for every training image, on disk (``benchmarks.feature_cache``):
    tile maps (``tile_features``) or whole-image maps of the stem, named by the weights they came
    from and the training splits; the main process writes them, the others then read them."""
    if recipe.tile_features and not hasattr(model, "tile_features"):
        raise RecipeError(f"recipe {recipe.method} ({recipe.profile}): tile_features=True needs a network that defines "
                          "tile_features (the context networks); set tile_features=false")
    weights = {"weights_sha256": file_sha256(dependency_weights)} if dependency_weights is not None else \
        {"weights": "initial", "recipe": recipe.as_dict()}
    identity = {**weights, "convention": model.input_convention.name, "tiles": recipe.tile_features,
                "data": [{k: v for k, v in source.facts(split).items() if k != "root"}
                         for split in recipe.training_splits]}
    stem, _ = model.staged_split()
    model.eval()

    def compute(image: torch.Tensor) -> torch.Tensor:
        normalized = model.input_convention.normalize(image)
        return model.tile_features(normalized) if recipe.tile_features else stem(normalized)

    def build(main: bool) -> TileFeatures | ImageFeatures:
        cache = tile_feature_cache if recipe.tile_features else image_feature_cache
        return cache(compute, dataset, identity, default_cache_dir(), device=dist_info.device,
                     description=f"{recipe.method}: caching features", main=main)

    if dist_info.is_main:
        cache = build(True)
    dist_info.barrier()
    return cache if dist_info.is_main else build(False)


class TrainedPart(nn.Module):
    """What a recipe trains, as the one module the optimizer steps and DDP wraps. It maps a batch
    (uint8 images, or the frozen stem's cached outputs) and its labels to the scores the loss
    sees: the whole network's full-resolution scores; its score map, cropped to the labels
    subsampled by 8 (DeepLab, ``loss_on_score_map``); the score map of a crop of the padded image
    (fyu/dilation, ``padded_crops``); the head's scores on cached features, upsampled to the
    labels (``cached_features``); or, with ``tile_features``, the head's scores (its
    ``training_form`` where it has one) on cached tile maps, against labels of the map's size."""

    def __init__(self, model: nn.Module, recipe: Recipe, *, channels_last: bool = False) -> None:
        super().__init__()
        self.cached, self.score_map_only = recipe.cached_features, recipe.loss_on_score_map
        self.tiles = recipe.tile_features
        self.padded_crops = recipe.padded_crops
        self.channels_last = channels_last
        self.network = model.staged_split()[1] if self.cached else model
        self.final_upsample = model.final_upsample
        self.normalize = model.input_convention.normalize

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.tiles:
            scores = getattr(self.network, "training_form", self.network)(inputs)
            if scores.shape[-2:] != labels.shape[-2:]:
                raise RecipeError(f"the head maps {tuple(inputs.shape[-2:])} tile features to "
                                 f"{tuple(scores.shape[-2:])} scores, not the {tuple(labels.shape[-2:])} labels; "
                                 "set tile_features=false")
            return scores
        if self.cached:
            return self.final_upsample(self.network(inputs), labels[:, None])
        images = self.normalize(inputs)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.score_map_only:
            return self.network.score_map(images)[..., : labels.shape[-2], : labels.shape[-1]]
        if self.padded_crops:
            scores = self.network.score_map_of_padded(images)
            if scores.shape[-2:] != labels.shape[-2:]:
                raise RecipeError(f"score map {tuple(scores.shape[-2:])} of a {tuple(images.shape[-2:])} padded crop "
                                 f"does not match the {tuple(labels.shape[-2:])} labels")
            return scores
        return self.network(images)


def training_step(part: nn.Module, optimizer: torch.optim.Optimizer, inputs: torch.Tensor, labels: torch.Tensor, *,
                  recipe: Recipe, dist_info: Distributed,
                  precision: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward of the :class:`TrainedPart` ``part`` (or its DDP wrapper) in ``precision`` (default:
    the recipe's; ``precision_path``), loss and backward of one batch; returns the loss and the
    gradient norm as device tensors (no host sync). The caller steps ``optimizer``."""
    device = dist_info.device
    inputs, labels = inputs.to(device, non_blocking=True), labels.to(device, non_blocking=True)
    autocast, _ = precision_path(device, precision or recipe.precision)
    with autocast:
        loss = _loss(part(inputs, labels), labels, recipe, dist_info.world_size)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]],
                                               float("inf"))
    return loss, grad_norm


def _loss_per_pixel(loss: float, labels: torch.Tensor, recipe: Recipe, dist_info: Distributed) -> float:
    """The loss per labelled pixel (what :func:`_loss` returns, undone), averaged over the
    processes so that every process of a DDP run takes the same decision on it."""
    world_size = dist_info.world_size
    if recipe.loss == "sum":
        loss = loss / world_size / max(int((labels != IGNORE_INDEX).sum()), 1)
    if world_size == 1:
        return loss
    total = torch.tensor([loss], dtype=torch.float64, device=dist_info.device)
    dist.all_reduce(total)
    return float(total) / world_size


def train(recipe: Recipe, source: DatasetSource, run_dir: Path, seed: int, dist_info: Distributed,
          dependency_weights: Path | None = None, workers: int = 0,
          progress: Callable[[str], None] = print, sanity_gate: bool = True) -> nn.Module:
    """Train ``recipe`` (resuming from ``run_dir/checkpoint.pt`` if there) and write the final
    weights to ``run_dir/weights.pt``; returns the trained model. ``progress`` gets one line per
    log step (above the live bar on a terminal, see ``benchmarks.progress``). ``sanity_gate``:
    a run with a fresh classifier stops on a suspicious loss (``benchmarks.sanity``)."""
    device = dist_info.device
    progress = beside_bars(progress)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = build_model(recipe, dependency_weights).to(device)
    if recipe.cached_features and (recipe.init_from is None or model.staged_split() is None):
        raise RecipeError(f"recipe {recipe.method} ({recipe.profile}): cached_features=True trains a head on the "
                          "cached output of a part trained before; it needs init_from and a method trained in stages "
                          "(context_basic, context_large); set cached_features=false")
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = recipe.crop is not None  # fixed input size: autotune once
    optimizer = build_optimizer(model, recipe)
    checkpoint_path, start = run_dir / "checkpoint.pt", 0
    if checkpoint_path.is_file():
        state = load_torch(checkpoint_path, "delete it to train this run from scratch")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        if device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        start = int(state["iteration"])
        progress(f"{recipe.method}: resuming from iteration {start} ({checkpoint_path})")
    splits = [source.split(name) for name in recipe.training_splits]
    if recipe.cached_features:
        dataset = ConcatDataset([SegmentationDataset(split) for split in splits])
        cached = _cached_features(model, dataset, recipe, source, dependency_weights, dist_info)
    else:
        dataset = ConcatDataset([SegmentationDataset(split, training_transform(model, recipe)) for split in splits])
    part = TrainedPart(model, recipe, channels_last=precision_path(device, recipe.precision)[1])
    wrapped: nn.Module = part
    if dist_info.world_size > 1:
        wrapped = nn.parallel.DistributedDataParallel(part, device_ids=[device] if device.type == "cuda" else None,
                                                      find_unused_parameters=model.unused_parameters)
    sampler = _PlannedBatches(len(dataset), recipe, seed, start, dist_info.rank, dist_info.world_size)
    batches: Iterator = (
        (cached.batch(items, seed) for items in sampler) if recipe.cached_features else
        iter(DataLoader(_SeededAugmentation(dataset, seed), batch_sampler=sampler, num_workers=workers,
                        collate_fn=_stack, pin_memory=device.type == "cuda", persistent_workers=False))
    )
    log = _CsvLog(run_dir / "log.csv", start) if dist_info.is_main else None
    model.train()
    if recipe.train_only is not None:
        model.eval()
        part.train()
    gate = SanityGate(recipe.method, NUM_CLASSES, recipe.checkpoint_every,
                      enabled=sanity_gate and start == 0 and recipe.init_from is None)
    started, seen = time.perf_counter(), 0
    live = bar(recipe.method, recipe.iterations, "it", main=dist_info.is_main, initial=start)
    with deferred():  # a preemption signal is noted; the step in progress ends with a checkpoint
        try:
            for iteration, (inputs, labels) in zip(range(start, recipe.iterations), batches, strict=False):
                set_learning_rate(optimizer, recipe, iteration)
                loss, grad_norm = training_step(wrapped, optimizer, inputs, labels, recipe=recipe, dist_info=dist_info)
                seen += recipe.batch_size
                if iteration == 0 and gate.enabled:
                    gate.check_first(_loss_per_pixel(float(loss.detach()), labels, recipe, dist_info))
                last = iteration + 1 == recipe.iterations
                checkpoint_due = (iteration + 1) % recipe.checkpoint_every == 0 and not last
                if (iteration + 1) % recipe.log_every == 0 or last or checkpoint_due:  # no host sync in other steps
                    loss_value, norm_value = float(loss.detach()), float(grad_norm)
                    if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
                        raise TrainingError(
                            f"{recipe.method}: loss {loss_value} / gradient norm {norm_value} at iteration {iteration} "
                            f"(lr {learning_rate(recipe, iteration):.3g}); the run diverged. Lower the learning rate "
                            f"(--set lr=...) or check the data; the last good checkpoint is {checkpoint_path}")
                    if gate.enabled:
                        gate.check_logged(iteration + 1, _loss_per_pixel(loss_value, labels, recipe, dist_info))
                    rate = seen / (time.perf_counter() - started)
                    eta = (recipe.iterations - iteration - 1) * recipe.batch_size / max(rate, 1e-9)
                    progress(f"{recipe.method} it {iteration + 1}/{recipe.iterations} loss {loss_value:.4f} "
                             f"|g| {norm_value:.3g} {rate:.1f} img/s eta {eta:.0f}s")
                    if log is not None:
                        log.write({"iteration": iteration + 1, "loss": loss_value, "grad_norm": norm_value,
                                   "lr": learning_rate(recipe, iteration), "images_per_s": round(rate, 2),
                                   "elapsed_s": round(time.perf_counter() - started, 2)})
                optimizer.step()
                stop = _preemption_requested(dist_info)
                if dist_info.is_main and (checkpoint_due or stop):
                    save_torch(_checkpoint(model, optimizer, iteration + 1, device), checkpoint_path)
                live.update()
                if stop:
                    dist_info.barrier()
                    raise Preempted(f"{stop} at iteration {iteration + 1}/{recipe.iterations} of {recipe.method}; "
                                    f"checkpoint {checkpoint_path} written")
        finally:
            live.close()
            if log is not None:
                log.close()
    if dist_info.is_main:
        save_torch(model.state_dict(), run_dir / "weights.pt")
    dist_info.barrier()
    return model


def _checkpoint(model: nn.Module, optimizer: torch.optim.Optimizer, iteration: int,
                device: torch.device) -> dict[str, object]:
    """What a resumed run needs to continue exactly: the model, the optimiser, the CPU random
    state (dropout on the CPU) and, on CUDA, every device's random state (dropout there)."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(),
             "iteration": iteration}
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


def _preemption_requested(dist_info: Distributed) -> str | None:
    """The preemption signal this process (or, under DDP, any process) received, so that every
    process stops after the same step; an all-reduce of one number per step under DDP."""
    signal_name = requested()
    if dist_info.world_size == 1:
        return signal_name
    flag = torch.tensor([1.0 if signal_name else 0.0], device=dist_info.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return (signal_name or "a preemption signal (another process)") if float(flag) else None


def training_transform(model: nn.Module, recipe: Recipe) -> Callable:
    """The recipe's augmentation for ``model``: labels subsampled to the score map for
    ``loss_on_score_map`` and ``padded_crops`` (the latter from the model's input margin on)."""
    label_factor = model.score_stride if recipe.loss_on_score_map or recipe.padded_crops else 1
    margin = model.input_margin if recipe.padded_crops else 0
    if recipe.padded_crops and not margin:
        raise RecipeError(f"recipe {recipe.method} ({recipe.profile}): padded_crops=True needs a network that pads "
                          "its input (an input margin); set padded_crops=false")
    try:
        return train_transform(recipe.crop, recipe.scale, recipe.flip, _mean_rgb(model), label_factor, margin=margin)
    except ValueError as error:
        raise RecipeError(f"recipe {recipe.method} ({recipe.profile}): {error} (--set crop=...)") from None


def _mean_rgb(model: nn.Module) -> tuple[int, int, int]:
    convention = model.input_convention
    mean = convention.mean[::-1] if convention.channel_order == "BGR" else convention.mean
    return tuple(round(m) for m in mean)


