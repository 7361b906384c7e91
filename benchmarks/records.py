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
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import torch

import methods
from benchmarks.files import under, write_atomic, write_bytes_atomic
from benchmarks.record_schema import SCHEMAS, record_problem
from benchmarks.stage_command import LAUNCHER_ENV_VAR
from methods.errors import SegreproError

__all__ = ["PROTOCOL_VERSION", "RecordError", "RecordExists", "environment", "git_commit", "hardware", "load_records",
           "read_record", "record_path", "scan_records", "software_summary", "weights_summary", "write_record"]

REPOSITORY = Path(__file__).resolve().parents[1]
LOCK_FILE = REPOSITORY / "uv.lock"
RECORDED_PACKAGES = ("torch", "torchvision", "numpy", "pillow", "pydensecrf2")


class RecordExists(SegreproError, FileExistsError):
    pass


class RecordError(SegreproError, ValueError):
    """A file under ``results/records`` that does not read as a record."""


def record_path(results: Path, profile: str, dataset: str, method: str, seed: int, *, key: str | None = None) -> Path:
    """``results/records/<profile>-<dataset>/<method>/seed<k>[-<key>].json``."""
    return under(results / "records", f"{profile}-{dataset}", method, f"seed{seed}{f'-{key}' if key else ''}.json")


PROTOCOL_VERSION = 1
"""The version of what training and scoring mean, written into every new record; ``report``,
``check`` and ``compare`` pool only records of one version (``benchmarks/groups.py``). Bump it in
the commit that changes what a trained network or its score would be for the same recipe, data and
seed: the training loop, loss, sampling, augmentation or initialisation (``train.py``,
``networks.py``, the data transforms), the evaluator or the test-time procedure
(``evaluation.py``, the CRF stages), or a recipe's defaults. Speed-ups that keep every number, new
commands and messages do not bump it. Records written before it existed (no ``protocol_version``)
form their own group."""

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


def hardware_summary(record: dict[str, object]) -> str:
    """One line naming what ran a record: device, its count and CUDA stack, precision, launcher."""
    machine = record["hardware"]
    gpus = f" x{machine['gpu_count']}, CUDA {machine.get('cuda')}, cuDNN {machine.get('cudnn')}, driver " \
           f"{machine.get('driver')}" if machine.get("gpu_count") else ""
    threads = f", {machine['torch_threads']} threads" if machine.get("device") == "cpu" and "torch_threads" in machine \
        else ""
    return (f"{machine['name']} ({machine['device']}{gpus}{threads}), precision {record.get('precision', 'fp32')}, "
            f"{machine.get('world_size', 1)} process(es), launcher {machine.get('launcher', 'not recorded')}")


TORCHVISION_WEIGHTS = "torchvision VGG-16; the papers used Caffe VGG-16"
"""The weights of a record whose recipe starts from torchvision's VGG-16 (``pretrained`` true)."""


def weights_summary(record: dict[str, object]) -> str:
    """The initial weights a record's network started from (or the weights it scored), as
    ``check`` and the report name them next to each verdict and row."""
    if (record.get("recipe") or {}).get("pretrained") is True:
        return TORCHVISION_WEIGHTS  # also records written before "caffe" existed
    return str(record.get("weights_source", "weights not recorded"))


_SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile", "asimd", "sve")


def _cpu_model_and_simd() -> tuple[str | None, list[str]]:
    """The CPU's model name and the SIMD extensions it offers (Linux ``/proc/cpuinfo``)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None, []
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    return fields.get("model name"), [flag for flag in _SIMD_FLAGS if flag in flags]


def _launcher() -> str:
    """How this process was started: the launcher's job, under torchrun, or neither."""
    parts = [os.environ.get(LAUNCHER_ENV_VAR), "torchrun" if os.environ.get("TORCHELASTIC_RUN_ID") else None]
    return " + ".join(part for part in parts if part) or "one process"


