"""How each op maps a receptive field, forwards and backwards (used by :mod:`.analytic`).

Analytic: the module is traced with ``torch.fx`` and each tensor carries, along one spatial axis,
its *jump* (input pixels between neighbouring units), the *size* of one unit's receptive field and
the input coordinate of the *first* pixel of unit 0's field (Araujo, Norris & Sim, *Computing
Receptive Fields of CNNs*, Distill 2019). A layer of kernel k, stride s, padding p and dilation d
maps (jump, size, first) to (jump s, size + d (k - 1) jump, first - p jump); a transposed
convolution divides the jump by s and adds (ceil(k / s) - 1) jump; a sum, a product and a
concatenation along channels take the union of the fields; a crop moves ``first``; padding moves
``first`` (the field of an interior unit). This per-layer form gives the cumulative fields of a
stack (Yu & Koltun Table 1).

Interpolation (``F.interpolate``, ``nn.Upsample``, Caffe's ``Interp``; nearest, nearest-exact or
bilinear) reads the input units at PyTorch's source index of each output unit (aten's
``area_pixel_compute_source_index`` and ``nearest_idx``). Its ratio is taken as the ratio of the
two maps' jumps (``scale_factor``, or the jump of the tensor whose shape gives ``size``), which is
exact when the map sizes are in that ratio: a multiple of the stride without corner alignment,
(in - 1) / (out - 1) = ratio with it (DeepLab's 8k + 1 inputs).
"""

from __future__ import annotations

import inspect
import math
import operator
from dataclasses import dataclass
from fractions import Fraction

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from methods.common import BilinearUpsample, CaffeInterp, Crop, ReflectPad101, UpsampleCrop
from methods.fcn import Scale


@dataclass(frozen=True)
class Geometry:
    """Receptive-field geometry of a tensor along one spatial axis, in input pixels."""

    jump: Fraction
    size: int
    first: Fraction

    def through(self, kernel: int, stride: int, padding: int, dilation: int = 1) -> Geometry:
        return Geometry(self.jump * stride, self.size + int(dilation * (kernel - 1) * self.jump),
                        self.first - padding * self.jump)

    def shifted(self, units: int) -> Geometry:
        return Geometry(self.jump, self.size, self.first + units * self.jump)

    def transposed(self, kernel: int, stride: int, padding: int) -> Geometry:
        inputs_per_output = math.ceil(kernel / stride)
        first_input = math.ceil(Fraction(padding - kernel + 1, stride))
        return Geometry(self.jump / stride, self.size + int((inputs_per_output - 1) * self.jump),
                        self.first + first_input * self.jump)

    def union(self, other: Geometry) -> Geometry:
        if self.jump != other.jump:
            raise ValueError(f"cannot sum maps of jumps {self.jump} and {other.jump}")
        first = min(self.first, other.first)
        end = max(self.first + self.size, other.first + other.size)
        return Geometry(self.jump, int(end - first), first)


@dataclass(frozen=True)
class Unbounded:
    """The field of a tensor that has no size in pixels: ``"global"`` (every unit sees the whole
    input) or ``"unknown (<op>)"`` (the analysis cannot follow ``<op>``)."""

    text: str


GLOBAL = Unbounded("global")

Field = Geometry | Unbounded


def unknown(op: str) -> Unbounded:
    return Unbounded(f"unknown ({op})")


class CannotFollow(Exception):
    """A rule met a case it does not cover; the field of the node becomes unknown."""


@dataclass(frozen=True)
class SizeOf:
    """A traced tensor's ``.shape`` or ``.size()``, or a part of it (what ``interpolate(size=...)``
    resizes to); ``field`` is that tensor's field."""

    field: Field


@dataclass(frozen=True)
class LayerGeometry:
    """One module call of the traced graph and the field of its output (kernel and dilation are
    1 where the field is unbounded)."""

    name: str
    kind: str
    kernel: int
    dilation: int
    geometry: Field


def _single(value: int | float | tuple[int | float, ...], what: str) -> int | float:
    if isinstance(value, tuple | list):
        if len(set(value)) != 1:
            raise CannotFollow(f"non-square {what} {tuple(value)}")
        return value[0]
    return value


def _window(module: nn.Module) -> tuple[int, int, int, int]:
    """Kernel, stride, padding and dilation of a (transposed) convolution, pool or bilinear upsampling."""
    return (
        _single(module.kernel_size, "kernel"),
        _single(module.stride, "stride"),
        _single(module.padding, "padding"),
        _single(getattr(module, "dilation", 1), "dilation"),
    )


PADS = (ReflectPad101, nn.ReflectionPad2d, nn.ZeroPad2d, nn.ConstantPad2d, nn.ReplicationPad2d)


def _pad_margin(module: nn.Module) -> int:
    margin = module.margin if isinstance(module, ReflectPad101) else module.padding
    return _single(margin if isinstance(margin, int) else tuple(margin), "padding")


