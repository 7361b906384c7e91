"""``python -m benchmarks run``: train and evaluate methods, resolving staged dependencies, and
write one record per (method, seed); ``NAME+crf`` reuses the trained network and adds the CRF."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from benchmarks.crf import CRFParams, dense_crf
from benchmarks.data import DatasetSource, split_checksum
from benchmarks.engine import Distributed, Evaluation, build_model, evaluate, load_weights, train
from benchmarks.recipes import Recipe, RecipeError, apply_overrides, get_recipe
from benchmarks.records import git_commit, hardware, record_path, write_record

__all__ = ["RunPlan", "expand_targets", "run", "searched_crf", "weights_path"]

CRF_SUFFIX = "+crf"


@dataclass(frozen=True)
class RunPlan:
    profile: str
    seeds: tuple[int, ...]
    overrides: tuple[str, ...] = ()
    results: Path = Path("results")
    runs: Path = Path("runs")
    workers: int = 0
    rerun: bool = False
    crf_backend: str = "pydensecrf"  # the reference; "torch" agrees with it (tests/test_crf.py) and runs on the GPU
    eval_batch: int = 1  # images of one size scored together


def expand_targets(names: list[str], profile: str, overrides: tuple[str, ...] = ()) -> list[str]:
    """The requested targets plus every method they depend on (``init_from``), dependencies first;
    a cycle of dependencies is a RecipeError."""
    ordered: list[str] = []

    def visit(name: str, chain: tuple[str, ...] = ()) -> None:
        base = name.removesuffix(CRF_SUFFIX)
        if base in chain:
            raise RecipeError(f"recipes ({profile}) start from each other in a cycle: {' -> '.join((*chain, base))} "
                              "(init_from); set init_from of one of them to a method outside the cycle, or none")
        recipe = apply_overrides(get_recipe(base, profile), list(overrides))
        if recipe.init_from is not None:
            visit(recipe.init_from, (*chain, base))
        if base not in ordered:
            ordered.append(base)
        if name != base and name not in ordered:
            ordered.append(name)

    for name in names:
        visit(name)
    return ordered


def _dataset_facts(source: DatasetSource, split_name: str) -> dict[str, object]:
    split = source.split(split_name)
    return {"name": source.name, "split": split_name, "images": len(split), "list_sha256": split_checksum(split),
            "root": str(source.root)}


def _comparable(source: DatasetSource, recipe: Recipe, overrides: tuple[str, ...], pretrained_ok: bool) -> tuple[
        bool, str]:
    if not source.comparable_to_paper:
        return False, "embedded generated dataset, not PASCAL VOC"
    if recipe.profile != "paper":
        return False, f"profile {recipe.profile!r}, not the paper recipe"
    if overrides:
        return False, f"recipe overridden ({', '.join(overrides)})"
    if not pretrained_ok:
        return False, "not initialised from ImageNet VGG-16"
    return True, "real VOC 2012, paper recipe, ImageNet initialisation"


def run(targets: list[str], source: DatasetSource, plan: RunPlan, dist_info: Distributed,
        progress: Callable[[str], None] = print) -> list[Path]:
    """Train what is missing and write a record for every target and seed; returns the records
    written (existing records are reused, not overwritten, unless ``plan.rerun``)."""
    written = []
    for seed in plan.seeds:
        for target in expand_targets(targets, plan.profile, plan.overrides):
            base = target.removesuffix(CRF_SUFFIX)
            recipe = apply_overrides(get_recipe(base, plan.profile), list(plan.overrides))
            path = record_path(plan.results, plan.profile, source.name, target, seed)
            weights = weights_path(plan, source, base, seed)
            weights_sha = file_sha256(weights) if weights.is_file() else None
            supersede = plan.rerun
            crf, crf_source = searched_crf(record_path(plan.results, plan.profile, source.name, base, seed),
                                           weights_sha, recipe) if target.endswith(CRF_SUFFIX) else (None, None)
            if path.exists() and not plan.rerun and target in targets:
                recorded = json.loads(path.read_text())
                if weights_sha is not None and recorded.get("trained_weights_sha256") == weights_sha and \
                        recorded.get("crf") == (asdict(crf) if crf else None):
                    progress(f"{target} seed {seed}: record {path} exists; reusing it (--rerun to replace)")
                    continue
                progress(f"{target} seed {seed}: record {path} was not produced from {weights} (missing or "
                         "retrained, e.g. the record shipped with the repository) or with other CRF parameters; "
                         "scoring again, the old record is kept as .json.superseded")
                supersede = True
            train_seconds = 0.0
            if not weights.is_file() or (plan.rerun and target == base and target in targets):
                dependency = None
                if recipe.init_from is not None:
                    dependency = weights_path(plan, source, recipe.init_from, seed)
                started = time.perf_counter()
                train(recipe, source, weights.parent, seed, dist_info, dependency, plan.workers, progress)
                train_seconds = time.perf_counter() - started
            if target not in targets and not (target == base and f"{base}{CRF_SUFFIX}" in targets):
                continue  # a dependency only: trained, not scored
            if path.exists() and not supersede:
                continue
            model = build_model(architecture_recipe(recipe))
            model.load_state_dict(load_weights(weights))
            model.to(dist_info.device)
            refine = (lambda image, probs, params=crf: dense_crf(image, probs, params, plan.crf_backend)) \
                if crf else None
            started = time.perf_counter()
            result = evaluate(model, source.split(recipe.eval_split), dist_info, refine, progress, plan.eval_batch)
            eval_seconds = time.perf_counter() - started
            if dist_info.is_main:
                record = _record(target, recipe, source, plan, seed, result, model, crf, dist_info, weights,
                                 {"train": round(train_seconds, 1), "evaluate": round(eval_seconds, 1)})
                if crf is not None:
                    record.update(crf_source=crf_source, crf_backend=plan.crf_backend)
                write_record(path, record, result.counts, result.image_ids, overwrite=supersede)
                written.append(path)
                progress(f"{target} seed {seed}: mIoU {100 * result.metrics['miou']:.2f} -> {path}")
    return written


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_path(plan: RunPlan, source: DatasetSource, method: str, seed: int) -> Path:
    """``runs/<profile>-<dataset>/<method>/seed<k>/weights.pt``: the trained network of one run."""
    return plan.runs / f"{plan.profile}-{source.name}" / method / f"seed{seed}" / "weights.pt"


def searched_crf(base_record: Path, weights_sha256: str | None, recipe: Recipe) -> tuple[CRFParams, str]:
    """The CRF parameters of a ``+crf`` variant: those ``crf-search`` wrote into the base network's
    record when they were searched with these weights (``weights_sha256``), else the recipe's."""
    if weights_sha256 is not None and base_record.is_file():
        found = json.loads(base_record.read_text()).get("crf_search")
        if found and found["trained_weights_sha256"] == weights_sha256:
            source = f"crf-search on {found['images']} {found['split']} images ({base_record})"
            return CRFParams(**found["best"]), source
    return CRFParams.from_pairs(recipe.crf), "recipe"


