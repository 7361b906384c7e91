"""Result records (SPEC section 8): one JSON per (method, profile, dataset, seed) under
``results/records/``, with the per-image counts a paired bootstrap needs beside it (``.npz``).
Written atomically; an existing record is never overwritten silently."""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import subprocess
from pathlib import Path

import numpy as np
import torch

from benchmarks.files import write_atomic, write_bytes_atomic

__all__ = ["RecordError", "RecordExists", "environment", "git_commit", "hardware", "load_records", "record_path",
           "software_summary", "weights_summary", "write_record"]

REPOSITORY = Path(__file__).resolve().parents[1]
LOCK_FILE = REPOSITORY / "uv.lock"
RECORDED_PACKAGES = ("torch", "torchvision", "numpy", "pillow", "pydensecrf2")


class RecordExists(FileExistsError):
    pass


class RecordError(ValueError):
    """A file under ``results/records`` that does not read as a record."""


def record_path(results: Path, profile: str, dataset: str, method: str, seed: int, *, key: str | None = None) -> Path:
    """``results/records/<profile>-<dataset>/<method>/seed<k>[-<key>].json``."""
    return results / "records" / f"{profile}-{dataset}" / method / f"seed{seed}{f'-{key}' if key else ''}.json"


OUTPUT_FOLDERS = ("results", "reports", "runs")
"""What the harness itself writes: changes there do not make the code that produced a record dirty."""


def git_commit() -> dict[str, object]:
    """HEAD and whether tracked files outside ``OUTPUT_FOLDERS`` differ from it."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPOSITORY, capture_output=True, text=True,
                                check=True).stdout.strip()
        outputs = [f":(exclude){folder}" for folder in OUTPUT_FOLDERS]
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *outputs],
                                    cwd=REPOSITORY, capture_output=True, text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def environment() -> dict[str, object]:
    """The software a record ran with: the sha256 of ``uv.lock`` (the pinned environment) and the
    installed versions of the packages that decide its numbers (``None`` where not installed)."""
    lock = hashlib.sha256(LOCK_FILE.read_bytes()).hexdigest() if LOCK_FILE.is_file() else None
    versions: dict[str, str | None] = {}
    for package in RECORDED_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {"uv_lock_sha256": lock, "python": platform.python_version(), "packages": versions}


def software_summary(record: dict[str, object]) -> str:
    """One line naming the software a record ran with (what ``check`` and the report show)."""
    env = record.get("environment")
    if not env:
        return "software not recorded (schema 1 record)"
    packages = ", ".join(f"{name} {version}" for name, version in env["packages"].items() if version)
    lock = env["uv_lock_sha256"]
    return f"{packages}; uv.lock {lock[:12] if lock else 'absent'}"


TORCHVISION_WEIGHTS = "torchvision VGG-16; the papers used Caffe VGG-16"
"""The weights of a record whose recipe starts from torchvision's VGG-16 (``pretrained`` true)."""


def weights_summary(record: dict[str, object]) -> str:
    """The initial weights a record's network started from (or the weights it scored), as
    ``check`` and the report name them next to each verdict and row."""
    if (record.get("recipe") or {}).get("pretrained") is True:
        return TORCHVISION_WEIGHTS  # also records written before "caffe" existed
    return str(record.get("weights_source", "weights not recorded"))


def hardware(device: torch.device, world_size: int) -> dict[str, object]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or
                                                                            platform.machine())
    return {"device": device.type, "name": name, "world_size": world_size, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
            "host": platform.node()}


