"""Fully convolutional networks: FCN-32s, FCN-16s and FCN-8s (Long, Shelhamer & Darrell, CVPR
2015, arXiv 1411.4038), as the reference nets of shelhamer/fcn.berkeleyvision.org lay them out
(``voc-fcn32s``, ``voc-fcn16s``, ``voc-fcn8s`` and ``voc-fcn8s-atonce``).

Faithful details:

* ``conv1_1`` is padded by 100 so that any input size survives the 32x downsampling and the
  un-padded 7x7 ``fc6`` (FCN reference nets; paper Sec 4.1 footnote on padding);
* max pools are 2x2 stride 2 with Caffe's ceil rounding;
* ``fc6``/``fc7`` are ImageNet's fully connected layers made convolutional (Sec 3.1), with
  Caffe's element-wise ``Dropout`` (``drop6``/``drop7``, ``dropout_ratio: 0.5`` in ``voc-fcn*/train.prototxt``);
* score layers ``score_fr``, ``score_pool4``, ``score_pool3`` are zero-initialised (Sec 4.1:
  "zero-initializing the class scoring layer");
* upsampling is a deconvolution fixed to bilinear interpolation (Sec 3.3; ``lr_mult: 0`` in the
  reference nets), then a crop at the offsets the reference nets use (19 for 32s; 5 and 27 for
  16s; 5, 9 and 31 for 8s);
* skip fusion by summation (Sec 4.2). Staged training (8s from 16s from 32s) copies the previous
  stage's weights (the harness's staged recipes) and leaves the new score layers at zero; the
  at-once variant scales pool4 by 0.01 and pool3 by 1e-4 before scoring (``voc-fcn8s-atonce``).
"""

from __future__ import annotations

import os
from typing import ClassVar

import torch
from torch import nn

from .caffe_weights import CAFFE_VGG16
from .common import BilinearUpsample, Crop, Scale, SegmentationModel, UpsampleCrop, scaled_channels
from .errors import MethodError
from .pretrained import apply_pretrained
from .registry import register
from .vgg import TrunkLayout, add_vgg16_trunk, fc_as_convolutions, run_layers

__all__ = ["FCN"]

PAPER = "Long, Shelhamer & Darrell, Fully Convolutional Networks, CVPR 2015"

FCN_LAYOUT = TrunkLayout(
    conv_padding=(1, 1, 1, 1, 1),
    conv_dilation=(1, 1, 1, 1, 1),
    pools=((2, 2, 0),) * 5,
    first_padding=100,
)

# stride of the final score map -> (final upsampling kernel, stride, crop offset), reference nets.
_FINAL_UPSAMPLING = {32: (64, 32, 19), 16: (32, 16, 27), 8: (16, 8, 31)}


