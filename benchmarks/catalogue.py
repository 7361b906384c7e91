"""What ``list`` and ``rf`` report: each registered method's facts measured on the built model,
and the design note's claims recomputed from the real modules (SPEC section 3)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

import methods
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
        raise ValueError(f"method {name!r} could not be built ({type(error).__name__}: {error}); fix its builder "
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


def list_rows() -> list[dict[str, object]]:
    rows = []
    for name in methods.list_methods():
        facts = method_facts(name)
        rows.append(facts)
        if name in CRF_STAGE_METHODS:
            rows.append({**facts, "name": f"{name}+crf", "crf": True})
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
