"""Paired comparisons: a new head against baselines over the same images (paired bootstrap of the
mIoU difference), and the papers' qualitative claims over seeds (t interval)."""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import TYPE_CHECKING

import numpy as np

from benchmarks.evaluation import iou_from_counts

if TYPE_CHECKING:
    from collections.abc import Callable

    from benchmarks.data.datasets import DatasetSource
    from benchmarks.distributed import Distributed
    from benchmarks.recipes import Recipe
    from benchmarks.run import RunPlan

__all__ = ["compare_to_baselines", "fair_recipe", "miou_from_counts", "paired_bootstrap", "seed_interval"]


def miou_from_counts(summed: np.ndarray) -> np.ndarray:
    """mIoU of summed per-image counts ``(..., 3, C)`` = (intersection, ground truth, prediction),
    the evaluator's own formula."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample without any labelled pixel: NaN
        return np.nanmean(iou_from_counts(summed), axis=-1)


def paired_bootstrap(new: np.ndarray, base: np.ndarray, resamples: int = 2000, seed: int = 0,
                     chunk: int = 250) -> dict[str, float]:
    """mIoU(new) − mIoU(base) on the same images (``images x 3 x C`` counts each) and its 95%
    percentile interval, resampling images with replacement (paired: one draw for both)."""
    if new.shape != base.shape:
        raise ValueError(f"counts cover different images: {new.shape} vs {base.shape}")
    rng = np.random.default_rng(seed)
    images = new.shape[0]
    differences = []
    for start in range(0, resamples, chunk):
        draws = rng.integers(0, images, size=(min(chunk, resamples - start), images))
        differences.append(miou_from_counts(new[draws].sum(1)) - miou_from_counts(base[draws].sum(1)))
    samples = np.concatenate(differences)
    low, high = np.percentile(samples, [2.5, 97.5])
    return {"difference": float(miou_from_counts(new.sum(0)) - miou_from_counts(base.sum(0))),
            "low": float(low), "high": float(high), "resamples": resamples, "images": images}


_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def seed_interval(differences: list[float]) -> dict[str, float | int | None]:
    """Mean of per-seed paired differences and its 95% Student-t interval (needs >= 2 seeds)."""
    n = len(differences)
    mean = float(np.mean(differences)) if n else math.nan
    if n < 2:
        return {"mean": mean, "low": None, "high": None, "seeds": n}
    half = _T975.get(n - 1, 1.96) * float(np.std(differences, ddof=1)) / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "seeds": n}


def fair_recipe(new: str, baselines: list[str], profile: str, recipe_from: str | None = None) -> tuple[Recipe, str]:
    """The recipe of a new head without its own, and a line saying why: the recipe of the baseline
    whose trunk (its ``init_from`` run's, or its own parameters) shares the most tensors with
    ``new`` (the first on a tie; ``recipe_from`` alone if given), staged the same way when the new
    head can be (every tensor outside its head comes from that ``init_from`` run), so that both
    see the same images in the same stages; otherwise end to end."""
    from benchmarks.networks import parameter_shapes, staged_head_prefix
    from benchmarks.recipes import get_recipe, recipe_for_new_head

    wanted = parameter_shapes(new)

    def shared_with(method: str) -> int:
        shapes = parameter_shapes(method)
        return sum(shapes.get(name) == shape for name, shape in wanted.items())

    candidates = [recipe_from] if recipe_from else baselines
    shared = {name: shared_with(get_recipe(name, profile).init_from or name) for name in candidates}
    base = get_recipe(max(candidates, key=shared.__getitem__), profile)
    head = staged_head_prefix(new) if base.train_only is not None else None
    staged = base.init_from is not None and shared[base.method] > 0
    if staged and base.train_only is not None:
        stem = parameter_shapes(base.init_from)
        staged = head is not None and all(stem.get(name) == shape for name, shape in wanted.items()
                                          if not name.startswith(head))
    recipe = recipe_for_new_head(new, base, staged=staged, head=head)
    how = (f"staged like it: from the trained {base.init_from} run, "
           f"{f'only {head} trained' if recipe.train_only else 'all trained'}"
           f"{' on cached features' if recipe.cached_features else ''}") if staged else "trained end to end"
    chose = "chosen by --recipe-from" if recipe_from else f"its trunk shares the most tensors with {new}"
    return recipe, (f"{new}: the {base.method} recipe ({chose}: {shared[base.method]} tensors), {how}; "
                    "--recipe-from NAME picks another")


def compare_to_baselines(new: str, baselines: list[str], source: DatasetSource, plan: RunPlan,
                         dist_info: Distributed, *, recipe_from: str | None = None,
                         resamples: int = 2000, progress: Callable[[str], None] = print) -> list[dict[str, object]]:
    """Train or reuse the registered head ``new`` (with its own recipe, else :func:`fair_recipe`)
    and each baseline, then the paired bootstrap of the mIoU difference over the same images, per
    baseline and seed."""
    from benchmarks.data.voc import DataError
    from benchmarks.recipes import recipe_methods
    from benchmarks.records import load_counts
    from benchmarks.run import run

    if new in baselines:
        raise ValueError(f"{new} is among its own baselines ({', '.join(baselines)}); the difference would be 0 by "
                         "construction: compare it with other methods")
    if new not in recipe_methods():
        recipe, why = fair_recipe(new, baselines, plan.profile, recipe_from)
        plan = dataclasses.replace(plan, extra_recipes=(*plan.extra_recipes, recipe))
        if dist_info.is_main:
            effective = plan.recipe(new)
            progress(f"{why} ({effective.iterations} iterations x {effective.batch_size} images)")
    records = run([new, *baselines], source, plan, dist_info)
    if not dist_info.is_main:  # under torchrun the main process writes the records and compares them
        return []
    rows = []
    for baseline in baselines:
        for seed in plan.seeds:
            new_ids, new_counts = load_counts(records[(new, seed)])
            base_ids, base_counts = load_counts(records[(baseline, seed)])
            if new_ids != base_ids:
                raise DataError(f"{records[(new, seed)]} and the {baseline} record scored different images; rerun "
                                "both with --rerun")
            rows.append({"new": new, "baseline": baseline, "seed": seed,
                         **paired_bootstrap(new_counts, base_counts, resamples, seed)})
    return rows