class FCN(SegmentationModel):
    """FCN-``score_stride``s: 32 (no skips), 16 (pool4 skip) or 8 (pool4 and pool3 skips)."""

    # the final deconvolution's name in voc-fcn32s / voc-fcn16s / voc-fcn8s (net.py)
    caffe_aliases: ClassVar[dict[str, str]] = {
        name: "final_upsample.upsample" for name in ("upscore", "upscore16", "upscore8")}

    def __init__(self, num_classes: int, score_stride: int, at_once: bool = False, width: float = 1.0) -> None:
        super().__init__()
        if score_stride not in _FINAL_UPSAMPLING:
            raise MethodError(f"FCN score stride must be 32, 16 or 8, got {score_stride}")
        self.score_stride = score_stride
        self.at_once = at_once
        self.blocks = add_vgg16_trunk(self, FCN_LAYOUT, width)
        fc = scaled_channels(4096, width)
        self.fc6 = nn.Conv2d(scaled_channels(512, width), fc, 7)
        self.relu6, self.drop6 = nn.ReLU(inplace=True), nn.Dropout(0.5)
        self.fc7 = nn.Conv2d(fc, fc, 1)
        self.relu7, self.drop7 = nn.ReLU(inplace=True), nn.Dropout(0.5)
        self.score_fr = nn.Conv2d(fc, num_classes, 1)
        score_layers = [self.score_fr]
        if score_stride <= 16:
            self.scale_pool4 = Scale(0.01 if at_once else 1.0)
            self.score_pool4 = nn.Conv2d(scaled_channels(512, width), num_classes, 1)
            self.score_pool4c = Crop(5)
            self.upscore2 = BilinearUpsample(num_classes, 4, 2)
            score_layers.append(self.score_pool4)
        if score_stride == 8:
            self.scale_pool3 = Scale(1e-4 if at_once else 1.0)
            self.score_pool3 = nn.Conv2d(scaled_channels(256, width), num_classes, 1)
            self.score_pool3c = Crop(9)
            self.upscore_pool4 = BilinearUpsample(num_classes, 4, 2)
            score_layers.append(self.score_pool3)
        for layer in score_layers:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        kernel, stride, offset = _FINAL_UPSAMPLING[score_stride]
        self.final_upsample = UpsampleCrop(num_classes, kernel, stride, offset=offset)

    def score_map(self, x: torch.Tensor) -> torch.Tensor:
        pool3 = run_layers(self, self.blocks[0] + self.blocks[1] + self.blocks[2], x)
        pool4 = run_layers(self, self.blocks[3], pool3)
        pool5 = run_layers(self, self.blocks[4], pool4)
        h = self.drop6(self.relu6(self.fc6(pool5)))
        h = self.drop7(self.relu7(self.fc7(h)))
        scores = self.score_fr(h)
        if self.score_stride <= 16:
            upscore2 = self.upscore2(scores)
            scores = upscore2 + self.score_pool4c(self.score_pool4(self.scale_pool4(pool4)), upscore2)
        if self.score_stride == 8:
            upscore_pool4 = self.upscore_pool4(scores)
            scores = upscore_pool4 + self.score_pool3c(self.score_pool3(self.scale_pool3(pool3)), upscore_pool4)
        return scores


def _build(num_classes: int, *, score_stride: int, width: float, pretrained: bool | str,
           weights_path: str | os.PathLike[str] | None, at_once: bool = False) -> FCN:
    model = FCN(num_classes, score_stride, at_once=at_once, width=width)
    apply_pretrained(model, pretrained, weights_path, fc_as_convolutions(7), width, caffe_init=CAFFE_VGG16)
    return model


@register("fcn32s", paper=f"{PAPER}, Table 2 (FCN-32s); reference net voc-fcn32s", caffe_init=CAFFE_VGG16)
def fcn32s(num_classes: int = 21, width: float = 1.0, pretrained: bool | str = False,
           weights_path: str | os.PathLike[str] | None = None) -> FCN:
    """FCN-32s: VGG-16 made fully convolutional, one stride-32 score map upsampled 32x."""
    return _build(num_classes, score_stride=32, width=width, pretrained=pretrained, weights_path=weights_path)


@register("fcn16s", paper=f"{PAPER}, Table 2 (FCN-16s); reference net voc-fcn16s", caffe_init=CAFFE_VGG16)
def fcn16s(num_classes: int = 21, width: float = 1.0, pretrained: bool | str = False,
           weights_path: str | os.PathLike[str] | None = None) -> FCN:
    """FCN-16s: FCN-32s plus the pool4 skip (Sec 4.2), trained from FCN-32s."""
    return _build(num_classes, score_stride=16, width=width, pretrained=pretrained, weights_path=weights_path)


@register("fcn8s", paper=f"{PAPER}, Table 2 (FCN-8s); reference nets voc-fcn8s / voc-fcn8s-atonce",
          caffe_init=CAFFE_VGG16)
def fcn8s(num_classes: int = 21, at_once: bool = False, width: float = 1.0, pretrained: bool | str = False,
          weights_path: str | os.PathLike[str] | None = None) -> FCN:
    """FCN-8s: FCN-16s plus the pool3 skip (Sec 4.2). ``at_once=False`` (default) is the staged
    form, trained from FCN-16s; ``at_once=True`` is ``voc-fcn8s-atonce`` (pool4 x0.01, pool3
    x1e-4, trained in one go from ImageNet)."""
    return _build(num_classes, score_stride=8, width=width, pretrained=pretrained, weights_path=weights_path,
                  at_once=at_once)
