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
    from benchmarks.data.datasets import DatasetSource
    from benchmarks.distributed import Distributed
    from benchmarks.run import RunPlan

__all__ = ["compare_to_baselines", "miou_from_counts", "paired_bootstrap", "seed_interval"]


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


def compare_to_baselines(new: str, baselines: list[str], source: DatasetSource, plan: RunPlan,
                         dist_info: Distributed, *, recipe_from: str | None = None,
                         resamples: int = 2000) -> list[dict[str, object]]:
    """Train or reuse the registered head ``new`` (with the recipe of ``recipe_from``, default the
    first baseline, unless it has its own) and each baseline, then the paired bootstrap of the
    mIoU difference over the same images, per baseline and seed."""
    from benchmarks.data.voc import DataError
    from benchmarks.recipes import get_recipe, recipe_for_new_head, recipe_methods
    from benchmarks.records import load_counts
    from benchmarks.run import run

    if new in baselines:
        raise ValueError(f"{new} is among its own baselines ({', '.join(baselines)}); the difference would be 0 by "
                         "construction: compare it with other methods")
    if new not in recipe_methods():
        base = get_recipe(recipe_from or baselines[0], plan.profile)
        plan = dataclasses.replace(plan, extra_recipes=(*plan.extra_recipes, recipe_for_new_head(new, base)))
    records = run([new, *baselines], source, plan, dist_info)
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
