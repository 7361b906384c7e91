"""``python -m benchmarks run``: train and evaluate methods, resolving staged dependencies, and
write one record per (method, seed); ``NAME+crf`` reuses the trained network and adds the CRF.

A run is identified by everything that determines its weights (method, effective recipe, training
data, seed, initial weights): its folder under ``runs/`` is named by that identity's hash, so
weights and checkpoints are reused or resumed only by a run of exactly the same identity."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import methods
from benchmarks.crf.dense_crf import CRFParams, dense_crf
from benchmarks.data.datasets import DatasetSource
from benchmarks.data.voc import DataError
from benchmarks.distributed import Distributed
from benchmarks.evaluation import Evaluation, evaluate
from benchmarks.files import file_sha256
from benchmarks.networks import build_trained, run_folder, run_lock
from benchmarks.recipes import Recipe, RecipeError, apply_overrides, get_recipe
from benchmarks.records import environment, git_commit, hardware, record_path, write_record
from benchmarks.train import train
from methods.vgg import TORCHVISION_VGG16_URL, WEIGHTS_ENV_VAR

__all__ = ["RunPlan", "expand_targets", "run", "run_identity", "searched_crf", "target_record_path", "weights_path"]

CRF_SUFFIX = "+crf"


@dataclass(frozen=True, kw_only=True)
class RunPlan:
    """What one command runs: the profile's recipes (with ``overrides``, plus ``extra_recipes`` for
    new heads), which seeds, and where records and runs go."""

    profile: str
    seeds: tuple[int, ...]
    overrides: tuple[str, ...] = ()
    extra_recipes: tuple[Recipe, ...] = ()
    results: Path = Path("results")
    runs: Path = Path("runs")
    workers: int = 0
    rerun: bool = False
    crf_backend: str = "pydensecrf"  # the reference; "torch" agrees with it (tests/test_crf.py) and runs on the GPU
    eval_batch: int = 1  # images of one size scored together
    allow_overlap: bool = False  # score on images the network trained on (the record is then not comparable)

    def recipe(self, method: str) -> Recipe:
        """``method``'s recipe as this plan runs it."""
        return apply_overrides(get_recipe(method, self.profile, self.extra_recipes), list(self.overrides))


def expand_targets(names: list[str], plan: RunPlan) -> list[str]:
    """The requested targets plus every method they depend on (``init_from``), dependencies first;
    a cycle of dependencies is a RecipeError."""
    ordered: list[str] = []

    def visit(name: str, chain: tuple[str, ...] = ()) -> None:
        base = name.removesuffix(CRF_SUFFIX)
        if base in chain:
            cycle = " -> ".join((*chain, base))
            raise RecipeError(f"recipes ({plan.profile}) start from each other in a cycle: {cycle} (init_from); set "
                              "init_from of one of them to a method outside the cycle, or none")
        recipe = plan.recipe(base)
        if recipe.init_from is not None:
            visit(recipe.init_from, (*chain, base))
        if base not in ordered:
            ordered.append(base)
        if name != base and name not in ordered:
            ordered.append(name)

    for name in names:
        visit(name)
    return ordered


def _comparable(source: DatasetSource, recipe: Recipe, overrides: tuple[str, ...], overlap: int) -> tuple[bool, str]:
    if not source.comparable_to_paper:
        return False, "embedded generated dataset, not PASCAL VOC"
    if recipe.profile != "paper":
        return False, f"profile {recipe.profile!r}, not the paper recipe"
    if overrides:
        return False, f"recipe overridden ({', '.join(overrides)})"
    if overlap:
        return False, f"{overlap} evaluation images were also training images"
    if not recipe.pretrained:
        return False, "not initialised from ImageNet VGG-16"
    return True, "real VOC 2012, paper recipe, ImageNet initialisation"


def _initial_weights(plan: RunPlan, source: DatasetSource, recipe: Recipe, seed: int) -> dict[str, object]:
    if recipe.init_from is not None:
        return {"trained": recipe.init_from, "run": run_identity(plan, source, recipe.init_from, seed)["key"]}
    if not recipe.pretrained:
        return {"random": f"seed {seed}"}
    given = os.environ.get(WEIGHTS_ENV_VAR)
    if given and Path(given).is_file():
        return {"imagenet_sha256": file_sha256(Path(given))}
    return {"imagenet": TORCHVISION_VGG16_URL.rsplit("/", 1)[-1]}  # the file name carries its hash prefix


