"""`bench`: the layer FLOP count against a hand count and torch's own FLOP counter, and the
command on the CPU at the reduced size."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import ROOT
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import methods
from benchmarks.bench.methods import forward_flops


def test_flops_of_one_convolution_by_hand():
    conv = nn.Conv2d(3, 4, 3, padding=1)
    assert forward_flops(conv, torch.zeros(1, 3, 8, 8)) == 2 * (3 * 3 * 3) * 4 * 8 * 8  # 13,824
    transposed = nn.ConvTranspose2d(2, 2, 4, stride=2, bias=False)
    assert forward_flops(transposed, torch.zeros(1, 2, 5, 5)) == 2 * 2 * 2 * 16 * 25


@pytest.mark.parametrize("name", ["fcn8s", "deeplab_v1", "context_large"])
def test_flops_agree_with_torch_flop_counter(name):
    model = methods.create(name, 21, width=1 / 8, pretrained=False).eval()
    x = torch.zeros(1, 3, 64, 80)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    assert forward_flops(model, x) == counter.get_total_flops()


def test_bench_command_on_the_cpu():
    result = subprocess.run([sys.executable, "-m", "benchmarks", "bench", "--methods", "deeplab_v1,fcn32s", "--json",
                             "--steps", "1", "--eval-images", "2"], cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    bench = json.loads(result.stdout)
    assert bench["size"]["name"] == "reduced" and bench["bf16_matmul_peak_tflops"] is None
    assert "projected_paper_profile_hours" not in bench  # only at paper size
    rows = {r["method"]: r for r in bench["rows"]}
    assert set(rows) == {"deeplab_v1", "fcn32s"}
    deeplab = rows["deeplab_v1"]
    assert deeplab["batch"] == 2 and deeplab["input"] == [3, 80, 80]  # crop 321 x 0.25, batch capped
    assert deeplab["train_images_per_s"] > 0 and deeplab["eval_s_1449"] > 0 and deeplab["crf_ms_per_image"] > 0
    step_tflops = deeplab["train_gflop_per_step"] / deeplab["train_step_ms"]
    assert deeplab["train_tflops"] == pytest.approx(step_tflops, rel=1e-6)
    assert "crf_ms_per_image" not in rows["fcn32s"]  # FCN-32s has no CRF stage in the papers


def test_the_cuda_fast_path_arithmetic_runs_on_the_cpu():
    """bf16 autocast + channels_last (what training and scoring use on CUDA), forced on the CPU:
    the loss, the gradients and the class probabilities stay close to float32."""
    import copy

    from benchmarks.distributed import Distributed
    from benchmarks.evaluation import class_probabilities
    from benchmarks.networks import build_model
    from benchmarks.optimizer import build_optimizer
    from benchmarks.recipes import get_recipe
    from benchmarks.train import training_step
    from benchmarks.training_mode import TrainedPart

    recipe = get_recipe("deeplab_v1", "quick")
    torch.manual_seed(0)
    model = build_model(recipe)
    fast_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    labels = torch.randint(0, 21, (2, 8, 8))
    results = []
    for net, fast in ((model, False), (fast_model, True)):
        part = TrainedPart(net, recipe, channels_last=fast)
        optimizer = build_optimizer(net, recipe)
        loss, norm = training_step(part, optimizer, images, labels, recipe=recipe, dist_info=Distributed(),
                                   precision="bf16" if fast else "fp32")
        grads = torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])
        results.append((float(loss.detach()), float(norm), grads))
    (loss32, norm32, grads32), (loss16, norm16, grads16) = results
    assert loss16 == pytest.approx(loss32, rel=2e-2) and norm16 == pytest.approx(norm32, rel=5e-2)
    assert torch.nn.functional.cosine_similarity(grads16, grads32, dim=0) > 0.99
    image = torch.randint(0, 256, (3, 48, 56), dtype=torch.uint8)
    p32 = class_probabilities(model, image, torch.device("cpu"), "fp32")
    p16 = class_probabilities(fast_model, image, torch.device("cpu"), "bf16")
    assert p16.dtype == torch.float32 and p16.shape == (21, 48, 56)
    assert (p16 - p32).abs().max() < 2e-2
