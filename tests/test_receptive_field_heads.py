"""Receptive fields of user heads (issue 11): concatenation, interpolation, global pooling and ops
the analysis cannot follow, in the analysis and in `list --import`. Finite fields are counted by
hand in the comments and measured by gradient."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from measured_receptive_field import empirical_receptive_field
from torch import nn

from benchmarks.receptive_field import receptive_field, unit_receptive_field
from methods.common import CaffeInterp, SegmentationModel

ROOT = Path(__file__).resolve().parents[1]


class UserModel(SegmentationModel):
    """A 3x3 stem of stride ``stride``, then ``head``; scores resized to the input as DeepLab does."""

    paper = "a test head"

    def __init__(self, head: nn.Module, stride: int = 1, channels: int = 8) -> None:
        super().__init__()
        self.score_stride = stride
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, stride=stride, padding=1), nn.ReLU())
        self.head = head
        self.final_upsample = CaffeInterp()

    def score_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stem(x))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (Chen et al., DeepLab v3 Sec 3.3, with small rates): a 1x1
    and 3x3 convolutions of dilations ``rates`` side by side, with image pooling (global average,
    1x1, upsampled back) or without, concatenated and projected by a 1x1."""

    def __init__(self, channels: int, out: int, rates: tuple[int, ...] = (2, 4), image_pooling: bool = True) -> None:
        super().__init__()
        self.branches = nn.ModuleList([nn.Conv2d(channels, channels, 1)] + [
            nn.Conv2d(channels, channels, 3, padding=r, dilation=r) for r in rates])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, channels, 1), nn.ReLU()) \
            if image_pooling else None
        self.project = nn.Conv2d(channels * (len(self.branches) + image_pooling), out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [branch(x) for branch in self.branches]
        if self.pool is not None:
            features.append(F.interpolate(self.pool(x), size=x.shape[-2:], mode="bilinear", align_corners=False))
        return self.project(torch.cat(features, dim=1))


class PyramidPooling(nn.Module):
    """PSPNet's pyramid pooling module (Zhao et al. Sec 3.3): average pools to 1, 2, 3 and 6 bins,
    a 1x1 each, upsampled back and concatenated with the input."""

    def __init__(self, channels: int, out: int, bins: tuple[int, ...] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.bins = bins
        self.reduce = nn.ModuleList(nn.Conv2d(channels, channels, 1) for _ in bins)
        self.project = nn.Conv2d(channels * (len(bins) + 1), out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.size()[2:]
        pooled = [F.interpolate(conv(F.adaptive_avg_pool2d(x, b)), size=(h, w), mode="bilinear", align_corners=True)
                  for b, conv in zip(self.bins, self.reduce, strict=True)]
        return self.project(torch.cat([x, *pooled], 1))


class Gated(nn.Module):
    """Channels gated by their spatial mean (a squeeze-and-excitation gate), then a 1x1."""

    def __init__(self, channels: int, out: int) -> None:
        super().__init__()
        self.gate = nn.Conv2d(channels, channels, 1)
        self.project = nn.Conv2d(channels, out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(x * torch.sigmoid(self.gate(x.mean((2, 3), keepdim=True))))


class TwoScale(nn.Module):
    """Only convolutions, interpolation and concatenation: a 3x3 of dilation 2 beside a 3x3 of
    stride 2 whose output is upsampled x2 (bilinear), concatenated, then a 1x1."""

    def __init__(self, channels: int, out: int) -> None:
        super().__init__()
        self.dilated = nn.Conv2d(channels, channels, 3, padding=2, dilation=2)
        self.coarse = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        self.project = nn.Conv2d(2 * channels, out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        coarse = F.interpolate(self.coarse(x), scale_factor=2, mode="bilinear", align_corners=False)
        return self.project(torch.cat([self.dilated(x), coarse], dim=1))


class Sorted(nn.Module):
    """Sorts the channels of every pixel: an op the analysis does not know."""

    def __init__(self, channels: int, out: int) -> None:
        super().__init__()
        self.project = nn.Conv2d(channels, out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.sort(x, dim=1).values)


class Branching(nn.Module):
    """Control flow on tensor values: torch.fx cannot trace it."""

    def __init__(self, channels: int, out: int) -> None:
        super().__init__()
        self.project = nn.Conv2d(channels, out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(x if x.mean() > 0 else -x)


def _model(head: type[nn.Module], stride: int = 1, num_classes: int = 21, **options: object) -> UserModel:
    return UserModel(head(8, num_classes, **options), stride)


USER_HEADS = {
    "rf_test_aspp": lambda num_classes=21, **kw: _model(ASPP, 8, num_classes),
    "rf_test_psp": lambda num_classes=21, **kw: _model(PyramidPooling, 8, num_classes),
    "rf_test_aspp_no_pooling": lambda num_classes=21, **kw: _model(ASPP, 8, num_classes, image_pooling=False),
    "rf_test_two_scale": lambda num_classes=21, **kw: _model(TwoScale, 1, num_classes),
    "rf_test_sorted": lambda num_classes=21, **kw: _model(Sorted, 8, num_classes),
}
"""What ``tests/rf_heads.py`` registers (only in the ``list --import rf_heads`` subprocess, so that
the registry-driven tests of this process never see them)."""


@pytest.mark.parametrize("head", [ASPP, PyramidPooling, Gated])
def test_a_head_with_global_pooling_has_a_global_field(head):
    model = _model(head, stride=8)
    assert receptive_field(model) == receptive_field(model, "score_map") == "global"
    with pytest.raises(ValueError, match="global"):
        unit_receptive_field(model, 0)


def test_aspp_without_image_pooling_is_counted_by_hand_and_measured():
    # stem 3x3 stride 8: 3 px at jump 8; the 3x3 of dilation 4 adds 2 * 4 * 8 = 64: 67 px (the 1x1
    # and the dilation-2 branch lie inside it), so the score map's field is 67. The final
    # corner-aligned x8 resize reads one score unit at u = 8t and two (t, t+1) otherwise: 67 + 8 = 75.
    model = _model(ASPP, stride=8, image_pooling=False)
    assert receptive_field(model, "score_map") == 67
    assert receptive_field(model) == 75
    # Score unit t reads [8t-33, 8t+33]: output unit 56 = 8 * 7 reads t = 7 alone, 57 reads t = 7, 8.
    # On 113 = 8 * 14 + 1 px, the 15-unit score map resized corner to corner is exactly x8.
    for unit, expected in ((56, (23, 89)), (57, (23, 97))):
        assert unit_receptive_field(model, unit) == expected
        measured = empirical_receptive_field(model, 113, unit=unit, seeds=(0,))
        assert measured.rows == measured.cols == expected


def test_two_scale_concat_head_is_counted_by_hand_and_measured():
    # stem unit t reads input [t-1, t+1]. Dilated branch: stem t-2..t+2 -> [u-3, u+3].
    # Coarse branch: unit v reads stem 2v-1..2v+1 -> [2v-2, 2v+2]; bilinear x2 reads v around
    # (u + 1/2) / 2 - 1/2: u = 2m reads m-1, m -> [u-4, u+2]; u = 2m+1 reads m, m+1 -> [u-3, u+3].
    # Concatenated: [u-4, u+3] (8 px) for even u, [u-3, u+3] (7 px) for odd u; the 1x1 and the
    # (ratio 1) final resize keep it. Receptive field: 8.
    model = _model(TwoScale)
    assert receptive_field(model) == receptive_field(model, "score_map") == 8
    for unit, expected in ((12, (8, 15)), (13, (10, 16))):
        assert unit_receptive_field(model, unit) == expected
        measured = empirical_receptive_field(model, 26, unit=unit, seeds=(0,))
        assert measured.rows == measured.cols == expected


class Resample(nn.Module):
    """A 3x3 of stride 2, resized back to the input."""

    def __init__(self, resize: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, stride=2, padding=1)
        self.resize = resize
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if self.resize == "bilinear x2":
            return F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
        if self.resize == "bilinear to size, corners":
            return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=True)
        if self.resize == "nearest-exact to size":
            return F.interpolate(y, size=x.shape[-2:], mode="nearest-exact")
        return self.upsample(y)


# Conv unit v reads input [2v-1, 2v+1]. Output units 10 and 11 read:
# bilinear x2: v around (u + 1/2) / 2 - 1/2: 4, 5 -> [7, 11]; 5, 6 -> [9, 13];
# bilinear to a 25 px input, corners (13 units to 25: exactly u / 2): 5 -> [9, 11]; 5, 6 -> [9, 13];
# nearest x2, floor(u / 2): 5 -> [9, 11], [9, 11]; nearest-exact, floor((u + 1/2) / 2): the same.
@pytest.mark.parametrize(("resize", "input_size", "fields", "widest"), [
    ("bilinear x2", 24, {10: (7, 11), 11: (9, 13)}, 5),
    ("bilinear to size, corners", 25, {10: (9, 11), 11: (9, 13)}, 5),
    ("nearest x2", 24, {10: (9, 11), 11: (9, 11)}, 3),
    ("nearest-exact to size", 24, {10: (9, 11), 11: (9, 11)}, 3),
])
def test_interpolation_fields_are_exact(resize, input_size, fields, widest):
    model = Resample(resize)
    assert receptive_field(model) == widest
    for unit, expected in fields.items():
        assert unit_receptive_field(model, unit) == expected
        measured = empirical_receptive_field(model, input_size, in_channels=1, unit=unit, seeds=(0,))
        assert measured.rows == measured.cols == expected


@pytest.mark.parametrize(("model", "expected"), [
    (_model(Sorted), "unknown (torch.sort)"),
    (nn.Sequential(nn.Conv2d(3, 3, (1, 7))), "unknown (Conv2d 0: non-square kernel (1, 7))"),
    (nn.Sequential(nn.Conv2d(3, 3, 3), nn.AdaptiveAvgPool2d(6)),
     "unknown (AdaptiveAvgPool2d 1: output size 6: each bin sees a fraction of the input)"),
    (_model(Branching), "unknown (torch.fx cannot trace forward: symbolically traced variables cannot be used as "
                        "inputs to control flow)"),
])
def test_an_op_that_cannot_be_followed_is_unknown(model, expected):
    assert receptive_field(model) == expected


def test_a_module_without_a_rule_that_sees_the_whole_map_is_global():
    """GroupNorm has no rule; its statistics are taken over the whole map, as measured."""
    assert receptive_field(nn.Sequential(nn.Conv2d(3, 3, 3), nn.GroupNorm(1, 3))) == "global"


def test_unknown_yields_to_global():
    # the field of a concatenation with a global branch is the whole input, whatever the others
    model = nn.Sequential(nn.Conv2d(3, 3, 3), PyramidPooling(3, 2, bins=(6, 1)))
    assert receptive_field(model) == "global"
    # no bin sees the whole input: the first op it cannot follow is named
    assert receptive_field(nn.Sequential(nn.Conv2d(3, 3, 3), PyramidPooling(3, 2, bins=(6, 2)))) == (
        "unknown (torch.nn.functional.adaptive_avg_pool2d: output size 6: each bin sees a fraction of the input)")


def test_list_shows_user_heads_registered_by_import():
    environment = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    result = subprocess.run([sys.executable, "-m", "benchmarks", "list", "--json", "--import", "rf_heads"], cwd=ROOT,
                            env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    fields = {name: (rows[name]["receptive_field"], rows[name]["score_receptive_field"]) for name in USER_HEADS}
    assert fields == {
        "rf_test_aspp": ("global", "global"),
        "rf_test_psp": ("global", "global"),
        "rf_test_aspp_no_pooling": (75, 67),
        "rf_test_two_scale": (8, 8),
        "rf_test_sorted": ("unknown (torch.sort)", "unknown (torch.sort)"),
    }
    aspp = rows["rf_test_aspp"]
    assert aspp["paper"] == "a test head" and aspp["score_stride"] == 8 and not aspp["crf"]
    assert aspp["params"] == sum(p.numel() for p in USER_HEADS["rf_test_aspp"]().parameters())
    assert rows["fcn32s"]["receptive_field"] == 436  # the built-in methods are listed beside them
