"""Joint image/label transforms for the recipes of SPEC section 6, on torchvision ``transforms.v2``.

Images stay uint8 RGB (``tv_tensors.Image``) through augmentation; mean subtraction happens on
the device with the model's :class:`methods.common.InputConvention` (Caffe BGR mean or
torchvision RGB mean/std). Labels are ``tv_tensors.Mask``, so v2 resizes them with nearest
neighbour and pads them with 255 (ignore). A model with an input margin (the front end) pads
whole images itself; for fyu/dilation's training protocol the transform pads the image instead
(:class:`ReflectPad`) and the crop of the padded image is the network input.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from benchmarks.data.voc import IGNORE_INDEX
from benchmarks.errors import RecipeError
from methods.common import ReflectPad101

__all__ = ["RandomScale", "ReflectPad", "SubsampleLabel", "to_tv_tensors", "train_transform"]


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
            raise RecipeError(f"RandomScale needs 0 < low <= high, got {low}, {high}")
        self.low, self.high = low, high

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        factor = float(torch.empty(1).uniform_(self.low, self.high))
        return {"size": [max(1, round(height * factor)), max(1, round(width * factor))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(TF.resize, inpt, size=params["size"], antialias=True)


class ReflectPad(v2.Transform):
    """Pad the image by ``margin`` on every side by reflection without repeating the edge (OpenCV
    ``BORDER_REFLECT_101``, fyu/caffe-dilation's ``ImageLabelData`` ``padding: REFLECT``) and the
    label with 255 (ignore)."""

    def __init__(self, margin: int) -> None:
        super().__init__()
        self.pad = ReflectPad101(margin)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Mask):
            margin = self.pad.margin
            return tv_tensors.wrap(TF.pad(inpt, [margin] * 4, fill=IGNORE_INDEX), like=inpt)
        if isinstance(inpt, tv_tensors.Image):
            return tv_tensors.wrap(self.pad(inpt.float()).round().to(inpt.dtype), like=inpt)
        return inpt


class SubsampleLabel(v2.Transform):
    """Keep every ``factor``-th label pixel from ``offset`` on (rows and columns), at most ``size``
    of them a side. DeepLab v1 Sec 4.1 trains on labels subsampled by 8 from 0 (a 321 crop gives
    the 41 x 41 score-map grid); fyu/dilation's ``label_slice`` takes 16 x 16 labels of a 500 crop
    at offset 186, stride 8 (``network.py: make_image_label_data``)."""

    def __init__(self, factor: int, offset: int = 0, size: int | None = None) -> None:
        super().__init__()
        self.factor, self.offset, self.size = factor, offset, size

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Mask):
            rows = slice(self.offset, None if self.size is None else self.offset + self.factor * self.size,
                         self.factor)
            return tv_tensors.wrap(inpt[..., rows, rows], like=inpt)
        return inpt


def train_transform(crop: int | None, scale: tuple[float, float] | None = None, flip: bool = True,
                    image_fill: tuple[int, int, int] = (0, 0, 0), label_factor: int = 1,
                    margin: int = 0) -> v2.Compose:
    """Random scale, reflection padding by ``margin`` (labels then subsampled from ``margin`` on,
    ``(crop - 2 margin) / label_factor`` a side), random crop (image padded with ``image_fill``, the
    mean pixel in RGB so it normalises to ~0 as in Caffe, label padded with 255), horizontal flip,
    label subsampling."""
    steps: list[v2.Transform] = []
    if scale is not None:
        steps.append(RandomScale(*scale))
    if margin:
        if crop is None or crop <= 2 * margin or (crop - 2 * margin) % label_factor:
            raise RecipeError(f"a crop of the image padded by {margin} needs crop - {2 * margin} to be a positive "
                             f"multiple of {label_factor}, got crop={crop}")
        steps.append(ReflectPad(margin))
    if crop is not None:
        steps.append(v2.RandomCrop(crop, pad_if_needed=True,
                                   fill={tv_tensors.Image: image_fill, tv_tensors.Mask: IGNORE_INDEX}))
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    if margin:
        steps.append(SubsampleLabel(label_factor, offset=margin, size=(crop - 2 * margin) // label_factor))
    elif label_factor > 1:
        steps.append(SubsampleLabel(label_factor))
    return v2.Compose(steps or [v2.Identity()])  # FCN: whole images, no augmentation
