"""DeepLab v1's dense-CRF parameter search (Chen et al., ICLR 2015, Sec 4.1; SPEC section 5):
w2 = 3 and θγ = 3 fixed; w1, θα, θβ chosen by mIoU on 100 held-out images, coarse to fine (a
grid, then a grid of half the step around the best point)."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from benchmarks.crf.dense_crf import CRFParams, TorchDenseCRF, check_inputs, dense_crf
from benchmarks.data.datasets import DatasetSource
from benchmarks.distributed import Distributed
from benchmarks.errors import UsageError
from benchmarks.evaluation import ConfusionMatrix, class_probabilities
from benchmarks.files import file_sha256
from benchmarks.limits import check_crf_cost
from benchmarks.networks import build_trained
from benchmarks.progress import bar
from benchmarks.records import update_record
from benchmarks.resolve import RunPlan, resolve_run
from benchmarks.run import run

__all__ = ["SEARCHED", "MethodSearch", "SearchResult", "candidates", "finer_grid", "search", "search_method"]

SEARCHED = ("w1", "theta_alpha", "theta_beta")
# The bar counts (point, image) refinements, shown as grid points to a tenth: the loop refines a
# chunk of the images under every point before the next chunk.
_POINTS = "{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.0f} points [{elapsed}<{remaining}, {rate_fmt}]"


@dataclass(frozen=True)
class SearchResult:
    best: CRFParams
    best_miou: float
    evaluations: list[dict[str, float]]  # every point tried, in order, with its mIoU


def candidates(grid: dict[str, Sequence[float]], fixed: CRFParams) -> list[CRFParams]:
    """Every point of ``grid`` (over ``SEARCHED``), the other parameters from ``fixed``; ordered
    so that points sharing an appearance kernel (θα, θβ) are adjacent."""
    unknown = set(grid) - set(SEARCHED)
    if unknown or not all(grid.get(name) for name in SEARCHED):
        raise UsageError(f"a CRF search grid needs values for {SEARCHED}, got {sorted(grid)}")
    return [dataclasses.replace(fixed, theta_alpha=ta, theta_beta=tb, w1=w1)
            for ta, tb, w1 in itertools.product(grid["theta_alpha"], grid["theta_beta"], grid["w1"])]


def finer_grid(grid: dict[str, Sequence[float]], best: CRFParams) -> dict[str, tuple[float, ...]]:
    """Around ``best``: half the coarse step on each side (a single coarse value stays fixed)."""
    finer = {}
    for name in SEARCHED:
        values = sorted(set(grid[name]))
        centre = getattr(best, name)
        if len(values) == 1:
            finer[name] = (centre,)
            continue
        half = min(b - a for a, b in itertools.pairwise(values)) / 2
        finer[name] = tuple(v for v in (centre - half, centre, centre + half) if v > 0)
    return finer


def _scores(images: list[torch.Tensor], probabilities: list[torch.Tensor], labels: list[np.ndarray],
            points: list[CRFParams], backend: str, chunk: int, live: tqdm) -> list[float]:
    """The mIoU of every point; ``live`` advances by one per image refined under one point."""
    matrices = [ConfusionMatrix(probabilities[0].shape[0], device=probabilities[0].device) for _ in points]
    for start in range(0, len(images), chunk):
        part = slice(start, start + chunk)
        targets = [torch.from_numpy(label).to(probabilities[0].device) for label in labels[part]]
        crf = TorchDenseCRF(images[part], probabilities[part]) if backend == "torch" else None
        for point, matrix in zip(points, matrices, strict=True):
            refined = crf.refine(point) if crf is not None else \
                [dense_crf(image, p, point, backend) for image, p in zip(images[part], probabilities[part],
                                                                            strict=True)]
            for q, target in zip(refined, targets, strict=True):
                matrix.update(q.argmax(0), target)
            live.update(len(targets))
    return [float(matrix.metrics()["miou"]) for matrix in matrices]


def search(images: list[torch.Tensor], probabilities: list[torch.Tensor], labels: list[np.ndarray],
           grid: dict[str, Sequence[float]], fixed: CRFParams | None = None, backend: str = "torch",
           chunk: int = 16, progress: Callable[[str], None] = print) -> SearchResult:
    """The coarse grid, then the finer grid around its best point; ties go to the earlier point.
    ``fixed`` supplies w2, θγ and the iterations (default: DeepLab's w2 = 3, θγ = 3, 10)."""
    fixed = fixed or CRFParams()
    probabilities = [check_inputs(image, p) for image, p in zip(images, probabilities, strict=True)]
    evaluations: list[dict[str, float]] = []
    best, best_miou = fixed, -1.0
    for stage, stage_grid in (("coarse", grid), ("fine", None)):
        points = candidates(stage_grid or finer_grid(grid, best), fixed)
        points = [p for p in points if not any(all(e[n] == getattr(p, n) for n in SEARCHED) for e in evaluations)]
        progress(f"crf-search {stage}: {len(points)} points x {len(images)} images ({backend} backend)")
        with bar(f"crf-search {stage}", len(points) * len(images), "point", unit_scale=1 / len(images),
                 bar_format=_POINTS) as live:
            scores = _scores(images, probabilities, labels, points, backend, chunk, live)
        for point, miou in zip(points, scores, strict=True):
            evaluations.append({**{n: getattr(point, n) for n in SEARCHED}, "miou": miou})
            if miou > best_miou:
                best, best_miou = point, miou
        progress(f"crf-search {stage}: best w1={best.w1:g} theta_alpha={best.theta_alpha:g} "
                 f"theta_beta={best.theta_beta:g}, mIoU {100 * best_miou:.2f}")
    return SearchResult(best, best_miou, evaluations)


@dataclass(frozen=True)
class MethodSearch:
    """One seed's search: where it was written, what it found, on how many images (and how many
    of them the network trained on)."""

    seed: int
    record: Path
    result: SearchResult
    images: int
    in_training: int


def search_method(method: str, source: DatasetSource, plan: RunPlan, dist_info: Distributed, *, split_name: str,
                  images: int, grid: dict[str, Sequence[float]], backend: str,
                  progress: Callable[[str], None] = print) -> list[MethodSearch]:
    """Train or reuse ``method`` for each seed of ``plan``, search its CRF parameters on the first
    ``images`` of ``split_name`` (``grid`` replaces the recipe's coarse grid where given) and write
    the result into its record, where ``run METHOD+crf`` finds it."""
    recipe = plan.recipe(method)
    grid = {**dict(recipe.crf_grid), **grid}
    split = source.split(split_name)
    ids = split.ids[:images]
    if len(ids) < images:
        progress(f"warning: split {split_name!r} has only {len(ids)} images (asked for {images})")
    in_training = len(set(ids) & set(source.split(recipe.train_split).ids))
    coarse = math.prod(len(values) for values in grid.values())
    check_crf_cost(recipe.crf_params().iterations, len(ids) * (coarse + 3 ** len(grid)),
                   f"crf-search ({coarse} coarse and up to {3 ** len(grid)} fine points on {len(ids)} images)",
                   dist_info.device)
    run([method], source, plan, dist_info, progress)
    found = []
    for seed in plan.seeds:
        resolved = resolve_run(plan, source, method, seed)
        weights = resolved.weights
        model = build_trained(recipe, weights).to(dist_info.device).eval()
        samples = [split[index] for index in range(len(ids))]
        images = [torch.from_numpy(s.image).permute(2, 0, 1) for s in samples]
        probabilities = [class_probabilities(model, image, dist_info.device, recipe.precision,
                                             published=recipe.published_test)
                         for image in bar(f"{method} seed {seed}: probabilities", len(images), "img", iterable=images)]
        result = search(images, probabilities, [s.label for s in samples], grid, recipe.crf_params(),
                        backend, progress=progress)
        path = resolved.record_path(method)
        update_record(path, {"crf_search": {
            "best": dataclasses.asdict(result.best), "miou": result.best_miou, "split": split_name,
            "images": len(ids), "images_in_training_split": in_training, "grid": grid, "backend": backend,
            "trained_weights_sha256": file_sha256(weights),
            "protocol": "DeepLab v1 Sec 4.1: w2, theta_gamma fixed; coarse grid, then half steps around the best",
            "evaluations": result.evaluations}})
        found.append(MethodSearch(seed, path, result, len(ids), in_training))
    return found
