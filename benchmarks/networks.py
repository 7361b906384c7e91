"""Trained networks on disk: where a run keeps them, their hash, and building one back from the
recipe a record states."""

from __future__ import annotations

import dataclasses
import hashlib
import typing
from pathlib import Path

from torch import nn

from benchmarks.engine import build_model, load_weights
from benchmarks.recipes import Recipe

__all__ = ["architecture_recipe", "build_trained", "file_sha256", "recipe_from_record", "run_folder"]


def run_folder(runs: Path, profile: str, dataset: str, method: str, seed: int) -> Path:
    """``runs/<profile>-<dataset>/<method>/seed<k>``: checkpoints, log and ``weights.pt`` of one run."""
    return runs / f"{profile}-{dataset}" / method / f"seed{seed}"


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
