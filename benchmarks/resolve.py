"""A run resolved once (issue 24): the targets of a command and what they depend on, and for each
(method, seed) one frozen :class:`ResolvedRun`: its recipe, its identity (everything that
determines its weights, hashed into the ``key`` that names its folder), the facts ``run.json``
beside its weights and every record of it state, and where its weights and records go. ``run``,
``run --plan``, ``crf-search`` and the launcher all take a run's facts and paths from
:func:`resolve_run`; nothing else recomputes them."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import methods
from benchmarks.data.coco import COCO_SPLIT
from benchmarks.data.datasets import DatasetSource
from benchmarks.files import file_sha256
from benchmarks.networks import run_folder
from benchmarks.recipes import (
    CRF_STAGE_METHODS,
    MAIN_COMMAND_CRFRNN,
    MAIN_COMMAND_METHODS,
    Recipe,
    RecipeError,
    apply_overrides,
    get_recipe,
)
from benchmarks.records import TORCHVISION_WEIGHTS, record_path
from methods.vgg import TORCHVISION_VGG16_URL, WEIGHTS_ENV_VAR

__all__ = ["CRFRNN_SUFFIX", "CRF_SUFFIX", "HEAVY_MOMENTUM", "ResolvedRun", "RunPlan", "base_method",
           "caffe_init_file", "caffe_init_sha256", "conditions", "expand_targets", "main_command_targets",
           "recorded_run_folder", "resolve_run", "run_identity"]

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


def _initial_weights(plan: RunPlan, source: DatasetSource, recipe: Recipe, seed: int) -> dict[str, object]:
    if recipe.init_from is not None:
        return {"trained": recipe.init_from, "run": run_identity(plan, source, recipe.init_from, seed)["key"]}
    if not recipe.pretrained:
        return {"random": f"seed {seed}"}
    if recipe.pretrained == "caffe":
        path, sha256 = caffe_init_sha256(recipe.architecture)
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


def caffe_init_sha256(method: str) -> tuple[Path, str]:
    """The Caffe init model of ``method`` and its sha256."""
    path = caffe_init_file(method)
    stat = path.stat()
    return path, _init_sha256(path.resolve(), stat.st_mtime_ns, stat.st_size)


def _weights_source(recipe: Recipe) -> str:
    if recipe.pretrained == "caffe":
        path, sha256 = caffe_init_sha256(recipe.architecture)
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


@dataclass(frozen=True)
class ResolvedRun:
    """One (method, seed) of a command, resolved once by :func:`resolve_run`."""

    plan: RunPlan
    source: DatasetSource
    recipe: Recipe
    seed: int
    facts: dict[str, object]
    """What ``run.json`` beside the weights states (with the weights' sha256) and every record of
    the run repeats: the identity (:func:`run_identity`, with its ``key``), profile, dataset, the
    training data, where the starting weights come from, ``init_from`` and the ``conditions``."""

    @property
    def key(self) -> str:
        return self.facts["key"]

    @property
    def folder(self) -> Path:
        """``runs/<profile>-<dataset>/<method>/seed<k>-<key>``: checkpoints, log, weights, ``run.json``."""
        return run_folder(self.plan.runs, self.plan.profile, self.source.name, self.recipe.method, self.seed,
                          key=self.key)

    @property
    def weights(self) -> Path:
        return self.folder / "weights.pt"

    def record_path(self, target: str) -> Path:
        """The record of ``target`` (this method, ``+crf`` or ``+crfrnn``): ``seed<k>.json``, or
        ``seed<k>-<key>.json`` for an overridden recipe, so that it never replaces (or pools with)
        the recipe's own records."""
        return record_path(self.plan.results, self.plan.profile, self.source.name, target, self.seed,
                           key=self.key if self.plan.overrides else None)


def resolve_run(plan: RunPlan, source: DatasetSource, method: str, seed: int) -> ResolvedRun:
    """The run of ``method`` and ``seed`` as ``plan`` runs it on ``source``; a missing training
    split is the DataError of its list."""
    recipe = plan.recipe(method)
    facts = {**run_identity(plan, source, method, seed), "profile": recipe.profile, "dataset": source.name,
             "train_dataset": source.facts(recipe.train_split),
             "extra_train_dataset": source.facts(recipe.extra_train_split) if recipe.extra_train_split else None,
             "weights_source": _weights_source(recipe), "init_from": recipe.init_from,
             "conditions": conditions(plan, method)}
    return ResolvedRun(plan, source, recipe, seed, facts)


def recorded_run_folder(runs: Path, record: dict[str, object]) -> Path | None:
    """The folder under ``runs`` of the run a record scored (named by the ``run_key`` it states,
    as :attr:`ResolvedRun.folder` names it); ``None`` for a record without one (``score``'s)."""
    key = record.get("run_key")
    return None if key is None else run_folder(runs, record["profile"], record["dataset"]["name"],
                                               record["base_method"], record["seed"], key=key)
