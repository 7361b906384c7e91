"""Where a VGG-16 trunk's starting weights come from: torchvision's ImageNet ``vgg16``, the method
family's Caffe init model (:mod:`.caffe_weights`), or He-normal initialisation without either."""

from __future__ import annotations

import os

from torch import nn

from .caffe_weights import CaffeInit, load_caffe_init
from .errors import MethodError
from .vgg import CONV_NAMES, FcSurgery, load_vgg16_imagenet, resolve_vgg16_state_dict

__all__ = ["apply_pretrained"]


def apply_pretrained(
    model: nn.Module,
    pretrained: bool | str,
    weights_path: str | os.PathLike[str] | None,
    fc_surgery: FcSurgery,
    width: float,
    prefix: str = "",
    caffe_init: CaffeInit | None = None,
    dropped: dict[str, str] | None = None,
) -> None:
    """Load ImageNet VGG-16 weights into ``model`` when ``pretrained`` (``True`` or
    ``"torchvision"``: torchvision's; ``"caffe"``: the family's Caffe init model ``caffe_init``,
    which also switches the model to the Caffe input convention) and record where the weights came
    from in ``model.weights_source`` (and the :class:`LoadReport` in ``model.load_report``).
    Without ImageNet weights, the tensors they would fill (the 13 convolutions, fc6, fc7) get
    He-normal initialisation (He et al. 2015), so a deep VGG trains from scratch; every other
    layer keeps its paper initialisation."""
    model.load_report = None
    trunk = [prefix + name for name in CONV_NAMES] + [prefix + target.rsplit(".", 1)[0]
                                                     for target, _ in fc_surgery.values()]
    if pretrained not in (True, False, "caffe", "torchvision"):
        raise MethodError(f"pretrained must be 'caffe', 'torchvision' (True) or False, got {pretrained!r}")
    if pretrained == "caffe":  # the file's shapes are asserted layer by layer (a reduced-width file fits too)
        if caffe_init is None:
            raise MethodError(f"{type(model).__name__} names no Caffe init model; use pretrained='torchvision'")
        load_caffe_init(model, caffe_init, weights_path, list(dict.fromkeys(trunk)))
        return
    if not pretrained:
        layers = dict(model.named_modules())
        for name in dict.fromkeys(trunk):
            nn.init.kaiming_normal_(layers[name].weight, nonlinearity="relu")
            nn.init.zeros_(layers[name].bias)
        model.weights_source = "random initialisation (He normal trunk; no ImageNet weights)"
        return
    if width != 1.0:
        raise MethodError(f"pretrained={pretrained!r} needs width=1 (got width={width}): ImageNet VGG-16 has full "
                         "widths")
    state, source = resolve_vgg16_state_dict(weights_path)
    model.load_report = load_vgg16_imagenet(model, state, fc_surgery, source, prefix, dropped)
    if model.load_report.unmapped:
        raise MethodError(f"tensors of {source} that no layer takes: {model.load_report.unmapped}")
    model.weights_source = f"ImageNet VGG-16 ({source})"