_HALF = Fraction(1, 2)


@dataclass(frozen=True)
class _Resize:
    """Interpolation along one axis; ``ratio`` (output jump / input jump) stands for PyTorch's
    scale (input size / output size, or (in - 1) / (out - 1) with ``align_corners``)."""

    mode: str
    align_corners: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("nearest", "nearest-exact", "bilinear"):
            raise CannotFollow(f"mode {self.mode}")

    def inputs(self, lo: Fraction, hi: Fraction, ratio: Fraction) -> tuple[Fraction, Fraction]:
        """First and last input unit that output units ``lo..hi`` read (away from the borders,
        where aten clamps the source index): nearest reads floor(u r), nearest-exact
        floor((u + 1/2) r); bilinear reads the two units around u r (corners aligned) or
        (u + 1/2) r - 1/2, one when that is a whole number (the other's weight is 0)."""
        if self.mode == "nearest":
            start, end = lo * ratio, hi * ratio
        elif self.mode == "nearest-exact":
            start, end = (lo + _HALF) * ratio, (hi + _HALF) * ratio
        elif self.align_corners:
            return Fraction(math.floor(lo * ratio)), Fraction(math.ceil(hi * ratio))
        else:
            start, end = (lo + _HALF) * ratio - _HALF, (hi + _HALF) * ratio - _HALF
            return Fraction(math.floor(start)), Fraction(math.ceil(end))
        return Fraction(math.floor(start)), Fraction(math.floor(end))

    def geometry(self, g: Geometry, jump: Fraction) -> Geometry:
        """Output geometry at ``jump``: the widest read over one period of output phases."""
        ratio = jump / g.jump
        reads = [self.inputs(Fraction(u), Fraction(u), ratio) for u in range(ratio.denominator)]
        taps = max(hi - lo + 1 for lo, hi in reads)
        return Geometry(jump, g.size + int((taps - 1) * g.jump), g.first + reads[0][0] * g.jump)


_CAFFE_INTERP = _Resize("bilinear", align_corners=True)  # Caffe's Interp maps corner to corner


def _resized(g: Geometry, size: object, scale_factor: object, resize: _Resize) -> Geometry:
    """Geometry after resizing to ``size`` (a traced tensor's shape) or by ``scale_factor``."""
    if scale_factor is not None:
        factor = _single(scale_factor, "scale factor")
        ratio = Fraction(factor).limit_denominator(64)  # a float such as 1/3 stands for a small fraction
        if abs(ratio - factor) > 1e-9:
            raise CannotFollow(f"scale factor {factor}")
        return resize.geometry(g, g.jump / ratio)
    references = {s.field for s in (size if isinstance(size, tuple | list) else [size]) if isinstance(s, SizeOf)}
    if len(references) == 1 and isinstance(reference := references.pop(), Geometry):
        return resize.geometry(g, reference.jump)
    raise CannotFollow("a size that is not a traced tensor's shape")


def interpolation(args: tuple, kwargs: dict) -> tuple[object, object, object, _Resize]:
    """Input, size, scale factor and interpolation of an ``F.interpolate`` call."""
    call = inspect.signature(F.interpolate).bind(*args, **kwargs)
    call.apply_defaults()
    a = call.arguments
    if a["antialias"]:
        raise CannotFollow("antialias")
    return a["input"], a["size"], a["scale_factor"], _Resize(a["mode"], bool(a["align_corners"]))


def _upsample(module: nn.Upsample) -> _Resize:
    return _Resize(module.mode, bool(module.align_corners))


def _adaptive_pool(output_size: object) -> Unbounded:
    """One bin sees the whole input; more bins see a fraction of it, which has no size in pixels."""
    sizes = output_size if isinstance(output_size, tuple | list) else (output_size,)
    if all(s == 1 for s in sizes):
        return GLOBAL
    raise CannotFollow(f"output size {output_size}: each bin sees a fraction of the input")


PASS_THROUGH = (nn.ReLU, nn.Dropout, nn.Dropout2d, nn.Identity, Scale, nn.Softmax, nn.BatchNorm2d)
LEAVES = (UpsampleCrop, CaffeInterp, Crop, BilinearUpsample, ReflectPad101, Scale)


