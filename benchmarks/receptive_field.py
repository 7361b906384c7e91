"""Receptive fields, computed analytically from a module's graph and measured empirically.

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

Upsampling layers make the field depend on the output unit's phase (two chained x2 transposed
convolutions do not add their worst cases), so the field of a whole model is computed exactly for
each output unit: the interval of units each tensor must supply is propagated backwards through
the graph (a sum or a concatenation needs the interval from every branch), and the model's
receptive field is the largest over one period of output units.

Not every field has a size in pixels. Global pooling (``AdaptiveAvgPool2d(1)``,
``AdaptiveMaxPool2d(1)``, a mean over both spatial axes) sees the whole input: its field is
``"global"``, and so is the field of anything computed from it (the union with a global field is
global; an op the analysis does not know, applied to a global tensor, still depends on the whole
input), e.g. ASPP's image pooling (Chen et al., DeepLab v3 Sec 3.3) or PSPNet's pyramid pooling
(Zhao et al. Sec 3.3). An op the analysis cannot follow (an unknown module or function, an
adaptive pool to more than one bin, whose window is a fraction of the input, a module that
``torch.fx`` cannot trace, e.g. control flow on tensor values) gives ``"unknown (<op>)"``.

Empirical: backpropagate from one output unit of the real module (evaluation mode, weights set
to positive values so that every ReLU passes, a positive input, float64) and measure the extent
of the non-zero input gradient, united over a few seeded random inputs (a max pool passes the
gradient to one input per window and channel; over all channels and rows every input of the
field is reached).
"""

from __future__ import annotations

import copy
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

