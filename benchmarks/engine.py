"""The training loop and the evaluation pass: plain PyTorch, one GPU or many through ``torchrun``.

Training is deterministic in the data it sees: iteration ``i`` takes positions ``i*B .. i*B+B-1``
of a seeded per-epoch permutation, and each sample's augmentation is seeded by (seed, position).
Together with the model/optimizer/RNG state in the checkpoint, a resumed run continues exactly
where the interrupted one stopped.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import pickle
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

import methods
from benchmarks.data.datasets import DatasetSource, SegmentationDataset, ShardSampler
from benchmarks.data.transforms import train_transform
from benchmarks.data.voc import IGNORE_INDEX, NUM_CLASSES, VOCSplit
from benchmarks.evaluation import ConfusionMatrix
from benchmarks.progress import bar, beside_bars
from benchmarks.recipes import Recipe, RecipeError

__all__ = ["Distributed", "TrainingError", "evaluate", "load_weights", "save_atomic", "train"]


class TrainingError(RuntimeError):
    """A run that cannot go on (NaN loss, exploding gradients, a damaged checkpoint or weights file);
    the message says what to change."""


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


def save_atomic(obj: object, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, temporary)
    os.replace(temporary, path)


def _load(path: Path, fix: str) -> dict[str, object]:
    """``torch.load`` of a file the harness saved; one cut short (a full disk, a copy interrupted)
    fails in many ways inside torch, each a :class:`TrainingError` naming the file and ``fix``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, KeyError, OSError, pickle.UnpicklingError) as error:
        raise TrainingError(f"{path} is truncated or damaged (torch.load: {type(error).__name__}); {fix}") from None


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"weights {path} do not exist; run the method that produces them first")
    return _load(path, "delete it and run the method again to retrain it (from checkpoint.pt beside it, if there)")


def build_model(recipe: Recipe, dependency_weights: Path | None = None) -> nn.Module:
    """The registered method at the recipe's width, initialised from ImageNet or, for a staged
    recipe, from the trained weights of ``recipe.init_from`` (every tensor of the same name and
    shape; the others keep their paper initialisation)."""
    model = methods.create(recipe.method, NUM_CLASSES, width=recipe.width, pretrained=recipe.pretrained)
    if recipe.init_from is not None:
        if dependency_weights is None:
            raise ValueError(f"recipe {recipe.method} starts from {recipe.init_from}: pass its trained weights")
        state, target = load_weights(dependency_weights), model.state_dict()
        taken = {k: v for k, v in state.items() if k in target and target[k].shape == v.shape}
        if not taken:
            raise ValueError(f"{dependency_weights} shares no tensor with {recipe.method}")
        model.load_state_dict(taken, strict=False)
        model.weights_source = f"{model.weights_source}; then {len(taken)} tensors from trained {recipe.init_from}"
    if recipe.dropout is not None:
        for module in model.modules():
            if isinstance(module, nn.modules.dropout._DropoutNd):
                module.p = recipe.dropout
    return model


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
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}; use sgd or adam")


