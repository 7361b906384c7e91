"""Fully connected CRF post-processing (Krähenbühl & Koltun 2011), as DeepLab v1 and Yu & Koltun
apply it (SPEC section 5).

Energy: unary −log p; Potts compatibility; pairwise kernel
w1·exp(−|Δp|²/2θα² − |ΔI|²/2θβ²) + w2·exp(−|Δp|²/2θγ²); mean-field inference. Backend
``pydensecrf`` (the reference, ``pip install pydensecrf2``) maps bilateral ``sxy = θα``,
``srgb = θβ``, ``compat = w1`` and Gaussian ``sxy = θγ``, ``compat = w2``.

Each kernel is normalised per pixel (``CRFParams.normalisation``): ``"after"``, the papers',
divides pixel i's messages by ``(K 1)_i`` (DeepLab v1's densecrf, Krähenbühl's 2011 code:
``PottsPotential(..., per_pixel_normalization=true)``, ``norm_[i] = 1.0 / (norm_[i]+1e-20)`` applied
after filtering; CRF-RNN's ``MeanfieldIteration`` the same; pydensecrf's ``NORMALIZE_AFTER``);
``"symmetric"`` is pydensecrf's default ``NORMALIZE_SYMMETRIC``, ``D^-1/2 K D^-1/2``.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from benchmarks.crf.permutohedral import LatticeStack, PermutohedralLattice
from benchmarks.errors import CRFParameterError
from benchmarks.validate import is_finite_number, is_whole_number

__all__ = ["BACKENDS", "NORMALISATIONS", "CRFKernels", "CRFParams", "TorchDenseCRF", "check_inputs", "dense_crf",
           "dense_crf_batch"]


NORMALISATIONS = ("after", "symmetric")
"""The kernel normalisations: the papers' per-pixel ``1 / (K 1)`` and pydensecrf's default."""


@dataclass(frozen=True)
class CRFParams:
    """Kernel weights and widths (pixels, grey levels), the number of mean-field iterations and the
    kernels' normalisation (``NORMALISATIONS``; the module docstring says where each comes from).
    Defaults: DeepLab's fixed w2 = 3, θγ = 3, the low corner of its search grid and the papers'
    normalisation. Checked at construction: weights finite and >= 0, widths finite and > 0,
    iterations a whole number >= 1, a known normalisation."""

    w1: float = 5.0
    theta_alpha: float = 50.0
    theta_beta: float = 3.0
    w2: float = 3.0
    theta_gamma: float = 3.0
    iterations: int = 10
    normalisation: str = "after"

    def __post_init__(self) -> None:
        problems = [(name, "a finite number >= 0") for name in ("w1", "w2")
                    if not (is_finite_number(value := getattr(self, name)) and value >= 0)]
        problems += [(name, "a finite number > 0") for name in ("theta_alpha", "theta_beta", "theta_gamma")
                     if not (is_finite_number(value := getattr(self, name)) and value > 0)]
        if not (is_whole_number(self.iterations) and self.iterations >= 1):
            problems.append(("iterations", "a whole number >= 1"))
        if self.normalisation not in NORMALISATIONS:
            problems.append(("normalisation", " or ".join(NORMALISATIONS)))
        if problems:
            name, allowed = problems[0]
            raise CRFParameterError(f"CRF parameter {name}={getattr(self, name)!r} is out of range: it must be "
                                    f"{allowed}")

    @classmethod
    def from_pairs(cls, pairs: tuple[tuple[str, float | str], ...]) -> CRFParams:
        values = dict(pairs)
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise CRFParameterError(f"unknown CRF parameters {sorted(unknown)}")
        if "iterations" in values and float(values["iterations"]).is_integer():  # recipes hold floats: 10.0
            values["iterations"] = int(values["iterations"])
        return cls(**values)


BACKENDS = ("pydensecrf", "torch")


def check_inputs(image: torch.Tensor, probabilities: torch.Tensor | np.ndarray) -> torch.Tensor:
    """The probabilities as a float32 tensor on their device, or a ValueError saying what is wrong.
    ``image`` is the ``3 x H x W`` uint8 RGB tensor the data path gives (any device)."""
    if not isinstance(image, torch.Tensor) or image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be a 3 x H x W uint8 RGB tensor, got {getattr(image, 'dtype', type(image))} "
                         f"{tuple(getattr(image, 'shape', ()))}")
    probs = probabilities if isinstance(probabilities, torch.Tensor) else torch.from_numpy(np.asarray(probabilities))
    if probs.dtype not in (torch.float32, torch.float64) or probs.ndim != 3:
        raise ValueError(f"probabilities must be a float32/float64 C x H x W array, got {probs.dtype} "
                         f"{tuple(probs.shape)}")
    if tuple(probs.shape[1:]) != tuple(image.shape[1:]):
        raise ValueError(f"probabilities are {probs.shape[2]}x{probs.shape[1]} but the image is "
                         f"{image.shape[2]}x{image.shape[1]}; they must match")
    probs = probs.detach().float()
    if not bool(torch.isfinite(probs).all()):
        raise ValueError("probabilities contain NaN or infinity")
    sums = probs.sum(0)
    if bool((probs < 0).any()) or float((sums - 1).abs().max()) > 1e-3:
        raise ValueError(f"probabilities must be a softmax (non-negative, summing to 1 over classes); sums range "
                         f"{float(sums.min()):.4f}..{float(sums.max()):.4f}")
    return probs


def dense_crf(image: torch.Tensor, probabilities: torch.Tensor | np.ndarray, params: CRFParams = CRFParams(),
              backend: str = "pydensecrf") -> torch.Tensor:
    """Refined ``C x H x W`` probabilities for ``image`` (``3 x H x W`` uint8 RGB) and the
    network's softmax ``probabilities`` (``C x H x W``), on the probabilities' device."""
    return dense_crf_batch([image], [probabilities], params, backend)[0]


def dense_crf_batch(images: list[torch.Tensor], probabilities: list[torch.Tensor | np.ndarray],
                    params: CRFParams = CRFParams(), backend: str = "pydensecrf") -> list[torch.Tensor]:
    """``dense_crf`` of several images (sizes may differ). The ``torch`` backend builds one lattice
    for all of them (they never interact) and runs their mean-field iterations together."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown CRF backend {backend!r}; available: {', '.join(BACKENDS)}")
    if len(images) != len(probabilities):
        raise ValueError(f"{len(images)} images but {len(probabilities)} probability maps")
    checked = [check_inputs(image, probs) for image, probs in zip(images, probabilities, strict=True)]
    if backend == "torch":
        return TorchDenseCRF(images, checked).refine(params)
    return [_pydensecrf(image, probs, params).to(probs.device) for image, probs in zip(images, checked, strict=True)]