def run_identity(plan: RunPlan, source: DatasetSource, method: str, seed: int) -> dict[str, object]:
    """What determines the weights of one run, and its hash ``key`` (12 hex digits)."""
    recipe = plan.recipe(method)
    data = {k: v for k, v in source.facts(recipe.train_split).items() if k != "root"}
    details = methods.get_entry(method).details  # e.g. an mmseg head's config and package versions
    identity = {"method": method, **({"method_details": details} if details else {}), "recipe": recipe.as_dict(),
                "train_data": data, "seed": seed, "initial_weights": _initial_weights(plan, source, recipe, seed)}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    return {**identity, "key": key}


def weights_path(plan: RunPlan, source: DatasetSource, method: str, seed: int) -> Path:
    """``runs/<profile>-<dataset>/<method>/seed<k>-<identity key>/weights.pt``."""
    key = run_identity(plan, source, method, seed)["key"]
    return run_folder(plan.runs, plan.profile, source.name, method, seed, key=key) / "weights.pt"


def target_record_path(plan: RunPlan, source: DatasetSource, target: str, seed: int) -> Path:
    """The record of ``target``: ``seed<k>.json``, or ``seed<k>-<identity key>.json`` for an
    overridden recipe, so that it never replaces (or pools with) the recipe's own records."""
    key = run_identity(plan, source, target.removesuffix(CRF_SUFFIX), seed)["key"] if plan.overrides else None
    return record_path(plan.results, plan.profile, source.name, target, seed, key=key)


def _check_splits(source: DatasetSource, plan: RunPlan, targets: list[str]) -> dict[str, int]:
    """Before any training: every split the targets read is checked image by image, and the
    training and evaluation splits must not share images (unless ``plan.allow_overlap``).
    Returns the overlap per base method."""
    overlaps, checked = {}, set()
    for target in targets:
        recipe = plan.recipe(target.removesuffix(CRF_SUFFIX))
        for split in (recipe.train_split, recipe.eval_split):
            if split not in checked:
                source.split(split).check()
                checked.add(split)
        train_ids, eval_ids = source.split(recipe.train_split).ids, source.split(recipe.eval_split).ids
        shared = sorted(set(train_ids) & set(eval_ids))
        if shared and not plan.allow_overlap:
            raise DataError(f"{recipe.method} would be scored on {len(shared)} of its {len(train_ids)} training images "
                            f"({recipe.train_split} and {recipe.eval_split} share e.g. {shared[:3]}); fix the split "
                            "lists, or pass --allow-train-eval-overlap (the record is then not comparable)")
        overlaps[recipe.method] = len(shared)
    return overlaps


def run(targets: list[str], source: DatasetSource, plan: RunPlan, dist_info: Distributed,
        progress: Callable[[str], None] = print) -> dict[tuple[str, int], Path]:
    """Train what is missing and write a record for every target and seed; returns the record of
    each (target, seed), written or reused (existing records are reused, not overwritten, unless
    ``plan.rerun``; a replaced record is kept as ``.superseded``)."""
    ordered = expand_targets(targets, plan)
    overlaps = _check_splits(source, plan, ordered)
    records: dict[tuple[str, int], Path] = {}
    for seed in plan.seeds:
        for target in ordered:
            base = target.removesuffix(CRF_SUFFIX)
            weights = weights_path(plan, source, base, seed)
            scored = target in targets or (target == base and f"{base}{CRF_SUFFIX}" in targets)
            with run_lock(weights.parent, enabled=dist_info.is_main):
                path = _run_one(target, seed, source=source, plan=plan, dist_info=dist_info, progress=progress,
                                trained=not weights.is_file() or (plan.rerun and target == base and target in targets),
                                scored=scored, overlap=overlaps[base])
            if path is not None and target in targets:
                records[(target, seed)] = path
    return records


