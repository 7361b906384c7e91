"""``python -m benchmarks run``: train and evaluate methods, resolving staged dependencies, and
write one record per (method, seed); ``NAME+crf`` reuses the trained network and adds the CRF,
``NAME+crfrnn`` trains a CRF-RNN on top of the frozen network and scores with it.

A run is identified by everything that determines its weights (method, effective recipe, training
data, seed, initial weights): its folder under ``runs/`` is named by that identity's hash, so
weights and checkpoints are reused or resumed only by a run of exactly the same identity."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import methods
from benchmarks.crf.dense_crf import CRFParams, dense_crf
from benchmarks.crfrnn_stage import crfrnn_refine, crfrnn_training, trained_crfrnn
from benchmarks.data.coco import COCO_SPLIT
from benchmarks.data.datasets import DatasetSource
from benchmarks.data.voc import DataError
from benchmarks.distributed import Distributed, effective_precision
from benchmarks.evaluation import Evaluation, evaluate
from benchmarks.files import file_sha256, write_bytes_atomic
from benchmarks.limits import check_crf_cost
from benchmarks.networks import build_trained, run_folder, run_lock
from benchmarks.plan import Stage, check_plan, plan_stages
from benchmarks.recipes import (
    CRF_STAGE_METHODS,
    MAIN_COMMAND_CRFRNN,
    MAIN_COMMAND_METHODS,
    Recipe,
    RecipeError,
    apply_overrides,
    get_recipe,
)
from benchmarks.records import TORCHVISION_WEIGHTS, new_record, read_record, record_path, write_record
from benchmarks.train import train
from methods.vgg import TORCHVISION_VGG16_URL, WEIGHTS_ENV_VAR

__all__ = ["CRFRNN_SUFFIX", "CRF_SUFFIX", "RunPlan", "base_method", "caffe_init_file", "command_plan", "expand_targets",
           "main_command_targets", "run", "run_identity", "searched_crf", "target_record_path", "weights_path"]

CRF_SUFFIX = "+crf"
CRFRNN_SUFFIX = "+crfrnn"


def main_command_targets() -> list[str]:
    """What ``run --all`` runs: ``MAIN_COMMAND_METHODS``, the ``+crf`` variant of each that has one,
    and the ``+crfrnn`` variants of ``MAIN_COMMAND_CRFRNN``."""
    return [*MAIN_COMMAND_METHODS, *(f"{m}{CRF_SUFFIX}" for m in CRF_STAGE_METHODS if m in MAIN_COMMAND_METHODS),
            *(f"{m}{CRFRNN_SUFFIX}" for m in MAIN_COMMAND_CRFRNN)]


def base_method(target: str) -> str:
    """The network a target scores: ``NAME`` of ``NAME``, ``NAME+crf`` and ``NAME+crfrnn``."""
    for suffix in (CRF_SUFFIX, CRFRNN_SUFFIX):
        if target.endswith(suffix):
            return target.removesuffix(suffix)
    return target


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
    sanity_gate: bool = True  # stop a run whose loss is suspicious (benchmarks.sanity)

    def recipe(self, method: str) -> Recipe:
        """``method``'s recipe as this plan runs it."""
        return apply_overrides(get_recipe(method, self.profile, self.extra_recipes), list(self.overrides))


def expand_targets(names: list[str], plan: RunPlan) -> list[str]:
    """The requested targets plus every method they depend on (``init_from``), dependencies first;
    a cycle of dependencies is a RecipeError."""
    ordered: list[str] = []

    def visit(name: str, chain: tuple[str, ...] = ()) -> None:
        base = base_method(name)
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
    if recipe.pretrained == "caffe":
        path, sha256 = _caffe_init_sha256(recipe.architecture)
        return {"caffe_init": path.name, "sha256": sha256}
    given = os.environ.get(WEIGHTS_ENV_VAR)
    if given and Path(given).is_file():
        return {"imagenet_sha256": file_sha256(Path(given))}
    return {"imagenet": TORCHVISION_VGG16_URL.rsplit("/", 1)[-1]}  # the file name carries its hash prefix