__all__ = [
    "GLOBAL",
    "Geometry",
    "LayerGeometry",
    "MeasuredField",
    "Unbounded",
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
class Unbounded:
    """The field of a tensor that has no size in pixels: ``"global"`` (every unit sees the whole
    input) or ``"unknown (<op>)"`` (the analysis cannot follow ``<op>``)."""

    text: str


GLOBAL = Unbounded("global")

Field = Geometry | Unbounded


def _unknown(op: str) -> Unbounded:
    return Unbounded(f"unknown ({op})")


class _CannotFollow(Exception):
    """A rule met a case it does not cover; the field of the node becomes unknown."""


@dataclass(frozen=True)
class _SizeOf:
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
            raise _CannotFollow(f"non-square {what} {tuple(value)}")
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


_PADS = (ReflectPad101, nn.ReflectionPad2d, nn.ZeroPad2d, nn.ConstantPad2d, nn.ReplicationPad2d)


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
            raise _CannotFollow(f"mode {self.mode}")

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
            raise _CannotFollow(f"scale factor {factor}")
        return resize.geometry(g, g.jump / ratio)
    references = {s.field for s in (size if isinstance(size, tuple | list) else [size]) if isinstance(s, _SizeOf)}
    if len(references) == 1 and isinstance(reference := references.pop(), Geometry):
        return resize.geometry(g, reference.jump)
    raise _CannotFollow("a size that is not a traced tensor's shape")


def _interpolation(args: tuple, kwargs: dict) -> tuple[object, object, object, _Resize]:
    """Input, size, scale factor and interpolation of an ``F.interpolate`` call."""
    call = inspect.signature(F.interpolate).bind(*args, **kwargs)
    call.apply_defaults()
    a = call.arguments
    if a["antialias"]:
        raise _CannotFollow("antialias")
    return a["input"], a["size"], a["scale_factor"], _Resize(a["mode"], bool(a["align_corners"]))


def _upsample(module: nn.Upsample) -> _Resize:
    return _Resize(module.mode, bool(module.align_corners))


def _adaptive_pool(output_size: object) -> Unbounded:
    """One bin sees the whole input; more bins see a fraction of it, which has no size in pixels."""
    sizes = output_size if isinstance(output_size, tuple | list) else (output_size,)
    if all(s == 1 for s in sizes):
        return GLOBAL
    raise _CannotFollow(f"output size {output_size}: each bin sees a fraction of the input")


_PASS_THROUGH = (nn.ReLU, nn.Dropout, nn.Dropout2d, nn.Identity, Scale, nn.Softmax, nn.BatchNorm2d)
_LEAVES = (UpsampleCrop, CaffeInterp, Crop, BilinearUpsample, ReflectPad101, Scale)


class _Tracer(torch.fx.Tracer):
    def __init__(self, opaque: frozenset[nn.Module] = frozenset()) -> None:
        super().__init__()
        self.opaque = opaque

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return module in self.opaque or isinstance(module, _LEAVES) or super().is_leaf_module(module, qualified_name)


def _module_geometry(module: nn.Module, args: tuple) -> tuple[Field, int, int]:
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
        return _resized(g, _SizeOf(args[1]), None, _CAFFE_INTERP), 2, 1
    if isinstance(module, nn.Upsample):
        return _resized(g, module.size, module.scale_factor, _upsample(module)), 1, 1
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        return _adaptive_pool(module.output_size), 1, 1
    if isinstance(module, _PADS):
        return g.shifted(-_pad_margin(module)), 1, 1
    if isinstance(module, _PASS_THROUGH):
        return g, 1, 1
    raise _CannotFollow("")


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
            raise _CannotFollow(f"maps of jumps {field.jump} and {other.jump}")
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
    raise _CannotFollow("over one spatial axis")


def _function_geometry(node: torch.fx.Node, args: tuple, kwargs: dict, fields: list[Geometry]) -> Field:
    """Output field of a function or method call whose tensor arguments have finite ``fields``."""
    target, is_method = node.target, node.op == "call_method"
    if target in (_ELEMENTWISE_METHODS if is_method else _ELEMENTWISE_FUNCTIONS):
        return _union(fields)
    if not is_method and target in _CONCATENATIONS:
        dim = args[1] if len(args) > 1 else kwargs.get("dim", kwargs.get("axis", 0))
        if dim % 4 in _SPATIAL_AXES:
            raise _CannotFollow("along a spatial axis")
        return _union(fields)
    if target is F.interpolate:
        source, size, scale_factor, resize = _interpolation(args, kwargs)
        return _resized(source, size, scale_factor, resize)
    if target in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d):
        return _adaptive_pool(args[1] if len(args) > 1 else kwargs["output_size"])
    if target in (("mean", "amax", "sum") if is_method else _REDUCTIONS):
        return _reduced(fields[0], args[1] if len(args) > 1 else kwargs.get("dim"))
    raise _CannotFollow("")


