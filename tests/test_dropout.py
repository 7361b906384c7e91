"""Dropout as Caffe's ``Dropout`` layer (issue 22 item 1): every prototxt of FCN
(fcn.berkeleyvision.org ``voc-fcn*/train.prototxt``: ``drop6``/``drop7``, ``dropout_ratio: 0.5``),
DeepLab-LargeFOV (``drop6``/``drop7``, 0.5) and fyu/dilation (``network.py: build_frontend_vgg``,
``L.Dropout(..., dropout_ratio=0.5)``) drops each element independently and scales the kept ones
by 1 / (1 - ratio) in training (Caffe ``dropout_layer.cpp``); nothing at test time."""

from __future__ import annotations

import pytest
import torch

import methods
from benchmarks.networks import build_model
from benchmarks.recipes import get_recipe

DROPOUT_METHODS = ("fcn32s", "fcn8s", "deeplab_v1", "frontend")


def _dropout_io(name: str, train: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(input, output) of every dropout layer of ``name`` (width 1/8) on one random image."""
    torch.manual_seed(0)
    model = methods.create(name, 21, width=1 / 8).train(train)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd)]
    assert len(layers) == 2, f"{name}: expected drop6 and drop7"
    for layer in layers:
        assert layer.p == 0.5
        layer.register_forward_hook(lambda _m, inputs, output: seen.append((inputs[0].clone(), output.clone())))
    with torch.no_grad():
        model(torch.randn(1, 3, 228, 228))
    return seen


@pytest.mark.parametrize("name", DROPOUT_METHODS)
def test_training_dropout_is_element_wise_with_the_prototxt_ratio(name):
    for before, after in _dropout_io(name, train=True):
        live = before != 0
        kept = after != 0
        # kept units are scaled by 1 / (1 - 0.5) exactly; dropped ones are zero
        torch.testing.assert_close(after[kept], 2 * before[kept], rtol=0, atol=0)
        # about half of the live units survive
        assert 0.45 < kept.sum().item() / live.sum().item() < 0.55
        # no channel with 20 or more live units comes out whole zero (element-wise: chance 2^-20 each;
        # channel dropout zeroes about half of them)
        live_channels = live.flatten(2).sum(-1) >= 20
        assert live_channels.sum() > 10
        dead_after = ~kept.flatten(2).any(-1)
        assert not (live_channels & dead_after).any(), f"{name}: a live channel was dropped whole"


@pytest.mark.parametrize("name", DROPOUT_METHODS)
def test_evaluation_dropout_is_the_identity(name):
    for before, after in _dropout_io(name, train=False):
        assert torch.equal(before, after)


def test_quick_profile_dropout_is_the_identity_and_draws_no_random_numbers():
    """The quick profile sets the dropout rate to 0 (NOTES.md): the layer then returns its input
    and leaves the random stream alone, so swapping the channel dropout for the element-wise one
    cannot change a quick-profile run."""
    model = build_model(get_recipe("deeplab_v1", "quick")).train()
    x = torch.randn(1, 3, 64, 64)
    torch.manual_seed(1)
    first = model.score_map(x)
    after_first = torch.rand(4)
    torch.manual_seed(1)
    for layer in (model.drop6, model.drop7):
        layer.forward = lambda h: h  # what a model without dropout layers computes
    second = model.score_map(x)
    assert torch.equal(first, second) and torch.equal(after_first, torch.rand(4))