def _pydensecrf(image: torch.Tensor, probs: torch.Tensor, params: CRFParams) -> torch.Tensor:
    try:
        import pydensecrf.densecrf as densecrf
    except ImportError:
        raise ImportError("the pydensecrf backend needs `pip install pydensecrf2` (builds from source); "
                          "or use backend='torch'") from None
    probs = probs.cpu().numpy()
    classes, height, width = probs.shape
    crf = densecrf.DenseCRF2D(width, height, classes)
    crf.setUnaryEnergy(np.ascontiguousarray(-np.log(np.clip(probs, 1e-8, 1.0)).reshape(classes, -1)))
    normalisation = {"after": densecrf.NORMALIZE_AFTER, "symmetric": densecrf.NORMALIZE_SYMMETRIC}[
        params.normalisation]
    crf.addPairwiseGaussian(sxy=params.theta_gamma, compat=params.w2, normalization=normalisation)
    rgb = np.ascontiguousarray(image.permute(1, 2, 0).cpu().numpy())  # pydensecrf reads H x W x 3
    crf.addPairwiseBilateral(sxy=params.theta_alpha, srgb=params.theta_beta, rgbim=rgb, compat=params.w1,
                             normalization=normalisation)
    refined, scratch, pairwise = crf.startInference()
    for _ in range(params.iterations):  # inference(n)'s arithmetic; a signal is handled between iterations
        crf.stepInference(refined, scratch, pairwise)
    return torch.from_numpy(np.array(refined, dtype=np.float32).reshape(classes, height, width))


_CHUNK = 16384  # pixels per step of the mean-field update and the output transpose

_POSITION_LATTICES: OrderedDict[tuple, PermutohedralLattice] = OrderedDict()
_KEPT_POSITION_LATTICES = 4


def _position_lattice(shapes: list[tuple[int, int]], width: float, position: torch.Tensor,
                      segment: torch.Tensor | None) -> PermutohedralLattice:
    """The smoothness kernel's lattice depends on the image sizes and ``θγ`` only, not on the
    pixels: kept for the next batch of the same sizes (most VOC images are 500x375)."""
    key = (tuple(shapes), width, str(position.device))
    if key not in _POSITION_LATTICES:
        _POSITION_LATTICES[key] = PermutohedralLattice(position / width, segment)
        if len(_POSITION_LATTICES) > _KEPT_POSITION_LATTICES:
            _POSITION_LATTICES.popitem(last=False)
    _POSITION_LATTICES.move_to_end(key)
    return _POSITION_LATTICES[key]


