"""``python -m benchmarks bench``: the speed of every method's paper recipe on synthetic tensors of
VOC size (no dataset needed), measured through the same code the harness trains and scores with.

Per method: training images/s at the recipe's crop and batch (``train.training_step`` plus the
optimiser step), the achieved TFLOP/s from a FLOP count of the model's layers, seconds to score
1,449 VOC-size images (``evaluation.class_probabilities``, argmax, confusion matrix), and, for methods
with a CRF stage, the dense CRF's ms per image (torch backend). On CUDA also the measured peak of a
large bf16 matrix product, so every rate is also a fraction of it, and the projected wall time of
the whole paper profile. On the CPU, ``--size reduced`` (the default there) scales the images, the
batch and the width down so it finishes in minutes; its figures say so.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from benchmarks.bench.crf import crf_inputs
from benchmarks.crf.dense_crf import CRFParams, TorchDenseCRF
from benchmarks.data.voc import VOC_HEIGHT, VOC_VAL_IMAGES, VOC_WIDTH
from benchmarks.distributed import Distributed, precision_path
from benchmarks.evaluation import ConfusionMatrix, class_probabilities
from benchmarks.feature_cache import TILE_UNITS
from benchmarks.networks import build_model
from benchmarks.optimizer import build_optimizer
from benchmarks.recipes import Recipe, get_recipe, recipe_methods
from benchmarks.train import training_step
from benchmarks.training_mode import TrainedPart, training_mode
from methods.common import BilinearUpsample

__all__ = ["SIZES", "BenchSize", "TrainingBench", "bench_method", "forward_flops", "matmul_peak", "paper_profile_flops",
           "recipe_image_flops", "recipe_step_bytes", "recipe_step_flops", "run_bench", "trained_forward",
           "training_bench", "training_flops"]



@dataclass(frozen=True)
class BenchSize:
    name: str
    image_scale: float  # side lengths x this
    max_batch: int | None  # the recipe's batch, capped
    width: float  # channel width of the networks

    def side(self, pixels: int) -> int:
        return max(8, round(pixels * self.image_scale))


SIZES = {"paper": BenchSize("paper", 1.0, None, 1.0), "reduced": BenchSize("reduced", 0.25, 2, 0.125)}


def forward_flops(model: nn.Module, inputs: torch.Tensor, call: Callable[[torch.Tensor], torch.Tensor] | None = None
                  ) -> int:
    """Floating-point operations (2 per multiply-add) of one forward pass, summed over the model's
    convolution, transposed-convolution (also the fixed bilinear upsampling) and linear layers from
    their shapes and the sizes they saw."""
    total = 0

    def count(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
            total += 2 * per_output * output.numel()
        elif isinstance(module, nn.ConvTranspose2d):
            per_input = module.out_channels // module.groups * math.prod(module.kernel_size)
            total += 2 * per_input * args[0].numel()
        elif isinstance(module, BilinearUpsample):  # depthwise: one output channel per input channel
            total += 2 * module.kernel_size**2 * args[0].numel()
        elif isinstance(module, nn.Linear):
            total += 2 * module.in_features * output.numel()

    handles = [m.register_forward_hook(count) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, BilinearUpsample))]
    try:
        with torch.no_grad():
            (call or model)(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return total


def matmul_peak(device: torch.device, size: int = 8192, repeats: int = 20) -> float:
    """Measured TFLOP/s of a ``size``-square bf16 matrix product on ``device``."""
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    a @ b
    _sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e12


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _bench_recipe(recipe: Recipe, size: BenchSize) -> Recipe:
    batch = recipe.batch_size if size.max_batch is None else min(recipe.batch_size, size.max_batch)
    return dataclasses.replace(recipe, pretrained=False, init_from=None, width=size.width, batch_size=batch)


def _training_inputs(model: nn.Module, recipe: Recipe, size: BenchSize, device: torch.device
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """A synthetic batch at the recipe's crop (or VOC size): images, or cached stem outputs. A crop
    of the padded image keeps the model's margin and scales the rest."""
    margin = model.input_margin if recipe.padded_crops else 0
    height = width = margin * 2 + size.side(recipe.crop - 2 * margin) // 8 * 8 if recipe.crop else None
    height, width = height or size.side(VOC_HEIGHT), width or size.side(VOC_WIDTH)
    if device.type == "meta":
        images = torch.zeros(recipe.batch_size, 3, height, width, dtype=torch.uint8, device=device)
        labels = torch.zeros(recipe.batch_size, height, width, dtype=torch.long, device=device)
    else:
        generator = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (recipe.batch_size, 3, height, width), generator=generator, dtype=torch.uint8)
        labels = torch.randint(0, 21, (recipe.batch_size, height, width), generator=generator)
    if recipe.loss_on_score_map:
        labels = labels[:, ::8, ::8].contiguous()
    if recipe.padded_crops:
        labels = labels[:, margin : height - margin : 8, margin : width - margin : 8].contiguous()
    if recipe.tile_features:  # fyu/dilation: the head trains on 66 x 66 tile maps of the stem's C scores
        stem, _ = model.staged_split()
        with torch.no_grad():
            channels = stem(torch.zeros(1, 3, 8, 8, device=next(model.parameters()).device)).shape[1]
        images = torch.zeros(recipe.batch_size, channels, TILE_UNITS, TILE_UNITS, device=device)
        labels = torch.zeros(recipe.batch_size, TILE_UNITS, TILE_UNITS, dtype=torch.long, device=device)
    elif recipe.cached_features:
        stem, _ = model.staged_split()
        with torch.no_grad():
            images = stem(model.input_convention.normalize(images.to(device))).float()
    return images.to(device), labels.to(device)


