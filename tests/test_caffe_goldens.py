"""segrepro against genuine BVLC Caffe 1.0 on the goldens of ``tests/data/caffe-oracle`` (issue
22 item 3; its README says how each was made, by ``tools/caffe-oracle``): FCN-32s, FCN-16s and
FCN-8s at once as deploy nets, DeepLab-LargeFOV up to ``fc8``, and three SGD steps of the FCN
solver, the DeepLab solver and fyu/dilation's context-module training net, at width 1/32 with
random weights on genuine VOC images. Nothing here needs Caffe."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT
from torch import nn

from benchmarks.cli import main
from benchmarks.convert_caffe import create_with_options
from benchmarks.data.voc import read_image
from benchmarks.distributed import Distributed
from benchmarks.files import load_torch
from benchmarks.networks import build_model
from benchmarks.optimizer import build_optimizer, set_learning_rate
from benchmarks.recipes import Recipe, get_recipe
from benchmarks.train import training_step
from benchmarks.training_mode import TrainedPart

GOLDENS = ROOT / "tests" / "data" / "caffe-oracle"
FORWARD = json.loads((GOLDENS / "forward" / "facts.json").read_text())
TRAIN = json.loads((GOLDENS / "train" / "facts.json").read_text())
UPDATE_TOLERANCE = 1e-3
# golden -> (method, its builder's options besides the width)
METHODS = {"fcn32s": ("fcn32s", {}), "fcn16s": ("fcn16s", {}), "fcn8s_atonce": ("fcn8s", {"at_once": True}),
           "deeplab_largefov": ("deeplab_v1", {}), "context_basic": ("context_basic", {})}


def _converted(tmp_path, caffemodel, golden: str, width: float) -> nn.Module:
    """``convert-caffe CAFFEMODEL --method M --option width=W [--option ...]``, loaded strictly into
    the method with the paper's input convention (what ``score`` does with released weights)."""
    method, options = METHODS[golden]
    options = {"width": width, **options}
    out = tmp_path / f"{golden}.pt"
    arguments = [f"{key}={json.dumps(value)}" for key, value in options.items()]
    assert main(["convert-caffe", str(caffemodel), "--method", method, "--out", str(out),
                 *[word for argument in arguments for word in ("--option", argument)]]) == 0
    model = create_with_options(method, options)
    model.load_state_dict(load_torch(out, "convert again"))
    model.input_convention = model.paper_input_convention
    return model


def _image(shared_dir, image_id: str) -> torch.Tensor:
    path = shared_dir / "data" / "voc-real-mini" / "VOCdevkit" / "VOC2012" / "JPEGImages" / f"{image_id}.jpg"
    return torch.from_numpy(read_image(path)).permute(2, 0, 1)[None]


def _agrees(ours: np.ndarray, expected: np.ndarray, label: np.ndarray, what: str) -> None:
    """Labels on >= 99.99% of the pixels, values within 2e-3 of the golden's largest value."""
    assert ours.shape == expected.shape, f"{what}: shape {ours.shape} vs Caffe's {expected.shape}"
    agreement = (ours.argmax(0) == label).mean()
    assert agreement >= 0.9999, f"{what}: labels agree on {100 * agreement:.3f}% of pixels"
    error = np.abs(ours - expected).max() / np.abs(expected).max()
    assert error <= 2e-3, f"{what}: off by {error:.2e} of its largest value"


@pytest.mark.parametrize("golden", ["fcn32s", "fcn16s", "fcn8s_atonce"])
def test_fcn_deploy_nets_reproduce_caffe(tmp_path, shared_dir, golden):
    """``infer.py``'s procedure on a window of a genuine image: the ``score`` blob (pad 100, crops,
    fixed bilinear ``upscore*``, and for the at-once net its ``Scale`` layers x0.01 and x1e-4)."""
    facts = FORWARD[golden]
    model = _converted(tmp_path, GOLDENS / "forward" / facts["caffemodel"], golden, FORWARD["width"]).eval()
    top, left, height, width = facts["window_top_left_height_width"]
    image = _image(shared_dir, facts["image"])[..., top:top + height, left:left + width]
    with torch.no_grad():
        ours = model(model.input_convention.normalize(image))[0].numpy()
    golden_arrays = np.load(GOLDENS / "forward" / facts["outputs"])
    _agrees(ours, golden_arrays[f"{facts['image']}/score"].astype(np.float32), golden_arrays[f"{facts['image']}/label"],
            f"{golden} {facts['image']}")


