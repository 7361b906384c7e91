"""The effective receptive field (Luo et al., NIPS 2016) of one output unit, from gradients."""

from __future__ import annotations

import torch
from torch import nn


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