def write_record(path: Path, record: dict[str, object], counts: np.ndarray, image_ids: list[str],
                 overwrite: bool = False) -> None:
    """Write ``record`` (JSON) and its per-image counts (``.npz``) atomically; a record replaced
    (``overwrite``) is kept with its counts as generation ``<stem>.<n>.{json,npz}.superseded``."""
    if path.exists() and not overwrite:
        raise RecordExists(f"{path} exists; pass --rerun to replace it (the old record is kept as .superseded)")
    path.parent.mkdir(parents=True, exist_ok=True)
    counts_path = path.with_suffix(".npz")
    if path.exists():
        generation = 1
        while path.with_name(f"{path.stem}.{generation}.json.superseded").exists():
            generation += 1
        if counts_path.exists():
            os.replace(counts_path, path.with_name(f"{path.stem}.{generation}.npz.superseded"))
        os.replace(path, path.with_name(f"{path.stem}.{generation}.json.superseded"))
    record = {**record, "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    write_atomic(counts_path, lambda file: np.savez_compressed(file, counts=counts, image_ids=np.array(image_ids)))
    write_bytes_atomic(path, json.dumps(record, indent=1).encode())


def update_record(path: Path, fields: dict[str, object]) -> None:
    """Add or replace top-level ``fields`` of the record at ``path`` (atomically; counts untouched)."""
    record = {**json.loads(path.read_text()), **fields}
    write_bytes_atomic(path, json.dumps(record, indent=1).encode())


def _order(record: dict[str, object]) -> tuple[str, str, str, int]:
    return record["profile"], record["dataset"]["name"], record["method"], record["seed"]


_PLAIN_NAME = re.compile(r"\w[\w.+-]*")


def _check_fields(record: dict[str, object]) -> None:
    """The fields every consumer relies on, with their types and ranges; names that become folder
    or file names (profile, dataset, method) must be plain names, so no report escapes its folder."""
    for key in ("profile", "method", "base_method"):
        value = record[key]
        if not (isinstance(value, str) and _PLAIN_NAME.fullmatch(value) and ".." not in value):
            raise ValueError(f"{key} {value!r} is not a plain name")
    name = record["dataset"]["name"]
    if not (isinstance(name, str) and _PLAIN_NAME.fullmatch(name) and ".." not in name):
        raise ValueError(f"dataset name {name!r} is not a plain name")
    if not (isinstance(record["seed"], int) and not isinstance(record["seed"], bool) and record["seed"] >= 0):
        raise ValueError(f"seed {record['seed']!r} is not a whole number >= 0")
    for key in ("miou", "pixel_acc", "mean_acc", "fwiou"):
        if key != "miou" and key not in record["metrics"]:
            continue
        value = record["metrics"][key]
        if not (isinstance(value, float | int) and not isinstance(value, bool) and 0 <= value <= 1):
            raise ValueError(f"metrics.{key} {value!r} is not a number in [0, 1]")


REPORTED_FIELDS = (("metrics", "pixel_acc"), ("metrics", "mean_acc"), ("metrics", "fwiou"),
                   ("metrics", "per_class_iou"), ("hardware", "name"), ("hardware", "device"), ("weights_source",),
                   ("dataset", "images"), ("comparable_to_paper",), ("comparable_reason",))
"""What the report reads besides what every reader needs (``check`` reads less)."""


def load_records(results: Path, *, for_report: bool = False) -> list[dict[str, object]]:
    """Every record under ``results/records`` (plus ``path``), sorted by method and seed. A file
    that is not a record (truncated, hand-edited) is a :class:`RecordError` naming it: skipping it
    could let ``check`` pass without the record that would have failed."""
    records = []
    for path in sorted((results / "records").rglob("*.json")):
        try:
            if not path.is_file():
                raise ValueError("not a regular file (a folder or a pipe)")
            record = json.loads(path.read_text())
            record["path"] = str(path)
            record.setdefault("base_method", record["method"])  # hand-written records may leave it out
            _check_fields(record)
            for keys in REPORTED_FIELDS if for_report else ():
                value = record
                for key in keys:
                    value = value[key]
        except (ValueError, KeyError, TypeError) as error:
            raise RecordError(f"record {path} is not a readable record ({type(error).__name__}: {error}); delete "
                              f"it, or restore it from git (`git checkout -- {path}`) if it is committed") from None
        records.append(record)
    return sorted(records, key=_order)


def load_counts(record: Path) -> tuple[list[str], np.ndarray]:
    """The per-image ids and counts stored beside the record at ``record``."""
    counts = record.with_suffix(".npz")
    try:
        with np.load(counts) as data:
            return data["image_ids"].tolist(), data["counts"]
    except (OSError, ValueError, KeyError) as error:
        raise RecordError(f"the per-image counts {counts} of record {record} do not read ({type(error).__name__}); "
                          "score it again with --rerun") from None