def trained_forward(model: nn.Module, recipe: Recipe, inputs: torch.Tensor
                    ) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
    """(the forward a training step of ``recipe`` runs, its input) for a batch of ``inputs``
    (``_training_inputs``): the head on cached maps, else the network on normalised images."""
    mode = training_mode(recipe, model)
    call = mode.forward(mode.trained_network(model))
    return call, model.input_convention.normalize(inputs) if mode.on_images else inputs


def training_flops(model: nn.Module, recipe: Recipe, inputs: torch.Tensor) -> int:
    """FLOPs of one training step: 3 x the forward FLOPs of what is trained (backward ~ 2 x forward)."""
    call, first = trained_forward(model, recipe, inputs)
    return 3 * forward_flops(model, first, call)


def recipe_step_flops(recipe: Recipe) -> int:
    """FLOPs of one training step of ``recipe`` as it is (its width, batch, crop; VOC-size images
    where it does not crop), counted on the ``meta`` device (no memory, no time)."""
    meta = torch.device("meta")
    with meta:
        model = build_model(dataclasses.replace(recipe, pretrained=False, init_from=None))
    inputs, _ = _training_inputs(model, recipe, SIZES["paper"], meta)
    return training_flops(model, recipe, inputs)


def recipe_image_flops(recipe: Recipe) -> int:
    """FLOPs of the whole network's forward on one VOC-size image (500 x 375), as scoring and each
    CRF-RNN training step run it, counted on the ``meta`` device."""
    with torch.device("meta"):
        model = build_model(dataclasses.replace(recipe, pretrained=False, init_from=None))
        return forward_flops(model, torch.zeros(1, 3, VOC_HEIGHT, VOC_WIDTH))


