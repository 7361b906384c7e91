"""Trained networks on disk: where a run keeps them, their hash, and building one back from the
recipe a record states."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import socket
import typing
from collections.abc import Iterator
from pathlib import Path

from torch import nn

from benchmarks.engine import build_model, load_weights
from benchmarks.recipes import Recipe

__all__ = ["RunLocked", "architecture_recipe", "build_trained", "file_sha256", "recipe_from_record", "run_folder",
           "run_lock"]


class RunLocked(RuntimeError):
    """Another live process is running the same run (same folder)."""


def run_folder(runs: Path, profile: str, dataset: str, method: str, seed: int, *, key: str) -> Path:
    """``runs/<profile>-<dataset>/<method>/seed<k>-<key>``: checkpoints, log and ``weights.pt`` of
    the run whose identity hashes to ``key``."""
    return runs / f"{profile}-{dataset}" / method / f"seed{seed}-{key}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def run_lock(folder: Path, *, enabled: bool = True) -> Iterator[None]:
    """Hold ``folder/.lock`` (created exclusively) while a run trains or scores in ``folder``; a
    lock left by a dead process of this host is taken over. Raises :class:`RunLocked` naming the
    holder when a live process has it."""
    if not enabled:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / ".lock"
    holder = {"pid": os.getpid(), "host": socket.gethostname(),
              "since": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    for _ in range(2):
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                held = json.loads(lock.read_text())
            except (OSError, ValueError):
                held = {}
            if held.get("host") == holder["host"] and isinstance(held.get("pid"), int) and not _alive(held["pid"]):
                lock.unlink(missing_ok=True)  # left by a process that died
                continue
            raise RunLocked(f"{folder} is held by pid {held.get('pid', '?')} on {held.get('host', '?')} since "
                            f"{held.get('since', '?')} (the same run, started twice); wait for it, or delete {lock} "
                            "if that process is gone") from None
        with os.fdopen(descriptor, "w") as file:
            json.dump(holder, file)
        break
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def architecture_recipe(recipe: Recipe) -> Recipe:
    """The architecture alone (weights come from the trained run), without ImageNet download."""
    return dataclasses.replace(recipe, pretrained=False, init_from=None)


def recipe_from_record(recipe: dict[str, object]) -> Recipe:
    """The :class:`Recipe` a record states (JSON lists back to the tuples the dataclass holds)."""
    hints = typing.get_type_hints(Recipe)

    def restore(value: object) -> object:
        return tuple(restore(v) for v in value) if isinstance(value, list) else value

    return Recipe(**{key: restore(value) for key, value in recipe.items() if key in hints})


def build_trained(recipe: Recipe, weights: Path) -> nn.Module:
    """``recipe``'s architecture holding the trained ``weights`` (loaded with ``weights_only``)."""
    model = build_model(architecture_recipe(recipe))
    model.load_state_dict(load_weights(weights))
    return model
