"""Fully connected CRF post-processing (Krähenbühl & Koltun 2011), as DeepLab v1 and Yu & Koltun
apply it (SPEC section 5).

Energy: unary −log p; Potts compatibility; pairwise kernel
w1·exp(−|Δp|²/2θα² − |ΔI|²/2θβ²) + w2·exp(−|Δp|²/2θγ²); mean-field inference. Backend
``pydensecrf`` (the reference, ``pip install pydensecrf2``) maps bilateral ``sxy = θα``,
``srgb = θβ``, ``compat = w1`` and Gaussian ``sxy = θγ``, ``compat = w2``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["CRFParams", "dense_crf"]


@dataclass(frozen=True)
class CRFParams:
    """Kernel weights and widths (pixels, grey levels) and the number of mean-field iterations.
    Defaults: DeepLab's fixed w2 = 3, θγ = 3 and the low corner of its search grid."""

    w1: float = 5.0
    theta_alpha: float = 50.0
    theta_beta: float = 3.0
    w2: float = 3.0
    theta_gamma: float = 3.0
    iterations: int = 10

    @classmethod
    def from_pairs(cls, pairs: tuple[tuple[str, float], ...]) -> CRFParams:
        values = dict(pairs)
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown CRF parameters {sorted(unknown)}")
        if "iterations" in values:
            values["iterations"] = int(values["iterations"])
        return cls(**values)


def _check(image: np.ndarray, probabilities: torch.Tensor | np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be an H x W x 3 uint8 RGB array, got {getattr(image, 'dtype', type(image))} "
                         f"{getattr(image, 'shape', '')}")
    probs = probabilities.detach().float().cpu().numpy() if isinstance(probabilities, torch.Tensor) \
        else np.asarray(probabilities)
    if probs.dtype not in (np.float32, np.float64) or probs.ndim != 3:
        raise ValueError(f"probabilities must be a float C x H x W array, got {probs.dtype} {probs.shape}")
    if probs.shape[1:] != image.shape[:2]:
        raise ValueError(f"probabilities are {probs.shape[2]}x{probs.shape[1]} but the image is "
                         f"{image.shape[1]}x{image.shape[0]}; they must match")
    if not np.isfinite(probs).all():
        raise ValueError("probabilities contain NaN or infinity")
    sums = probs.sum(0)
    if (probs < 0).any() or np.abs(sums - 1).max() > 1e-3:
        raise ValueError(f"probabilities must be a softmax (non-negative, summing to 1 over classes); sums range "
                         f"{sums.min():.4f}..{sums.max():.4f}")
    return probs.astype(np.float32)


def dense_crf(image: np.ndarray, probabilities: torch.Tensor | np.ndarray, params: CRFParams = CRFParams(),
              backend: str = "pydensecrf") -> torch.Tensor:
    """Refined ``C x H x W`` probabilities for ``image`` (``H x W x 3`` uint8 RGB) and the
    network's softmax ``probabilities`` (``C x H x W``)."""
    probs = _check(image, probabilities)
    if backend != "pydensecrf":
        raise ValueError(f"unknown CRF backend {backend!r}; available: pydensecrf")
    try:
        import pydensecrf.densecrf as densecrf
    except ImportError:
        raise ImportError("the pydensecrf backend needs `pip install pydensecrf2` (builds from source)") from None
    classes, height, width = probs.shape
    crf = densecrf.DenseCRF2D(width, height, classes)
    crf.setUnaryEnergy(np.ascontiguousarray(-np.log(np.clip(probs, 1e-8, 1.0)).reshape(classes, -1)))
    crf.addPairwiseGaussian(sxy=params.theta_gamma, compat=params.w2)
    crf.addPairwiseBilateral(sxy=params.theta_alpha, srgb=params.theta_beta, rgbim=np.ascontiguousarray(image),
                             compat=params.w1)
    refined = np.array(crf.inference(params.iterations), dtype=np.float32).reshape(classes, height, width)
    device = probabilities.device if isinstance(probabilities, torch.Tensor) else "cpu"
    return torch.from_numpy(refined).to(device)
