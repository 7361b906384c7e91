"""A run's arithmetic precision (issue 22): fp32 by default as the papers trained, tf32 and bf16 as
recorded choices; what each means on the CPU; that a record names it; that fp32 keeps old run keys."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.data.datasets import resolve_dataset
from benchmarks.distributed import effective_precision, precision_path
from benchmarks.recipes import RecipeError, apply_overrides, get_recipe, recipe_methods
from benchmarks.resolve import RunPlan, run_identity

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "iterations=2", "--set", "checkpoint_every=2", "--set", "log_every=1", "--set", "batch_size=2"]


def test_every_recipe_trains_in_fp32_and_other_precisions_are_checked():
    assert {get_recipe(name, profile).precision for name in recipe_methods() for profile in ("paper", "quick")} == {
        "fp32"}
    recipe = get_recipe("deeplab_v1", "paper")
    assert apply_overrides(recipe, ["precision=bf16"]).precision == "bf16"
    with pytest.raises(RecipeError, match="precision='fp16' is not allowed; it must be fp32 or tf32 or bf16"):
        apply_overrides(recipe, ["precision=fp16"])


def test_precisions_on_the_cpu():
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    for precision, dtype in (("fp32", torch.float32), ("tf32", torch.float32), ("bf16", torch.bfloat16)):
        context, channels_last = precision_path(torch.device("cpu"), precision)
        with context:
            assert (a @ b).dtype == dtype, precision
        assert not channels_last
    assert effective_precision(torch.device("cpu"), "tf32") == "fp32"  # a CPU has no TF32
    assert effective_precision(torch.device("cuda"), "tf32") == "tf32"
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        effective_precision(torch.device("cpu"), "fp16")


def test_fp32_keeps_the_run_key_and_other_precisions_change_it(monkeypatch, tmp_path):
    monkeypatch.setenv("SEGREPRO_CACHE", str(tmp_path))
    source = resolve_dataset(None)
    keys = {p: run_identity(RunPlan(profile="quick", seeds=(0,), overrides=(f"precision={p}",)), source, "fcn32s",
                            0)["key"] for p in ("fp32", "bf16", "tf32")}
    identity = run_identity(RunPlan(profile="quick", seeds=(0,)), source, "fcn32s", 0)
    assert "precision" not in identity["recipe"] and keys["fp32"] == identity["key"]
    assert len(set(keys.values())) == 3


def test_a_record_names_its_precision(tmp_path):
    env = {**os.environ, "SEGREPRO_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("SEGREPRO_DATA", None)
    for precision in ("fp32", "bf16"):
        done = subprocess.run([sys.executable, "-m", "benchmarks", "run", "fcn32s", *TINY, "--no-report",
                               "--precision", precision, "--results", str(tmp_path / precision),
                               "--runs", str(tmp_path / "runs")], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        (path,) = (tmp_path / precision / "records").rglob("seed0*.json")
        record = json.loads(path.read_text())
        assert record["precision"] == record["recipe"]["precision"] == precision
        assert ("precision=bf16" in record["overrides"]) == (precision == "bf16")
