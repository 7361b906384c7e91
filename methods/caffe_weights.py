"""Caffe weights into a method: the blobs of a ``.caffemodel`` (or pytorch-fcn's
``vgg16_from_caffe.pth``) copied into a model's tensors by Caffe layer name, shapes asserted.

Our layers carry the Caffe names (``conv1_1`` ... ``fc7``; FCN's ``score_fr``, ``score_pool4``,
``score_pool3``, ``upscore2``, ``upscore_pool4``; DeepLab's ``fc8``; the dilation network's
``final`` and ``ctx_*``), so a source layer goes to the module whose own name is the layer's
name, wherever it sits (``frontend.conv1_1``), or to the module a model's ``caffe_aliases`` names
(the released nets' other spellings: FCN's final ``upscore``/``upscore16``/``upscore8``,
DeepLab-LargeFOV's ``fc8_voc12``, fyu/dilation's deploy names ``fc-final`` and ``ct_*``).

What is not a plain copy:

* an ``InnerProduct`` source into a convolution (VGG_ILSVRC_16_layers' fc6 4096 x 25088 and fc7)
  is reshaped row-major to the kernel: the "convolutionalization" of FCN Sec 3.1, as the FCN
  reference ``surgery.transplant`` does it with ``.flat``;
* a ``Deconvolution`` into our fixed bilinear upsampling (FCN Sec 3.3, ``lr_mult: 0`` in the
  reference nets) holds no tensor: its blob must equal the per-class bilinear kernel, and is then
  dropped by design (anything else is an error: the model could not compute it);
* a ``Scale`` into :class:`methods.common.Scale` (``voc-fcn8s-atonce``'s fixed ``scale_pool4`` x0.01
  and ``scale_pool3`` x1e-4) must hold that model's constant, and is dropped by design;
* ``fc8`` with 1000 outputs (the ImageNet classifier of the init models) is dropped by design.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .caffemodel import CaffeModelError, read_caffemodel
from .common import BilinearUpsample, Scale, bilinear_kernel
from .vgg import CONV_NAMES, TORCHVISION_CONV_INDICES, LoadReport

__all__ = ["CAFFE_VGG16", "DEEPLAB_INIT", "VGG_CONV", "CaffeInit", "SourceLayer", "caffe_state_dict", "load_caffe_init",
           "read_caffe_source"]

IMAGENET_CLASSES = 1000
_PARAMS = ("weight", "bias")


@dataclass(frozen=True)
class SourceLayer:
    """One layer of a Caffe-trained source: its name, Caffe type and arrays (weight, bias, ...)."""

    name: str
    type: str
    arrays: tuple[np.ndarray, ...]


def _torchvision_layers(path: Path) -> list[SourceLayer]:
    """pytorch-fcn's ``vgg16_from_caffe.pth``: the Caffe VGG-16 in torchvision's ``vgg16`` layout
    (still BGR, 0-255 input), as the Caffe layers it was converted from."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load fails in many ways on a damaged file
        raise CaffeModelError(f"{path} does not load as a state dict ({type(error).__name__}); download it "
                              "again") from None
    names = {f"features.{i}": name for name, i in zip(CONV_NAMES, TORCHVISION_CONV_INDICES, strict=True)}
    names.update({"classifier.0": "fc6", "classifier.3": "fc7", "classifier.6": "fc8"})
    if not isinstance(state, dict):
        raise CaffeModelError(f"{path} holds a {type(state).__name__}, not a state dict; pass pytorch-fcn's "
                              "vgg16_from_caffe.pth or a .caffemodel")
    for key, value in state.items():
        if not isinstance(key, str):
            raise CaffeModelError(f"{path} has a key {key!r} of type {type(key).__name__}; a state dict's keys are "
                                  "tensor names (strings): pass pytorch-fcn's vgg16_from_caffe.pth or a .caffemodel")
        if not (isinstance(value, torch.Tensor) and value.is_floating_point() and value.layout == torch.strided):
            what = f"{value.dtype} values" if isinstance(value, torch.Tensor) else f"a {type(value).__name__} value"
            raise CaffeModelError(f"{path}: {key} holds {what}, not a dense floating-point tensor; pass pytorch-fcn's "
                                  "vgg16_from_caffe.pth (float32 weights) or a .caffemodel")
    if not state:
        raise CaffeModelError(f"{path} holds no tensors; pass pytorch-fcn's vgg16_from_caffe.pth or a .caffemodel")
    unknown = sorted(k for k in state if k.rsplit(".", 1)[0] not in names or k.rsplit(".", 1)[-1] not in _PARAMS)
    if unknown:
        raise CaffeModelError(f"{path} is not in torchvision's vgg16 layout (unknown tensors {unknown[:4]}); "
                              "pass pytorch-fcn's vgg16_from_caffe.pth or a .caffemodel")
    layers = []
    for module, name in names.items():
        found = [k for k in _PARAMS if f"{module}.{k}" in state]
        if found == ["bias"]:
            raise CaffeModelError(f"{path} has {module}.bias without {module}.weight; pass pytorch-fcn's "
                                  "vgg16_from_caffe.pth or a .caffemodel")
        if found:
            kind = "InnerProduct" if module.startswith("classifier") else "Convolution"
            arrays = tuple(state[f"{module}.{k}"].detach().float().numpy() for k in found)
            layers.append(SourceLayer(name, kind, arrays))
    return layers


