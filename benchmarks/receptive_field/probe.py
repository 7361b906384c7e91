"""Probing a real module: positive weights (every ReLU passes) and a method called as ``forward``;
:mod:`.analytic` measures with them whether an opaque module depends on its whole input."""

from __future__ import annotations

import torch
from torch import nn


def positive_weights(probe: nn.Module, generator: torch.Generator) -> None:
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


class MethodAsForward(nn.Module):
    def __init__(self, model: nn.Module, method: str) -> None:
        super().__init__()
        self.model, self.method = model, method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self.model, self.method)(x)
