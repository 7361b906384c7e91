"""The ``NAME+crfrnn`` stage: a CRF-RNN (Zheng et al., ICCV 2015) trained on top of the frozen,
trained network ``NAME``, then used in place of the dense CRF when scoring.

This is a cheaper variant, and records say so: Zheng et al. train the CRF-RNN and the network end
to end (torrvision/crfasrnn); here only the CRF-RNN's parameters are trained (kernel-weight
matrices and label compatibility, initialised from ``crfrnn_initial``, Zheng's prototxt values, or
the method's dense-CRF parameters, and Potts), with the network frozen. One training image per
step, from the recipe's training split (a seeded subset when the recipe says so), cross-entropy on
the refined scores at full resolution, SGD with the recipe's momentum; ``crfrnn_iterations`` and
``crfrnn_lr`` say how long and how fast, ``crfrnn_lr_multipliers`` scale the lr of the spatial
weights, the bilateral weights and the compatibility (Zheng's prototxts: 10000, 10000, 1000).
Mean-field iterations: 5 in training, 10 at test, as the reference.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.crf.crf_rnn import CRFRNN, TEST_ITERATIONS, TRAIN_ITERATIONS
from benchmarks.crf.dense_crf import CRFParams
from benchmarks.data.datasets import SegmentationDataset
from benchmarks.data.voc import IGNORE_INDEX, NUM_CLASSES, VOCSplit
from benchmarks.evaluation import class_probabilities
from benchmarks.files import load_torch, save_torch
from benchmarks.recipes import Recipe

__all__ = ["crfrnn_refine", "crfrnn_training", "trained_crfrnn"]


def crfrnn_training(recipe: Recipe, params: CRFParams, weights_sha256: str, seed: int) -> dict[str, object]:
    """What determines a CRF-RNN's parameters (it goes into the record), with its hash ``key``.
    ``params``: the method's dense-CRF parameters, the initial CRF unless the recipe names Zheng's."""
    initial = params if recipe.crfrnn_initial is None else CRFParams.from_pairs(
        (*recipe.crfrnn_initial, ("normalisation", recipe.crf_normalisation)))
    facts = {"trained": "CRF-RNN only (kernel-weight matrices, label compatibility); network frozen: the cheaper "
                        "variant (Zheng et al. train CRF-RNN and network end to end)",
             "network_weights_sha256": weights_sha256, "initial_crf": asdict(initial),
             "initial_crf_from": "method's dense CRF" if recipe.crfrnn_initial is None else "Zheng et al. prototxt",
             "train_split": recipe.train_split, "images": recipe.crfrnn_images, "iterations": recipe.crfrnn_iterations,
             "lr": recipe.crfrnn_lr, "lr_multipliers": dict(zip(("spatial", "bilateral", "compatibility"),
                                                                recipe.crfrnn_lr_multipliers, strict=True)),
             "momentum": recipe.momentum, "optimizer": "sgd", "batch": 1,
             "mean_field_iterations": {"train": TRAIN_ITERATIONS, "test": TEST_ITERATIONS}, "seed": seed}
    key = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:12]
    return {**facts, "key": key}


def trained_crfrnn(model: nn.Module, split: VOCSplit, training: dict[str, object], folder: Path,
                   device: torch.device, progress: Callable[[str], None] = print) -> tuple[CRFRNN, dict[str, object]]:
    """The CRF-RNN of ``training`` (``crfrnn_training``): loaded from ``folder`` when trained
    before, else trained on ``split`` with ``model`` frozen and saved there. Also returns what the
    training measured (seconds, first and last losses; empty when loaded)."""
    crfrnn = CRFRNN(NUM_CLASSES, CRFParams(**training["initial_crf"])).to(device)
    path = folder / f"crfrnn-{training['key']}.pt"
    if path.is_file():
        crfrnn.load_state_dict(load_torch(path, f"delete {path} to train it again"))
        return crfrnn.eval(), {}
    dataset = SegmentationDataset(split)
    generator = torch.Generator().manual_seed(int(training["seed"]))
    order = torch.randperm(len(dataset), generator=generator)[:training["images"] or len(dataset)]
    blobs = {"spatial": crfrnn.spatial_weights, "bilateral": crfrnn.bilateral_weights,
             "compatibility": crfrnn.compatibility}
    optimiser = torch.optim.SGD([{"params": [blob], "lr": training["lr"] * training["lr_multipliers"][name]}
                                 for name, blob in blobs.items()], lr=training["lr"], momentum=training["momentum"])
    model.eval()
    crfrnn.train()
    losses, started = [], time.perf_counter()
    for step in range(int(training["iterations"])):
        image, label, _ = dataset[int(order[step % len(order)])]
        scores = class_probabilities(model, image, device).clamp_min(1e-8).log()
        refined = crfrnn([image], [scores])[0]
        loss = F.cross_entropy(refined[None], label[None].to(device), ignore_index=IGNORE_INDEX)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
        if (step + 1) % 20 == 0:
            progress(f"  crf-rnn step {step + 1}/{training['iterations']}: loss {sum(losses[-20:]) / 20:.4f}")
    save_torch(crfrnn.state_dict(), path)
    window = max(1, min(20, len(losses) // 4))
    measured = {"seconds": round(time.perf_counter() - started, 1),
                "loss_first": round(sum(losses[:window]) / window, 4),
                "loss_last": round(sum(losses[-window:]) / window, 4)}
    return crfrnn.eval(), measured


def crfrnn_refine(crfrnn: CRFRNN) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``evaluate``'s ``refine``: the network's softmax through the CRF-RNN (test-time iterations)."""
    crfrnn.eval()

    def refine(image: torch.Tensor, probabilities: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.softmax(crfrnn([image], [probabilities.clamp_min(1e-8).log()])[0], 0)

    return refine