def caffe_init_file(method: str) -> Path:
    """The Caffe init model file of ``method`` (``pretrained="caffe"``); missing is a one-line error."""
    init = methods.get_entry(method).caffe_init
    path = init.path() if init is not None else None
    if path is None or not path.is_file():
        where = f"set ${init.env_var} to the path of {init.file_name} (README, 'Caffe weights')" if init else \
            "the method names no Caffe init model; use pretrained=torchvision"
        raise FileNotFoundError(f"{method}: pretrained=caffe needs its Caffe init model "
                                f"({'not found: ' + str(path) if path else 'not configured'}); {where}")
    return path


@functools.cache
def _init_sha256(path: Path, modified_ns: int, size: int) -> str:
    """The sha256 of an init model (hundreds of MB), once per file version: every run identity names it."""
    return file_sha256(path)


def _caffe_init_sha256(method: str) -> tuple[Path, str]:
    path = caffe_init_file(method)
    stat = path.stat()
    return path, _init_sha256(path.resolve(), stat.st_mtime_ns, stat.st_size)


def _weights_source(recipe: Recipe) -> str:
    if recipe.pretrained == "caffe":
        path, sha256 = _caffe_init_sha256(recipe.architecture)
        return f"{methods.get_entry(recipe.architecture).caffe_init.description}, {path.name} sha256 {sha256}"
    if recipe.pretrained:
        return TORCHVISION_WEIGHTS
    return "random initialisation (He normal trunk; no ImageNet weights)"


def run_identity(plan: RunPlan, source: DatasetSource, method: str, seed: int) -> dict[str, object]:
    """What determines the weights of one run, and its hash ``key`` (12 hex digits)."""
    recipe = plan.recipe(method)
    data = [{k: v for k, v in source.facts(split).items() if k != "root"} for split in recipe.training_splits]
    # The CRF-RNN stage's fields, the dense CRF's normalisation and the test procedure do not change the
    # network's weights; builder options and tile_features enter only when a recipe sets them; fp32 is what
    # every run before the precision field did on the CPU. Leaving them out keeps existing runs' keys.
    trained = {k: v for k, v in recipe.as_dict().items()
               if not k.startswith(("crfrnn_", "crf_normalisation")) and k != "published_test"
               and not (k in ("builder_options", "tile_features") and not v)
               and not (k == "precision" and v == "fp32")}
    details = methods.get_entry(recipe.architecture).details  # e.g. an mmseg head's config and package versions
    identity = {"method": method, **({"method_details": details} if details else {}), "recipe": trained,
                "train_data": data, "seed": seed, "initial_weights": _initial_weights(plan, source, recipe, seed)}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    return {**identity, "key": key}


def resolved_run(plan: RunPlan, source: DatasetSource, method: str, seed: int) -> dict[str, object]:
    """One run resolved once: its identity (:func:`run_identity`: the recipe fields that make the
    weights, the training data, seed, initial weights and the ``key`` of its folder), the data it
    trains on and where its starting weights come from. ``run.json`` beside the weights states it
    with their sha256, and every record of the run states the same facts."""
    recipe = plan.recipe(method)
    return {**run_identity(plan, source, method, seed), "profile": recipe.profile, "dataset": source.name,
            "train_dataset": source.facts(recipe.train_split),
            "extra_train_dataset": source.facts(recipe.extra_train_split) if recipe.extra_train_split else None,
            "weights_source": _weights_source(recipe), "init_from": recipe.init_from}


def _run_facts(plan: RunPlan, source: DatasetSource, method: str, seed: int, weights: Path) -> dict[str, object]:
    """:func:`resolved_run` with the sha256 of ``weights``, as ``run.json`` beside them states it;
    written (atomically) when missing or when it no longer says so (new weights, older code)."""
    facts = {**resolved_run(plan, source, method, seed), "weights_sha256": file_sha256(weights)}
    path = weights.parent / "run.json"
    text = json.dumps(facts, indent=1, sort_keys=True)
    if not path.is_file() or path.read_text() != text:
        write_bytes_atomic(path, text.encode())
    return facts


