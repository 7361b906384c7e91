"""``run ... --plan``: every stage a command would run, in order, with what it needs, resolved once
before any training: method, recipe source, iterations, batch, crop, initial weights (file and
sha256, or the download), data splits with image counts, training FLOPs (``bench``'s arithmetic,
on the ``meta`` device), checkpoint and cache disk, and what is missing. ``run`` checks the same
list before the first training step, with each training stage's memory and time estimate
(:mod:`benchmarks.limits`), and stops with one line per missing input or exceeded limit."""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import torch

from benchmarks.bench.methods import recipe_image_flops, recipe_step_bytes, recipe_step_flops
from benchmarks.crf.crf_rnn import TEST_ITERATIONS, TRAIN_ITERATIONS
from benchmarks.data.datasets import DatasetSource
from benchmarks.data.embedded import default_cache_dir
from benchmarks.data.voc import DataError
from benchmarks.limits import crf_flops, step_memory_problem, time_problem, training_time_problem
from benchmarks.networks import build_model
from benchmarks.recipes import Recipe
from benchmarks.training_mode import training_mode
from methods.errors import SegreproError, described
from methods.registry import from_this_package
from methods.vgg import TORCHVISION_VGG16_URL, WEIGHTS_ENV_VAR

__all__ = ["PlanIncomplete", "Stage", "check_plan", "plan_stages"]


class PlanIncomplete(DataError):
    """Inputs a command needs are missing; one line each (``str`` joins them with newlines)."""


T = TypeVar("T")


@dataclass
class Stage:
    """One target of the command as ``run`` would take it."""

    target: str
    method: str
    action: str  # "train and score", "train (dependency)", "score", ... and "reuse" when the weights exist
    recipe_source: str
    iterations: int
    batch: int
    crop: int | None
    init: str
    splits: dict[str, int | None]  # split -> image count (None: missing)
    tflop_per_step: float | None
    pflop_total: float | None
    disk_bytes: dict[str, int]
    missing: list[str] = field(default_factory=list)
    step_memory_bytes: dict[str, int] = field(default_factory=dict)  # of a stage that trains (benchmarks.limits)
    post_processing_pflop: float | None = None  # a +crf or +crfrnn stage's CRF (and CRF-RNN training)


def _init(recipe: Recipe, caffe_init_sha256) -> tuple[str, str | None]:
    """What the stage starts from, and why it cannot (missing), given ``caffe_init_sha256(method)``."""
    if recipe.init_from is not None:
        return f"trained {recipe.init_from} (an earlier stage)", None
    if not recipe.pretrained:
        return "random (He normal trunk)", None
    if recipe.pretrained == "caffe":
        try:
            path, sha256 = caffe_init_sha256(recipe.architecture)
        except FileNotFoundError as error:
            return "Caffe init model (missing)", str(error)
        return f"{path} sha256 {sha256}", None
    given = os.environ.get(WEIGHTS_ENV_VAR)
    if given:
        if not Path(given).is_file():
            return f"${WEIGHTS_ENV_VAR}={given} (missing)", f"${WEIGHTS_ENV_VAR} names {given}, which is not a file"
        return f"{given} (${WEIGHTS_ENV_VAR})", None
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(TORCHVISION_VGG16_URL).name
    return (f"{cached} (torchvision VGG-16, cached)", None) if cached.is_file() else \
        (f"download {TORCHVISION_VGG16_URL} into {cached.parent}", None)


def _training_disk_bytes(recipe: Recipe, images: int) -> dict[str, int]:
    """Disk of a stage that trains: its weights and one checkpoint (the state and the optimiser's
    moments of what trains), float32, and the caches its training mode fills for ``images``."""
    with torch.device("meta"):
        model = build_model(dataclasses.replace(recipe, pretrained=False, init_from=None))
    mode = training_mode(recipe, model)
    state = sum(t.numel() for t in model.state_dict().values()) * 4
    trained = sum(p.numel() for name, p in model.named_parameters() if mode.trains(name)) * 4
    moments = 2 if recipe.optimizer == "adam" else 1
    return {"weights_and_checkpoint": 2 * state + moments * trained,
            **{cache: size * images for cache, size in mode.cache_bytes_per_image(model).items()}}


def _post_processing_flops(target: str, recipe: Recipe, scored_images: int) -> float:
    """A lower bound on the FLOPs of a ``+crf`` stage (the recipe's dense CRF on each scored image)
    or a ``+crfrnn`` one (each CRF-RNN training step: the network's forward on one image and the
    mean-field iterations forward and backward; then the test iterations on each scored image)."""
    if not target.endswith("+crfrnn"):
        return crf_flops(recipe.crf_params().iterations, scored_images)
    step = recipe_image_flops(recipe) + 3 * crf_flops(TRAIN_ITERATIONS, 1)
    return recipe.crfrnn_iterations * step + crf_flops(TEST_ITERATIONS, scored_images)


