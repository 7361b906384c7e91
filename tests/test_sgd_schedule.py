"""``set_learning_rate``: torch's SGD under a changing lr follows Caffe's update (``sgd_solver.cpp``:
V = momentum V + lr (grad + decay W), W -= V), written out here by hand on a quadratic."""

import dataclasses

import torch
from torch import nn

from benchmarks.optimizer import build_optimizer, set_learning_rate
from benchmarks.recipes import get_recipe


def test_sgd_under_a_step_schedule_is_caffes_update():
    recipe = dataclasses.replace(get_recipe("deeplab_v1", "paper"), lr=0.1, step_size=2, gamma=0.1, momentum=0.9,
                                 weight_decay=0.0)
    model = nn.Sequential(nn.Linear(1, 1, bias=False))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    optimizer = build_optimizer(model, recipe)
    w, v = 1.0, 0.0  # Caffe's weight and history; the loss is w^2 / 2, so the gradient is w
    for iteration in range(5):
        set_learning_rate(optimizer, recipe, iteration)
        optimizer.zero_grad()
        (model[0].weight ** 2 / 2).sum().backward()
        optimizer.step()
        v = 0.9 * v + 0.1 * 0.1 ** (iteration // 2) * w
        w -= v
        assert abs(model[0].weight.item() - w) < 1e-6, (iteration, model[0].weight.item(), w)


def test_adam_keeps_its_moments_when_the_lr_changes():
    recipe = dataclasses.replace(get_recipe("deeplab_v1", "paper"), optimizer="adam", step_size=1)
    model = nn.Sequential(nn.Linear(1, 1, bias=False))
    optimizer = build_optimizer(model, recipe)
    set_learning_rate(optimizer, recipe, 0)
    model[0].weight.sum().backward()
    optimizer.step()
    moments = {k: v.clone() for k, v in optimizer.state[model[0].weight].items()}
    set_learning_rate(optimizer, recipe, 1)
    assert optimizer.param_groups[0]["lr"] == recipe.lr * recipe.gamma
    assert all(torch.equal(moments[k], v) for k, v in optimizer.state[model[0].weight].items())
