"""``python -m benchmarks run``: train and evaluate methods, resolving staged dependencies, and
write one record per (method, seed); ``NAME+crf`` reuses the trained network and adds the CRF,
``NAME+crfrnn`` trains a CRF-RNN on top of the frozen network and scores with it.

Each (method, seed) is resolved once (``benchmarks.resolve``): it is identified by everything
that determines its weights (method, effective recipe, training data, seed, initial weights), its
folder under ``runs/`` is named by that identity's hash, so weights and checkpoints are reused or
resumed only by a run of exactly the same identity; ``run.json`` beside the weights states its
facts, and its records repeat them."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import methods
from benchmarks.crf.dense_crf import CRFParams, dense_crf
from benchmarks.crfrnn_stage import crfrnn_refine, crfrnn_training, trained_crfrnn
from benchmarks.data.datasets import DatasetSource
from benchmarks.data.voc import DataError
from benchmarks.distributed import Distributed, effective_precision
from benchmarks.evaluation import Evaluation, evaluate
from benchmarks.files import file_sha256, write_bytes_atomic
from benchmarks.limits import check_crf_cost
from benchmarks.networks import build_trained, run_lock
from benchmarks.plan import Stage, check_plan, plan_stages
from benchmarks.recipes import Recipe, RecipeError
from benchmarks.records import new_record, read_record, write_record
from benchmarks.resolve import (
    CRF_SUFFIX,
    CRFRNN_SUFFIX,
    ResolvedRun,
    RunPlan,
    base_method,
    caffe_init_sha256,
    expand_targets,
    resolve_run,
)
from benchmarks.train import train

__all__ = ["command_plan", "run", "searched_crf"]

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
    """Every stage ``run(targets, ...)`` would take, in order, with what it needs (``benchmarks.plan``);
    whether a method's weights are there already is asked of its resolved runs (:func:`resolve_run`)."""
    def trained_for_every_seed(method: str) -> bool:
        try:
            return all(resolve_run(plan, source, method, seed).weights.is_file() for seed in plan.seeds)
        except DataError:  # a training split is missing (its run has no identity yet): the plan names it
            return False

    return plan_stages(expand_targets(targets, plan), targets, source, plan.recipe, caffe_init_sha256,
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
            resolved = resolve_run(plan, source, base, seed)
            scored = target in targets or (target == base and any(f"{base}{suffix}" in targets
                                                                  for suffix in (CRF_SUFFIX, CRFRNN_SUFFIX)))
            trained = not resolved.weights.is_file() or (plan.rerun and target == base and target in targets)
            with run_lock(resolved.folder, enabled=dist_info.is_main):
                path = _run_one(target, resolved, dist_info=dist_info, progress=progress, trained=trained,
                                scored=scored, overlap=overlaps[base])
            if path is not None and target in targets:
                records[(target, seed)] = path
    return records


def _run_one(target: str, resolved: ResolvedRun, *, dist_info: Distributed, progress: Callable[[str], None],
             trained: bool, scored: bool, overlap: int) -> Path | None:
    """Train (when ``trained``) and score (when ``scored``) one target of one resolved run; the record's path."""
    plan, recipe, seed = resolved.plan, resolved.recipe, resolved.seed
    train_seconds = 0.0
    if trained:
        dependency = resolve_run(plan, resolved.source, recipe.init_from, seed).weights if recipe.init_from else None
        started = time.perf_counter()
        train(recipe, resolved.source, resolved.folder, seed, dist_info, dependency, plan.workers, progress,
              sanity_gate=plan.sanity_gate)
        train_seconds = time.perf_counter() - started
    facts = _write_run_json(resolved)
    if not scored:
        return None  # a dependency only: trained, not scored
    crf, crf_source, crfrnn = _post_processing(target, resolved, facts["weights_sha256"], dist_info)
    path = resolved.record_path(target)
    if _reusable(path, facts["weights_sha256"], crf, crfrnn, recipe, plan.rerun):
        progress(f"{target} seed {seed}: record {path} exists; reusing it (--rerun to replace)")
        return path
    if path.exists() and not plan.rerun:
        progress(f"{target} seed {seed}: record {path} was not produced from {resolved.weights} (missing or "
                 "retrained, e.g. the record shipped with the repository), with other CRF parameters or another "
                 "test procedure; scoring again, the old record is kept as .superseded")
    model = build_trained(recipe, resolved.weights).to(dist_info.device)
    refine = (lambda image, probs, params=crf: dense_crf(image, probs, params, plan.crf_backend)) if crf else None
    if crfrnn is not None:
        module, measured = trained_crfrnn(model, resolved.source.split(recipe.train_split), crfrnn, resolved.folder,
                                          dist_info.device, progress)
        crfrnn = {**crfrnn, **measured}
        refine = crfrnn_refine(module)
    started = time.perf_counter()
    result = evaluate(model, resolved.source.split(recipe.eval_split), dist_info, refine, batch_size=plan.eval_batch,
                      published=recipe.published_test, precision=recipe.precision)
    wall_time = {"train": round(train_seconds, 1), "evaluate": round(time.perf_counter() - started, 1)}
    if dist_info.is_main:
        record = _record(target, resolved, facts, result=result, crf=crf, dist_info=dist_info, overlap=overlap,
                         wall_time=wall_time)
        if crf is not None:
            record.update(crf_source=crf_source, crf_backend="torch (CRF-RNN)" if crfrnn else plan.crf_backend)
        if crfrnn is not None:
            record.update(crfrnn=crfrnn)
        write_record(path, record, result.counts, result.image_ids, overwrite=True)
        progress(f"{target} seed {seed}: mIoU {100 * result.metrics['miou']:.2f} -> {path}")
    return path


def _write_run_json(resolved: ResolvedRun) -> dict[str, object]:
    """The run's facts with the sha256 of its weights, as ``run.json`` beside them states them;
    written (atomically) when missing or when it no longer says so (new weights, older code)."""
    facts = {**resolved.facts, "weights_sha256": file_sha256(resolved.weights)}
    path = resolved.folder / "run.json"
    text = json.dumps(facts, indent=1, sort_keys=True)
    if not path.is_file() or path.read_text() != text:
        write_bytes_atomic(path, text.encode())
    return facts


def _post_processing(target: str, resolved: ResolvedRun, weights_sha: str, dist_info: Distributed
                     ) -> tuple[CRFParams | None, str | None, dict[str, object] | None]:
    """The dense CRF of a ``+crf`` or ``+crfrnn`` target (its parameters and their source) and the
    CRF-RNN stage of a ``+crfrnn`` one, the CRF's cost checked (``benchmarks.limits``; the CRF-RNN's
    was, with the plan); ``None`` for the network."""
    recipe = resolved.recipe
    if target == recipe.method:
        return None, None, None
    crf, crf_source = searched_crf(resolved.record_path(recipe.method), weights_sha, recipe)
    images = len(resolved.source.split(recipe.eval_split))
    check_crf_cost(crf.iterations, images, f"CRF of {crf_source}", dist_info.device)
    if not target.endswith(CRFRNN_SUFFIX):
        return crf, crf_source, None
    return crf, crf_source, crfrnn_training(recipe, crf, weights_sha, resolved.seed)


def _reusable(path: Path, weights_sha: str, crf: CRFParams | None, crfrnn: dict[str, object] | None,
              recipe: Recipe, rerun: bool) -> bool:
    """Whether the existing record at ``path`` scored these weights with this CRF, CRF-RNN stage and
    test procedure (and ``--rerun`` does not ask for a new one)."""
    if rerun or not path.exists():
        return False
    recorded = json.loads(path.read_text())
    return recorded.get("trained_weights_sha256") == weights_sha \
        and recorded.get("crf") == (asdict(crf) if crf else None) \
        and (recorded.get("crfrnn") or {}).get("key") == (crfrnn or {}).get("key") \
        and (recorded.get("recipe") or {}).get("published_test", False) == recipe.published_test


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


def _record(target: str, resolved: ResolvedRun, facts: dict[str, object], *, result: Evaluation,
            crf: CRFParams | None, dist_info: Distributed, overlap: int,
            wall_time: dict[str, float]) -> dict[str, object]:
    """The record of ``target``: the run's ``facts`` (its ``run.json``) and how it was scored."""
    recipe, plan = resolved.recipe, resolved.plan
    comparable, reason = _comparable(resolved.source, recipe, plan.overrides, overlap)
    fields = {
        "profile": facts["profile"],
        "dataset": resolved.source.facts(recipe.eval_split),
        "train_dataset": facts["train_dataset"],
        "extra_train_dataset": facts["extra_train_dataset"],
        "conditions": facts["conditions"],
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
                      seed=resolved.seed, device=dist_info.device, world_size=dist_info.world_size, wall_time=wall_time,
                      metrics=result.metrics, comparable=comparable, reason=reason)
