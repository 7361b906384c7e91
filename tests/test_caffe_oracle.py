"""segrepro against genuine BVLC Caffe 1.0 (issue 22 item 2): the goldens in
``../shared/data/caffe-oracle/`` (its README says how they were made) are the authors' own nets
(fyu/dilation ``dilation8_pascal_voc_deploy.prototxt``, fcn.berkeleyvision.org
``voc-fcn8s/deploy.prototxt``, fyu/dilation ``network.py``'s front end under ``train.py``'s solver)
at width 1/16 with random weights, run by Caffe on genuine VOC images. Nothing here needs Caffe."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from benchmarks.cli import main
from benchmarks.convert_caffe import create_with_options
from benchmarks.data.voc import read_image
from benchmarks.distributed import Distributed
from benchmarks.files import load_torch
from benchmarks.networks import build_model
from benchmarks.optimizer import build_optimizer
from benchmarks.recipes import get_recipe
from benchmarks.train import training_step
from benchmarks.training_mode import TrainedPart

WIDTH = 0.0625
# the golden's net -> the method whose published test procedure it checks, and the output compared
FORWARD = {"dilation8": ("context_large", "zoom_prob"), "fcn8s": ("fcn8s", "score")}


@pytest.fixture(scope="module")
def oracle(shared_dir):
    return shared_dir / "data" / "caffe-oracle"


def _converted(tmp_path, caffemodel, method: str) -> torch.nn.Module:
    """``convert-caffe CAFFEMODEL --method METHOD --option width=0.0625``, loaded strictly into the
    method with the paper's input convention (what ``score`` does with released weights)."""
    out = tmp_path / f"{method}.pt"
    assert main(["convert-caffe", str(caffemodel), "--method", method, "--out", str(out),
                 "--option", f"width={WIDTH}"]) == 0
    model = create_with_options(method, {"width": WIDTH})
    model.load_state_dict(load_torch(out, "convert again"))
    model.input_convention = model.paper_input_convention
    return model.eval()


@pytest.mark.parametrize("net", sorted(FORWARD))
def test_published_test_procedure_reproduces_caffe(tmp_path, oracle, net):
    """Labels agree on >= 99.99% of each image's pixels; dilation8's zoomed probabilities and
    fcn8s's scores are within 2e-3 of the largest value of the golden."""
    facts = json.loads((oracle / "forward" / "facts.json").read_text())
    method, output = FORWARD[net]
    model = _converted(tmp_path, oracle / "forward" / facts[net]["caffemodel"], method)
    golden = np.load(oracle / "forward" / facts[net]["outputs"])
    images = oracle.parent / "voc-real-mini" / "VOCdevkit" / "VOC2012" / "JPEGImages"
    for image_id in facts["images"]:
        image = torch.from_numpy(read_image(images / f"{image_id}.jpg")).permute(2, 0, 1)[None]
        with torch.no_grad():
            inputs = model.input_convention.normalize(image)
            ours = (model.published_probabilities(inputs) if output == "zoom_prob" else model(inputs))[0].numpy()
        expected = golden[f"{image_id}/{output}"].astype(np.float32)
        assert ours.shape == expected.shape
        agreement = (ours.argmax(0) == golden[f"{image_id}/label"]).mean()
        assert agreement >= 0.9999, f"{net} {image_id}: labels agree on {100 * agreement:.3f}% of pixels"
        error = np.abs(ours - expected).max() / np.abs(expected).max()
        assert error <= 2e-3, f"{net} {image_id}: {output} off by {error:.2e} of its largest value"


def test_three_sgd_steps_of_the_frontend_recipe_reproduce_caffe(tmp_path, oracle):
    """The ``frontend`` paper recipe (SGD, momentum 0.9, weight decay 5e-4, biases at 2x lr without
    decay, the mean loss over valid pixels) at the golden's lr, through ``build_optimizer`` and
    ``training_step`` on ``batch.npz`` from ``initial.caffemodel``: every parameter after each of
    the three steps within 1e-4 of Caffe's, relative to its tensor's largest value. The golden's
    net has no dropout (its README), so the recipe's dropout is set to 0 here."""
    facts = json.loads((oracle / "train" / "facts.json").read_text())
    recipe = dataclasses.replace(get_recipe("frontend", "paper"), lr=facts["solver"]["base_lr"], pretrained=False,
                                 width=WIDTH, dropout=0.0)
    assert (recipe.momentum, recipe.weight_decay) == (facts["solver"]["momentum"], facts["solver"]["weight_decay"])
    model = build_model(recipe)
    initial = _converted(tmp_path, oracle / "train" / "initial.caffemodel", "frontend")
    model.load_state_dict(initial.state_dict())
    model.input_convention = initial.input_convention  # Caffe weights: fyu/dilation's BGR mean, as a Caffe-run
    model.train()
    batch = np.load(oracle / "train" / "batch.npz")
    # batch.npz holds mean-subtracted BGR: back to the RGB 0..255 the harness feeds its models
    mean_bgr = np.array(model.input_convention.mean, dtype=np.float32)[:, None, None]
    inputs = torch.from_numpy((batch["data"] + mean_bgr)[:, ::-1].copy())
    labels = torch.from_numpy(batch["label"][:, 0].astype(np.int64))
    part = TrainedPart(model, recipe)
    optimizer = build_optimizer(model, recipe)
    expected = np.load(oracle / "train" / "params_after_each_iteration.npz")
    caffe_names = {f"{layer}/{blob}": f"{layer}.{'weight' if blob == '0' else 'bias'}"
                   for layer, blob in (key.split("/")[1:] for key in expected.files if key.startswith("iter1/"))}
    parameters = {name.removeprefix("frontend."): p for name, p in model.named_parameters()}
    assert set(caffe_names.values()) == set(parameters)
    for step in range(1, facts["solver"]["iterations"] + 1):
        training_step(part, optimizer, inputs, labels, recipe=recipe, dist_info=Distributed(), precision="fp32")
        optimizer.step()
        for caffe_name, name in caffe_names.items():
            golden = expected[f"iter{step}/{caffe_name}"]
            error = np.abs(parameters[name].detach().numpy() - golden).max() / np.abs(golden).max()
            assert error <= 1e-4, f"step {step} {caffe_name}: off by {error:.2e} of its largest value"
