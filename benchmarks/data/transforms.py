"""Joint image/label transforms for the recipes of SPEC section 6, on torchvision ``transforms.v2``.

Images stay uint8 RGB (``tv_tensors.Image``) through augmentation; mean subtraction happens on
the device with the model's :class:`methods.common.InputConvention` (Caffe BGR mean or
torchvision RGB mean/std). Labels are ``tv_tensors.Mask``, so v2 resizes them with nearest
neighbour and pads them with 255 (ignore). The front end's reflection padding is part of the
model (``methods.dilation.FrontEnd``), which pads whatever crop it is given.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from benchmarks.data.voc import IGNORE_INDEX

__all__ = ["RandomScale", "SubsampleLabel", "to_tv_tensors", "train_transform"]


def to_tv_tensors(image: np.ndarray, label: np.ndarray) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    """``H x W x 3`` uint8 RGB and ``H x W`` uint8 label -> ``3 x H x W`` Image and ``H x W`` Mask."""
    return (tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1)),
            tv_tensors.Mask(torch.from_numpy(label)))


class RandomScale(v2.Transform):
    """Resize image and label by one factor drawn uniformly from ``[low, high]`` (bilinear for the
    image, nearest for the label)."""

    def __init__(self, low: float, high: float) -> None:
        super().__init__()
        if not 0 < low <= high:
            raise ValueError(f"RandomScale needs 0 < low <= high, got {low}, {high}")
        self.low, self.high = low, high

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        factor = float(torch.empty(1).uniform_(self.low, self.high))
        return {"size": [max(1, round(height * factor)), max(1, round(width * factor))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(TF.resize, inpt, size=params["size"], antialias=True)


class SubsampleLabel(v2.Transform):
    """Keep every ``factor``-th label pixel (rows and columns from 0), DeepLab's training on
    labels subsampled by 8 (DeepLab v1 Sec 4.1): a 321 crop gives the 41 x 41 score-map grid."""

    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factor = factor

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Mask):
            return tv_tensors.wrap(inpt[..., :: self.factor, :: self.factor], like=inpt)
        return inpt


def train_transform(crop: int | None, scale: tuple[float, float] | None = None, flip: bool = True,
                    image_fill: tuple[int, int, int] = (0, 0, 0), label_factor: int = 1) -> v2.Compose:
    """Random scale, random crop (image padded with ``image_fill``, the mean pixel in RGB so it
    normalises to ~0 as in Caffe, label padded with 255), horizontal flip, label subsampling."""
    steps: list[v2.Transform] = []
    if scale is not None:
        steps.append(RandomScale(*scale))
    if crop is not None:
        steps.append(v2.RandomCrop(crop, pad_if_needed=True,
                                   fill={tv_tensors.Image: image_fill, tv_tensors.Mask: IGNORE_INDEX}))
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    if label_factor > 1:
        steps.append(SubsampleLabel(label_factor))
    return v2.Compose(steps)
