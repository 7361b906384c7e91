"""Networks from recipes, and trained networks on disk: building a method as a recipe says,
where a run keeps its weights (and the lock that keeps a second process out), loading them back,
and the recipe a record states."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

import methods
from benchmarks.data.voc import NUM_CLASSES
from benchmarks.errors import RecipeError, WeightsError
from benchmarks.files import check_finite, load_torch, process_alive, under
from benchmarks.recipes import Recipe
from methods.errors import SegreproError

__all__ = ["RunLocked", "architecture_recipe", "build_model", "build_trained", "load_weights", "parameter_shapes",
           "run_folder", "run_lock", "staged_head_prefix"]


class RunLocked(SegreproError, RuntimeError):
    """Another live process is running the same run (same folder)."""


def run_folder(runs: Path, profile: str, dataset: str, method: str, seed: int, *, key: str) -> Path:
    """``runs/<profile>-<dataset>/<method>/seed<k>-<key>``: checkpoints, log and ``weights.pt`` of
    the run whose identity hashes to ``key``."""
    return under(runs, f"{profile}-{dataset}", method, f"seed{seed}-{key}")


@contextlib.contextmanager
def run_lock(folder: Path, *, enabled: bool = True) -> Iterator[None]:
    """Hold ``folder/.lock`` (created exclusively) while a run trains or scores in ``folder``; a
    lock left by a dead process of this host is taken over. Raises :class:`RunLocked` naming the
    holder when a live process has it."""
    if not enabled:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / ".lock"
    holder = {"pid": os.getpid(), "host": socket.gethostname(),
              "since": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    for _ in range(2):
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                held = json.loads(lock.read_text())
            except (OSError, ValueError):
                held = {}
            stale = held.get("host") == holder["host"] and isinstance(held.get("pid"), int)
            if stale and not process_alive(held["pid"]):
                lock.unlink(missing_ok=True)  # left by a process that died
                continue
            raise RunLocked(f"{folder} is held by pid {held.get('pid', '?')} on {held.get('host', '?')} since "
                            f"{held.get('since', '?')} (the same run, started twice); wait for it, or delete {lock} "
                            "if that process is gone") from None
        with os.fdopen(descriptor, "w") as file:
            json.dump(holder, file)
        break
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict the harness saved (``weights_only``); a missing or damaged file is a clear error."""
    if not path.is_file():
        raise FileNotFoundError(f"weights {path} do not exist; run the method that produces them first")
    state = load_torch(path, "delete it and run the method again to retrain it (from checkpoint.pt beside it, "
                             "if there)")
    check_finite(state, path)
    return state


def build_model(recipe: Recipe, dependency_weights: Path | None = None) -> nn.Module:
    """The registered method at the recipe's width, initialised from ImageNet or, for a staged
    recipe, from the trained weights of ``recipe.init_from`` (every tensor of the same name and
    shape; the others keep their paper initialisation)."""
    model = methods.create(recipe.architecture, NUM_CLASSES, width=recipe.width, pretrained=recipe.pretrained,
                           **dict(recipe.builder_options))
    if recipe.init_from is not None:
        if dependency_weights is None:
            raise RecipeError(f"recipe {recipe.method} starts from {recipe.init_from}: pass its trained weights")
        state, target = load_weights(dependency_weights), model.state_dict()
        taken = {k: v for k, v in state.items() if k in target and target[k].shape == v.shape}
        if not taken:
            raise WeightsError(f"{dependency_weights} shares no tensor with {recipe.method}")
        model.load_state_dict(taken, strict=False)
        model.weights_source = f"{model.weights_source}; then {len(taken)} tensors from trained {recipe.init_from}"
    if recipe.dropout is not None:
        for module in model.modules():
            if isinstance(module, nn.modules.dropout._DropoutNd):
                module.p = recipe.dropout
    return model


def parameter_shapes(method: str) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every parameter of ``method`` at width 1 (built on the ``meta`` device)."""
    with torch.device("meta"):
        model = methods.create(method, NUM_CLASSES)
    return {name: tuple(parameter.shape) for name, parameter in model.named_parameters()}


def staged_head_prefix(method: str) -> str | None:
    """The parameter-name prefix of the head that ``method``'s ``staged_split`` trains (``"head."``),
    or ``None`` when the method has no staged split."""
    with torch.device("meta"):
        model = methods.create(method, NUM_CLASSES)
    split = model.staged_split()
    if split is None:
        return None
    return next(f"{name}." for name, module in model.named_modules() if module is split[1])


def architecture_recipe(recipe: Recipe) -> Recipe:
    """The architecture alone (weights come from the trained run), without ImageNet download."""
    return dataclasses.replace(recipe, pretrained=False, init_from=None)


def build_trained(recipe: Recipe, weights: Path) -> nn.Module:
    """``recipe``'s architecture holding the trained ``weights`` (loaded with ``weights_only``)."""
    model = build_model(architecture_recipe(recipe))
    model.load_state_dict(load_weights(weights))
    if recipe.pretrained == "caffe":  # trained from Caffe weights: the Caffe input convention
        model.input_convention = model.paper_input_convention
    return model
