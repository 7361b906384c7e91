"""``python -m benchmarks score``: evaluate given weights (a released model converted with
``convert-caffe``, or any state dict of the method) with the method's published test procedure
(``published_probabilities``: FCN's whole image, DeepLab's x8 ``Interp``, fyu/dilation's 900 x 900
tiles) and write a record under the ``released`` profile. Nothing is trained, so this checks the
architecture, the weights and the evaluator against a published number in minutes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from torch import nn

import methods
from benchmarks.convert_caffe import create_with_options
from benchmarks.crf.dense_crf import CRFParams, dense_crf
from benchmarks.data.datasets import DatasetSource
from benchmarks.distributed import Distributed
from benchmarks.errors import UsageError, WeightsError
from benchmarks.evaluation import evaluate
from benchmarks.files import check_finite, file_sha256, load_torch
from benchmarks.predictions import PredictionWriter
from benchmarks.recipes import RecipeError, get_recipe
from benchmarks.records import new_record, record_path, write_record
from benchmarks.resolve import CRF_SUFFIX
from methods.common import TORCHVISION_VGG

__all__ = ["RELEASED_PROFILE", "score_weights"]

RELEASED_PROFILE = "released"


def architecture(name: str) -> str:
    """The registered method behind ``name``: itself, or the network of the paper recipe ``name``
    (``context_large_coco`` is a ``context_large`` trained as Yu & Koltun's Table 3)."""
    if name in methods.list_methods():
        return name
    try:
        return get_recipe(name, "paper").architecture
    except RecipeError:
        raise UsageError(f"{name!r} is neither a registered method ({', '.join(methods.list_methods())}) nor a "
                         "recipe (`list`)") from None


def _model(method: str, weights: Path, options: dict[str, object], convention: str):
    model = create_with_options(architecture(method), options)
    if not weights.is_file():
        raise FileNotFoundError(f"weights {weights} do not exist; give the state dict to score (`convert-caffe` writes "
                                "one from a .caffemodel)")
    state = load_torch(weights, "convert the caffemodel again with `convert-caffe`, or save the state dict again")
    check_finite(state, weights)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        raise WeightsError(f"weights {weights} do not fit {method} built with {options or 'its defaults'}: missing "
                         f"{missing[:3]}, unexpected {unexpected[:3]}, other shapes {wrong[:3]} (convert a caffemodel "
                         f"with `convert-caffe FILE --method {method}`, or pass the builder's --option KEY=VALUE)")
    model.load_state_dict(state)
    model.input_convention = model.paper_input_convention if convention == "paper" else TORCHVISION_VGG
    return model


def _crf_params(method: str) -> CRFParams:
    try:
        return get_recipe(method, "paper").crf_params()
    except RecipeError:
        return CRFParams()


def score_weights(method: str, weights: Path, source: DatasetSource, *, split: str, crf: bool, results: Path,
                  dist_info: Distributed, options: dict[str, object] | None = None, convention: str = "paper",
                  conditions: dict[str, bool] | None = None, crf_backend: str = "pydensecrf", eval_batch: int = 1,
                  save_predictions: Path | None = None, progress: Callable[[str], None] = print) -> Path | None:
    """Score ``weights`` as ``method`` (a registered method, or a paper recipe's name such as
    ``context_large_coco`` for a COCO-trained large context network; ``+crf`` with the paper
    recipe's CRF parameters when ``crf``) on ``split``; returns the record written (``None`` on a
    non-main DDP process).
    ``options`` go to the method's builder (``width``, ``at_once`` for fcn8s-atonce).
    ``convention``: ``paper`` (the Caffe-trained releases) or ``torchvision``. ``conditions`` are
    the user's statement of how the weights were trained (e.g. ``coco_pretraining``).
    ``save_predictions``: a folder that receives every image's predicted labels in the VOC
    server's layout (:mod:`benchmarks.predictions`); a split without labels (``test``) is only
    predicted, and no record is written (``None`` is returned)."""
    voc_split = source.split(split)
    if not voc_split.labelled and save_predictions is None:
        raise UsageError(f"split {split!r} has no labels, so it cannot be scored: pass --save-predictions OUT to write "
                         "its predictions for the VOC evaluation server")
    model = _model(method, weights, dict(options or {}), convention).to(dist_info.device)
    sha = file_sha256(weights)
    params = _crf_params(method) if crf else None
    refine = (lambda image, probs: dense_crf(image, probs, params, crf_backend)) if params else None
    started = time.perf_counter()
    writer = PredictionWriter(save_predictions) if save_predictions is not None else None
    result = evaluate(model, voc_split, dist_info, refine, batch_size=eval_batch, published=True, on_prediction=writer)
    seconds = time.perf_counter() - started
    if writer is not None:
        progress(f"{writer.written} predictions -> {writer.folder}")
    if not dist_info.is_main or result.metrics is None:
        return None
    target = f"{method}{CRF_SUFFIX}" if crf else method
    record = _released_record(target, method, weights, sha, source, split=split, model=model, options=options,
                              conditions=conditions, crf=params, crf_backend=crf_backend, dist_info=dist_info,
                              seconds=seconds, metrics=result.metrics)
    path = record_path(results, RELEASED_PROFILE, source.name, target, 0, key=sha[:12])
    write_record(path, record, result.counts, result.image_ids, overwrite=True)
    progress(f"{target} ({weights.name}): mIoU {100 * result.metrics['miou']:.2f} on {split} -> {path}")
    return path


def _released_record(target: str, method: str, weights: Path, sha: str, source: DatasetSource, *, split: str,
                     model: nn.Module, options: dict[str, object] | None, conditions: dict[str, bool] | None,
                     crf: CRFParams | None, crf_backend: str, dist_info: Distributed, seconds: float,
                     metrics: dict[str, object]) -> dict[str, object]:
    """The record of released weights scored with the published test procedure (profile ``released``)."""
    comparable = source.comparable_to_paper
    fields = {
        "profile": RELEASED_PROFILE,
        "dataset": source.facts(split),
        "train_dataset": None,
        "weights_source": f"released {weights.name} sha256 {sha}",
        "trained_weights_sha256": sha,
        "builder_options": dict(options or {}),
        "input_convention": model.input_convention.name,
        "test_protocol": f"published ({type(model).__name__}.published_probabilities)",
        "conditions": dict(conditions or {}),
        "conditions_source": "stated by the user (--condition)" if conditions else None,
        "train_eval_overlap": None,
        "recipe": None,
        "overrides": [],
        "crf": asdict(crf) if crf else None,
        "crf_backend": crf_backend if crf else None,
    }
    return new_record(target=target, base_method=method, architecture=architecture(method), fields=fields, seed=0,
                      device=dist_info.device, world_size=dist_info.world_size,
                      wall_time={"train": 0.0, "evaluate": round(seconds, 1)}, metrics=metrics, comparable=comparable,
                      reason="released weights, published test procedure, real VOC 2012" if comparable else
                      "embedded generated dataset, not PASCAL VOC")
