"""The empirical receptive field, the tests' independent check of the analytic one: backpropagate
from one output unit of the real module (evaluation mode, weights set to positive values so that
every ReLU passes, a positive input, float64) and measure the extent of the non-zero input
gradient, united over a few seeded random inputs (a max pool passes the gradient to one input per
window and channel; over all channels and rows every input of the field is reached)."""

import copy
from dataclasses import dataclass

import torch
from torch import nn

from benchmarks.receptive_field.probe import positive_weights


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
    positive_weights(probe, torch.Generator().manual_seed(1234))
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