def _run_one(target: str, seed: int, *, source: DatasetSource, plan: RunPlan, dist_info: Distributed,
             progress: Callable[[str], None], trained: bool, scored: bool, overlap: int) -> Path | None:
    """Train (when ``trained``) and score (when ``scored``) one target of one seed; the record's path."""
    base = target.removesuffix(CRF_SUFFIX)
    recipe = plan.recipe(base)
    path = target_record_path(plan, source, target, seed)
    weights = weights_path(plan, source, base, seed)
    train_seconds = 0.0
    if trained:
        dependency = weights_path(plan, source, recipe.init_from, seed) if recipe.init_from else None
        started = time.perf_counter()
        train(recipe, source, weights.parent, seed, dist_info, dependency, plan.workers, progress)
        train_seconds = time.perf_counter() - started
    if not scored:
        return None  # a dependency only: trained, not scored
    weights_sha = file_sha256(weights)
    crf, crf_source = searched_crf(target_record_path(plan, source, base, seed), weights_sha, recipe) \
        if target.endswith(CRF_SUFFIX) else (None, None)
    if path.exists() and not plan.rerun:
        recorded = json.loads(path.read_text())
        if recorded.get("trained_weights_sha256") == weights_sha and recorded.get("crf") == (asdict(crf) if crf
                                                                                             else None):
            progress(f"{target} seed {seed}: record {path} exists; reusing it (--rerun to replace)")
            return path
        progress(f"{target} seed {seed}: record {path} was not produced from {weights} (missing or retrained, e.g. "
                 "the record shipped with the repository) or with other CRF parameters; scoring again, the old record "
                 "is kept as .superseded")
    model = build_trained(recipe, weights).to(dist_info.device)
    refine = (lambda image, probs, params=crf: dense_crf(image, probs, params, plan.crf_backend)) if crf else None
    started = time.perf_counter()
    result = evaluate(model, source.split(recipe.eval_split), dist_info, refine, batch_size=plan.eval_batch)
    eval_seconds = time.perf_counter() - started
    if dist_info.is_main:
        record = _record(target, recipe, source=source, plan=plan, seed=seed, result=result, crf=crf,
                         dist_info=dist_info, weights=weights, overlap=overlap,
                         wall_time={"train": round(train_seconds, 1), "evaluate": round(eval_seconds, 1)})
        if crf is not None:
            record.update(crf_source=crf_source, crf_backend=plan.crf_backend)
        write_record(path, record, result.counts, result.image_ids, overwrite=True)
        progress(f"{target} seed {seed}: mIoU {100 * result.metrics['miou']:.2f} -> {path}")
    return path


def searched_crf(base_record: Path, weights_sha256: str | None, recipe: Recipe) -> tuple[CRFParams, str]:
    """The CRF parameters of a ``+crf`` variant: those ``crf-search`` wrote into the base network's
    record when they were searched with these weights (``weights_sha256``), else the recipe's."""
    if weights_sha256 is not None and base_record.is_file():
        found = json.loads(base_record.read_text()).get("crf_search")
        if found and found["trained_weights_sha256"] == weights_sha256:
            source = f"crf-search on {found['images']} {found['split']} images ({base_record})"
            return CRFParams(**found["best"]), source
    return CRFParams.from_pairs(recipe.crf), "recipe"


def _record(target: str, recipe: Recipe, *, source: DatasetSource, plan: RunPlan, seed: int, result: Evaluation,
            crf: CRFParams | None, dist_info: Distributed, weights: Path, overlap: int,
            wall_time: dict[str, float]) -> dict[str, object]:
    comparable, reason = _comparable(source, recipe, plan.overrides, overlap)
    identity = run_identity(plan, source, recipe.method, seed)
    entry = methods.get_entry(recipe.method)
    return {
        "schema": 2,
        "method": target,
        "base_method": recipe.method,
        "paper": entry.paper,
        **({"method_details": entry.details} if entry.details else {}),
        "profile": recipe.profile,
        "dataset": source.facts(recipe.eval_split),
        "train_dataset": source.facts(recipe.train_split),
        "weights_source": "ImageNet VGG-16 (torchvision)" if recipe.pretrained else
                          "random initialisation (He normal trunk; no ImageNet weights)",
        "init_from": recipe.init_from,
        "trained_weights_sha256": file_sha256(weights),
        "run_key": identity["key"],
        "initial_weights": identity["initial_weights"],
        "train_eval_overlap": overlap,
        "recipe": recipe.as_dict(),
        "overrides": list(plan.overrides),
        "crf": asdict(crf) if crf else None,
        "seed": seed,
        "git": git_commit(),
        "environment": environment(),
        "hardware": hardware(dist_info.device, dist_info.world_size),
        "wall_time_s": wall_time,
        "metrics": result.metrics,
        "comparable_to_paper": comparable,
        "comparable_reason": reason,
    }
