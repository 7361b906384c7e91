"""The training loop: plain PyTorch, one GPU or many through ``torchrun``.

``train`` reads top to bottom: build the network, let the recipe's training mode
(``benchmarks.training_mode``) say what trains and where its batches come from (``benchmarks.batches``:
deterministic order and augmentation), build the optimiser (``benchmarks.optimizer``), resume, then
step, log and checkpoint. Together with the model/optimizer/RNG state in the checkpoint, a resumed
run continues exactly where the interrupted one stopped.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from benchmarks.data.datasets import DatasetSource
from benchmarks.data.voc import IGNORE_INDEX, NUM_CLASSES
from benchmarks.distributed import Distributed, precision_path
from benchmarks.files import load_torch, save_torch
from benchmarks.networks import build_model
from benchmarks.optimizer import build_optimizer, learning_rate, set_learning_rate
from benchmarks.preemption import Preempted, deferred, requested
from benchmarks.progress import bar, beside_bars
from benchmarks.recipes import Recipe
from benchmarks.sanity import SanityGate
from benchmarks.training_mode import TrainedPart, TrainingData
from methods.errors import MethodError, SegreproError

__all__ = ["TrainingError", "train", "training_step"]


class TrainingError(SegreproError, RuntimeError):
    """A run that cannot go on (NaN loss, exploding gradients); the message says what to change."""


def _loss(scores: torch.Tensor, labels: torch.Tensor, recipe: Recipe, world_size: int) -> torch.Tensor:
    """Summed over pixels, or the mean over the valid pixels of the whole global batch. Under DDP
    (which averages gradients over processes) each process scales its part so the gradient is
    the one of the single-process loss on the same global batch."""
    if scores.ndim != 4 or scores.shape[1] != NUM_CLASSES or scores.shape[2:] != labels.shape[1:]:
        raise MethodError(f"{recipe.method}: the network gave scores of shape {tuple(scores.shape)} for labels of "
                          f"shape {tuple(labels.shape)}; it must give (batch, {NUM_CLASSES}, height, width) on the "
                          "labels' grid (the SegmentationModel contract)")
    total = F.cross_entropy(scores.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")
    if recipe.loss == "sum":
        return total * world_size
    valid = (labels != IGNORE_INDEX).sum()
    if world_size > 1:
        dist.all_reduce(valid)
    return total * world_size / valid.clamp(min=1)


class _TrainingLog:
    """What a run reports at each logged step: a progress line, ``log.csv`` (main process; kept up
    to the resume point when resuming), mirrored to TensorBoard when ``tensorboard`` is installed;
    it also runs the sanity gate and stops a diverged run (every process decides alike)."""

    FIELDS = ("iteration", "loss", "grad_norm", "lr", "images_per_s", "elapsed_s")

    def __init__(self, path: Path, resume_from: int, recipe: Recipe, dist_info: Distributed,
                 progress: Callable[[str], None], gate: SanityGate) -> None:
        self.recipe, self.dist_info, self.progress, self.gate = recipe, dist_info, progress, gate
        self.file = self.tensorboard = None
        if dist_info.is_main:
            self._open(path, resume_from)
        self.started, self.seen = time.perf_counter(), 0

    def _open(self, path: Path, resume_from: int) -> None:
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

    def step(self, iteration: int, loss: torch.Tensor, grad_norm: torch.Tensor, labels: torch.Tensor,
             checkpoint_path: Path) -> None:
        """After the backward pass of ``iteration``; reads the loss on the host only at a logged step."""
        recipe, dist_info = self.recipe, self.dist_info
        self.seen += recipe.batch_size
        if iteration == 0 and self.gate.enabled:
            self.gate.check_first(_loss_per_pixel(float(loss.detach()), labels, recipe, dist_info))
        last = iteration + 1 == recipe.iterations
        checkpoint_due = (iteration + 1) % recipe.checkpoint_every == 0 and not last
        if not ((iteration + 1) % recipe.log_every == 0 or last or checkpoint_due):  # no host sync in other steps
            return
        loss_value, norm_value = float(loss.detach()), float(grad_norm)
        if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
            raise TrainingError(
                f"{recipe.method}: loss {loss_value} / gradient norm {norm_value} at iteration {iteration} "
                f"(lr {learning_rate(recipe, iteration):.3g}); the run diverged. Lower the learning rate "
                f"(--set lr=...) or check the data; the last good checkpoint is {checkpoint_path}")
        if self.gate.enabled:
            self.gate.check_logged(iteration + 1, _loss_per_pixel(loss_value, labels, recipe, dist_info))
        rate = self.seen / (time.perf_counter() - self.started)
        eta = (recipe.iterations - iteration - 1) * recipe.batch_size / max(rate, 1e-9)
        self.progress(f"{recipe.method} it {iteration + 1}/{recipe.iterations} loss {loss_value:.4f} "
                      f"|g| {norm_value:.3g} {rate:.1f} img/s eta {eta:.0f}s")
        if self.file is not None:
            self._write({"iteration": iteration + 1, "loss": loss_value, "grad_norm": norm_value,
                         "lr": learning_rate(recipe, iteration), "images_per_s": round(rate, 2),
                         "elapsed_s": round(time.perf_counter() - self.started, 2)})

    def _write(self, row: dict[str, object]) -> None:
        self.writer.writerow(row)
        self.file.flush()
        if self.tensorboard is not None:
            for key in ("loss", "grad_norm", "lr", "images_per_s"):
                self.tensorboard.add_scalar(f"train/{key}", row[key], row["iteration"])

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


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
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = recipe.crop is not None  # fixed input size: autotune once
    part = TrainedPart(model, recipe, channels_last=precision_path(device, recipe.precision)[1])
    optimizer = build_optimizer(model, recipe)
    checkpoint_path = run_dir / "checkpoint.pt"
    start = _resume(checkpoint_path, model, optimizer, device, lambda line: progress(f"{recipe.method}: {line}"))
    batches = part.mode.batches(model, TrainingData(source, seed, dist_info, workers, dependency_weights), start)
    wrapped: nn.Module = part
    if dist_info.world_size > 1:
        wrapped = nn.parallel.DistributedDataParallel(part, device_ids=[device] if device.type == "cuda" else None,
                                                      find_unused_parameters=model.unused_parameters)
    part.mode.enter_training(model, part)
    gate = SanityGate(recipe.method, NUM_CLASSES, recipe.checkpoint_every,
                      enabled=sanity_gate and start == 0 and recipe.init_from is None)
    log = _TrainingLog(run_dir / "log.csv", start, recipe, dist_info, progress, gate)
    live = bar(recipe.method, recipe.iterations, "it", main=dist_info.is_main, initial=start)
    with deferred():  # a preemption signal is noted; the step in progress ends with a checkpoint
        try:
            for iteration, (inputs, labels) in zip(range(start, recipe.iterations), batches, strict=False):
                set_learning_rate(optimizer, recipe, iteration)
                loss, grad_norm = training_step(wrapped, optimizer, inputs, labels, recipe=recipe, dist_info=dist_info)
                log.step(iteration, loss, grad_norm, labels, checkpoint_path)
                optimizer.step()
                _checkpoint_when_due(model, optimizer, iteration, recipe, dist_info, checkpoint_path)
                live.update()
        finally:
            live.close()
            log.close()
    if dist_info.is_main:
        save_torch(model.state_dict(), run_dir / "weights.pt")
    dist_info.barrier()
    return model


def _resume(checkpoint_path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
            progress: Callable[[str], None]) -> int:
    """The iteration to start from: 0, or the checkpoint's, with model, optimiser and random state restored."""
    if not checkpoint_path.is_file():
        return 0
    state = load_torch(checkpoint_path, "delete it to train this run from scratch")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"])
    if device.type == "cuda" and "cuda_rng" in state:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    progress(f"resuming from iteration {int(state['iteration'])} ({checkpoint_path})")
    return int(state["iteration"])


def _checkpoint_when_due(model: nn.Module, optimizer: torch.optim.Optimizer, iteration: int, recipe: Recipe,
                         dist_info: Distributed, checkpoint_path: Path) -> None:
    """After the step of ``iteration``: a checkpoint every ``checkpoint_every`` iterations (not after
    the last), or at once on a preemption signal, which then stops the run (:class:`Preempted`)."""
    checkpoint_due = (iteration + 1) % recipe.checkpoint_every == 0 and iteration + 1 != recipe.iterations
    stop = _preemption_requested(dist_info)
    if dist_info.is_main and (checkpoint_due or stop):
        save_torch(_checkpoint(model, optimizer, iteration + 1, dist_info.device), checkpoint_path)
    if stop:
        dist_info.barrier()
        raise Preempted(f"{stop} at iteration {iteration + 1}/{recipe.iterations} of {recipe.method}; "
                        f"checkpoint {checkpoint_path} written")


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
