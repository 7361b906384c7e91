"""Limits before work (issue 26 item 4): recipe and CRF values whose cost can be computed are
refused before anything runs, with the estimate in one line. The lower bounds here are counted by
hand from the network's first layer and the batch's bytes, not by the code under test."""

import dataclasses
import re

import pytest
import torch
from record_files import make_record, write_record_files

from benchmarks.cli import main
from benchmarks.crf.dense_crf import CRFParams
from benchmarks.errors import RecipeError
from benchmarks.limits import MAX_DAYS, check_crf_cost
from benchmarks.recipes import get_recipe
from benchmarks.run import searched_crf

QUICK_WIDTH, QUICK_BATCH = 1 / 16, 8  # deeplab_v1's quick recipe (benchmarks/recipes.py: _quick)


def _run(capsys, tmp_path, data, *sets: str) -> tuple[int, list[str]]:
    args = ["run", "deeplab_v1", "--data", str(data), "--profile", "quick", "--results", str(tmp_path / "results"),
            "--runs", str(tmp_path / "runs"), "--no-report", "--device", "cpu"]
    status = main([*args, *(item for value in sets for item in ("--set", value))])
    return status, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize(("setting", "lower_bound_gb"), [
    # conv1_1's output alone: batch x 64 * width channels x crop^2 float32
    ("crop=1000000", QUICK_BATCH * 64 * QUICK_WIDTH * 1e12 * 4 / 1e9),
    # VGG-16's convolutions after the first alone (3x3 weights between 64, 64, 128, 128, 256 x3, 512 x6
    # channels, each scaled by the width), with their gradient and Adam's two moments, float32
    ("width=1000", sum(9 * a * b for a, b in zip([64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512],
                                                  [64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512],
                                                  strict=True)) * 1e6 * 4 * 4 / 1e9),
    # the batch of VOC-size images scaled 1000x before cropping: uint8 RGB
    ("scale=1000,1000", QUICK_BATCH * 375_000 * 500_000 * 3 / 1e9),
])
def test_a_step_that_cannot_fit_in_memory_is_refused_before_any_work(capsys, tmp_path, small_voc, setting,
                                                                     lower_bound_gb):
    data = small_voc(tmp_path / "voc")
    status, lines = _run(capsys, tmp_path, data, setting)
    assert status == 2
    (line,) = [line for line in lines if "one training step" in line]
    found = re.fullmatch(r"error: deeplab_v1: one training step needs an estimated (\S+) GB \(state \S+, activations "
                         r"\S+, images \S+\) but (\S+) GB are available on cpu; lower crop, scale, width or batch_size "
                         r"\(--set\)", line)
    assert found, line
    estimate, available = float(found[1]), float(found[2])
    assert lower_bound_gb <= estimate <= 100 * lower_bound_gb
    meminfo = dict(line.split(":", 1) for line in open("/proc/meminfo").read().splitlines())
    assert 0.5 < available / (int(meminfo["MemAvailable"].split()[0]) * 1024 / 1e9) < 2
    assert not [p for folder in ("runs", "results") for p in (tmp_path / folder).rglob("*") if p.is_file()]


def test_a_schedule_longer_than_the_limit_is_refused(capsys, tmp_path, small_voc):
    data = small_voc(tmp_path / "voc")
    status, lines = _run(capsys, tmp_path, data, "iterations=1000000000000")
    assert status == 2 and len(lines) == 1, lines
    found = re.fullmatch(r"error: deeplab_v1: 1000000000000 iterations are (\S+) PFLOP, at least (\S+) days on cpu "
                         r"even at 1 TFLOP/s \(the limit is 30 days\); lower iterations \(--set iterations=N\) or the "
                         r"crop, width or batch_size", lines[0])
    assert found, lines[0]
    pflop, days = float(found[1]), float(found[2])
    assert days == pytest.approx(pflop * 1e15 / 1e12 / 86400, rel=1e-2) and days > MAX_DAYS
    # conv1_1 on VOC-size images, forward and backward (3x): a lower bound of the step's FLOPs
    assert pflop * 1e15 >= 1e12 * 3 * QUICK_BATCH * 2 * 3 * 9 * 64 * QUICK_WIDTH * 375 * 500
    assert not [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]


def test_crf_iterations_past_the_limit_are_refused(tmp_path):
    """A stored crf-search whose best setting says iterations 10^9 ran ``run NAME+crf`` until killed;
    run checks the setting it takes (searched_crf) with check_crf_cost before the CRF runs."""
    best = {**dataclasses.asdict(CRFParams()), "iterations": 1_000_000_000}
    search = {"best": best, "images": 4, "split": "crfholdout", "trained_weights_sha256": "d" * 64}
    record, counts = make_record("deeplab_v1", 62.25, crf_search=search)
    path = write_record_files(tmp_path / "deeplab_v1.json", record, counts)
    params, source = searched_crf(path, "d" * 64, get_recipe("deeplab_v1", "quick"))
    assert params.iterations == 1_000_000_000
    days = re.escape(f"{1e9 * 1449 * 500 * 375 * 21 * 100 / 1e12 / 86400:.3g}")  # 100 FLOPs a pixel, class; 1 TFLOP/s
    with pytest.raises(RecipeError, match=rf"^CRF of crf-search on 4 crfholdout images .*: 1000000000 mean-field "
                                          rf"iterations on 1449 images are \S+ PFLOP, at least {days} days on cpu"):
        check_crf_cost(params.iterations, 1449, f"CRF of {source}", torch.device("cpu"))
    check_crf_cost(10, 1449, "recipe", torch.device("cpu"))  # DeepLab's 10 on VOC val: 0.066 days