def test_deeplab_largefov_fc8_reproduces_caffe(tmp_path, shared_dir):
    """The LargeFOV test input (the image padded at the bottom and right with the mean to 513 x 513)
    and its stride-8 ``fc8`` scores (65 x 65). The golden's mean is DeepLab's (104.008, 116.669,
    122.675); segrepro's Caffe convention differs by < 0.01 grey level, far inside the tolerance."""
    facts = FORWARD["deeplab_largefov"]
    model = _converted(tmp_path, GOLDENS / "forward" / facts["caffemodel"], "deeplab_largefov",
                       FORWARD["width"]).eval()
    golden_arrays = np.load(GOLDENS / "forward" / facts["outputs"])
    side = facts["padded_to"]
    for image_id in facts["images"]:
        image = model.input_convention.normalize(_image(shared_dir, image_id))
        padded = F.pad(image, (0, side - image.shape[-1], 0, side - image.shape[-2]))
        with torch.no_grad():
            ours = model.score_map(padded)[0].numpy()
        _agrees(ours, golden_arrays[f"{image_id}/fc8"].astype(np.float32), golden_arrays[f"{image_id}/label"],
                f"deeplab_largefov {image_id}")


def _three_steps(recipe: Recipe, model: nn.Module, part: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
                 golden: str, prefix: str = "") -> dict[str, float]:
    """Three steps through ``build_optimizer``, ``set_learning_rate`` and ``training_step`` from the
    golden's ``initial.caffemodel`` weights; returns, per Caffe blob, how far each parameter lands
    from Caffe's after step 3, relative to the largest value of Caffe's tensor."""
    model.train()
    initial = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = build_optimizer(model, recipe)
    for step in range(TRAIN["iterations"]):
        set_learning_rate(optimizer, recipe, step)
        training_step(part, optimizer, inputs, labels, recipe=recipe, dist_info=Distributed(), precision="fp32")
        optimizer.step()
    expected = np.load(GOLDENS / "train" / golden / f"params_after_{TRAIN['iterations']}_iterations.npz")
    parameters = dict(model.named_parameters())
    errors = {}
    for key in expected.files:
        layer, blob = key.split("/")
        name = f"{prefix}{'fc8' if layer == 'fc8_voc12' else layer}.{'weight' if blob == '0' else 'bias'}"
        if layer.startswith("upscore"):  # lr_mult 0 in Caffe; a fixed bilinear kernel, no parameter, here
            continue
        golden_value, ours = expected[key], parameters[name].detach().numpy()
        golden_update = golden_value - initial[name].numpy()
        errors[key] = (float(np.abs(ours - golden_value).max() / np.abs(golden_value).max()),
                       float(np.abs(ours - golden_value).max() / np.abs(golden_update).max()))
    return errors


def _assert_reproduced(errors: dict[str, tuple[float, float]]) -> None:
    """Every parameter within 1e-4 of Caffe's, relative to the largest value of its tensor (issue
    22), and within UPDATE_TOLERANCE of Caffe's, relative to the largest change Caffe made to it
    in the three steps (which the first bound alone does not see where an update is small)."""
    print({k: f"{p:.1e}/{u:.1e}" for k, (p, u) in errors.items()})
    far = {k: f"{p:.2e}" for k, (p, _) in errors.items() if p > 1e-4}
    assert not far, f"parameters off, relative to their largest value: {far}"
    far = {k: f"{u:.2e}" for k, (_, u) in errors.items() if u > UPDATE_TOLERANCE}
    assert not far, f"parameters off, relative to Caffe's largest update: {far}"


def _model_from_initial(tmp_path, recipe: Recipe, golden: str) -> nn.Module:
    model = build_model(recipe)
    initial = _converted(tmp_path, GOLDENS / "train" / golden / "initial.caffemodel", golden, TRAIN["width"])
    model.load_state_dict(initial.state_dict())
    model.input_convention = initial.input_convention
    return model


def _images(batch: np.lib.npyio.NpzFile) -> torch.Tensor:
    """``batch.npz``'s uint8 BGR windows as the uint8 RGB batch the harness feeds its models."""
    return torch.from_numpy(batch["image_bgr"][..., ::-1].copy()).permute(0, 3, 1, 2)