def module_geometry(module: nn.Module, args: tuple) -> tuple[Field, int, int]:
    """Output field of ``module`` given its arguments' (finite) geometries; also its kernel and dilation."""
    g = args[0]
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        kernel, stride, padding, dilation = _window(module)
        return g.through(kernel, stride, padding, dilation), kernel, dilation
    if isinstance(module, (nn.ConvTranspose2d, BilinearUpsample)):
        kernel, stride, padding, _ = _window(module)
        return g.transposed(kernel, stride, padding), kernel, 1
    if isinstance(module, UpsampleCrop):
        up = module.upsample
        return g.transposed(up.kernel_size, up.stride, up.padding).shifted(module.crop.offset), up.kernel_size, 1
    if isinstance(module, Crop):
        return g.shifted(module.offset), 1, 1
    if isinstance(module, CaffeInterp):
        return _resized(g, SizeOf(args[1]), None, _CAFFE_INTERP), 2, 1
    if isinstance(module, nn.Upsample):
        return _resized(g, module.size, module.scale_factor, _upsample(module)), 1, 1
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        return _adaptive_pool(module.output_size), 1, 1
    if isinstance(module, PADS):
        return g.shifted(-_pad_margin(module)), 1, 1
    if isinstance(module, PASS_THROUGH):
        return g, 1, 1
    raise CannotFollow("")


_ELEMENTWISE_FUNCTIONS = (operator.add, operator.sub, operator.mul, operator.truediv, torch.add, torch.sub,
                          torch.mul, torch.div, F.relu, F.dropout, torch.relu, torch.sigmoid)
_ELEMENTWISE_METHODS = ("add", "add_", "sub", "mul", "mul_", "div", "relu", "relu_", "sigmoid", "contiguous")
_CONCATENATIONS = (torch.cat, torch.concat, torch.concatenate)
_REDUCTIONS = (torch.mean, torch.amax, torch.sum)
_SPATIAL_AXES = (2, 3)  # of an N x C x H x W tensor


def _union(fields: list[Geometry]) -> Geometry:
    field = fields[0]
    for other in fields[1:]:
        if other.jump != field.jump:
            raise CannotFollow(f"maps of jumps {field.jump} and {other.jump}")
        field = field.union(other)
    return field


def _reduced(g: Geometry, dims: object) -> Field:
    """A mean, sum or max over ``dims``: global over both spatial axes, unchanged over others."""
    axes = {d % 4 for d in ((dims,) if isinstance(dims, int) else dims)} if dims is not None else {0, 1, 2, 3}
    spatial = axes & set(_SPATIAL_AXES)
    if not spatial:
        return g
    if spatial == set(_SPATIAL_AXES):
        return GLOBAL
    raise CannotFollow("over one spatial axis")


def function_geometry(node: torch.fx.Node, args: tuple, kwargs: dict, fields: list[Geometry]) -> Field:
    """Output field of a function or method call whose tensor arguments have finite ``fields``."""
    target, is_method = node.target, node.op == "call_method"
    if target in (_ELEMENTWISE_METHODS if is_method else _ELEMENTWISE_FUNCTIONS):
        return _union(fields)
    if not is_method and target in _CONCATENATIONS:
        dim = args[1] if len(args) > 1 else kwargs.get("dim", kwargs.get("axis", 0))
        if dim % 4 in _SPATIAL_AXES:
            raise CannotFollow("along a spatial axis")
        return _union(fields)
    if target is F.interpolate:
        source, size, scale_factor, resize = interpolation(args, kwargs)
        return _resized(source, size, scale_factor, resize)
    if target in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d):
        return _adaptive_pool(args[1] if len(args) > 1 else kwargs["output_size"])
    if target in (("mean", "amax", "sum") if is_method else _REDUCTIONS):
        return _reduced(fields[0], args[1] if len(args) > 1 else kwargs.get("dim"))
    raise CannotFollow("")



RULED = (*LEAVES, *PASS_THROUGH, *PADS, nn.Conv2d, nn.ConvTranspose2d, nn.MaxPool2d, nn.AvgPool2d, nn.Upsample,
          nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def needed_inputs(module: nn.Module, lo: Fraction, hi: Fraction, ratio: Fraction) -> tuple[Fraction, Fraction]:
    """Units of a module's first input that its output units ``lo..hi`` read; ``ratio`` (output
    jump / input jump) places interpolation's samples."""
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        k, s, p, d = _window(module)
        return lo * s - p, hi * s - p + d * (k - 1)
    if isinstance(module, UpsampleCrop):
        offset = module.crop.offset
        return needed_inputs(module.upsample, lo + offset, hi + offset, ratio)
    if isinstance(module, (BilinearUpsample, nn.ConvTranspose2d)):
        k, s, p, _ = _window(module)
        return Fraction(math.ceil(Fraction(lo + p - k + 1, s))), Fraction(math.floor(Fraction(hi + p, s)))
    if isinstance(module, Crop):
        return lo + module.offset, hi + module.offset
    if isinstance(module, CaffeInterp):
        return _CAFFE_INTERP.inputs(lo, hi, ratio)
    if isinstance(module, nn.Upsample):
        return _upsample(module).inputs(lo, hi, ratio)
    if isinstance(module, PADS):
        margin = _pad_margin(module)
        return lo - margin, hi - margin
    if isinstance(module, PASS_THROUGH):
        return lo, hi
    raise TypeError(f"receptive-field analysis does not know {type(module).__name__}")