def read_caffe_source(path: str | os.PathLike[str]) -> list[SourceLayer]:
    """The layers of a ``.caffemodel`` (arrays are views into its memory map) or of a ``.pth`` in
    torchvision's vgg16 layout."""
    path = Path(path)
    if path.suffix == ".pth":
        if not path.is_file():
            state = "is not a regular file" if path.exists() else "does not exist"
            raise FileNotFoundError(f"weights file {path} {state}; give the path of pytorch-fcn's vgg16_from_caffe.pth")
        return _torchvision_layers(path)
    return [SourceLayer(layer.name, layer.type, tuple(blob.array() for blob in layer.blobs))
            for layer in read_caffemodel(path)]


def _target_module(model: nn.Module, name: str) -> tuple[str, nn.Module] | None:
    aliases = getattr(model, "caffe_aliases", {})
    modules = dict(model.named_modules())
    if name in aliases:
        return (aliases[name], modules[aliases[name]]) if aliases[name] in modules else None
    found = [(path, module) for path, module in modules.items() if path.rsplit(".", 1)[-1] == name]
    return found[0] if len(found) == 1 else None


def _fit(array: np.ndarray, shape: torch.Size, layer: SourceLayer, what: str, source: str) -> torch.Tensor:
    """``array`` as a tensor of ``shape``: the same shape up to Caffe's leading 1s (legacy 4-D
    blobs), or an InnerProduct weight made convolutional (FCN Sec 3.1)."""
    stored = tuple(array.shape)
    squeezed = stored[next((i for i, d in enumerate(stored) if d != 1), len(stored)):]
    target = tuple(shape)
    target_squeezed = target[next((i for i, d in enumerate(target) if d != 1), len(target)):]
    inner_product = (layer.type == "InnerProduct" and len(target) == 4 and len(squeezed) == 2
                     and squeezed[0] == target[0] and squeezed[1] == int(np.prod(target[1:])))
    if squeezed != target_squeezed and not inner_product:
        raise CaffeModelError(f"{source}: Caffe layer {layer.name} ({layer.type}) {what} has shape {stored}; the "
                              f"model's is {target} (is the model built with the source's width and number of "
                              "classes?)")
    return torch.from_numpy(np.array(array, dtype=np.float32)).reshape(target)


def _fixed_layer_reason(layer: SourceLayer, module: nn.Module, source: str) -> str:
    """Why a source layer for a parameter-free module (fixed bilinear upsampling, fixed scale) is
    dropped; an error when its blob is not what the module computes."""
    if isinstance(module, BilinearUpsample):
        channels, kernel = module.channels, module.kernel_size
        expected = np.zeros((channels, channels, kernel, kernel), np.float32)
        expected[np.arange(channels), np.arange(channels)] = bilinear_kernel(kernel).numpy()
        blob = layer.arrays[0] if len(layer.arrays) == 1 else None
        if blob is None or blob.size != expected.size:
            raise CaffeModelError(f"{source}: Caffe layer {layer.name} has blobs {[a.shape for a in layer.arrays]}; "
                                  f"the fixed bilinear upsampling takes one {(channels, channels, kernel, kernel)} "
                                  "kernel")
        deviation = float(np.abs(blob.reshape(expected.shape) - expected).max())
        if deviation > 1e-6:
            raise CaffeModelError(f"{source}: Caffe layer {layer.name} is not the fixed per-class bilinear kernel (max "
                                  f"deviation {deviation:.3g}): its upsampling was learned, which this model's fixed "
                                  "bilinear deconvolution (FCN Sec 3.3) cannot hold")
        return "fixed bilinear deconvolution (FCN Sec 3.3): the blob equals the kernel the model computes"
    factor = module.factor
    values = np.unique(np.concatenate([a.ravel() for a in layer.arrays]))
    if len(values) != 1 or not np.isclose(values[0], factor, rtol=1e-6, atol=0):
        raise CaffeModelError(f"{source}: Caffe layer {layer.name} scales by {values[:4].tolist()}; this model's "
                              f"{layer.name} by {factor:g} (voc-fcn8s-atonce's fixed scales need fcn8s built with "
                              "at_once=True)")
    return f"fixed scale x{factor:g} (voc-fcn8s-atonce), a constant of the model"


def _imagenet_classifier(layer: SourceLayer) -> bool:
    """``fc8`` with 1000 outputs: InnerProduct (1000, in) or legacy (1, 1, 1000, in), or a convolution."""
    weight = layer.arrays[0]
    if weight.ndim < 2:
        return False
    outputs = weight.shape[weight.ndim - 2] if layer.type == "InnerProduct" else weight.shape[0]
    return layer.name == "fc8" and outputs == IMAGENET_CLASSES


