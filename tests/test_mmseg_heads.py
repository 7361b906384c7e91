"""mmsegmentation decode heads as methods (methods/mmseg.py): each curated head builds at width
1/16, trains (forward/backward) on the CPU, computes what mmsegmentation's own head computes on
the same features, and is listed with its receptive field; ``compare`` gives a new head the fair
recipe; a 2-process gloo torchrun trains a head with auxiliary outputs."""

import copy
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import methods
from benchmarks.catalogue import method_facts
from benchmarks.compare import fair_recipe
from benchmarks.records import load_records
from methods.errors import MethodError

ROOT = Path(__file__).resolve().parents[1]

# The curated set, and each head's receptive field on the front end (score map, before the
# x8 upsampling), stated independently of the analysis. The front end's by hand (Yu & Koltun Sec 4):
# conv1 5, pool1 6 (jump 2), conv2 14, pool2 16 (jump 4), conv3 40, pool3 44 (jump 8), conv4 92,
# conv5 (dilation 2) 188, fc6 (7x7, dilation 4) 380. FCNHead adds three 3x3 convolutions at jump 8
# (two convs + conv_cat): 380 + 3 * 2 * 8 = 428. The others pool or attend over the whole map.
FRONTEND_SCORE_RF = 5 + 1 + 8 + 2 + 24 + 4 + 48 + 96 + 192
CURATED_RF = {"mmseg_fcn": FRONTEND_SCORE_RF + 48, "mmseg_aspp": "global", "mmseg_dsaspp": "global",
              "mmseg_psp": "global", "mmseg_da": "global", "mmseg_nl": "global", "mmseg_gc": "global",
              "mmseg_ema": "global", "mmseg_isa": "global", "mmseg_apc": "global", "mmseg_dm": "global"}
AUXILIARY = {"mmseg_da"}  # DANet's PAM and CAM outputs, reduced to the main one


def test_the_curated_heads_are_registered_with_their_config_and_versions():
    assert set(CURATED_RF) <= set(methods.list_methods())
    versions = {p: importlib.metadata.version(p) for p in ("mmsegmentation", "mmcv-lite", "mmengine")}
    for name in CURATED_RF:
        details = methods.get_entry(name).details
        assert details["packages"] == versions and details["feature"] == "fc7"
        assert details["mmseg_head"]["type"].endswith("Head")
        json.dumps(details)  # a record stores it


@pytest.mark.parametrize("name", sorted(CURATED_RF))
def test_head_trains_on_the_cpu_and_computes_mmsegs_head(name):
    from mmseg.registry import MODELS

    torch.manual_seed(0)
    model = methods.create(name, 21, width=1 / 16)
    images = model.input_convention.normalize(torch.rand(2, 3, 45, 37) * 255)
    scores = model(images)
    assert scores.shape == (2, 21, 45, 37)
    F.cross_entropy(scores, torch.randint(0, 21, (2, 45, 37))).backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    without = sorted(n for n, p in trainable.items() if p.grad is None)
    assert model.unused_parameters == (name in AUXILIARY) == bool(without), without
    assert all(n.startswith("head.decode_head.") and "_conv_seg" in n for n in without)  # the auxiliary classifiers
    assert all(torch.isfinite(p.grad).all() for p in trainable.values() if p.grad is not None)
    assert any(p.grad.abs().sum() > 0 for n, p in trainable.items() if n.startswith("frontend.conv1_1"))

    # mmsegmentation's own head, built from the config the model states, on the same fc7 features
    reference = MODELS.build(copy.deepcopy(model.head_config))
    reference.load_state_dict(model.head.decode_head.state_dict())
    model.eval()
    reference.eval()
    with torch.no_grad():
        features = model.frontend(images)
        expected = reference([features])
        expected = expected[0] if isinstance(expected, tuple) else expected
        assert torch.allclose(model.score_map(images), expected, atol=1e-6)
    assert model.head_config["in_channels"] == 256 and model.head_config["norm_cfg"]["type"] == "BN"


