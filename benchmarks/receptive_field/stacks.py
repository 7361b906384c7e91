"""Yu & Koltun's stacks of dilated convolutions (Sec 2, Table 1) and their per-layer fields."""

from __future__ import annotations

from torch import nn

from benchmarks.receptive_field.analytic import analytic_geometry


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

