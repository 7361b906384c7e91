"""``run NAME+crfrnn``: a CRF-RNN trained on top of the frozen network, kept beside its weights,
recorded (what was trained, how long) and reused; its settings never change the network's run."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks.crf.dense_crf import CRFParams
from benchmarks.crfrnn_stage import crfrnn_training
from benchmarks.files import file_sha256
from benchmarks.recipes import get_recipe
from benchmarks.records import load_records
from benchmarks.resolve import base_method

ROOT = Path(__file__).resolve().parents[1]


def _run(data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks", "run", "deeplab_v1+crfrnn", "--data", str(data),
                           "--profile", "quick", "--no-report", "--set", "batch_size=1", "--set", "iterations=1",
                           "--set", "crfrnn_images=2", "--results", str(out / "results"), "--runs", str(out / "runs"),
                           *extra], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_base_method_of_each_stage():
    assert [base_method(t) for t in ("fcn8s", "fcn8s+crf", "fcn8s+crfrnn")] == ["fcn8s"] * 3


def test_crfrnn_stage_trains_on_the_frozen_network_and_is_reused(tmp_path, small_voc):
    data = small_voc(tmp_path / "voc", train=2, val=2)
    first = _run(data, tmp_path, "--set", "crfrnn_iterations=3")
    assert first.returncode == 0, first.stderr[-2000:]
    (record,) = [r for r in load_records(tmp_path / "results") if r["method"] == "deeplab_v1+crfrnn"]
    folder = next((tmp_path / "runs" / "quick-voc2012" / "deeplab_v1").iterdir())
    trained = record["crfrnn"]
    assert record["trained_weights_sha256"] == trained["network_weights_sha256"] == file_sha256(folder / "weights.pt")
    assert (trained["iterations"], trained["images"], trained["train_split"]) == (3, 2, "trainaug")
    assert trained["initial_crf"] == record["crf"] and "network frozen" in trained["trained"]
    state = torch.load(folder / f"crfrnn-{trained['key']}.pt", weights_only=True)
    initial = torch.eye(21) * record["crf"]["w1"]
    assert not torch.equal(state["bilateral_weights"], initial)  # SGD moved the CRF-RNN's parameters
    assert 0 <= record["metrics"]["miou"] <= 1

    again = _run(data, tmp_path, "--set", "crfrnn_iterations=3")
    assert "exists; reusing it" in again.stdout
    other = _run(data, tmp_path, "--set", "crfrnn_iterations=2")  # a new CRF-RNN on the same network
    assert other.returncode == 0, other.stderr[-2000:]
    assert "it 1/1" not in other.stdout and "scoring again" in other.stdout
    assert len(list(folder.glob("crfrnn-*.pt"))) == 2


def test_paper_crfrnn_starts_from_zhengs_prototxt_and_scales_lr_per_blob():
    """torrvision/crfasrnn: theta_alpha 160, theta_beta 3, theta_gamma 3, weights 3 (spatial) and 5
    (bilateral), lr_mult 10000 / 10000 / 1000; the quick profile keeps the method's dense CRF."""
    method_crf = CRFParams(w1=7.0, theta_alpha=60.0, theta_beta=4.0)
    paper = crfrnn_training(get_recipe("frontend", "paper"), method_crf, "0" * 64, 0)
    assert paper["initial_crf"] == {"w1": 5.0, "theta_alpha": 160.0, "theta_beta": 3.0, "w2": 3.0,
                                    "theta_gamma": 3.0, "iterations": 10, "normalisation": "after"}
    assert paper["lr_multipliers"] == {"spatial": 10000.0, "bilateral": 10000.0, "compatibility": 1000.0}
    assert paper["mean_field_iterations"] == {"train": 5, "test": 10} and "cheaper variant" in paper["trained"]
    quick = crfrnn_training(get_recipe("frontend", "quick"), method_crf, "0" * 64, 0)
    assert quick["initial_crf"] == dataclasses.asdict(method_crf) and quick["initial_crf_from"] == "method's dense CRF"


def test_each_blob_learns_at_its_own_rate(tmp_path, small_voc):
    """A zero multiplier freezes its blob; the others move (SGD with per-blob learning rates)."""
    data = small_voc(tmp_path / "voc", train=2, val=2)
    done = _run(data, tmp_path, "--set", "crfrnn_iterations=2", "--set", "crfrnn_lr_multipliers=1,0,1")
    assert done.returncode == 0, done.stderr[-2000:]
    (record,) = [r for r in load_records(tmp_path / "results") if r["method"] == "deeplab_v1+crfrnn"]
    folder = next((tmp_path / "runs" / "quick-voc2012" / "deeplab_v1").iterdir())
    state = torch.load(folder / f"crfrnn-{record['crfrnn']['key']}.pt", weights_only=True)
    eye = torch.eye(21)
    assert torch.equal(state["bilateral_weights"], eye * record["crf"]["w1"])
    assert not torch.equal(state["spatial_weights"], eye * record["crf"]["w2"])
    assert not torch.equal(state["compatibility"], -eye)
