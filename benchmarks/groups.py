"""Which records may be pooled (issue 23, item 1): a table row, a claim, a ``check`` verdict and
a ``compare`` pool only take records of one *group*: the same profile, the same evaluation data
(embedded: the generator's version, fingerprint and files' hash; real data: the split list's hash
and image count) and the same protocol version of the code that trains and scores
(``records.PROTOCOL_VERSION``; records written before it existed form their own group). Within a
group a row is one method with one effective recipe: a method whose records hold two recipes gets
one row per recipe. Nothing is averaged across groups or rows."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field

__all__ = ["Group", "group_records", "identity", "recipe_rows", "row_label"]


def _dataset_identity(record: dict[str, object]) -> dict[str, object]:
    dataset = record.get("dataset") or {}
    generator = dataset.get("generator") or {}
    identity = {"name": dataset.get("name"), "split": dataset.get("split"), "images": dataset.get("images"),
                "list_sha256": dataset.get("list_sha256")}
    if generator:
        identity.update(generator_version=generator.get("version"), fingerprint=generator.get("fingerprint"),
                        files_sha256=generator.get("files_sha256"))
    return identity


def identity(record: dict[str, object]) -> dict[str, object]:
    """What must be equal for two records to be pooled (besides their method and recipe)."""
    return {"profile": record.get("profile"), **_dataset_identity(record),
            "protocol_version": record.get("protocol_version")}


_SHOWN = {"list_sha256": 12, "fingerprint": 12, "files_sha256": 12}


def _show(key: str, value: object) -> str:
    if value is None:
        return "not recorded"
    return str(value)[:_SHOWN[key]] if key in _SHOWN else str(value)


@dataclass
class Group:
    """Records that may be pooled, with a one-line label of their identity and, when other groups
    share their profile and dataset name, a line naming how this one differs from the first."""

    key: str
    identity: dict[str, object]
    records: list[dict[str, object]] = field(default_factory=list)
    difference: str | None = None

    @property
    def label(self) -> str:
        shown = ", ".join(f"{k} {_show(k, v)}" for k, v in self.identity.items() if k not in ("profile", "name"))
        return f"profile {self.identity['profile']}, dataset {self.identity['name']} ({shown})"


def group_records(records: list[dict[str, object]]) -> list[Group]:
    """The records' groups, in the order of their first record; each group's records keep their order."""
    groups: dict[str, Group] = {}
    for record in records:
        ident = identity(record)
        key = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:8]
        groups.setdefault(key, Group(key, ident)).records.append(record)
    by_name: dict[tuple[object, object], list[Group]] = defaultdict(list)
    for group in groups.values():
        by_name[(group.identity["profile"], group.identity["name"])].append(group)
    for siblings in by_name.values():
        first = siblings[0]
        for group in siblings[1:]:
            group.difference = "differs from group " + first.key + " in " + "; ".join(
                f"{k} {_show(k, group.identity[k])} (there {_show(k, first.identity[k])})"
                for k in group.identity if group.identity[k] != first.identity[k])
    return list(groups.values())


def row_label(record: dict[str, object]) -> str:
    """The method, with its overrides when the recipe was overridden."""
    overrides = record.get("overrides") or []
    return f"{record['method']} [{', '.join(overrides)}]" if overrides else str(record["method"])


def _recipe_key(record: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(record.get("recipe"), sort_keys=True, default=str).encode()).hexdigest()[:8]


def recipe_rows(records: list[dict[str, object]]) -> tuple[dict[str, list[dict[str, object]]], list[str]]:
    """The rows of one group: ``row_label`` of each record, and ``label (recipe <hash>)`` when
    records of one label hold different effective recipes; plus a line per such label naming the
    recipe keys that differ."""
    by_label: dict[str, dict[str, list[dict[str, object]]]] = defaultdict(dict)
    for record in records:
        by_label[row_label(record)].setdefault(_recipe_key(record), []).append(record)
    rows, notes = {}, []
    for label, recipes in by_label.items():
        if len(recipes) == 1:
            rows[label] = next(iter(recipes.values()))
            continue
        first = [items[0].get("recipe") or {} for items in recipes.values()]
        keys = sorted({k for recipe in first for k in recipe if any(r.get(k) != recipe.get(k) for r in first)})
        notes.append(f"{label}: records of {len(recipes)} recipes, one row each (they differ in {', '.join(keys)})")
        for key, items in recipes.items():
            rows[f"{label} (recipe {key})"] = items
    return rows, notes
