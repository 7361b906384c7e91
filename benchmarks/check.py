"""``python -m benchmarks check``: every record against every reference set of SPEC section 7.

One verdict per group of poolable records, method and reference set, over the seeds (mean and
95% interval). Verdicts: ``reproduced`` (mean within the set's tolerance), ``below``, ``above``, or ``not
comparable`` with the reason (synthetic data, shortened recipe, another split, a training
condition the reference needs). Only a comparable record that misses a paper's number is a
failure; the design note's set (not authoritative, SPEC section 7) is shown and never fails.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.groups import Group, group_records, recipe_rows
from benchmarks.records import software_summary, weights_summary
from benchmarks.stats import seed_interval

__all__ = ["REFERENCES", "check_records", "load_references", "summary_line", "verdict"]

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


def _pooled(rows: list[dict[str, object]], reference: dict[str, object], group: Group, label: str) -> dict[str, object]:
    """One verdict over the seeds of one row: the mean and 95% t interval of the measured mIoU
    against the published number and its tolerance. ``reproduced`` when the mean is within the
    tolerance, else ``below`` or ``above``; ``decided`` when the whole interval lies inside (or
    wholly outside) the tolerance band, which needs 2 seeds or more."""
    first = rows[0]
    interval = seed_interval([row["measured"] for row in rows])
    pooled = {"authoritative": first["authoritative"], "group": group.key, "identity": group.label,
              "method": label, "reference": reference["id"], "seeds": [row["seed"] for row in rows],
              "records": [row["record"] for row in rows], "published": first["published"],
              "tolerance": reference["tolerance"], "mean": round(interval["mean"], 2),
              "low": None if interval["low"] is None else round(interval["low"], 2),
              "high": None if interval["high"] is None else round(interval["high"], 2),
              "weights": "; ".join(dict.fromkeys(str(row["weights"]) for row in rows)),
              "software": "; ".join(dict.fromkeys(str(row["software"]) for row in rows))}
    reasons = list(dict.fromkeys(row["reason"] for row in rows if row["verdict"] == "not comparable"))
    if reasons:
        return {**pooled, "verdict": "not comparable", "decided": False, "reason": "; ".join(reasons)}
    published, tolerance = first["published"], reference["tolerance"]
    difference = interval["mean"] - published
    status = "reproduced" if abs(difference) <= tolerance else ("below" if difference < 0 else "above")
    band_low, band_high = published - tolerance, published + tolerance
    if interval["low"] is None:
        decided, spread = False, "1 seed: no interval"
    else:
        inside = band_low <= interval["low"] and interval["high"] <= band_high
        outside = interval["high"] < band_low or interval["low"] > band_high
        decided = inside if status == "reproduced" else outside
        spread = f"95% interval [{interval['low']:.2f}, {interval['high']:.2f}] over {interval['seeds']} seeds"
    return {**pooled, "verdict": status, "decided": decided,
            "reason": f"mean {difference:+.2f} points (tolerance ±{tolerance}); {spread}"}


def check_records(records: list[dict[str, object]], references: list[dict[str, object]]) -> list[dict[str, object]]:
    """One verdict per group (``groups.group_records``), row (method and effective recipe) and
    reference set holding the method, over the row's seeds."""
    verdicts = []
    for group in group_records(records):
        rows, _ = recipe_rows(group.records)
        for label, items in rows.items():
            for reference in references:
                per_seed = [v for record in items if (v := verdict(record, reference)) is not None]
                if per_seed:
                    verdicts.append(_pooled(per_seed, reference, group, label))
    return verdicts


def summary_line(verdicts: list[dict[str, object]]) -> str:
    """``held / missed / not comparable`` counts (the design note's set, never a failure, apart)."""
    def count(authoritative: bool) -> str:
        chosen = [v for v in verdicts if v["authoritative"] == authoritative]
        held = sum(v["verdict"] == "reproduced" for v in chosen)
        missed = sum(v["verdict"] in ("below", "above") for v in chosen)
        return f"{held} held, {missed} missed, {len(chosen) - held - missed} not comparable"

    return f"papers' numbers: {count(True)}; design note (not authoritative): {count(False)}"
