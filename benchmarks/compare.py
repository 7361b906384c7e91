"""Paired comparisons: a new head against baselines over the same images (paired bootstrap of the
mIoU difference per seed)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from benchmarks.errors import UsageError
from benchmarks.stats import paired_bootstrap

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from benchmarks.data.datasets import DatasetSource
    from benchmarks.distributed import Distributed
    from benchmarks.recipes import Recipe
    from benchmarks.resolve import RunPlan

__all__ = ["compare_to_baselines", "fair_recipe", "paired_difference"]


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
    from benchmarks.recipes import recipe_methods
    from benchmarks.run import run

    if new in baselines:
        raise UsageError(f"{new} is among its own baselines ({', '.join(baselines)}); the difference would be 0 by "
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
    return [{"new": new, "baseline": baseline, "seed": seed,
             **paired_difference(records[(new, seed)], records[(baseline, seed)], resamples, seed)}
            for baseline in baselines for seed in plan.seeds]


def paired_difference(new: Path, base: Path, resamples: int = 2000, seed: int = 0) -> dict[str, float]:
    """The paired bootstrap of mIoU(new) - mIoU(base) from two records: both valid (the schema),
    of one group (``groups.identity``) and scored on the same images, else an error naming them."""
    from benchmarks.data.voc import DataError
    from benchmarks.groups import identity
    from benchmarks.records import load_counts, read_record

    first, second = read_record(new), read_record(base)
    if identity(first) != identity(second):
        raise DataError(f"{new} and {base} are of different groups (profile, data or protocol version) and are never "
                        "paired; rerun both with --rerun")
    new_ids, new_counts = load_counts(new)
    base_ids, base_counts = load_counts(base)
    if new_ids != base_ids:
        raise DataError(f"{new} and {base} scored different images; rerun both with --rerun")
    return paired_bootstrap(new_counts, base_counts, resamples, seed)