def weights_path(plan: RunPlan, source: DatasetSource, method: str, seed: int) -> Path:
    """``runs/<profile>-<dataset>/<method>/seed<k>-<identity key>/weights.pt``."""
    key = run_identity(plan, source, method, seed)["key"]
    return run_folder(plan.runs, plan.profile, source.name, method, seed, key=key) / "weights.pt"


def target_record_path(plan: RunPlan, source: DatasetSource, target: str, seed: int) -> Path:
    """The record of ``target``: ``seed<k>.json``, or ``seed<k>-<identity key>.json`` for an
    overridden recipe, so that it never replaces (or pools with) the recipe's own records."""
    key = run_identity(plan, source, base_method(target), seed)["key"] if plan.overrides else None
    return record_path(plan.results, plan.profile, source.name, target, seed, key=key)


HEAVY_MOMENTUM = 0.99
"""fcn.berkeleyvision.org's ``solver.prototxt`` (momentum 0.99, batch 1, unnormalised loss: the
"heavy" models of its README), against the paper's momentum 0.9 and batch 20 (FCN Sec 4.3)."""


def conditions(plan: RunPlan, method: str) -> dict[str, object]:
    """The training conditions a reference set may require (``check``): ``coco_pretraining``, whether
    ``method`` or a method it starts from (``init_from``) trained on the ``coco`` split (Yu & Koltun
    Sec 5); ``heavy_momentum_solver``, whether ``method`` trained with SGD at momentum >=
    :data:`HEAVY_MOMENTUM` (FCN's repository set grades those runs, its CVPR Table 2 set the others)."""
    recipe, chain = plan.recipe(method), []
    while True:
        chain.append(recipe)
        if recipe.init_from is None:
            break
        recipe = plan.recipe(recipe.init_from)
    return {"coco_pretraining": any(r.extra_train_split == COCO_SPLIT for r in chain),
            "heavy_momentum_solver": chain[0].optimizer == "sgd" and chain[0].momentum >= HEAVY_MOMENTUM}


def _check_splits(source: DatasetSource, plan: RunPlan, targets: list[str]) -> dict[str, int]:
    """Before any training: every split the targets read is checked image by image, and the
    training and evaluation splits must not share images (unless ``plan.allow_overlap``).
    Returns the overlap per base method."""
    overlaps, checked = {}, set()
    for target in targets:
        recipe = plan.recipe(base_method(target))
        for split in (*recipe.training_splits, recipe.eval_split):
            if split not in checked:
                source.split(split).check()
                checked.add(split)
        train_ids = [i for split in recipe.training_splits for i in source.split(split).ids]
        eval_ids = source.split(recipe.eval_split).ids
        shared = sorted(set(train_ids) & set(eval_ids))
        if shared and not plan.allow_overlap:
            splits = "+".join(recipe.training_splits)
            raise DataError(f"{recipe.method} would be scored on {len(shared)} of its {len(train_ids)} training images "
                            f"({splits} and {recipe.eval_split} share e.g. {shared[:3]}); fix the split "
                            "lists, or pass --allow-train-eval-overlap (the record is then not comparable)")
        overlaps[recipe.method] = len(shared)
    return overlaps


def command_plan(targets: list[str], source: DatasetSource, plan: RunPlan, world_size: int = 1) -> list[Stage]:
    """Every stage ``run(targets, ...)`` would take, in order, with what it needs (``benchmarks.plan``)."""
    def trained_for_every_seed(method: str) -> bool:
        try:
            return all(weights_path(plan, source, method, seed).is_file() for seed in plan.seeds)
        except DataError:  # a training split is missing (its run has no identity yet): the plan names it
            return False

    return plan_stages(expand_targets(targets, plan), targets, source, plan.recipe, _caffe_init_sha256,
                       trained_for_every_seed, world_size)