class CRFKernels:
    """The pixels of a batch of images (``3 x H x W`` uint8, sizes may differ) as the points of the
    dense CRF's two kernels; ``stack`` builds them, normalised, for given widths."""

    def __init__(self, images: list[torch.Tensor], device: torch.device) -> None:
        self.device = device
        self.sizes = [tuple(image.shape[1:]) for image in images]
        positions, colours, segments = [], [], []
        for index, (image, (height, width)) in enumerate(zip(images, self.sizes, strict=True)):
            rows, cols = torch.meshgrid(torch.arange(height, device=device, dtype=torch.float32),
                                        torch.arange(width, device=device, dtype=torch.float32), indexing="ij")
            positions.append(torch.stack([cols.reshape(-1), rows.reshape(-1)], 1))
            colours.append(image.to(device).reshape(3, -1).t().float())
            segments.append(torch.full((height * width,), index, device=device, dtype=torch.long))
        self.position, self.colour = torch.cat(positions), torch.cat(colours)
        self.segment = torch.cat(segments) if len(images) > 1 else None  # one image: nothing to keep apart
        self._stacks: dict[tuple, LatticeStack] = {}

    def stack(self, theta_gamma: float, theta_alpha: float, theta_beta: float, normalisation: str = "after",
              dtype: torch.dtype = torch.float32) -> LatticeStack:
        """The smoothness and appearance kernels (in that order), each normalised per pixel as
        ``normalisation`` says (``NORMALISATIONS``)."""
        key = (theta_gamma, theta_alpha, theta_beta, normalisation, dtype)
        if key not in self._stacks:
            self._stacks = {}  # a parameter search moves on to the next widths
            smoothness = _position_lattice(self.sizes, theta_gamma, self.position, self.segment)
            appearance = PermutohedralLattice(torch.cat([self.position / theta_alpha, self.colour / theta_beta], 1),
                                              self.segment)
            lattices = [smoothness, appearance]
            self._stacks[key] = LatticeStack(lattices, [lattice.normaliser(normalisation) for lattice in lattices],
                                            dtype=dtype)
        return self._stacks[key]


def _normalise(pairwise: torch.Tensor, log2_probs: torch.Tensor, out: torch.Tensor, exp2: bool) -> None:
    """``out = softmax(pairwise + log p)`` over each row, ``pairwise`` given in bits (times log2 e)
    and overwritten. ``exp2``: as ``2^(pairwise + log2 p)`` normalised, which the caller allows
    when no term can overflow or vanish: on this project's CPU ``exp2`` is 3x faster than ``exp``
    and this 2x faster than ``torch.softmax`` over 21 classes (``benchmarks.bench.crf_primitives``)."""
    if exp2:
        pairwise.add_(log2_probs).exp2_()
        torch.div(pairwise, pairwise.sum(1, keepdim=True), out=out)
    else:
        out.copy_(torch.softmax(pairwise.add_(log2_probs).mul_(math.log(2.0)), 1))


def _class_major(pixels: torch.Tensor) -> torch.Tensor:
    """``pixels`` (``N x C``) as a contiguous ``C x N`` tensor, a chunk at a time: it stays in cache."""
    out = torch.empty(pixels.shape[1], pixels.shape[0], dtype=pixels.dtype, device=pixels.device)
    for start in range(0, pixels.shape[0], _CHUNK):
        out[:, start:start + _CHUNK] = pixels[start:start + _CHUNK].t()
    return out


class TorchDenseCRF:
    """The ``torch`` backend for a fixed batch of images: the lattices are built once per kernel
    width and reused across ``refine`` calls (a parameter search changes only the weights most of
    the time). Krähenbühl & Koltun's mean field, ``Q = softmax(-U + w2 K_gauss Q + w1 K_bilateral Q)``,
    ``U = -log p``; both kernels are one ``LatticeStack``: one splat and one slice per iteration,
    the slice and the update a chunk of pixels at a time."""

    def __init__(self, images: list[torch.Tensor], probabilities: list[torch.Tensor]) -> None:
        self.shapes = [tuple(p.shape) for p in probabilities]
        classes = self.shapes[0][0]
        if any(shape[0] != classes for shape in self.shapes):
            raise ValueError("all probability maps of a batch must have the same number of classes")
        self.kernels = CRFKernels(images, probabilities[0].device)
        self.probs = torch.cat([p.reshape(classes, -1).t() for p in probabilities]).clamp_(1e-8, 1.0)
        self.log2_probs = self.probs.log2()

    def refine(self, params: CRFParams) -> list[torch.Tensor]:
        stack = self.kernels.stack(params.theta_gamma, params.theta_alpha, params.theta_beta, params.normalisation)
        weights = (params.w2 * math.log2(math.e), params.w1 * math.log2(math.e))  # the pairwise term in bits
        q = self.probs / self.probs.sum(1, keepdim=True)  # softmax(-U), without the exp of a log
        on_cpu = q.device.type == "cpu"
        for _ in range(params.iterations):
            tables = stack.blur(stack.splat(q), weights)
            for points, pairwise in stack.slice_chunks(tables, _CHUNK if on_cpu else q.shape[0]):
                # pairwise >= 0 (weights, kernels and Q are), and every row has a p >= 1/C: up to
                # 100 bits no 2^x overflows or vanishes. The check would synchronise a GPU.
                exp2 = on_cpu and float(pairwise.max()) <= 100.0
                _normalise(pairwise, self.log2_probs[points], out=q[points], exp2=exp2)
        parts = q.split([height * width for _, height, width in self.shapes])
        return [_class_major(part).view(shape) for part, shape in zip(parts, self.shapes, strict=True)]
