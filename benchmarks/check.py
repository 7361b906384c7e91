"""``python -m benchmarks check``: every record against every reference set of SPEC section 7.

Verdicts: ``reproduced`` (within the set's tolerance), ``below``, ``above``, or ``not
comparable`` with the reason (synthetic data, shortened recipe, another split, a training
condition the reference needs). Only a comparable record that misses a paper's number is a
failure; the design note's set (not authoritative, SPEC section 7) is shown and never fails.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.records import software_summary, weights_summary

__all__ = ["REFERENCES", "check_records", "load_references"]

REFERENCES = Path(__file__).with_name("references.json")


def load_references(path: Path = REFERENCES) -> list[dict[str, object]]:
    return json.loads(path.read_text())["sets"]


def verdict(record: dict[str, object], reference: dict[str, object]) -> dict[str, object] | None:
    """The verdict of one record against one reference set (``None`` if the set lacks the method)."""
    method = record["method"]
    if method not in reference["miou"]:
        return None
    published, measured = reference["miou"][method], 100 * record["metrics"]["miou"]
    row = {"authoritative": reference.get("authoritative", True), "record": record["path"], "method": method,
           "seed": record["seed"], "reference": reference["id"],
           "published": published, "measured": round(measured, 2), "weights": weights_summary(record),
           "software": software_summary(record)}
    reasons = []
    if not record["comparable_to_paper"]:
        reasons.append(record["comparable_reason"])
    if record["dataset"]["split"] != reference["split"]:
        reasons.append(f"reference is on {reference['split']}, record on {record['dataset']['split']}")
    for condition, needed in reference["requires"].items():
        if record.get("conditions", {}).get(condition) != needed:
            reasons.append(f"reference needs {condition}={needed}")
    if reasons:
        return {**row, "verdict": "not comparable", "reason": "; ".join(reasons)}
    difference = measured - published
    status = "reproduced" if abs(difference) <= reference["tolerance"] else ("below" if difference < 0 else "above")
    return {**row, "verdict": status, "reason": f"{difference:+.2f} points (tolerance ±{reference['tolerance']})"}


def check_records(records: list[dict[str, object]], references: list[dict[str, object]]) -> list[dict[str, object]]:
    return [v for record in records for reference in references if (v := verdict(record, reference)) is not None]