def _assert_image_golden_reproduced(tmp_path, recipe: Recipe, golden: str) -> None:
    """Three steps of the whole network from the golden's initial weights on its image batch."""
    model = _model_from_initial(tmp_path, recipe, golden)
    batch = np.load(GOLDENS / "train" / golden / "batch.npz")
    errors = _three_steps(recipe, model, TrainedPart(model, recipe), _images(batch),
                          torch.from_numpy(batch["label"].astype(np.int64)), golden)
    _assert_reproduced(errors)


def test_three_sgd_steps_of_the_fcn_solver_reproduce_caffe(tmp_path):
    """``voc-fcn32s`` under its solver.prototxt (lr 1e-10 fixed, momentum 0.99, weight decay 5e-4,
    the loss summed over pixels, batch 1) through the ``fcn32s`` paper recipe."""
    facts = TRAIN["fcn32s"]
    recipe = dataclasses.replace(get_recipe("fcn32s", "paper"), pretrained=False, width=TRAIN["width"], dropout=0.0)
    solver = facts["solver"]
    assert (recipe.lr, recipe.momentum, recipe.weight_decay) == pytest.approx(  # the solver's float32 values
        (solver["base_lr"], solver["momentum"], solver["weight_decay"]), rel=1e-6)
    assert (recipe.schedule, recipe.loss) == (solver["lr_policy"], "sum")
    _assert_image_golden_reproduced(tmp_path, recipe, "fcn32s")


def test_three_sgd_steps_of_the_deeplab_solver_reproduce_caffe(tmp_path):
    """The DeepLab-LargeFOV solver (lr 1e-3, step x0.1, here every 2 iterations so that step 3 runs
    at 1e-4; momentum 0.9, weight decay 5e-4; fc8 at 10x/20x) through the ``deeplab_v1`` paper
    recipe, the loss on the 41 x 41 score map of 321 x 321 crops against labels at pixel 8k. Caffe
    keeps the lr inside its momentum history: without ``set_learning_rate``'s rescaling, step 3
    lands 1e-2 (relative) away."""
    facts = TRAIN["deeplab_largefov"]
    solver = facts["solver"]
    recipe = dataclasses.replace(get_recipe("deeplab_v1", "paper"), pretrained=False, width=TRAIN["width"],
                                 dropout=0.0, step_size=solver["stepsize"])
    assert (recipe.lr, recipe.momentum, recipe.weight_decay, recipe.gamma) == pytest.approx(
        (solver["base_lr"], solver["momentum"], solver["weight_decay"], solver["gamma"]), rel=1e-6)
    assert (recipe.schedule, recipe.lr_multipliers) == (solver["lr_policy"], (("fc8", 10.0),))
    _assert_image_golden_reproduced(tmp_path, recipe, "deeplab_largefov")


def test_three_sgd_steps_of_the_context_training_net_reproduce_caffe(tmp_path):
    """fyu/dilation's context training net (``build_context``: 8 layers, each 3x3 padded by its
    dilation, i.e. ``ContextModule.training_form``) under ``train.py``'s solver for the context module (lr
    1e-3, momentum 0.9, weight decay 5e-4) through the ``context_basic`` paper recipe's optimizer
    (only ``context.`` trained), on the golden's 66 x 66 front-end maps and stride-8 labels."""
    facts = TRAIN["context_basic"]
    solver = facts["solver"]
    recipe = dataclasses.replace(get_recipe("context_basic", "paper"), pretrained=False, width=TRAIN["width"])
    assert (recipe.lr, recipe.momentum, recipe.weight_decay) == pytest.approx(
        (solver["base_lr"], solver["momentum"], solver["weight_decay"]), rel=1e-6)
    # the converted net itself: build_model would need the front end's trained weights (init_from)
    # and builds the deploy buffer; the front end is frozen and not run here
    model = _converted(tmp_path, GOLDENS / "train" / "context_basic" / "initial.caffemodel", "context_basic",
                       TRAIN["width"])
    batch = np.load(GOLDENS / "train" / "context_basic" / "batch.npz")
    features = torch.from_numpy(batch["features"].astype(np.float32))
    errors = _three_steps(recipe, model, TrainedPart(model, recipe), features,
                          torch.from_numpy(batch["label"].astype(np.int64)), "context_basic", prefix="context.")
    _assert_reproduced(errors)
