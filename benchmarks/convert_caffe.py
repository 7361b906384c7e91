"""``python -m benchmarks convert-caffe FILE --method NAME --out W.pt``: a ``.caffemodel`` (or
pytorch-fcn's ``vgg16_from_caffe.pth``) as the state dict of a registered method, by Caffe layer
name with asserted shapes (``methods.caffe_weights``), saved atomically.

Every source layer must land somewhere (a layer no module takes is an error that names it);
target tensors the source lacks keep the method's initialisation and are listed."""

from __future__ import annotations

import json
import os
from pathlib import Path

from torch import nn

import methods
from benchmarks.data.voc import NUM_CLASSES
from benchmarks.errors import UsageError
from benchmarks.files import check_finite, check_output, save_torch
from methods.caffe_weights import caffe_state_dict, read_caffe_source
from methods.caffemodel import CaffeModelError
from methods.vgg import LoadReport

__all__ = ["convert_caffe", "create_with_options", "parse_options"]


def parse_options(items: list[str]) -> dict[str, object]:
    """``["at_once=true", "width=0.0625"]`` -> builder options (JSON values, else strings)."""
    options: dict[str, object] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError(f"--option takes KEY=VALUE (a builder argument, e.g. at_once=true), got {item!r}")
        try:
            options[key] = json.loads(text)
        except ValueError:
            options[key] = text
    return options


def create_with_options(method: str, options: dict[str, object]) -> nn.Module:
    """``method`` built with the ``--option`` values; an option its builder does not take, or a
    value of the wrong type, is a one-line error."""
    try:
        return methods.create(method, **{"num_classes": NUM_CLASSES, **options})
    except TypeError as error:
        raise UsageError(f"--option for {method}: {error} (builder arguments as KEY=VALUE with JSON values, e.g. "
                         "width=0.0625, at_once=true)") from None


def convert_caffe(source: str | os.PathLike[str], method: str, out: Path,
                  options: dict[str, object] | None = None) -> LoadReport:
    """Convert ``source`` into ``method`` (built with ``options``) and save the state dict to ``out``."""
    check_output(out, [Path(source)])
    model = create_with_options(method, options or {})
    state, report = caffe_state_dict(model, read_caffe_source(source), str(source))
    if report.unmapped:
        raise CaffeModelError(f"{source}: layers that no tensor of {method} takes: {report.unmapped} (is it a model of "
                         f"{method}? the README's 'Caffe weights' lists which file fits which method)")
    if not report.mapped:
        raise CaffeModelError(f"{source} holds no weights for any tensor of {method} (layers with blobs: none that it "
                              "takes); pass the .caffemodel of a trained network or of its ImageNet init")
    check_finite(state, source)
    save_torch(state, out)
    return report