def _cuda_facts(device: torch.device) -> dict[str, object]:
    """CUDA, cuDNN and driver versions and the GPU count, on a CUDA device (the driver from
    ``nvidia-smi`` when it is on PATH)."""
    if device.type != "cuda":
        return {}
    try:
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=30).stdout.splitlines()[0].strip() or None
    except (OSError, subprocess.SubprocessError, IndexError):
        driver = None
    return {"cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "gpu_count": torch.cuda.device_count(), "driver": driver}


def hardware(device: torch.device, world_size: int) -> dict[str, object]:
    """What ran a record. On the CPU the trained weights depend on the thread count and on the SIMD
    kernels oneDNN picks (measured on ``context_basic_coco``, quick, seed 0: mIoU 38.04 with 2
    threads and AVX-512, 38.07 with 1 thread, 37.99 with ``ONEDNN_MAX_CPU_ISA=AVX2``), so both are
    recorded."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or
                                                                            platform.machine())
    cpu_model, simd = _cpu_model_and_simd()
    return {"device": device.type, "name": name, "world_size": world_size, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "cpu_model": cpu_model, "cpu_simd": simd,
            "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"), "torch": torch.__version__,
            "python": platform.python_version(), "host": platform.node(), "launcher": _launcher(),
            **_cuda_facts(device)}


def new_record(*, target: str, base_method: str, architecture: str, fields: dict[str, object], seed: int,
               device: torch.device, world_size: int, wall_time: dict[str, float], metrics: dict[str, object],
               comparable: bool, reason: str) -> dict[str, object]:
    """A record: what every record states (schema and protocol version, the target, its method and
    paper, the code, software and hardware, time, metrics and comparability) around ``fields``,
    what this kind of run states (``run``'s training, ``score``'s released weights)."""
    entry = methods.get_entry(architecture)
    return {"schema": SCHEMAS[-1], "protocol_version": PROTOCOL_VERSION, "method": target, "base_method": base_method,
            "paper": entry.paper, **({"method_details": entry.details} if entry.details else {}), **fields,
            "seed": seed, "git": git_commit(), "environment": environment(), "hardware": hardware(device, world_size),
            "wall_time_s": wall_time, "metrics": metrics, "comparable_to_paper": comparable,
            "comparable_reason": reason}


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


def _order(record: dict[str, object]) -> tuple[str, str, str, int, str]:
    return record["profile"], record["dataset"]["name"], record["method"], record["seed"], record["path"]


def _invalid(path: Path, reason: str) -> str:
    return (f"record {path} is not a valid record ({reason}); delete it, or restore it from git "
            f"(`git checkout -- {path}`) if it is committed")


def _read(path: Path) -> tuple[dict[str, object] | None, str | None]:
    """The record at ``path`` (with ``path`` and ``base_method`` filled in) or why it is not one."""
    if not path.is_file():
        return None, _invalid(path, "not a regular file (a folder or a pipe)")
    try:
        record = json.loads(path.read_text())
    except (ValueError, RecursionError) as error:  # RecursionError: JSON nested too deeply to parse
        return None, _invalid(path, f"not JSON: {type(error).__name__}")
    problem = record_problem(record, lambda: _read_counts(path))
    if problem:
        return None, _invalid(path, problem)
    record["path"] = str(path)
    record.setdefault("base_method", record["method"])
    return record, None


def read_record(path: Path) -> dict[str, object]:
    """One record, checked against the schema (:mod:`benchmarks.record_schema`); a
    :class:`RecordError` naming the file and the first reason if it fails."""
    record, problem = _read(path)
    if record is None:
        raise RecordError(problem)
    return record


def _run_identity(record: dict[str, object]) -> tuple[object, ...]:
    dataset = record["dataset"]
    return record["method"], record.get("run_key"), record["trained_weights_sha256"], dataset["split"], \
        dataset["list_sha256"]


def scan_records(results: Path) -> tuple[list[dict[str, object]], list[str]]:
    """The valid records under ``results/records`` (sorted by method and seed) and one line for
    each file left out: a file that fails the schema (with its first reason), and a duplicate (the
    same method, run key and weights sha256 on the same images as another record, under another
    name or seed), which would otherwise count as a second seed. The lowest seed, then the first
    path, is kept."""
    records, problems = [], []
    for path in sorted((results / "records").rglob("*.json")):
        record, problem = _read(path)
        if record is None:
            problems.append(problem)
        else:
            records.append(record)
    kept: dict[tuple[object, ...], dict[str, object]] = {}
    unique = []
    for record in sorted(records, key=lambda r: (r["seed"], r["path"])):
        first = kept.setdefault(_run_identity(record), record)
        if first is record:
            unique.append(record)
        else:
            problems.append(f"record {record['path']} duplicates {first['path']} (same method, run key and weights "
                            f"sha256 on the same images{'' if record['seed'] == first['seed'] else ', another seed'})"
                            ": a run counts once; delete the copy")
    return sorted(unique, key=_order), problems


def load_records(results: Path) -> list[dict[str, object]]:
    """Every record under ``results/records``, sorted by method and seed; the first file that is
    not a valid record or duplicates another is a :class:`RecordError` naming it (what ``check``,
    ``compare`` and ``run`` need: skipping it could let ``check`` pass without the record that
    would have failed)."""
    records, problems = scan_records(results)
    if problems:
        raise RecordError(problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    return records


def _read_counts(record: Path) -> tuple[list[str], np.ndarray]:
    counts = record.with_suffix(".npz")
    try:
        with np.load(counts) as data:
            return data["image_ids"].tolist(), data["counts"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise RecordError(f"its counts {counts.name} do not read ({type(error).__name__})") from None


def load_counts(record: Path) -> tuple[list[str], np.ndarray]:
    """The per-image ids and counts stored beside the record at ``record``."""
    try:
        return _read_counts(record)
    except ValueError as error:
        raise RecordError(f"record {record}: {error}; score it again with --rerun") from None