def architecture_recipe(recipe: Recipe) -> Recipe:
    """The architecture alone (weights come from the trained run), without ImageNet download."""
    from dataclasses import replace

    return replace(recipe, pretrained=False, init_from=None)


def _record(target: str, recipe: Recipe, source: DatasetSource, plan: RunPlan, seed: int, result: Evaluation,
            model: torch.nn.Module, crf: CRFParams | None, dist_info: Distributed, weights: Path,
            wall_time: dict[str, float]) -> dict[str, object]:
    comparable, reason = _comparable(source, recipe, plan.overrides, recipe.pretrained)
    return {
        "schema": 1,
        "method": target,
        "base_method": recipe.method,
        "paper": model.paper,
        "profile": recipe.profile,
        "dataset": _dataset_facts(source, recipe.eval_split),
        "train_dataset": _dataset_facts(source, recipe.train_split),
        "weights_source": "ImageNet VGG-16 (torchvision)" if recipe.pretrained else
                          "random initialisation (He normal trunk; no ImageNet weights)",
        "init_from": recipe.init_from,
        "trained_weights_sha256": file_sha256(weights),
        "recipe": recipe.as_dict(),
        "overrides": list(plan.overrides),
        "crf": asdict(crf) if crf else None,
        "seed": seed,
        "git": git_commit(),
        "hardware": hardware(dist_info.device, dist_info.world_size),
        "wall_time_s": wall_time,
        "metrics": result.metrics,
        "comparable_to_paper": comparable,
        "comparable_reason": reason,
    }
