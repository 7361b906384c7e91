"""CRF-RNN (Zheng et al., "Conditional Random Fields as Recurrent Neural Networks", ICCV 2015): the
dense CRF's mean-field inference unrolled as a trainable layer on the torch permutohedral lattice.

One iteration (the paper's Sec. 4, Algorithm 1; the reference implementation's ``MeanfieldIteration``,
torrvision/crfasrnn, and ``CrfRnnLayer2D.call`` in sadeepj/crfasrnn_keras)::

    Q        = softmax(logits)                        initialisation: logits = U, the network's scores
    M_k      = K_k Q                                  message passing: spatial (k = s) and bilateral (k = b)
    pairwise = mu (W_s M_s + W_b M_b)                 weighting filter outputs, compatibility transform
    logits   = U - pairwise                           adding unary potentials

``W_s``, ``W_b`` (C x C kernel weights) and ``mu`` (C x C label compatibility) are learned; the kernel
widths are fixed, as in the reference. Initialisation: ``W_s = w2 I``, ``W_b = w1 I`` from the dense
CRF's parameters, ``mu = -I`` (the reference's Potts initialiser, ``-1 * identity``). With those values
an iteration is exactly the dense CRF's ``softmax(log p + w2 K_gauss Q + w1 K_bilateral Q)``.

The kernels are normalised as ``params.normalisation`` says; the default, ``"after"``, divides
each pixel's messages by ``K 1`` as the reference's ``MeanfieldIteration`` does (``norm_feed_``,
``1 / (K 1 + 1e-20)``), and CRF-RNN at its initial parameters equals the ``torch`` dense-CRF backend
with the same parameters. The matrices act on the lattice's vertex tables (``W`` and ``mu`` act on
classes, the filter on pixels, so they commute),
which keeps one splat and one slice per iteration. Iterations: 5 in training, 10 at test, as the
reference (its training and deployment prototxts). Gradients reach ``W``, ``mu`` and the scores
through ``LatticeStack``'s splat and slice (each the other's adjoint) and the blur's gathers; the
lattice depends on the image only.
"""

from __future__ import annotations

import torch
from torch import nn

from benchmarks.crf.dense_crf import CRFKernels, CRFParams

__all__ = ["CRFRNN"]


TRAIN_ITERATIONS, TEST_ITERATIONS = 5, 10
"""Mean-field iterations in training and at test (Zheng et al.'s prototxts)."""


class CRFRNN(nn.Module):
    """CRF-RNN over ``classes`` labels with kernel widths and initial weights from ``params``."""

    def __init__(self, classes: int, params: CRFParams | None = None, train_iterations: int = TRAIN_ITERATIONS,
                 test_iterations: int = TEST_ITERATIONS) -> None:
        super().__init__()
        params = params or CRFParams()
        self.widths = (params.theta_gamma, params.theta_alpha, params.theta_beta)
        self.normalisation = params.normalisation
        self.train_iterations, self.test_iterations = train_iterations, test_iterations
        eye = torch.eye(classes)
        self.spatial_weights = nn.Parameter(params.w2 * eye)
        self.bilateral_weights = nn.Parameter(params.w1 * eye)
        self.compatibility = nn.Parameter(-eye)

    @property
    def iterations(self) -> int:
        return self.train_iterations if self.training else self.test_iterations

    def forward(self, images: list[torch.Tensor], scores: list[torch.Tensor],
                kernels: CRFKernels | None = None) -> list[torch.Tensor]:
        """Refined ``C x H x W`` scores (logits) of ``scores`` (the network's logits, or log
        probabilities) for ``images`` (``3 x H x W`` uint8 RGB). ``kernels`` reuses a batch's lattices
        (they depend on the images only; pass the same object to each training step on that batch)."""
        classes = scores[0].shape[0]
        if len(images) != len(scores) or any(s.ndim != 3 or s.shape[0] != classes or s.shape[1:] != i.shape[1:]
                                             for i, s in zip(images, scores, strict=False)):
            raise ValueError("CRF-RNN needs one C x H x W score map per image, of the image's size")
        kernels = kernels or CRFKernels(images, scores[0].device)
        stack = kernels.stack(*self.widths, self.normalisation, dtype=scores[0].dtype)
        unary = torch.cat([s.reshape(classes, -1).t() for s in scores])
        mixes = [(self.compatibility @ weights).t() for weights in (self.spatial_weights, self.bilateral_weights)]
        logits = unary
        for _ in range(self.iterations):
            tables = stack.blur(stack.splat(torch.softmax(logits, 1)))
            logits = unary - stack.slice([table @ mix for table, mix in zip(tables, mixes, strict=True)])
        parts = logits.split([s.shape[1] * s.shape[2] for s in scores])
        return [part.t().reshape(s.shape) for part, s in zip(parts, scores, strict=True)]