def run(targets: list[str], source: DatasetSource, plan: RunPlan, dist_info: Distributed,
        progress: Callable[[str], None] = print, stage: str | None = None) -> dict[tuple[str, int], Path]:
    """Train what is missing and write a record for every target and seed; returns the record of
    each (target, seed), written or reused (existing records are reused, not overwritten, unless
    ``plan.rerun``; a replaced record is kept as ``.superseded``). Before anything trains, every
    stage's inputs are checked (``benchmarks.plan``): a missing one stops the command. ``stage``:
    only that stage of the command (a node of ``benchmarks.launch``'s graph), its inputs checked."""
    ordered = expand_targets(targets, plan)
    if stage is not None and stage not in ordered:
        raise RecipeError(f"--stage {stage} is not a stage of this command; its stages: {', '.join(ordered)}")
    check_plan(command_plan([stage] if stage else targets, source, plan, dist_info.world_size), plan.runs,
               dist_info.device)
    overlaps = _check_splits(source, plan, [stage] if stage else ordered)
    for method in dict.fromkeys(base_method(target) for target in ordered):
        recipe = plan.recipe(method)
        init = methods.get_entry(recipe.architecture).caffe_init
        if recipe.profile == "paper" and recipe.pretrained is True and init is not None:
            progress(f"NOTE: {method} starts from torchvision's VGG-16; the paper used {init.description} "
                     f"(set ${init.env_var} to {init.file_name})")
    records: dict[tuple[str, int], Path] = {}
    for seed in plan.seeds:
        for target in [stage] if stage else ordered:
            base = base_method(target)
            weights = weights_path(plan, source, base, seed)
            scored = target in targets or (target == base and any(f"{base}{suffix}" in targets
                                                                  for suffix in (CRF_SUFFIX, CRFRNN_SUFFIX)))
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
    base = base_method(target)
    recipe = plan.recipe(base)
    path = target_record_path(plan, source, target, seed)
    weights = weights_path(plan, source, base, seed)
    train_seconds = 0.0
    if trained:
        dependency = weights_path(plan, source, recipe.init_from, seed) if recipe.init_from else None
        started = time.perf_counter()
        train(recipe, source, weights.parent, seed, dist_info, dependency, plan.workers, progress,
              sanity_gate=plan.sanity_gate)
        train_seconds = time.perf_counter() - started
    facts = _run_facts(plan, source, base, seed, weights)
    if not scored:
        return None  # a dependency only: trained, not scored
    weights_sha = facts["weights_sha256"]
    crf, crf_source = searched_crf(target_record_path(plan, source, base, seed), weights_sha, recipe) \
        if target != base else (None, None)
    crfrnn = crfrnn_training(recipe, crf, weights_sha, seed) if target.endswith(CRFRNN_SUFFIX) else None
    if crf is not None:
        check_crf_cost(crf.iterations, len(source.split(recipe.eval_split)), f"CRF of {crf_source}", dist_info.device)
    if crfrnn is not None:
        check_crf_cost(crfrnn["mean_field_iterations"]["train"], crfrnn["iterations"],
                       f"CRF-RNN training (crfrnn_iterations={crfrnn['iterations']})", dist_info.device)
    if path.exists() and not plan.rerun:
        recorded = json.loads(path.read_text())
        if recorded.get("trained_weights_sha256") == weights_sha and recorded.get("crf") == (asdict(crf) if crf
                                                                                             else None) \
                and (recorded.get("crfrnn") or {}).get("key") == (crfrnn or {}).get("key") \
                and (recorded.get("recipe") or {}).get("published_test", False) == recipe.published_test:
            progress(f"{target} seed {seed}: record {path} exists; reusing it (--rerun to replace)")
            return path
        progress(f"{target} seed {seed}: record {path} was not produced from {weights} (missing or retrained, e.g. "
                 "the record shipped with the repository), with other CRF parameters or another test procedure; "
                 "scoring again, the old record is kept as .superseded")
    model = build_trained(recipe, weights).to(dist_info.device)
    refine = (lambda image, probs, params=crf: dense_crf(image, probs, params, plan.crf_backend)) if crf else None
    if crfrnn is not None:
        module, measured = trained_crfrnn(model, source.split(recipe.train_split), crfrnn, weights.parent,
                                          dist_info.device, progress)
        crfrnn = {**crfrnn, **measured}
        refine = crfrnn_refine(module)
    started = time.perf_counter()
    result = evaluate(model, source.split(recipe.eval_split), dist_info, refine, batch_size=plan.eval_batch,
                      published=recipe.published_test, precision=recipe.precision)
    eval_seconds = time.perf_counter() - started
    if dist_info.is_main:
        record = _record(target, recipe, facts, source=source, plan=plan, seed=seed, result=result, crf=crf,
                         dist_info=dist_info, overlap=overlap,
                         wall_time={"train": round(train_seconds, 1), "evaluate": round(eval_seconds, 1)})
        if crf is not None:
            record.update(crf_source=crf_source, crf_backend="torch (CRF-RNN)" if crfrnn else plan.crf_backend)
        if crfrnn is not None:
            record.update(crfrnn=crfrnn)
        write_record(path, record, result.counts, result.image_ids, overwrite=True)
        progress(f"{target} seed {seed}: mIoU {100 * result.metrics['miou']:.2f} -> {path}")
    return path


