"""Receptive fields, computed analytically from a module's graph and measured empirically.

Analytic: the module is traced with ``torch.fx`` and each tensor carries, along one spatial axis,
its *jump* (input pixels between neighbouring units), the *size* of one unit's receptive field and
the input coordinate of the *first* pixel of unit 0's field (Araujo, Norris & Sim, *Computing
Receptive Fields of CNNs*, Distill 2019). A layer of kernel k, stride s, padding p and dilation d
maps (jump, size, first) to (jump s, size + d (k - 1) jump, first - p jump); a transposed
convolution divides the jump by s and adds (ceil(k / s) - 1) jump; a sum takes the union of the
fields; a crop moves ``first``; padding moves ``first`` (the field of an interior unit). This
per-layer form gives the cumulative fields of a stack (Yu & Koltun Table 1).

Upsampling layers make the field depend on the output unit's phase (two chained x2 transposed
convolutions do not add their worst cases), so the field of a whole model is computed exactly for
each output unit: the interval of units each tensor must supply is propagated backwards through
the graph (a sum needs the interval from both branches), and the model's receptive field is the
largest over one period of output units.

Empirical: backpropagate from one output unit of the real module (evaluation mode, weights set
to positive values so that every ReLU passes, a positive input, float64) and measure the extent
of the non-zero input gradient, united over a few seeded random inputs (a max pool passes the
gradient to one input per window and channel; over all channels and rows every input of the
field is reached).
"""

from __future__ import annotations

import copy
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

__all__ = [
    "Geometry",
    "LayerGeometry",
    "MeasuredField",
    "analytic_geometry",
    "dilated_stack",
    "empirical_receptive_field",
    "receptive_field",
    "stack_table",
    "unit_receptive_field",
]


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
class LayerGeometry:
    """One module call of the traced graph and the geometry of its output."""

    name: str
    kind: str
    kernel: int
    dilation: int
    geometry: Geometry


def _single(value: int | tuple[int, ...], what: str, module: nn.Module) -> int:
    if isinstance(value, tuple):
        if len(set(value)) != 1:
            raise ValueError(f"{type(module).__name__} has a non-square {what} {value}; not supported")
        return value[0]
    return value


def _window(module: nn.Module) -> tuple[int, int, int, int]:
    """Kernel, stride, padding and dilation of a (transposed) convolution, pool or bilinear upsampling."""
    return (
        _single(module.kernel_size, "kernel", module),
        _single(module.stride, "stride", module),
        _single(module.padding, "padding", module),
        _single(getattr(module, "dilation", 1), "dilation", module),
    )


_PADS = (ReflectPad101, nn.ReflectionPad2d, nn.ZeroPad2d, nn.ConstantPad2d, nn.ReplicationPad2d)


def _pad_margin(module: nn.Module) -> int:
    margin = module.margin if isinstance(module, ReflectPad101) else module.padding
    return _single(margin if isinstance(margin, int) else tuple(margin), "padding", module)


_PASS_THROUGH = (nn.ReLU, nn.Dropout, nn.Dropout2d, nn.Identity, Scale, nn.Softmax, nn.BatchNorm2d)
_LEAVES = (UpsampleCrop, CaffeInterp, Crop, BilinearUpsample, ReflectPad101, Scale)


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, _LEAVES) or super().is_leaf_module(module, qualified_name)


def _module_geometry(module: nn.Module, args: list[object]) -> tuple[Geometry, int, int]:
    """Output geometry of ``module`` given its arguments' geometries; also its kernel and dilation."""
    g = args[0]
    assert isinstance(g, Geometry)
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
        reference = args[1]
        assert isinstance(reference, Geometry)
        # corner-aligned bilinear: each output reads the two nearest inputs
        return Geometry(reference.jump, g.size + int(g.jump), g.first), 2, 1
    if isinstance(module, _PADS):
        return g.shifted(-_pad_margin(module)), 1, 1
    if isinstance(module, _PASS_THROUGH):
        return g, 1, 1
    raise TypeError(
        f"receptive-field analysis does not know {type(module).__name__}; add a rule for it in "
        "benchmarks/receptive_field.py (_module_geometry)"
    )


def _trace(model: nn.Module, method: str) -> tuple[torch.fx.Graph, dict[str, nn.Module]]:
    root = model if method == "forward" else _MethodAsForward(model, method)
    return _Tracer().trace(root), dict(root.named_modules())


def analytic_geometry(model: nn.Module, method: str = "forward") -> list[LayerGeometry]:
    """Geometry after every module call of ``model.<method>`` (traced with torch.fx), in order;
    the last entry, named ``output``, is the returned tensor's."""
    graph, modules = _trace(model, method)
    return _forward_geometry(graph, modules)[1]