@pytest.mark.parametrize("name", sorted(CURATED_RF))
def test_list_shows_the_receptive_field(name):
    facts = method_facts(name)
    assert facts["score_stride"] == 8
    assert facts["score_receptive_field"] == CURATED_RF[name]
    if CURATED_RF[name] != "global":  # the x8 bilinear deconvolution (k16 s8) adds one unit of 8 px
        assert facts["receptive_field"] == CURATED_RF[name] + 8


def test_conv5_feature_lies_on_fc7s_grid():
    """``feature="conv5"``: conv5_3 cropped by 12 units per side has fc7's map size."""
    from methods.mmseg import MMSegHeadNetwork

    model = MMSegHeadNetwork(21, {"type": "FCNHead", "channels": 512}, feature="conv5", width=1 / 16)
    assert not hasattr(model.frontend, "fc6")
    images = torch.zeros(1, 3, 50, 61)
    with torch.no_grad():
        fc7 = methods.create("frontend", 21, width=1 / 16).frontend(images)
        assert model.features(images).shape[-2:] == fc7.shape[-2:]
        assert model(images).shape == (1, 21, 50, 61)


def test_a_head_that_changes_the_stride_is_refused():
    """SETR's progressive-upsampling head upsamples x4: its scores would have stride 2, not 8."""
    from methods.mmseg import MMSegHeadNetwork

    with pytest.raises(ValueError, match="output stride is not 8"):
        MMSegHeadNetwork(21, {"type": "SETRUPHead", "channels": 256, "num_convs": 1, "up_scale": 4,
                              "kernel_size": 3}, width=1 / 16)


def test_a_head_that_needs_compiled_ops_is_a_clear_error():
    """mmcv-lite: the stand-in mmcv.ops lets mmseg.models import; CCNet's criss-cross attention raises."""
    from methods.mmseg import MMSegHeadNetwork

    with pytest.raises(MethodError, match=r"'CCHead' does not build from its config: RuntimeError: mmcv\.ops\."
                                          r"CrissCrossAttention is a compiled op, absent from mmcv-lite; install"):
        MMSegHeadNetwork(21, {"type": "CCHead", "channels": 512}, width=1 / 16)


def test_the_fair_recipe_is_the_baseline_sharing_the_trunk_staged_the_same_way():
    recipe, why = fair_recipe("mmseg_aspp", ["deeplab_v1", "context_large"], "quick")
    assert (recipe.init_from, recipe.train_only, recipe.cached_features) == ("frontend", "head.", True)
    assert (recipe.iterations, recipe.batch_size) == (1000, 8)  # context_large's, after the same front end run
    assert "the context_large recipe" in why and "staged like it" in why
    recipe, why = fair_recipe("mmseg_aspp", ["context_large", "deeplab_v1"], "quick", recipe_from="deeplab_v1")
    assert (recipe.init_from, recipe.train_only, recipe.cached_features) == (None, None, False)
    assert recipe.iterations == 400 and "end to end" in why and "--recipe-from" in why


def test_two_gloo_processes_train_a_head_with_auxiliary_outputs(tmp_path, small_voc):
    """DANet's auxiliary classifiers take no gradient: DDP must be told (find_unused_parameters)."""
    data = small_voc(tmp_path / "voc", train=2, val=2)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "SEGREPRO_CACHE": str(tmp_path / "cache")}
    args = ["compare", "mmseg_da", "--baseline", "deeplab_v1", "--data", str(data), "--profile", "quick",
            "--set", "iterations=2", "--set", "batch_size=2", "--set", "crop=65", "--resamples", "50",
            "--results", str(tmp_path / "r"), "--runs", str(tmp_path / "w"), "--device", "cpu"]
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m",
                             "benchmarks", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "95% paired bootstrap CI" in result.stdout and "trained end to end" in result.stdout
    record = next(r for r in load_records(tmp_path / "r") if r["method"] == "mmseg_da")
    assert record["hardware"]["world_size"] == 2 and record["recipe"]["iterations"] == 2
    assert record["method_details"]["mmseg_head"]["type"] == "DAHead"
    assert record["method_details"]["packages"]["mmsegmentation"] == importlib.metadata.version("mmsegmentation")