def recipe_step_bytes(recipe: Recipe) -> dict[str, int]:
    """Memory of one training step of ``recipe`` as it is, counted on the ``meta`` device: the
    float32 ``state`` (parameters, their gradients and the optimiser's moments), the
    ``activations`` the forward keeps for the backward (every leaf module's output: an upper
    bound, in-place ReLUs count again) and the ``images`` of a batch before cropping (VOC-size
    images at the largest ``scale``: uint8 RGB and int64 labels)."""
    meta = torch.device("meta")
    with meta:
        model = build_model(dataclasses.replace(recipe, pretrained=False, init_from=None))
    inputs, _ = _training_inputs(model, recipe, SIZES["paper"], meta)
    call, first = trained_forward(model, recipe, inputs)
    kept = 0

    def count(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal kept
        if isinstance(output, torch.Tensor):
            kept += output.numel() * output.element_size()

    handles = [m.register_forward_hook(count) for m in model.modules() if not any(m.children())]
    try:
        call(first)
    finally:
        for handle in handles:
            handle.remove()
    parameters = sum(p.numel() for p in model.parameters())
    moments = 2 if recipe.optimizer == "adam" else 1
    factor = max(recipe.scale) if recipe.scale else 1.0
    pixels = round(VOC_HEIGHT * factor) * round(VOC_WIDTH * factor)
    return {"state": 4 * parameters * (2 + moments), "activations": kept,
            "images": recipe.batch_size * pixels * (3 + 8)}


def paper_profile_flops(name: str) -> dict[str, float]:
    """The arithmetic of ``name``'s paper recipe at full width: TFLOP per training step and for all
    the recipe's iterations."""
    recipe = get_recipe(name, "paper")
    step = recipe_step_flops(recipe)
    return {"paper_tflop_per_step": step / 1e12, "paper_training_pflop": step * recipe.iterations / 1e15}


@dataclass
class TrainingBench:
    """One method's paper recipe (at ``size``) ready to take timed training steps on synthetic inputs."""

    recipe: Recipe
    model: nn.Module
    inputs: torch.Tensor
    labels: torch.Tensor
    step: Callable[[], None]  # forward, loss, backward and the optimiser's step of one batch
    flops_per_step: int


def training_bench(name: str, size: BenchSize, device: torch.device) -> TrainingBench:
    """``name``'s paper recipe, its model on ``device`` (channels-last and cudnn autotuning on CUDA),
    a synthetic batch and the training step ``train.py`` takes."""
    recipe = _bench_recipe(get_recipe(name, "paper"), size)
    torch.manual_seed(0)
    model = build_model(recipe).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    inputs, labels = _training_inputs(model, recipe, size, device)
    trained = TrainedPart(model, recipe, channels_last=precision_path(device, recipe.precision)[1])
    optimizer = build_optimizer(model, recipe)
    dist_info = Distributed(device=device)

    def step() -> None:
        training_step(trained, optimizer, inputs, labels, recipe=recipe, dist_info=dist_info)
        optimizer.step()

    flops = training_flops(model, recipe, inputs)
    model.train()
    return TrainingBench(recipe, model, inputs, labels, step, flops)


def bench_method(name: str, size: BenchSize, device: torch.device, steps: int, eval_images: int,
                 peak_tflops: float | None, crf: bool, eval_batch: int = 1) -> dict[str, object]:
    """Training and evaluation speed of ``name``'s paper recipe (see the module docstring)."""
    bench = training_bench(name, size, device)
    recipe, model, inputs, train_flops = bench.recipe, bench.model, bench.inputs, bench.flops_per_step
    for _ in range(2):  # warm-up: cudnn autotuning, allocator
        bench.step()
    _sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        bench.step()
    _sync(device)
    step_seconds = (time.perf_counter() - started) / steps

    model.eval()
    shapes = [(size.side(VOC_HEIGHT), size.side(VOC_WIDTH)), (size.side(VOC_WIDTH), size.side(VOC_HEIGHT))]
    batches = [torch.randint(0, 256, (eval_batch, 3, *shapes[i % 2]), dtype=torch.uint8)
               for i in range(math.ceil(eval_images / eval_batch) + 1)]
    matrix = ConfusionMatrix(21, device=device)
    class_probabilities(model, batches[-1], device, recipe.precision)
    _sync(device)
    started = time.perf_counter()
    for batch in batches[:-1]:
        for probabilities in class_probabilities(model, batch, device, recipe.precision):
            prediction = probabilities.argmax(0)
            matrix.update(prediction, torch.zeros_like(prediction))
    _sync(device)
    eval_seconds = (time.perf_counter() - started) / (len(batches) - 1) / eval_batch * VOC_VAL_IMAGES

    row: dict[str, object] = {
        "method": name, "size": size.name, "width": size.width, "batch": recipe.batch_size,
        "input": list(inputs.shape[1:]), "cached_features": recipe.cached_features,
        "train_images_per_s": recipe.batch_size / step_seconds, "train_step_ms": 1000 * step_seconds,
        "train_gflop_per_step": train_flops / 1e9, "train_tflops": train_flops / step_seconds / 1e12,
        "eval_s_1449": eval_seconds, "eval_images_timed": (len(batches) - 1) * eval_batch, "eval_batch": eval_batch,
        "paper_iterations": get_recipe(name, "paper").iterations, **paper_profile_flops(name),
    }
    row["fraction_of_peak"] = row["train_tflops"] / peak_tflops if peak_tflops else None
    if crf:
        image, probs, _ = crf_inputs(height=size.side(VOC_HEIGHT), width=size.side(VOC_WIDTH))
        crf_images, maps = [image] * 4, [probs.to(device)] * 4
        TorchDenseCRF(crf_images[:1], maps[:1]).refine(CRFParams())
        _sync(device)
        started = time.perf_counter()
        TorchDenseCRF(crf_images, maps).refine(CRFParams())
        _sync(device)
        row["crf_ms_per_image"] = 1000 * (time.perf_counter() - started) / len(crf_images)
    return row


def run_bench(names: list[str] | None, size: BenchSize, device: torch.device, steps: int, eval_images: int,
              crf_methods: tuple[str, ...], eval_batch: int = 1, progress: Callable[[str], None] = print
              ) -> dict[str, object]:
    """Every method's row, the bf16 peak on CUDA, and (at paper size) the projected wall time of the
    paper profile: each recipe's iterations x step time, plus scoring its split, plus +crf scoring."""
    peak = matmul_peak(device) if device.type == "cuda" else None
    rows = []
    for name in names or recipe_methods():
        progress(f"bench {name} ({size.name} size on {device})")
        rows.append(bench_method(name, size, device, steps, eval_images, peak, name in crf_methods, eval_batch))
    result: dict[str, object] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else
        f"cpu ({torch.get_num_threads()} threads)",
        "torch": torch.__version__, "size": dataclasses.asdict(size), "bf16_matmul_peak_tflops": peak,
        "date": time.strftime("%Y-%m-%d"), "rows": rows,
    }
    if size.name == "paper":
        total = 0.0
        for row in rows:
            total += row["paper_iterations"] * row["train_step_ms"] / 1000 + row["eval_s_1449"]
            total += row.get("crf_ms_per_image", 0.0) * VOC_VAL_IMAGES / 1000
        result["projected_paper_profile_hours"] = total / 3600
    return result