def _forward_geometry(graph: torch.fx.Graph, modules: dict[str, nn.Module]
                      ) -> tuple[dict[torch.fx.Node, object], list[LayerGeometry]]:
    env: dict[torch.fx.Node, object] = {}
    layers: list[LayerGeometry] = []
    for node in graph.nodes:
        args = [env.get(a) if isinstance(a, torch.fx.Node) else a for a in node.args]
        if node.op == "placeholder":
            env[node] = Geometry(Fraction(1), 1, Fraction(0))
        elif node.op == "call_module":
            module = modules[node.target]
            geometry, kernel, dilation = _module_geometry(module, args)
            env[node] = geometry
            layers.append(LayerGeometry(str(node.target).removeprefix("model."), type(module).__name__,
                                        kernel, dilation, geometry))
        elif node.op == "call_function" and node.target in (operator.add, torch.add):
            env[node] = args[0].union(args[1])
        elif node.op == "call_function" and node.target in (operator.mul, torch.mul, F.relu, F.dropout):
            env[node] = next(a for a in args if isinstance(a, Geometry))
        elif node.op == "call_method" and node.target in ("relu", "relu_", "mul", "contiguous"):
            env[node] = args[0]
        elif node.op == "output":
            output = args[0]
            if not isinstance(output, Geometry):
                raise TypeError("receptive-field analysis needs a module that returns one tensor")
            layers.append(LayerGeometry("output", "output", 1, 1, output))
        else:
            raise TypeError(f"receptive-field analysis does not know the graph node {node.op} {node.target}")
    return env, layers


def _needed_inputs(module: nn.Module, lo: Fraction, hi: Fraction, ratio: Fraction) -> tuple[Fraction, Fraction]:
    """Units of a module's first input that its output units ``lo..hi`` read; ``ratio`` (output
    jump / input jump) places corner-aligned interpolation's samples."""
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        k, s, p, d = _window(module)
        return lo * s - p, hi * s - p + d * (k - 1)
    if isinstance(module, UpsampleCrop):
        offset = module.crop.offset
        return _needed_inputs(module.upsample, lo + offset, hi + offset, ratio)
    if isinstance(module, (BilinearUpsample, nn.ConvTranspose2d)):
        k, s, p, _ = _window(module)
        return Fraction(math.ceil(Fraction(lo + p - k + 1, s))), Fraction(math.floor(Fraction(hi + p, s)))
    if isinstance(module, Crop):
        return lo + module.offset, hi + module.offset
    if isinstance(module, CaffeInterp):
        return Fraction(math.floor(lo * ratio)), Fraction(math.ceil(hi * ratio))
    if isinstance(module, _PADS):
        margin = _pad_margin(module)
        return lo - margin, hi - margin
    if isinstance(module, _PASS_THROUGH):
        return lo, hi
    raise TypeError(f"receptive-field analysis does not know {type(module).__name__}")


def unit_receptive_field(model: nn.Module, unit: int, method: str = "forward") -> tuple[int, int]:
    """First and last input pixel (along one axis; input pixel 0 is the first of the unpadded
    input) that output unit ``unit`` of ``model.<method>`` depends on, propagated backwards
    exactly through the traced graph."""
    graph, modules = _trace(model, method)
    geometry, _ = _forward_geometry(graph, modules)
    need: dict[torch.fx.Node, tuple[Fraction, Fraction]] = {}

    def ask(node: object, interval: tuple[Fraction, Fraction]) -> None:
        if isinstance(node, torch.fx.Node) and isinstance(geometry.get(node), Geometry):
            old = need.get(node)
            need[node] = interval if old is None else (min(old[0], interval[0]), max(old[1], interval[1]))

    nodes = list(graph.nodes)
    ask(nodes[-1].args[0], (Fraction(unit), Fraction(unit)))
    for node in reversed(nodes):
        if node not in need:
            continue
        lo, hi = need[node]
        if node.op == "placeholder":
            return int(lo), int(hi)
        if node.op == "call_module":
            source = node.args[0]
            ratio = geometry[node].jump / geometry[source].jump
            ask(source, _needed_inputs(modules[node.target], lo, hi, ratio))
        else:
            for argument in node.args:
                ask(argument, (lo, hi))
    raise ValueError("the output does not depend on the input")


def receptive_field(model: nn.Module, method: str = "forward") -> int:
    """Analytic receptive field (px) of ``model.<method>``: the largest field of one output unit
    over a whole period of output phases."""
    graph, modules = _trace(model, method)
    env, layers = _forward_geometry(graph, modules)
    coarsest = max(g.jump for g in env.values() if isinstance(g, Geometry))
    period = math.ceil(coarsest / layers[-1].geometry.jump)
    sizes = []
    for unit in range(period, 2 * period):
        lo, hi = unit_receptive_field(model, unit, method)
        sizes.append(hi - lo + 1)
    return max(sizes)