def learning_rate(recipe: Recipe, iteration: int) -> float:
    if recipe.schedule == "fixed":
        return recipe.lr
    if recipe.schedule == "step":
        return recipe.lr * recipe.gamma ** (iteration // recipe.step_size)
    if recipe.schedule == "poly":
        return recipe.lr * (1 - iteration / recipe.iterations) ** recipe.poly_power
    raise ValueError(f"unknown schedule {recipe.schedule!r}; use fixed, step or poly")


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
    def __init__(self, dataset: SegmentationDataset, seed: int) -> None:
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
        raise ValueError(f"images of one batch differ in size ({sorted(shapes)[:3]}); set a crop in the recipe "
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


def _frozen_features(model: nn.Module, dataset: SegmentationDataset, dist_info: Distributed,
                     convention: Callable[[torch.Tensor], torch.Tensor],
                     description: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The frozen stem's output of every training image (computed once, kept in memory)."""
    stem, _ = model.staged_split()
    device = dist_info.device
    cached = []
    model.eval()
    with torch.inference_mode():
        for index in bar(description, len(dataset), "img", main=dist_info.is_main, iterable=range(len(dataset))):
            image, label, _ = dataset[index]
            features = stem(convention(image[None].to(device)))
            cached.append((features[0].float().cpu(), label))
    return cached


def fast_path(device: torch.device, enabled: bool | None = None) -> tuple[contextlib.AbstractContextManager, bool]:
    """``(bf16 autocast context, use channels_last)``: on by default on CUDA only; ``enabled``
    forces it (the tests run the CUDA path's arithmetic on the CPU this way)."""
    enabled = device.type == "cuda" if enabled is None else enabled
    return (torch.autocast(device.type, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()), enabled


def training_step(model: nn.Module, train_module: nn.Module, optimizer: torch.optim.Optimizer, inputs: torch.Tensor,
                  labels: torch.Tensor, recipe: Recipe, dist_info: Distributed,
                  fast: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward (``fast_path``: bf16 autocast and channels_last on CUDA), loss and backward of one
    batch; returns the loss and the gradient norm as device tensors (no host sync). The caller
    steps ``optimizer``. ``inputs`` are uint8 images, or cached stem outputs when
    ``recipe.cached_features``."""
    device = dist_info.device
    inputs, labels = inputs.to(device, non_blocking=True), labels.to(device, non_blocking=True)
    autocast, channels_last = fast_path(device, fast)
    with autocast:
        if recipe.cached_features:
            scores = model.final_upsample(train_module(inputs), labels[:, None])
        else:
            images = model.input_convention.normalize(inputs)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            scores = train_module(images)
            if recipe.loss_on_score_map:
                scores = scores[..., : labels.shape[-2], : labels.shape[-1]]
        loss = _loss(scores, labels, recipe, dist_info.world_size)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]],
                                               float("inf"))
    return loss, grad_norm


def train(recipe: Recipe, source: DatasetSource, run_dir: Path, seed: int, dist_info: Distributed,
          dependency_weights: Path | None = None, workers: int = 0,
          progress: Callable[[str], None] = print) -> nn.Module:
    """Train ``recipe`` (resuming from ``run_dir/checkpoint.pt`` if there) and write the final
    weights to ``run_dir/weights.pt``; returns the trained model. ``progress`` gets one line per
    log step (above the live bar on a terminal, see ``benchmarks.progress``)."""
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
        state = _load(checkpoint_path, "delete it to train this run from scratch")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        start = int(state["iteration"])
        progress(f"{recipe.method}: resuming from iteration {start} ({checkpoint_path})")
    convention = model.input_convention.normalize
    dataset = SegmentationDataset(source.split(recipe.train_split), train_transform(
        recipe.crop, recipe.scale, recipe.flip, _mean_rgb(model), 8 if recipe.loss_on_score_map else 1))
    train_module: nn.Module = _ScoreMap(model) if recipe.loss_on_score_map else model
    if recipe.cached_features:
        cached = _frozen_features(model, SegmentationDataset(dataset.split), dist_info, convention,
                                  f"{recipe.method}: caching features")
        train_module = model.staged_split()[1]
    wrapped = train_module
    if dist_info.world_size > 1:
        wrapped = nn.parallel.DistributedDataParallel(train_module, device_ids=[device] if device.type == "cuda"
                                                      else None)
    sampler = _PlannedBatches(len(dataset), recipe, seed, start, dist_info.rank, dist_info.world_size)
    batches: Iterator = (
        ((torch.stack([cached[i][0] for i, _ in items]), torch.stack([cached[i][1] for i, _ in items]))
         for items in sampler) if recipe.cached_features else
        iter(DataLoader(_SeededAugmentation(dataset, seed), batch_sampler=sampler, num_workers=workers,
                        collate_fn=_stack, pin_memory=device.type == "cuda", persistent_workers=False))
    )
    log = _CsvLog(run_dir / "log.csv", start) if dist_info.is_main else None
    model.train()
    if recipe.train_only is not None:
        model.eval()
        train_module.train()
    started, seen = time.perf_counter(), 0
    live = bar(recipe.method, recipe.iterations, "it", main=dist_info.is_main, initial=start)
    try:
        for iteration, (inputs, labels) in zip(range(start, recipe.iterations), batches, strict=False):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(recipe, iteration) * group["lr_scale"]
            loss, grad_norm = training_step(model, wrapped, optimizer, inputs, labels, recipe, dist_info)
            seen += recipe.batch_size
            last = iteration + 1 == recipe.iterations
            checkpoint_due = (iteration + 1) % recipe.checkpoint_every == 0 and not last
            if (iteration + 1) % recipe.log_every == 0 or last or checkpoint_due:  # no host sync in other steps
                loss_value, norm_value = float(loss.detach()), float(grad_norm)
                if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
                    raise TrainingError(
                        f"{recipe.method}: loss {loss_value} / gradient norm {norm_value} at iteration {iteration} "
                        f"(lr {learning_rate(recipe, iteration):.3g}); the run diverged. Lower the learning rate "
                        f"(--set lr=...) or check the data; the last good checkpoint is {checkpoint_path}")
                rate = seen / (time.perf_counter() - started)
                eta = (recipe.iterations - iteration - 1) * recipe.batch_size / max(rate, 1e-9)
                progress(f"{recipe.method} it {iteration + 1}/{recipe.iterations} loss {loss_value:.4f} "
                         f"|g| {norm_value:.3g} {rate:.1f} img/s eta {eta:.0f}s")
                if log is not None:
                    log.write({"iteration": iteration + 1, "loss": loss_value, "grad_norm": norm_value,
                               "lr": learning_rate(recipe, iteration), "images_per_s": round(rate, 2),
                               "elapsed_s": round(time.perf_counter() - started, 2)})
            optimizer.step()
            if dist_info.is_main and checkpoint_due:
                save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "rng": torch.get_rng_state(), "iteration": iteration + 1}, checkpoint_path)
            live.update()
    finally:
        live.close()
        if log is not None:
            log.close()
    if dist_info.is_main:
        save_atomic(model.state_dict(), run_dir / "weights.pt")
    dist_info.barrier()
    return model


class _ScoreMap(nn.Module):
    """The model's stride-``score_stride`` scores as ``forward``, so DDP wraps the call that trains."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.score_map(x)


def _mean_rgb(model: nn.Module) -> tuple[int, int, int]:
    convention = model.input_convention
    mean = convention.mean[::-1] if convention.channel_order == "BGR" else convention.mean
    return tuple(round(m) for m in mean)


@dataclass
class Evaluation:
    """Metrics of one pass, and per image the counts a paired bootstrap needs:
    ``counts[i] = (intersection, ground truth, prediction)`` per class."""

    metrics: dict[str, object]
    image_ids: list[str]
    counts: np.ndarray  # images x 3 x classes, int64
    confusion: np.ndarray


def class_probabilities(model: nn.Module, images: torch.Tensor, device: torch.device,
                        fast: bool | None = None) -> torch.Tensor:
    """The softmax (float32) of ``model`` on uint8 ``images``: ``3 x H x W`` -> ``C x H x W``, or a
    batch ``N x 3 x H x W`` -> ``N x C x H x W``; ``fast_path`` (bf16, channels_last) on CUDA."""
    batch = images if images.ndim == 4 else images[None]
    autocast, channels_last = fast_path(device, fast)
    with torch.inference_mode(), autocast:
        inputs = model.input_convention.normalize(batch.to(device, non_blocking=True))
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        probabilities = torch.softmax(model(inputs).float(), dim=1)
    return probabilities if images.ndim == 4 else probabilities[0]


def _image_counts(prediction: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """``3 x C`` (intersection, ground truth, prediction) pixel counts of one image, on the device
    and without a host sync (ignored pixels go to an extra bin that is dropped)."""
    valid = label != IGNORE_INDEX
    bins = NUM_CLASSES + 1

    def count(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return torch.bincount(torch.where(keep, values, NUM_CLASSES).flatten(), minlength=bins)[:NUM_CLASSES]

    return torch.stack([count(label, valid & (prediction == label)), count(label, valid), count(prediction, valid)])


def evaluate(model: nn.Module, split: VOCSplit, dist_info: Distributed,
             refine: Callable[[np.ndarray, torch.Tensor], torch.Tensor] | None = None,
             progress: Callable[[str], None] = print, batch_size: int = 1) -> Evaluation:
    """Score ``split`` at full resolution, each image once (sharded under DDP). ``refine(image,
    probabilities)`` post-processes the softmax (the dense CRF) before the argmax. Images of the
    same size go through the network ``batch_size`` at a time; counts stay on the device until
    the end. On a terminal, a bar counts this process's images."""
    device = dist_info.device
    model.eval()
    confusion = ConfusionMatrix(NUM_CLASSES, device=device)
    dataset = SegmentationDataset(split)
    ids, counts = [], []
    buckets: dict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor, str]]] = {}
    shard = ShardSampler(len(dataset), dist_info.rank, dist_info.world_size)
    shard_of = f" (shard 1 of {dist_info.world_size})" if dist_info.world_size > 1 else ""
    live = bar(f"scoring {split.split}{shard_of}", len(shard), "img", main=dist_info.is_main)

    def score(bucket: list[tuple[torch.Tensor, torch.Tensor, str]]) -> None:
        probabilities = class_probabilities(model, torch.stack([image for image, _, _ in bucket]), device)
        for (image, label, image_id), probs in zip(bucket, probabilities, strict=True):
            if refine is not None:
                probs = refine(image.permute(1, 2, 0).numpy(), probs)
            prediction = probs.argmax(0)
            label = label.to(device, non_blocking=True)
            confusion.update(prediction, label, image_id)
            ids.append(image_id)
            counts.append(_image_counts(prediction, label))
        live.update(len(bucket))

    with live:
        for index in shard:
            sample = dataset[index]
            bucket = buckets.setdefault(tuple(sample[0].shape), [])
            bucket.append(sample)
            if len(bucket) == batch_size:
                score(buckets.pop(tuple(sample[0].shape)))
        for bucket in buckets.values():
            score(bucket)
    position = {image_id: i for i, image_id in enumerate(split.ids)}
    host_counts = torch.stack(counts).cpu().numpy() if counts else []
    pairs = sorted(zip(ids, host_counts, strict=True), key=lambda p: position[p[0]])
    confusion.all_reduce()
    if dist_info.world_size > 1:
        gathered: list[list] = [[] for _ in range(dist_info.world_size)]
        dist.all_gather_object(gathered, pairs)
        pairs = sorted((p for part in gathered for p in part), key=lambda p: position[p[0]])
    ids, counts = [p[0] for p in pairs], [p[1] for p in pairs]
    confusion.check_complete(split.ids)
    return Evaluation(confusion.metrics(), ids, np.stack(counts), confusion.matrix.cpu().numpy())