def _estimated(recipe: Recipe, count: Callable[[Recipe], T]) -> T | None:
    """``count(recipe)``, a FLOP or memory count made on torch's ``meta`` device; or None, with one
    NOTE line, when the model of a user's method cannot run there (it reads a value of its tensors:
    ``.item()``, ``.numpy()``, which a meta tensor does not hold) and so goes without the estimate
    and its limit. This package's own models all run there: a failure of theirs keeps its traceback."""
    try:
        return count(recipe)
    except Exception as error:
        if isinstance(error, SegreproError) or from_this_package(recipe.architecture):
            raise
        print(f"NOTE: {recipe.method}: memory and time not estimated, its model does not run on torch's meta "
              f"device ({described(error)})", file=sys.stderr)
        return None


def plan_stages(ordered: list[str], targets: list[str], source: DatasetSource, recipes, caffe_init_sha256,
                existing_weights, world_size: int = 1) -> list[Stage]:
    """The stages of ``ordered`` (``expand_targets``; ``targets`` are those scored), each with its
    ``recipes(method)``; ``existing_weights(method)`` says whether its weights are there already."""
    stages, counted = [], {}
    for target in ordered:
        method = target.split("+")[0]
        recipe = recipes(method)
        missing: list[str] = []
        splits: dict[str, int | None] = {}
        for split in (*recipe.training_splits, recipe.eval_split):
            if split not in counted:
                try:
                    counted[split] = (len(source.split(split)), None)
                except DataError as error:
                    counted[split] = (None, str(error))
            splits[split], problem = counted[split]
            if problem and problem not in missing:
                missing.append(problem)
        init, problem = _init(recipe, caffe_init_sha256)
        if problem:
            missing.append(problem)
        trains = target == method and not existing_weights(method)
        if trains and world_size > 1 and recipe.batch_size < world_size:
            missing.append(f"{method}: batch {recipe.batch_size} cannot be split over {world_size} processes (each "
                           f"needs at least one image); run it in one process, or with --nproc_per_node <= "
                           f"{recipe.batch_size}, or --set batch_size=N with N >= {world_size}")
        step = _estimated(recipe, recipe_step_flops) if target == method else None
        disk = _training_disk_bytes(recipe, sum(splits[s] or 0 for s in recipe.training_splits)) \
            if step is not None else {}
        scored = target in targets or any(t.split("+")[0] == method for t in targets)
        action = ("train and score" if scored else "train (dependency)") if trains else \
            "reuse trained weights, score" if scored else "reuse trained weights"
        if target != method:
            action = f"score {target[len(method):]}" + (" (trains a CRF-RNN)" if target.endswith("+crfrnn") else "")
        post = None if target == method else \
            _estimated(recipe, lambda r, t=target, n=splits[recipe.eval_split] or 0: _post_processing_flops(t, r, n))
        stages.append(Stage(target, method, action, recipe.source, recipe.iterations, recipe.batch_size, recipe.crop,
                            init, splits, step / 1e12 if step is not None else None,
                            step * recipe.iterations / 1e15 if step is not None and trains else None, disk, missing,
                            recipe_step_bytes(recipe) if step is not None and trains else {},
                            post / 1e15 if post is not None else None))
    return stages


def check_plan(stages: list[Stage], runs: Path, device: torch.device) -> None:
    """Stop (:class:`PlanIncomplete`, one line per missing input) when a stage lacks an input, the
    disk cannot hold the checkpoints and caches, or a stage that trains needs more memory or time
    on ``device`` than it can have (:mod:`benchmarks.limits`)."""
    lines = list(dict.fromkeys(line for stage in stages for line in stage.missing))
    for stage in stages:
        if stage.pflop_total is not None:
            lines += [problem for problem in (step_memory_problem(stage.method, stage.step_memory_bytes, device),
                                              training_time_problem(stage.method, stage.pflop_total * 1e15,
                                                                    stage.iterations, device)) if problem]
        if stage.post_processing_pflop is not None:
            crfrnn = stage.target.endswith("+crfrnn")
            what = "CRF-RNN training steps and mean-field iterations" if crfrnn else "dense-CRF mean-field iterations"
            fix = "lower crfrnn_iterations (--set crfrnn_iterations=N)" if crfrnn else \
                "lower the CRF's iterations (--set crf=iterations:N; the papers use 10)"
            problem = time_problem(f"{stage.target}: its {what}", stage.post_processing_pflop * 1e15, device, fix)
            lines += [problem] if problem else []
    needed = {"runs": sum(s.disk_bytes.get("weights_and_checkpoint", 0) for s in stages if s.pflop_total is not None),
              "cache": sum(s.disk_bytes.get(k, 0) for s in stages if s.pflop_total is not None
                           for k in ("tile_feature_cache", "image_feature_cache"))}
    for what, folder in (("runs", runs), ("cache", default_cache_dir())):
        existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if existing is not None and needed[what] > (free := shutil.disk_usage(existing).free):
            lines.append(f"the {what} folder {folder} needs {needed[what] / 1e9:.1f} GB for this command, "
                         f"{free / 1e9:.1f} GB are free; free space or point it at a larger disk")
    if lines:
        raise PlanIncomplete("\n".join(lines))