def _op_name(node: torch.fx.Node, modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        return f"{type(modules[node.target]).__name__} {str(node.target).removeprefix('model.')}"
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    module = (getattr(node.target, "__module__", None) or "").removeprefix("_")
    return f"{module}.{node.target.__name__}" if module else node.target.__name__


def _node_geometry(node: torch.fx.Node, args: tuple, kwargs: dict, modules: dict[str, nn.Module],
                   opaque: set[nn.Module]) -> tuple[object, int, int]:
    """Value of one call node (a field, the size of a traced tensor, or ``None`` for values that
    hold no input pixel: constants, sizes computed from shapes), with kernel and dilation."""
    target = node.target
    if (target is getattr and args[1] == "shape") or (node.op == "call_method" and target == "size"):
        return _SizeOf(args[0]), 1, 1
    if target is operator.getitem and isinstance(args[0], _SizeOf):
        return args[0], 1, 1
    values: list[object] = []
    torch.fx.node.map_aggregate((args, kwargs), values.append)
    fields = [v for v in values if isinstance(v, Geometry | Unbounded)]
    unbounded = [f for f in fields if isinstance(f, Unbounded)]
    if unbounded:  # the output of any op depends on the whole input if one of its inputs does
        return (GLOBAL if GLOBAL in unbounded else unbounded[0]), 1, 1
    if not fields:
        return None, 1, 1
    try:
        if node.op == "call_module" and modules[target] in opaque:
            return GLOBAL, 1, 1
        if node.op == "call_module":
            return _module_geometry(modules[target], args)
        return _function_geometry(node, args, kwargs, fields), 1, 1
    except _CannotFollow as reason:
        op = _op_name(node, modules)
        return _unknown(f"{op}: {reason}" if str(reason) else op), 1, 1


@dataclass(frozen=True)
class _Analysis:
    """A traced ``model.<method>``: its graph, modules, the value of every node and the layers."""

    graph: torch.fx.Graph
    modules: dict[str, nn.Module]
    env: dict[torch.fx.Node, object]
    layers: list[LayerGeometry]

    @property
    def output(self) -> Field:
        return self.layers[-1].geometry


_PROBE_SIZE = 96  # input pixels of the forward pass that gives an opaque module's input shapes


def _analyse(model: nn.Module, method: str) -> _Analysis:
    """Trace ``model.<method>`` (in evaluation mode: a module that updates its state while training,
    e.g. EMANet's bases, must not store a traced value) and compute every node's field. Where the
    analysis cannot follow a module (torch.fx cannot trace it, or it applies an op without a rule,
    e.g. the matrix products of attention), the innermost enclosing module that
    :func:`_depends_on_everything` measures global becomes one opaque call with a global field;
    without one, the field stays unknown, naming the op."""
    root = model if method == "forward" else _MethodAsForward(model, method)
    training = model.training
    model.eval()
    try:
        opaque: set[nn.Module] = set()
        while True:
            tracer = _Tracer(frozenset(opaque))
            try:
                graph = tracer.trace(root)
            except Exception as error:  # a user's module can fail to trace in any way (TraceError, TypeError, ...)
                found = _global_module(root, [name for name, _ in tracer.module_stack.values()], opaque)
                if found is not None:
                    opaque.add(found)
                    continue
                reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                failed = LayerGeometry("output", "output", 1, 1, _unknown(f"torch.fx cannot trace {method}: {reason}"))
                return _Analysis(torch.fx.Graph(), {}, {}, [failed])
            modules = dict(root.named_modules())
            env, layers = _forward_geometry(graph, modules, opaque)
            origin = next((node for node in graph.nodes if isinstance(env.get(node), Unbounded)
                           and env[node] is not GLOBAL), None)
            stack = [name for name, _ in origin.meta.get("nn_module_stack", {}).values()] if origin else []
            found = _global_module(root, stack, opaque)
            if found is None:
                return _Analysis(graph, modules, env, layers)
            opaque.add(found)
    finally:
        model.train(training)


_RULED = (*_LEAVES, *_PASS_THROUGH, *_PADS, nn.Conv2d, nn.ConvTranspose2d, nn.MaxPool2d, nn.AvgPool2d, nn.Upsample,
          nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def _global_module(root: nn.Module, stack: list[str], opaque: set[nn.Module]) -> nn.Module | None:
    """The innermost module of a traced module ``stack`` (qualified names), other than the root,
    the opaque ones and those the analysis has a rule for, whose output depends on its whole input."""
    modules = dict(root.named_modules())
    for name in reversed(stack):
        module = modules.get(name)
        if module is None or module is root or module in opaque or isinstance(module, _RULED):
            continue
        if _depends_on_everything(root, module):
            return module
    return None


def _depends_on_everything(root: nn.Module, module: nn.Module) -> bool:
    """Whether ``module``'s output depends on its whole input, measured: its inputs in a forward
    pass of ``root`` on a 96-pixel image (their shapes only; on the ``meta`` device for ``list``),
    then a copy of ``module`` in float64 with positive weights (every ReLU passes, every attention
    weight is positive) on positive inputs: changing the input maps' unit in one corner changes
    the output unit in the opposite corner, both ways (perturbation rather than gradients: heads
    such as EMANet compute their attention maps without gradient)."""
    captured: list[tuple[tuple, dict]] = []
    hook = module.register_forward_pre_hook(lambda _, args, kwargs: captured.append((args, kwargs)) and None,
                                            with_kwargs=True)
    try:
        with torch.no_grad():
            root(torch.zeros(1, 3, _PROBE_SIZE, _PROBE_SIZE, device=next(root.parameters()).device))
    except Exception:  # a model that does not run at this size: no measurement
        return False
    finally:
        hook.remove()
    if not captured:
        return False
    probe = copy.deepcopy(module).to_empty(device="cpu").double().eval()
    generator = torch.Generator().manual_seed(1234)
    _positive_weights(probe, generator)
    inputs = torch.fx.node.map_aggregate(captured[0], lambda v: torch.rand(
        v.shape, generator=generator, dtype=torch.float64) + 0.5 if isinstance(v, torch.Tensor) else v)

    def run(corner: tuple[int, int] | None) -> torch.Tensor:
        def moved(value: object) -> object:
            if not (isinstance(value, torch.Tensor) and value.dim() == 4 and corner is not None):
                return value
            value = value.clone()
            value[..., corner[0], corner[1]] += 1.0
            return value

        args, kwargs = torch.fx.node.map_aggregate(inputs, moved)
        with torch.no_grad():
            output = probe(*args, **kwargs)
        return output[0] if isinstance(output, tuple | list) else output

    unchanged = run(None)
    if unchanged.dim() != 4:
        return False
    return all(bool((run(source)[..., target[0], target[1]] != unchanged[..., target[0], target[1]]).any())
               for source, target in (((0, 0), (-1, -1)), ((-1, -1), (0, 0))))


def analytic_geometry(model: nn.Module, method: str = "forward") -> list[LayerGeometry]:
    """Geometry after every module call of ``model.<method>`` (traced with torch.fx), in order;
    the last entry, named ``output``, is the returned tensor's."""
    return _analyse(model, method).layers


def _forward_geometry(graph: torch.fx.Graph, modules: dict[str, nn.Module], opaque: set[nn.Module]
                      ) -> tuple[dict[torch.fx.Node, object], list[LayerGeometry]]:
    env: dict[torch.fx.Node, object] = {}
    layers: list[LayerGeometry] = []
    for node in graph.nodes:
        args = torch.fx.node.map_arg(node.args, env.__getitem__)
        kwargs = torch.fx.node.map_arg(node.kwargs, env.__getitem__)
        if node.op == "placeholder":
            env[node] = Geometry(Fraction(1), 1, Fraction(0))
        elif node.op == "get_attr":
            env[node] = None  # a parameter or buffer: no input pixel
        elif node.op == "output":
            output = args[0]
            if not isinstance(output, Geometry | Unbounded):
                output = _unknown("an output that is not one tensor")
            layers.append(LayerGeometry("output", "output", 1, 1, output))
        else:
            env[node], kernel, dilation = _node_geometry(node, args, kwargs, modules, opaque)
            if node.op == "call_module":
                layers.append(LayerGeometry(str(node.target).removeprefix("model."),
                                            type(modules[node.target]).__name__, kernel, dilation, env[node]))
    return env, layers


def _needed_inputs(module: nn.Module, lo: Fraction, hi: Fraction, ratio: Fraction) -> tuple[Fraction, Fraction]:
    """Units of a module's first input that its output units ``lo..hi`` read; ``ratio`` (output
    jump / input jump) places interpolation's samples."""
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
        return _CAFFE_INTERP.inputs(lo, hi, ratio)
    if isinstance(module, nn.Upsample):
        return _upsample(module).inputs(lo, hi, ratio)
    if isinstance(module, _PADS):
        margin = _pad_margin(module)
        return lo - margin, hi - margin
    if isinstance(module, _PASS_THROUGH):
        return lo, hi
    raise TypeError(f"receptive-field analysis does not know {type(module).__name__}")


def _unit_interval(analysis: _Analysis, unit: int) -> tuple[int, int]:
    """First and last input pixel of output unit ``unit`` of a finite analysis (backwards)."""
    geometry = analysis.env
    need: dict[torch.fx.Node, tuple[Fraction, Fraction]] = {}

    def ask(node: torch.fx.Node, interval: tuple[Fraction, Fraction]) -> None:
        if isinstance(geometry.get(node), Geometry):
            old = need.get(node)
            need[node] = interval if old is None else (min(old[0], interval[0]), max(old[1], interval[1]))

    def ratio(node: torch.fx.Node, source: torch.fx.Node) -> Fraction:
        return geometry[node].jump / geometry[source].jump

    nodes = list(analysis.graph.nodes)
    ask(nodes[-1].args[0], (Fraction(unit), Fraction(unit)))
    for node in reversed(nodes):
        if node not in need:
            continue
        lo, hi = need[node]
        if node.op == "placeholder":
            return int(lo), int(hi)
        if node.op == "call_module":
            source = node.args[0]
            ask(source, _needed_inputs(analysis.modules[node.target], lo, hi, ratio(node, source)))
        elif node.target is F.interpolate:
            source, _, _, resize = _interpolation(node.args, node.kwargs)
            ask(source, resize.inputs(lo, hi, ratio(node, source)))
        else:  # elementwise, concatenation, reduction over channels: every tensor argument, same units
            for argument in node.all_input_nodes:
                ask(argument, (lo, hi))
    raise ValueError("the output does not depend on the input")


def _finite(analysis: _Analysis, method: str) -> _Analysis:
    if isinstance(analysis.output, Unbounded):
        raise ValueError(f"the receptive field of {method} is {analysis.output.text}: it has no first and last pixel")
    return analysis


def unit_receptive_field(model: nn.Module, unit: int, method: str = "forward") -> tuple[int, int]:
    """First and last input pixel (along one axis; input pixel 0 is the first of the unpadded
    input) that output unit ``unit`` of ``model.<method>`` depends on, propagated backwards
    exactly through the traced graph; a ``ValueError`` if the field is global or unknown."""
    return _unit_interval(_finite(_analyse(model, method), method), unit)


def receptive_field(model: nn.Module, method: str = "forward") -> int | str:
    """Analytic receptive field (px) of ``model.<method>``: the largest field of one output unit
    over a whole period of output phases; ``"global"`` or ``"unknown (<op>)"`` where it has no
    size in pixels (see the module's docstring). Never raises for a model the analysis cannot
    follow."""
    analysis = _analyse(model, method)
    if isinstance(analysis.output, Unbounded):
        return analysis.output.text
    # output unit u sits at u * jump_out; a map of jump j repeats its phase when u * jump_out / j is
    # whole, i.e. every numerator(j / jump_out) units
    jump = analysis.output.jump
    period = math.lcm(*((g.jump / jump).numerator for g in analysis.env.values() if isinstance(g, Geometry)))
    sizes = []
    for unit in range(period, 2 * period):
        lo, hi = _unit_interval(analysis, unit)
        sizes.append(hi - lo + 1)
    return max(sizes)


def _positive_weights(probe: nn.Module, generator: torch.Generator) -> None:
    """Weights U(0.5, 1.5) / fan-in, biases 0 (every ReLU passes, no softmax saturates); buffers
    (left empty by ``to_empty``) a neutral BN (mean 0, variance 1), other float buffers positive."""
    with torch.no_grad():
        for module in probe.modules():
            for name, parameter in module.named_parameters(recurse=False):
                if name == "bias":
                    parameter.zero_()
                else:
                    fan_in = parameter[0].numel() if parameter.dim() > 1 else 1
                    parameter.copy_((torch.rand(parameter.shape, generator=generator, dtype=parameter.dtype) + 0.5)
                                    / fan_in)
            for name, buffer in module.named_buffers(recurse=False):
                if not buffer.is_floating_point() or name == "running_mean":
                    buffer.zero_()
                elif name == "running_var":
                    buffer.fill_(1.0)
                else:
                    buffer.copy_(torch.rand(buffer.shape, generator=generator, dtype=buffer.dtype) + 0.5)


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
    _positive_weights(probe, torch.Generator().manual_seed(1234))
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
