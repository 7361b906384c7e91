"""What ``list`` and ``rf`` report: each registered method's facts measured on the built model,
and the design note's claims recomputed from the real modules (SPEC section 3)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

import methods
from benchmarks.errors import UsageError
from benchmarks.receptive_field import analytic_geometry, receptive_field, stack_table
from benchmarks.recipes import CRF_STAGE_METHODS

__all__ = ["check_design_note", "list_rows", "method_facts"]

DESIGN_NOTE_CLAIMS = Path(__file__).with_name("design_note_claims.json")


def method_facts(name: str) -> dict[str, object]:
    """What ``list`` reports of one registered method, measured on the built model (width 1,
    on the ``meta`` device: shapes and graph without allocating 134M parameters). The receptive
    fields are pixels, ``"global"`` or ``"unknown (<op>)"`` (:func:`receptive_field`)."""
    try:
        with torch.device("meta"):
            model = methods.create(name)
    except Exception as error:  # a user's builder: say which method failed, and how
        raise UsageError(f"method {name!r} could not be built ({type(error).__name__}: {error}); fix its builder "
                         f"({methods.get_entry(name).builder.__module__})") from None
    return {
        "name": name,
        "paper": methods.get_entry(name).paper,
        "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "score_stride": model.score_stride,
        "receptive_field": receptive_field(model),
        "score_receptive_field": receptive_field(model, "score_map"),
        "input_convention": model.input_convention.name,
        "paper_input_convention": model.paper_input_convention.name,
        "crf": False,
    }


def _kind(name: str, recipes: list[str]) -> tuple[str, str]:
    """What a registered method is, and how to run it."""
    if (methods.get_entry(name).details or {}).get("mmseg_head"):
        return "mmseg head", "an mmsegmentation head on the front end: `compare NAME --baseline ...` trains it"
    if name in recipes:
        return "network", "the paper's network: `run NAME` trains and scores it with its recipe"
    return "network without a recipe", "`score NAME --weights FILE`, or `compare NAME --baseline ...`"


def list_rows() -> list[dict[str, object]]:
    """Every runnable target with what it is (``kind``, ``what``) and whether ``run --all`` runs
    it: the registered methods (networks, mmseg heads, user heads), the staged recipes that train
    a registered network another way (``*_coco``, ``*_joint``, ``frontend_coco_stage1``), and the
    ``+crf`` and ``+crfrnn`` variants; recipes and variants carry their network's facts."""
    from benchmarks.recipes import get_recipe, recipe_methods
    from benchmarks.resolve import CRF_SUFFIX, CRFRNN_SUFFIX, main_command_targets

    recipes, main = recipe_methods(), set(main_command_targets())
    registered = methods.list_methods()
    facts = {name: method_facts(name) for name in registered}
    rows = []

    def add(name: str, network: str, kind: str, what: str, crf: bool = False) -> None:
        rows.append({**facts[network], "name": name, "kind": kind, "what": what, "crf": crf,
                     "in_run_all": name in main})

    for name in [*registered, *(r for r in recipes if r not in registered)]:
        if name in registered:
            network = name
            kind, what = _kind(name, recipes)
        else:
            recipe = get_recipe(name, "paper")
            network = recipe.architecture
            kind = "staged recipe"
            start = f" from the trained {recipe.init_from}" if recipe.init_from else ""
            what = f"{network} trained{start}: {recipe.source}"
        add(name, network, kind, what)
        if name in CRF_STAGE_METHODS:
            add(f"{name}{CRF_SUFFIX}", network, "+crf", f"{name} with the dense CRF (crf-search's parameters when "
                "stored, else the recipe's)", crf=True)
            add(f"{name}{CRFRNN_SUFFIX}", network, "+crfrnn", f"{name} with a CRF-RNN trained on the frozen network",
                crf=True)
    return rows


def check_design_note() -> list[dict[str, object]]:
    """Each claim of the design note, recomputed from the real modules, with a verdict."""
    from methods.dilation import LARGE_MULTIPLIERS, ContextModule

    verdicts = []
    for claim in json.loads(DESIGN_NOTE_CLAIMS.read_text())["claims"]:
        if claim["kind"] == "stack_rf":
            computed: object = stack_table(claim["dilations"], claim["kernel"])[-1]["receptive_field"]
        else:
            module = ContextModule(21, LARGE_MULTIPLIERS, buffer="none")
            kernels = [g.kernel for g in analytic_geometry(module) if g.kind == "Conv2d"]
            computed = [kernels[i - 1] for i in claim["layers"]]
        verdicts.append({"id": claim["id"], "claim": claim["claim"], "claimed": claim["claimed"],
                         "computed": computed, "holds": computed == claim["claimed"]})
    return verdicts
