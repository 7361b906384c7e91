"""The optimiser and its learning-rate schedule, with Caffe's conventions (the papers' solvers)."""

from __future__ import annotations

import torch
from torch import nn

from benchmarks.recipes import Recipe, RecipeError

__all__ = ["build_optimizer", "learning_rate", "parameter_groups", "set_learning_rate"]


def parameter_groups(model: nn.Module, recipe: Recipe) -> list[dict[str, object]]:
    """Caffe's convention: biases at ``bias_lr_multiplier`` x lr without weight decay; parameters
    under a prefix of ``recipe.lr_multipliers`` at that multiple; frozen parameters (those
    ``TrainedPart`` froze: outside ``train_only``) left out."""
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        multiplier = next((m for prefix, m in recipe.lr_multipliers if name.startswith(prefix)), 1.0)
        is_bias = name.endswith("bias")
        key = (multiplier * (recipe.bias_lr_multiplier if is_bias else 1.0), 0.0 if is_bias else recipe.weight_decay)
        groups.setdefault(key, []).append(parameter)
    return [{"params": params, "lr_scale": scale, "weight_decay": decay, "lr": recipe.lr * scale}
            for (scale, decay), params in groups.items()]


def build_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """SGD with momentum (the papers), or Adam (a named quick-profile option), over
    ``parameter_groups``; build it after the ``TrainedPart``, which freezes what is not trained."""
    groups = parameter_groups(model, recipe)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(groups, lr=recipe.lr, betas=(recipe.momentum, 0.999))
    raise RecipeError(f"unknown optimizer {recipe.optimizer!r}; use sgd or adam")


def set_learning_rate(optimizer: torch.optim.Optimizer, recipe: Recipe, iteration: int) -> None:
    """Each group's lr for ``iteration`` (``learning_rate`` x its ``lr_scale``). Caffe's SGD keeps the
    lr inside its momentum history (``sgd_solver.cpp``: V = momentum V + lr (grad + decay W); W -= V),
    torch's outside it (buffer = momentum buffer + grad; W -= lr buffer): when the lr changes (a
    ``step`` or ``poly`` schedule) each momentum buffer is scaled by old lr / new lr, which makes
    the two updates the same (checked against genuine Caffe: tests/test_caffe_goldens.py)."""
    for group in optimizer.param_groups:
        new = learning_rate(recipe, iteration) * group["lr_scale"]
        old, group["lr"] = group["lr"], new
        if isinstance(optimizer, torch.optim.SGD) and new != old and new > 0:
            for parameter in group["params"]:
                buffer = optimizer.state.get(parameter, {}).get("momentum_buffer")
                if buffer is not None:
                    buffer.mul_(old / new)


def learning_rate(recipe: Recipe, iteration: int) -> float:
    """The base lr of ``iteration`` under the recipe's schedule (fixed, step or poly)."""
    if recipe.schedule == "fixed":
        return recipe.lr
    if recipe.schedule == "step":
        return recipe.lr * recipe.gamma ** (iteration // recipe.step_size)
    if recipe.schedule == "poly":
        return recipe.lr * (1 - iteration / recipe.iterations) ** recipe.poly_power
    raise RecipeError(f"unknown schedule {recipe.schedule!r}; use fixed, step or poly")
