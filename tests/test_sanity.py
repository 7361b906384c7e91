"""The sanity gate stops a run whose first loss is far from ln(21) or whose loss is flat at the
first checkpoint, naming the likely cause; a healthy run passes it."""

import dataclasses
import math

import pytest
import torch
from torch import nn

import methods
from benchmarks.data.datasets import resolve_dataset
from benchmarks.distributed import Distributed
from benchmarks.recipes import get_recipe, recipe_for_new_head
from benchmarks.sanity import SanityGate, SuspiciousLoss
from benchmarks.train import train
from methods.common import CaffeInterp, SegmentationModel

CPU = Distributed(device=torch.device("cpu"))


class _Head(SegmentationModel):
    """A small head whose classifier is initialised N(0, ``std``^2)."""

    score_stride = 8

    def __init__(self, num_classes: int, std: float) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, stride=8, padding=1), nn.ReLU(), nn.Conv2d(16, num_classes, 1))
        nn.init.normal_(self.body[2].weight, std=std)
        self.final_upsample = CaffeInterp()

    def score_map(self, x):
        return self.body(x)


methods.register("sanity_test_loud_head", paper="a test head")(lambda num_classes=21, **_: _Head(num_classes, 1.0))
methods.register("sanity_test_quiet_head", paper="a test head")(lambda num_classes=21, **_: _Head(num_classes, 1e-3))


def test_gate_by_hand():
    gate = SanityGate("m", 21, checkpoint_every=30)
    assert gate.checkpoint_at == 120  # the first checkpoint at least 100 iterations in
    gate.check_first(math.log(21) + 0.1)
    for iteration in (100, 110):
        gate.check_logged(iteration, 3.1)  # not yet the checkpoint
    with pytest.raises(SuspiciousLoss, match="has not fallen in 120 iterations"):
        gate.check_logged(120, 3.1)  # 3.1 >= 0.98 * (ln 21 + 0.1) = 3.08
    falling = SanityGate("m", 21, checkpoint_every=100)
    falling.check_first(3.0)
    falling.check_logged(100, 2.9)  # 2.9 < 0.98 * 3.0
    with pytest.raises(SuspiciousLoss, match=r"ln\(21\) = 3.04"):
        SanityGate("m", 21, checkpoint_every=100).check_first(4.6)  # |4.6 - 3.04| > 1.52
    SanityGate("m", 21, checkpoint_every=100, enabled=False).check_first(50.0)


def test_first_loss_far_from_ln21_stops_the_run(tmp_path, small_voc):
    source = resolve_dataset(small_voc(tmp_path / "voc"))
    recipe = dataclasses.replace(recipe_for_new_head("sanity_test_loud_head", get_recipe("deeplab_v1", "quick")),
                                 batch_size=1, iterations=2, crop=64)
    with pytest.raises(SuspiciousLoss, match="input convention"):
        train(recipe, source, tmp_path / "run", 0, CPU)
    assert not (tmp_path / "run" / "weights.pt").exists()
    train(recipe, source, tmp_path / "run", 0, CPU, sanity_gate=False)
    assert (tmp_path / "run" / "weights.pt").is_file()


def test_flat_loss_stops_the_run_at_the_first_checkpoint(tmp_path, small_voc):
    """A near-zero classifier and a learning rate far too small: the loss stays at ln(21)."""
    source = resolve_dataset(small_voc(tmp_path / "voc"))
    recipe = dataclasses.replace(recipe_for_new_head("sanity_test_quiet_head", get_recipe("deeplab_v1", "quick")),
                                 lr=1e-12, batch_size=1, iterations=101, crop=64, checkpoint_every=50, log_every=10)
    with pytest.raises(SuspiciousLoss, match="has not fallen in 100 iterations"):
        train(recipe, source, tmp_path / "run", 0, CPU)