def searched_crf(base_record: Path, weights_sha256: str | None, recipe: Recipe) -> tuple[CRFParams, str]:
    """The CRF parameters of a ``+crf`` variant: those ``crf-search`` wrote into the base network's
    record when they were searched with these weights (``weights_sha256``) and the recipe's kernel
    normalisation, else the recipe's. (Searches recorded before the normalisation was a parameter
    used pydensecrf's symmetric one.)"""
    wanted = recipe.crf_params()
    if weights_sha256 is not None and base_record.is_file():
        found = read_record(base_record).get("crf_search")
        if found and found["trained_weights_sha256"] == weights_sha256:
            searched = CRFParams(**{"normalisation": "symmetric", **found["best"]})
            if searched.normalisation == wanted.normalisation:
                return searched, f"crf-search on {found['images']} {found['split']} images ({base_record})"
    return wanted, "recipe"


def _record(target: str, recipe: Recipe, facts: dict[str, object], *, source: DatasetSource, plan: RunPlan,
            seed: int, result: Evaluation, crf: CRFParams | None, dist_info: Distributed, overlap: int,
            wall_time: dict[str, float]) -> dict[str, object]:
    """The record of ``target``: the run's ``facts`` (its ``run.json``) and how it was scored."""
    comparable, reason = _comparable(source, recipe, plan.overrides, overlap)
    fields = {
        "profile": facts["profile"],
        "dataset": source.facts(recipe.eval_split),
        "train_dataset": facts["train_dataset"],
        "extra_train_dataset": facts["extra_train_dataset"],
        "conditions": conditions(plan, recipe.method),
        "weights_source": facts["weights_source"],
        "init_from": facts["init_from"],
        "trained_weights_sha256": facts["weights_sha256"],
        "run_key": facts["key"],
        "initial_weights": facts["initial_weights"],
        "train_eval_overlap": overlap,
        "test_protocol": f"published ({recipe.architecture}'s published_probabilities)" if recipe.published_test
                         else "whole image (softmax of forward)",
        "recipe": recipe.as_dict(),  # all of it: fields that do not change the weights (CRF, test) too
        "overrides": list(plan.overrides),
        "crf": asdict(crf) if crf else None,
        "precision": effective_precision(dist_info.device, recipe.precision),
    }
    return new_record(target=target, base_method=recipe.method, architecture=recipe.architecture, fields=fields,
                      seed=seed, device=dist_info.device, world_size=dist_info.world_size, wall_time=wall_time,
                      metrics=result.metrics, comparable=comparable, reason=reason)
