"""The schema of a result record (SPEC section 8), checked wherever a record is read (``report``,
``check``, ``compare``, and ``run NAME+crf`` reading a stored CRF search): the keys every reader
relies on, their types and ranges, and the checks across fields (the stored mIoU is the one the
record's ``.npz`` counts give; a record of the embedded dataset is never comparable to the papers).
:func:`record_problem` gives the first reason a record fails, or ``None``."""

from __future__ import annotations

import dataclasses
import datetime
import math
import re
from collections.abc import Callable

import numpy as np

from benchmarks.crf.dense_crf import NORMALISATIONS, CRFParams
from benchmarks.recipes import RecipeError, recipe_from_record
from benchmarks.stats import miou_from_counts
from benchmarks.validate import is_finite_number, is_whole_number

__all__ = ["MIOU_TOLERANCE", "SCHEMAS", "counts_problem", "crf_search_problem", "record_problem"]

SCHEMAS = (1, 2)
"""The record layouts this code reads (``records.new_record`` writes the last)."""
MIOU_TOLERANCE = 1e-9
"""How far a stored mIoU may be from the one its counts give (float rounding, nothing more)."""

_PLAIN_NAME = re.compile(r"\w[\w.+-]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _plain(value: object) -> bool:
    return isinstance(value, str) and bool(_PLAIN_NAME.fullmatch(value)) and ".." not in value


def _sha256(value: object) -> bool:
    return isinstance(value, str) and bool(_SHA256.fullmatch(value))


def _fraction(value: object) -> bool:
    return is_finite_number(value) and 0 <= value <= 1


def _optional(check: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda value: value is None or check(value)


def _mapping_of(check: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda value: isinstance(value, dict) and all(isinstance(k, str) and check(v) for k, v in value.items())


def _crf_setting(value: object) -> bool:
    """A dense CRF's parameters: finite numbers, and its kernel normalisation by name."""
    return isinstance(value, dict) and all(
        value[key] in NORMALISATIONS if key == "normalisation" else is_finite_number(value[key]) for key in value)


def _list_of(check: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda value: isinstance(value, list) and all(check(v) for v in value)


def _is(kind: type) -> Callable[[object], bool]:
    return lambda value: isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def _timestamp(value: object) -> bool:
    """An ISO 8601 date and time with its UTC offset (``new_record``'s ``created``)."""
    try:
        return isinstance(value, str) and datetime.datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False


_OBJECT, _TEXT, _BOOL = _is(dict), _is(str), _is(bool)
_SECONDS = _mapping_of(lambda value: is_finite_number(value) and value >= 0)
_COUNT = (lambda value: is_whole_number(value) and value >= 1, "a whole number >= 1")

FIELDS: tuple[tuple[str, bool, Callable[[object], bool], str], ...] = (
    # (dotted key, required, check, what it must be); a key under an absent optional object is not checked
    ("schema", False, lambda value: value in SCHEMAS and is_whole_number(value), f"one of {SCHEMAS}"),
    ("profile", True, _plain, "a plain name"),
    ("method", True, _plain, "a plain name"),
    ("base_method", False, _plain, "a plain name"),
    ("seed", True, lambda value: is_whole_number(value) and value >= 0, "a whole number >= 0"),
    ("protocol_version", False, *_COUNT),
    ("dataset", True, _OBJECT, "an object"),
    ("dataset.name", True, _plain, "a plain name"),
    ("dataset.split", True, _plain, "a plain name"),
    ("dataset.images", True, *_COUNT),
    ("dataset.list_sha256", True, _sha256, "a sha256 (64 lower-case hex digits)"),
    ("dataset.generator", False, _OBJECT, "an object"),
    ("dataset.generator.version", True, *_COUNT),
    ("dataset.generator.fingerprint", True, _TEXT, "a string"),
    ("dataset.generator.files_sha256", False, _optional(_sha256), "a sha256 or null"),
    ("metrics", True, _OBJECT, "an object"),
    ("metrics.miou", True, _fraction, "a number in [0, 1]"),
    ("metrics.pixel_acc", True, _fraction, "a number in [0, 1]"),
    ("metrics.mean_acc", True, _fraction, "a number in [0, 1]"),
    ("metrics.fwiou", True, _fraction, "a number in [0, 1]"),
    ("metrics.per_class_iou", True, _list_of(_optional(_fraction)), "a list of numbers in [0, 1] or null"),
    ("comparable_to_paper", True, _BOOL, "true or false (a JSON boolean)"),
    ("comparable_reason", True, _TEXT, "a string"),
    ("trained_weights_sha256", True, _sha256, "a sha256 (64 lower-case hex digits)"),
    ("run_key", False, _optional(_plain), "a plain name or null"),
    ("weights_source", False, _TEXT, "a string"),
    ("overrides", False, _list_of(_TEXT), "a list of strings"),
    ("conditions", False, _mapping_of(_BOOL), "an object of true/false values"),
    ("recipe", False, _optional(_OBJECT), "an object or null"),
    ("crf", False, _optional(_crf_setting), f"an object of finite numbers (normalisation: one of {NORMALISATIONS}) "
     "or null"),
    ("crf_search", False, _OBJECT, "an object"),
    ("hardware", True, _OBJECT, "an object"),
    ("hardware.name", True, _TEXT, "a string"),
    ("hardware.device", True, _TEXT, "a string"),
    ("environment", False, _optional(_OBJECT), "an object or null"),
    ("environment.uv_lock_sha256", True, _optional(_sha256), "a sha256 or null"),
    ("environment.packages", True, _mapping_of(_optional(_TEXT)), "an object of version strings or null"),
    ("git", False, _OBJECT, "an object"),
    ("git.commit", True, _optional(_TEXT), "a string or null"),
    ("git.dirty", True, _optional(_BOOL), "true, false or null"),
    ("wall_time_s", False, _SECONDS, "an object of seconds >= 0"),
    ("created", False, _timestamp, "an ISO 8601 time with its UTC offset"),
)


def _field_problem(record: dict[str, object]) -> str | None:
    for key, required, check, what in FIELDS:
        parent: object = record
        *parents, name = key.split(".")
        for part in parents:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if not isinstance(parent, dict):
            continue  # under an absent optional object (or a null one): nothing to check
        if name not in parent:
            if required:
                return f"{key} is missing"
            continue
        value = parent[name]
        if not check(value):
            shown = repr(value) if len(repr(value)) <= 40 else f"{repr(value)[:37]}..."
            return f"{key} {shown} is not {what}"
    return None


def crf_search_problem(found: object) -> str | None:
    """Why a stored CRF search (a record's ``crf_search``) cannot be used, or ``None``."""
    if not isinstance(found, dict):
        return "crf_search is not an object"
    for key, check, what in (("trained_weights_sha256", _sha256, "a sha256"), ("images", _COUNT[0], _COUNT[1]),
                             ("split", _plain, "a plain name"), ("best", _OBJECT, "an object")):
        if key not in found:
            return f"crf_search.{key} is missing"
        if not check(found[key]):
            return f"crf_search.{key} {found[key]!r} is not {what}"
    known = {field.name for field in dataclasses.fields(CRFParams)}
    unknown = sorted(set(found["best"]) - known)
    if unknown:
        return f"crf_search.best has unknown keys {unknown} (known: {', '.join(sorted(known))})"
    try:
        CRFParams(**found["best"])
    except ValueError as error:
        return f"crf_search.best: {error}"
    return None


def counts_problem(record: dict[str, object], image_ids: list[str], counts: np.ndarray) -> str | None:
    """Why a record's per-image counts disagree with it, or ``None``: ``images x 3 x classes``
    whole non-negative counts, one row per evaluated image, the per-class list as long as the
    classes, and the stored mIoU the one the counts give."""
    if counts.ndim != 3 or counts.shape[1] != 3 or not np.issubdtype(counts.dtype, np.integer) or (counts < 0).any():
        return f"its counts are not images x 3 x classes whole numbers >= 0 (shape {counts.shape}, {counts.dtype})"
    images = record["dataset"]["images"]
    if counts.shape[0] != images or len(image_ids) != images:
        return f"its counts cover {counts.shape[0]} images, the record says dataset.images {images}"
    if len(record["metrics"]["per_class_iou"]) != counts.shape[2]:
        return (f"metrics.per_class_iou has {len(record['metrics']['per_class_iou'])} classes, its counts "
                f"{counts.shape[2]}")
    from_counts = float(miou_from_counts(counts.sum(0)))
    stored = record["metrics"]["miou"]
    if not math.isclose(stored, from_counts, rel_tol=0, abs_tol=MIOU_TOLERANCE):
        return f"metrics.miou {stored!r} is not the mIoU its counts give ({from_counts!r})"
    return None


def _method_problem(record: dict[str, object]) -> str | None:
    """``method`` must be the scored network (``base_method``) or it with a post-processing suffix,
    and the recipe must be that network's: a record relabelled as another method would be pooled
    and checked as that method."""
    method, base = record["method"], record.get("base_method")
    if base is not None and method not in (base, f"{base}+crf", f"{base}+crfrnn"):
        return f"method {method!r} is not its base_method {base!r} (or it with +crf/+crfrnn)"
    recipe = record.get("recipe")
    if base is not None and isinstance(recipe, dict) and recipe.get("method") not in (None, base):
        return f"recipe.method {recipe.get('method')!r} is not its base_method {base!r}"
    return None


def record_problem(record: object, counts: Callable[[], tuple[list[str], np.ndarray]]) -> str | None:
    """The first reason ``record`` (parsed JSON) is not a valid record, or ``None``. ``counts``
    reads its ``.npz`` (ids, counts) and raises ``ValueError`` with the reason if it cannot."""
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an object"
    problem = _field_problem(record)
    if problem:
        return problem
    dataset = record["dataset"]
    if record["comparable_to_paper"] and (dataset["name"] == "embedded" or "generator" in dataset):
        return "comparable_to_paper is true for a record of the embedded generated dataset (never comparable)"
    if "crf_search" in record and (problem := crf_search_problem(record["crf_search"])):
        return problem
    if problem := _method_problem(record):
        return problem
    if isinstance(record.get("recipe"), dict):
        try:
            recipe_from_record(record["recipe"])
        except (RecipeError, TypeError) as error:  # TypeError: a key missing, or a value of another type
            return f"recipe: {error}"
    try:
        image_ids, values = counts()
    except ValueError as error:
        return str(error)
    return counts_problem(record, image_ids, values)
