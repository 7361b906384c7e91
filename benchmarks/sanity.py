"""The sanity gate of a training run: stop early, with the likely cause, when the loss shows that
the run cannot be what the recipe meant.

A network whose classifier is freshly initialised near zero (every recipe that does not start
from another method's trained weights: FCN's zero-initialised score layers, DeepLab's
N(0, 0.01^2) fc8, the front end's N(0, 0.001^2) ``final``) predicts nearly uniform scores, so its
first loss is about ln(C) per labelled pixel. Far from it, the features feeding the classifier
are out of scale: weights that did not load, or an input convention that does not match them.
A loss that has not fallen by the first checkpoint means a learning rate out of scale for the
loss and the input (FCN's 1e-10 .. 1e-14 assume a summed loss over Caffe's 0..255 inputs) or
parameters that do not train.
"""

from __future__ import annotations

import math

from methods.errors import SegreproError

__all__ = ["SanityGate", "SuspiciousLoss"]

FIRST_LOSS_TOLERANCE = 0.5
"""The first loss may differ from ln(C) by this fraction of ln(C)."""
FLAT_FRACTION = 0.98
"""The loss at the first checkpoint must be below this fraction of the first loss."""
FLAT_AFTER = 100
"""The flat-loss check waits for the first checkpoint at least this many iterations in."""


class SuspiciousLoss(SegreproError, RuntimeError):
    """The loss says the run is not what its recipe meant; the message names the likely cause."""


class SanityGate:
    """Checks the per-pixel loss of one run from iteration 0: the first one against ln(C), the
    mean of the last three logged ones at the first checkpoint ``FLAT_AFTER`` iterations in
    against the first."""

    def __init__(self, method: str, num_classes: int, checkpoint_every: int, *, enabled: bool = True) -> None:
        self.method, self.expected = method, math.log(num_classes)
        self.checkpoint_at = -(-FLAT_AFTER // checkpoint_every) * checkpoint_every
        self.enabled, self.first, self.logged = enabled, None, []
        self.num_classes = num_classes

    def check_first(self, loss_per_pixel: float) -> None:
        if not self.enabled:
            return
        self.first = loss_per_pixel
        if abs(loss_per_pixel - self.expected) > FIRST_LOSS_TOLERANCE * self.expected:
            raise SuspiciousLoss(
                f"{self.method}: the first loss is {loss_per_pixel:.3g} per labelled pixel, but a freshly initialised "
                f"classifier gives about ln({self.num_classes}) = {self.expected:.2f}: the features are out of scale. "
                "Likely the weights did not load as meant or the input convention does not match them "
                "(`list` shows each method's input convention); rerun with --no-sanity-gate to train anyway")

    def check_logged(self, iteration: int, loss_per_pixel: float) -> None:
        """``loss_per_pixel`` logged after ``iteration`` steps."""
        if not self.enabled or self.first is None:
            return
        self.logged = [*self.logged[-2:], loss_per_pixel]
        if iteration == self.checkpoint_at and sum(self.logged) / len(self.logged) >= FLAT_FRACTION * self.first:
            raise SuspiciousLoss(
                f"{self.method}: the loss has not fallen in {iteration} iterations ({self.first:.3g} at the start, "
                f"{loss_per_pixel:.3g} now, per labelled pixel). Likely the learning rate is out of scale for the loss "
                "and the input (FCN's 1e-10 .. 1e-14 assume a summed loss on Caffe's 0..255 inputs) or nothing "
                "trains (train_only); check --set lr=..., or rerun with --no-sanity-gate to train anyway")