def caffe_state_dict(model: nn.Module, layers: list[SourceLayer], source: str) -> tuple[dict[str, torch.Tensor],
                                                                                        LoadReport]:
    """``model``'s state dict with every tensor the source has replaced by name; the
    :class:`LoadReport` lists what was mapped, dropped by design, unmapped (source layers no
    module takes) and left at the model's initialisation (target tensors the source lacks)."""
    report = LoadReport(source=source)
    state = dict(model.state_dict())  # entries are replaced, never written into
    for layer in layers:
        if not layer.arrays:
            continue
        if _imagenet_classifier(layer):
            report.dropped[layer.name] = "ImageNet 1000-way classifier; the papers replace it by a C-way score layer"
            continue
        target = _target_module(model, layer.name)
        if target is None:
            report.unmapped.append(layer.name)
            continue
        path, module = target
        if isinstance(module, BilinearUpsample | Scale):
            report.dropped[layer.name] = _fixed_layer_reason(layer, module, source)
            continue
        if not isinstance(module, nn.Conv2d):
            report.unmapped.append(layer.name)
            continue
        expected = ["weight"] + (["bias"] if module.bias is not None else [])
        if len(layer.arrays) != len(expected):
            raise CaffeModelError(f"{source}: Caffe layer {layer.name} has {len(layer.arrays)} blobs; {path} takes "
                                  f"{expected}")
        for kind, array in zip(expected, layer.arrays, strict=True):
            key = f"{path}.{kind}"
            state[key] = _fit(array, state[key].shape, layer, kind, source)
            report.mapped[key] = f"{layer.name}[{expected.index(kind)}]"
    report.initialised = sorted(name for name in state if name not in report.mapped)
    return state, report


@dataclass(frozen=True)
class CaffeInit:
    """The Caffe ImageNet model a family's paper fine-tuned from (SPEC section 6) and where the
    user keeps it: ``weights_path=``, else the file named by ``$env_var``."""

    description: str
    env_var: str
    file_name: str

    def path(self, weights_path: str | os.PathLike[str] | None = None) -> Path | None:
        """The configured file, or ``None`` when neither ``weights_path`` nor ``$env_var`` names one."""
        given = weights_path or os.environ.get(self.env_var)
        return Path(given) if given else None


CAFFE_VGG16 = CaffeInit("Caffe VGG-16 (VGG_ILSVRC_16_layers)", "SEGREPRO_CAFFE_VGG16",
                        "VGG_ILSVRC_16_layers.caffemodel (or pytorch-fcn's vgg16_from_caffe.pth)")
"""FCN's initialisation (Long et al. Sec 4.1; shelhamer/fcn.berkeleyvision.org ``ilsvrc-nets``)."""
DEEPLAB_INIT = CaffeInit("DeepLab-LargeFOV's Caffe init model (VGG-16, fc6/fc7 reduced to 1024)",
                         "SEGREPRO_CAFFE_DEEPLAB_INIT", "vgg16_20M.caffemodel (DeepLab-LargeFOV's init.caffemodel)")
"""DeepLab-LargeFOV's initialisation (Chen et al. Sec 4.1: the 1024-channel subsampled VGG-16)."""
VGG_CONV = CaffeInit("fyu/dilation's Caffe vgg_conv (VGG-16, fc layers as convolutions)", "SEGREPRO_CAFFE_VGG_CONV",
                     "vgg_conv.caffemodel")
"""The front end's initialisation (fyu/dilation ``pretrained/download_vgg_conv.sh``, ``train.py``)."""


def load_caffe_init(model: nn.Module, init: CaffeInit, weights_path: str | os.PathLike[str] | None,
                    trunk: list[str]) -> None:
    """Load the Caffe init model into ``model``'s ``trunk`` modules (every one must come from the
    file; the other layers keep their paper initialisation) and switch the model to the Caffe
    input convention (``paper_input_convention``: BGR, 0-255, mean subtracted)."""
    path = init.path(weights_path)
    if path is None:
        raise FileNotFoundError(f"pretrained='caffe' needs {init.description}: download {init.file_name} (README, "
                                f"'Caffe weights') and give its path as weights_path= or in ${init.env_var}")
    state, report = caffe_state_dict(model, read_caffe_source(path), str(path))
    if report.unmapped:
        raise CaffeModelError(f"layers of {path} that no layer of {type(model).__name__} takes: {report.unmapped}; "
                              f"is it {init.file_name}?")
    missing = [name for name in trunk if f"{name}.weight" not in report.mapped]
    if missing:
        raise CaffeModelError(f"{path} lacks {missing}; is it {init.file_name}?")
    model.load_state_dict(state)
    model.load_report = report
    model.input_convention = model.paper_input_convention
    model.weights_source = f"{init.description} ({path})"
