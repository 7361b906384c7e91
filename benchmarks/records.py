"""Result records (SPEC section 8): one JSON per (method, profile, dataset, seed) under
``results/records/``, with the per-image counts a paired bootstrap needs beside it (``.npz``).
Written atomically; an existing record is never overwritten silently."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from pathlib import Path

import numpy as np
import torch

__all__ = ["RecordError", "RecordExists", "git_commit", "hardware", "load_records", "record_path", "write_record"]

REPOSITORY = Path(__file__).resolve().parents[1]
RESULTS = REPOSITORY / "results"


class RecordExists(FileExistsError):
    pass


class RecordError(ValueError):
    """A file under ``results/records`` that does not read as a record."""


def record_path(results: Path, profile: str, dataset: str, method: str, seed: int) -> Path:
    return results / "records" / f"{profile}-{dataset}" / method / f"seed{seed}.json"


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


def hardware(device: torch.device, world_size: int) -> dict[str, object]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or
                                                                            platform.machine())
    return {"device": device.type, "name": name, "world_size": world_size, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
            "host": platform.node()}


def write_record(path: Path, record: dict[str, object], counts: np.ndarray, image_ids: list[str],
                 overwrite: bool = False) -> None:
    """Write ``record`` (JSON) and its per-image counts (``.npz``) atomically."""
    if path.exists() and not overwrite:
        raise RecordExists(f"{path} exists; pass --rerun to replace it (the old record is kept as .superseded)")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        os.replace(path, path.with_suffix(".json.superseded"))
    record = {**record, "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    counts_path = path.with_suffix(".npz")
    temporary = counts_path.with_name(f".{counts_path.stem}.tmp.npz")
    np.savez_compressed(temporary, counts=counts, image_ids=np.array(image_ids))
    os.replace(temporary, counts_path)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(record, indent=1))
    os.replace(temporary, path)


def update_record(path: Path, fields: dict[str, object]) -> None:
    """Add or replace top-level ``fields`` of the record at ``path`` (atomically; counts untouched)."""
    record = {**json.loads(path.read_text()), **fields}
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(record, indent=1))
    os.replace(temporary, path)


def _order(record: dict[str, object]) -> tuple[str, str, str, int]:
    return record["profile"], record["dataset"]["name"], record["method"], record["seed"]


def load_records(results: Path) -> list[dict[str, object]]:
    """Every record under ``results/records`` (plus ``path``), sorted by method and seed. A file
    that is not a record (truncated, hand-edited) is a :class:`RecordError` naming it: skipping it
    could let ``check`` pass without the record that would have failed."""
    records = []
    for path in sorted((results / "records").rglob("*.json")):
        try:
            record = json.loads(path.read_text())
            record["path"] = str(path)
            _order(record)
        except (ValueError, KeyError, TypeError) as error:
            raise RecordError(f"record {path} is not a readable record ({type(error).__name__}: {error}); delete "
                              f"it, or restore it from git (`git checkout -- {path}`) if it is committed") from None
        records.append(record)
    return sorted(records, key=_order)


def load_counts(record: dict[str, object]) -> tuple[list[str], np.ndarray]:
    with np.load(Path(record["path"]).with_suffix(".npz")) as data:
        return data["image_ids"].tolist(), data["counts"]