class _MethodAsForward(nn.Module):
    def __init__(self, model: nn.Module, method: str) -> None:
        super().__init__()
        self.model, self.method = model, method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self.model, self.method)(x)


@dataclass(frozen=True)
class MeasuredField:
    """The input pixels whose gradient is non-zero for output unit (``unit``, ``unit``)."""

    unit: int
    rows: tuple[int, int]
    cols: tuple[int, int]

    @property
    def size(self) -> tuple[int, int]:
        return self.rows[1] - self.rows[0] + 1, self.cols[1] - self.cols[0] + 1


def empirical_receptive_field(model: nn.Module, input_size: int, in_channels: int = 3, method: str = "forward",
                              unit: int | None = None, seeds: tuple[int, ...] = (0, 1, 2)) -> MeasuredField:
    """Measured receptive field of output unit (``unit``, ``unit``) (default: the central one) of
    ``model.<method>`` on an ``input_size`` square input (which must contain the whole field)."""
    probe = copy.deepcopy(model).double().eval()
    generator = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for module in probe.modules():
            for name, parameter in module.named_parameters(recurse=False):
                if name == "bias":
                    parameter.zero_()
                else:
                    fan_in = parameter[0].numel() if parameter.dim() > 1 else 1
                    parameter.copy_((torch.rand(parameter.shape, generator=generator, dtype=torch.float64) + 0.5)
                                    / fan_in)
    forward = probe if method == "forward" else getattr(probe, method)
    support = torch.zeros(input_size, input_size, dtype=torch.bool)
    for seed in seeds:
        g = torch.Generator().manual_seed(seed)
        x = (torch.rand(1, in_channels, input_size, input_size, generator=g, dtype=torch.float64) + 0.5)
        x.requires_grad_(True)
        out = forward(x)
        unit = out.shape[-1] // 2 if unit is None else unit
        out[0, 0, unit, unit].backward()
        support |= (x.grad[0].abs().sum(0) > 0)
    rows = torch.nonzero(support.any(1)).flatten()
    cols = torch.nonzero(support.any(0)).flatten()
    if rows[0] == 0 or cols[0] == 0 or rows[-1] == input_size - 1 or cols[-1] == input_size - 1:
        raise ValueError(f"the receptive field touches the border of the {input_size}px input; use a larger one")
    return MeasuredField(unit, (int(rows[0]), int(rows[-1])), (int(cols[0]), int(cols[-1])))


def dilated_stack(dilations: list[int], kernel: int = 3) -> nn.Sequential:
    """A stack of single-channel ``kernel x kernel`` convolutions with ``dilations``, padded to keep
    the size (the stacks of Yu & Koltun Sec 2)."""
    layers = [nn.Conv2d(1, 1, kernel, dilation=d, padding=d * (kernel - 1) // 2) for d in dilations]
    return nn.Sequential(*layers)


def stack_table(dilations: list[int], kernel: int = 3) -> list[dict[str, int]]:
    """Per layer of :func:`dilated_stack`: dilation, span of the one filter ((k - 1) d + 1),
    its parameters (k^2, whatever the dilation) and the cumulative receptive field."""
    stack = dilated_stack(dilations, kernel)
    rows = []
    for index, (layer, conv) in enumerate(zip(analytic_geometry(stack)[:-1], stack, strict=True), start=1):
        rows.append({
            "layer": index,
            "kernel": kernel,
            "dilation": layer.dilation,
            "filter_span": (kernel - 1) * layer.dilation + 1,
            "filter_params": conv.weight.numel(),
            "receptive_field": layer.geometry.size,
        })
    return rows


def effective_receptive_field(model: nn.Module, images: torch.Tensor, row: int, column: int,
                              fractions: tuple[float, ...] = (0.5, 0.9)) -> dict[float, int]:
    """Effective receptive field (Luo et al., NIPS 2016) of the output unit at (``row``,
    ``column``): the mean |gradient| of its winning class score with respect to the input over
    ``images`` (``N x 3 x H x W``, normalised); for each fraction, the half-width (px) of the
    smallest square centred on the unit that holds that fraction of the gradient mass."""
    images = images.clone().requires_grad_(True)
    scores = model(images)
    winners = scores[:, :, row, column].argmax(1)
    scores[torch.arange(len(images)), winners, row, column].sum().backward()
    mass = images.grad.abs().sum(dim=(0, 1))
    total = float(mass.sum())
    radii: dict[float, int] = {}
    for radius in range(max(mass.shape) + 1):
        window = float(mass[max(0, row - radius): row + radius + 1, max(0, column - radius): column + radius + 1].sum())
        for fraction in fractions:
            if fraction not in radii and window >= fraction * total * (1 - 1e-6):
                radii[fraction] = radius
        if len(radii) == len(fractions):
            break
    return radii
