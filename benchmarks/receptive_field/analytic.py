"""Receptive fields computed analytically from a module's ``torch.fx`` graph with the per-op
rules of :mod:`.layer_rules`.

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

from benchmarks.receptive_field.layer_rules import (
    GLOBAL,
    LEAVES,
    RULED,
    CannotFollow,
    Field,
    Geometry,
    LayerGeometry,
    SizeOf,
    Unbounded,
    function_geometry,
    interpolation,
    module_geometry,
    needed_inputs,
    unknown,
)
from benchmarks.receptive_field.probe import MethodAsForward, positive_weights


class _Tracer(torch.fx.Tracer):
    def __init__(self, opaque: frozenset[nn.Module] = frozenset()) -> None:
        super().__init__()
        self.opaque = opaque

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return module in self.opaque or isinstance(module, LEAVES) or super().is_leaf_module(module, qualified_name)



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
        return SizeOf(args[0]), 1, 1
    if target is operator.getitem and isinstance(args[0], SizeOf):
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
            return module_geometry(modules[target], args)
        return function_geometry(node, args, kwargs, fields), 1, 1
    except CannotFollow as reason:
        op = _op_name(node, modules)
        return unknown(f"{op}: {reason}" if str(reason) else op), 1, 1


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
    root = model if method == "forward" else MethodAsForward(model, method)
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
                failed = LayerGeometry("output", "output", 1, 1, unknown(f"torch.fx cannot trace {method}: {reason}"))
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




def _global_module(root: nn.Module, stack: list[str], opaque: set[nn.Module]) -> nn.Module | None:
    """The innermost module of a traced module ``stack`` (qualified names), other than the root,
    the opaque ones and those the analysis has a rule for, whose output depends on its whole input."""
    modules = dict(root.named_modules())
    for name in reversed(stack):
        module = modules.get(name)
        if module is None or module is root or module in opaque or isinstance(module, RULED):
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
    positive_weights(probe, generator)
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
                output = unknown("an output that is not one tensor")
            layers.append(LayerGeometry("output", "output", 1, 1, output))
        else:
            env[node], kernel, dilation = _node_geometry(node, args, kwargs, modules, opaque)
            if node.op == "call_module":
                layers.append(LayerGeometry(str(node.target).removeprefix("model."),
                                            type(modules[node.target]).__name__, kernel, dilation, env[node]))
    return env, layers


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
            ask(source, needed_inputs(analysis.modules[node.target], lo, hi, ratio(node, source)))
        elif node.target is F.interpolate:
            source, _, _, resize = interpolation(node.args, node.kwargs)
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