def test_crf_search_and_crfrnn_iterations_past_the_limit_are_refused(capsys, tmp_path, small_voc):
    """crf-search runs the recipe's mean-field iterations at every grid point; the CRF-RNN stage runs
    the network and 5 mean-field iterations a step: both checked before the network trains."""
    data = small_voc(tmp_path / "voc")
    common = ["--data", str(data), "--profile", "quick", "--results", str(tmp_path / "results"), "--runs",
              str(tmp_path / "runs"), "--device", "cpu"]
    status = main(["crf-search", "deeplab_v1", *common, "--split", "val", "--set", "crf=iterations:1000000000"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and re.fullmatch(
        r"error: crf-search \(\d+ coarse and up to 27 fine points on \d+ images\): 1000000000 mean-field iterations "
        r"on \d+ images are \S+ PFLOP, at least \S+ days on cpu even at 1 TFLOP/s \(the limit is 30 days\); the papers "
        r"use 10", err[0]), err
    assert not [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]
    status = main(["run", "deeplab_v1+crfrnn", *common, "--no-report", "--set", "crfrnn_iterations=100000000000"])
    err = capsys.readouterr().err.strip().splitlines()
    found = re.fullmatch(r"error: deeplab_v1\+crfrnn: its CRF-RNN training steps and mean-field iterations are (\S+) "
                         r"PFLOP, at least (\S+) days on cpu even at 1 TFLOP/s \(the limit is 30 days\); lower "
                         r"crfrnn_iterations \(--set crfrnn_iterations=N\)", err[-1])
    assert status == 2 and found, err
    # each step's 5 mean-field iterations forward and backward (3x), 100 FLOPs a pixel and class, alone
    mean_field = 1e11 * 3 * 5 * 500 * 375 * 21 * 100
    assert mean_field <= float(found[1]) * 1e15 <= 2 * mean_field
    assert not [p for p in (tmp_path / "runs").rglob("*") if p.is_file()], "refused before the network trained"


def test_dense_crf_iterations_of_the_recipe_past_the_limit_are_refused_before_training(capsys, tmp_path, small_voc):
    data = small_voc(tmp_path / "voc")
    status = main(["run", "deeplab_v1+crf", "--data", str(data), "--profile", "quick", "--results",
                   str(tmp_path / "results"), "--runs", str(tmp_path / "runs"), "--device", "cpu", "--no-report",
                   "--set", "batch_size=1", "--set", "crf=iterations:1000000000000"])
    err = capsys.readouterr().err.strip().splitlines()
    found = re.fullmatch(r"error: deeplab_v1\+crf: its dense-CRF mean-field iterations are (\S+) PFLOP, at least \S+ "
                         r"days on cpu .*; lower the CRF's iterations \(--set crf=iterations:N; the papers use 10\)",
                         err[-1])
    assert status == 2 and found, err
    images = len((data / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt").read_text().split())
    assert float(found[1]) * 1e15 == pytest.approx(1e12 * images * 500 * 375 * 21 * 100, rel=5e-3)
    assert not [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]


def test_a_user_model_that_cannot_run_on_the_meta_device_goes_without_the_estimate(capsys):
    """A user's score_map reading a value of its scores (``.item()``) trains on real tensors but
    ended `compare` in "Tensor.item() cannot be called on meta tensors" while the plan counted its
    FLOPs (re-probe 3 of issue 26): the plan goes on without that estimate and says so in one line;
    this package's models keep the count (fcn32s: 3 x its forward, conv1_1 alone a lower bound)."""
    from torch import nn

    import methods
    from benchmarks.bench.methods import recipe_step_flops
    from benchmarks.plan import _estimated
    from benchmarks.recipes import recipe_for_new_head
    from methods.common import CaffeInterp, SegmentationModel

    class ReadsAValue(SegmentationModel):
        score_stride = 8

        def __init__(self, num_classes: int) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, num_classes, 3, stride=8, padding=1)
            self.final_upsample = CaffeInterp()

        def score_map(self, x: torch.Tensor) -> torch.Tensor:
            scores = self.conv(x)
            return scores / max(1.0, float(scores.detach().abs().max()))

    def builder(num_classes=21, **options):
        return ReadsAValue(num_classes)
    builder.__module__ = "my_heads"
    methods.register("reads_a_value", paper="a test")(builder)
    recipe = recipe_for_new_head("reads_a_value", get_recipe("fcn32s", "quick"))
    assert _estimated(recipe, recipe_step_flops) is None
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == ("NOTE: reads_a_value: memory and time not estimated, its model does not run on torch's meta "
                    "device (RuntimeError: Tensor.item() cannot be called on meta tensors)")
    fcn = get_recipe("fcn32s", "quick")
    assert _estimated(fcn, recipe_step_flops) >= 3 * fcn.batch_size * 2 * 3 * 9 * round(64 * fcn.width) * 100 * 100
    assert not capsys.readouterr().err
