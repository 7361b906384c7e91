"""DeepLab-LargeFOV (Chen, Papandreou, Kokkinos, Murphy & Yuille, *Semantic Image Segmentation
with Deep Convolutional Nets and Fully Connected CRFs*, ICLR 2015, arXiv 1412.7062).

Faithful details (Sec 3.1 and Table 2, "DeepLab-LargeFOV"; reference net ``vgg128_noup``/
``LargeFOV`` train prototxt):

* pool1-pool3 are 3x3 stride 2 padding 1; pool4 and pool5 are 3x3 stride 1 padding 1 (the
  last two subsamplings are skipped, Sec 3.1), all with Caffe's ceil rounding;
* conv5_x are dilated by 2 ("hole algorithm", input stride 2), padding 2;
* ``pool5a``: average pooling 3x3, stride 1, padding 1 between pool5 and fc6 (LargeFOV's
  ``train.prototxt``/``test.prototxt`` as released with DeepLab v1, layer ``pool5a``, ``pool: AVE``;
  Caffe divides by 9 at the borders too, as ``count_include_pad``; no parameters);
* fc6 is 3x3 with dilation 12 (input stride 12) and 1024 channels, fc7 is 1x1 with 1024
  channels, each followed by Caffe's element-wise ``Dropout`` (``drop6``/``drop7``,
  ``dropout_ratio: 0.5``); fc8 is 1x1 to C classes; score stride 8;
* training uses labels subsampled by 8 (Sec 3.1) against :meth:`score_map`; the published test
  procedure (:meth:`published_probabilities`, the LargeFOV ``test.prototxt``) pads the image at the
  bottom and right with the mean pixel to 513 x 513 (``crop_size: 513``; Caffe's data layer pads
  with ``mean_value``), and ``Interp`` with ``zoom_factor: 8`` maps the 65 x 65 scores corner to
  corner onto 513 x 513, so score k lands on pixel 8k (:class:`CaffeZoom`), cropped to the image.
  ``forward`` keeps the corner-aligned resize to the image's own size (``CaffeInterp``, what the
  quick profile's records used), which shifts labels by up to 2 px on a 375-px side;
* input: BGR minus DeepLab's own mean pixel (104.008, 116.669, 122.675), the ``mean_value`` of the
  LargeFOV train/test.prototxt, not the VGG release's (104.00699, 116.66877, 122.67892) of
  :data:`methods.common.CAFFE_VGG`: < 0.01 grey level apart, which three SGD steps of genuine Caffe
  show (``tests/test_caffe_goldens.py``: 3e-3 of an update after one step);
* ImageNet initialisation (Sec 3.1, 4.1): fc6's 7x7 kernel is decimated to 3x3 (every third
  tap) and fc6/fc7 are decimated from 4096 to 1024 channels (every fourth filter); about 20.5M
  parameters (Table 2).
"""

from __future__ import annotations

import os
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .caffe_weights import DEEPLAB_INIT
from .common import CaffeInterp, CaffeZoom, InputConvention, SegmentationModel, scaled_channels
from .pretrained import apply_pretrained
from .registry import register
from .vgg import FcSurgery, TrunkLayout, add_vgg16_trunk, run_layers

__all__ = ["DEEPLAB_MEAN_BGR", "DeepLabLargeFOV", "deeplab_fc_decimation"]

PAPER = "Chen et al., Semantic Image Segmentation with Deep Convolutional Nets and Fully Connected CRFs, ICLR 2015"

DEEPLAB_MEAN_BGR = InputConvention(name="deeplab-mean", channel_order="BGR", mean=(104.008, 116.669, 122.675),
                                   std=(1.0, 1.0, 1.0))
"""DeepLab-LargeFOV's input: ``transform_param { mean_value: 104.008 mean_value: 116.669 mean_value:
122.675 }`` of its train/test.prototxt (BGR, 0..255)."""

DEEPLAB_LAYOUT = TrunkLayout(
    conv_padding=(1, 1, 1, 1, 2),
    conv_dilation=(1, 1, 1, 1, 2),
    pools=((3, 2, 1), (3, 2, 1), (3, 2, 1), (3, 1, 1), (3, 1, 1)),
)
TEST_SIZE = 513  # the LargeFOV test.prototxt's crop_size: images padded with the mean pixel to 513 x 513


class DeepLabLargeFOV(SegmentationModel):
    """DeepLab-LargeFOV: VGG-16 at output stride 8 with a 3x3, dilation-12, 1024-channel fc6."""

    score_stride = 8
    paper_input_convention = DEEPLAB_MEAN_BGR
    caffe_aliases: ClassVar[dict[str, str]] = {"fc8_voc12": "fc8"}  # the released LargeFOV prototxt's classifier

    def __init__(self, num_classes: int, width: float = 1.0, fc_channels: int = 1024) -> None:
        super().__init__()
        self.blocks = add_vgg16_trunk(self, DEEPLAB_LAYOUT, width)
        self.pool5a = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=True)
        fc = scaled_channels(fc_channels, width)
        self.fc6 = nn.Conv2d(scaled_channels(512, width), fc, 3, padding=12, dilation=12)
        self.relu6, self.drop6 = nn.ReLU(inplace=True), nn.Dropout(0.5)
        self.fc7 = nn.Conv2d(fc, fc, 1)
        self.relu7, self.drop7 = nn.ReLU(inplace=True), nn.Dropout(0.5)
        self.fc8 = nn.Conv2d(fc, num_classes, 1)
        nn.init.normal_(self.fc8.weight, std=0.01)  # reference prototxt: gaussian std 0.01, bias 0
        nn.init.zeros_(self.fc8.bias)
        self.final_upsample = CaffeInterp()
        self.test_zoom = CaffeZoom(self.score_stride)

    def score_map(self, x: torch.Tensor) -> torch.Tensor:
        h = run_layers(self, [name for block in self.blocks for name in block], x)
        h = self.drop6(self.relu6(self.fc6(self.pool5a(h))))
        h = self.drop7(self.relu7(self.fc7(h)))
        return self.fc8(h)

    def published_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """The LargeFOV test procedure: ``x`` (normalised, so the mean pixel is 0) padded at the
        bottom and right with zeros to 513 x 513 (to 8k + 1 on a side longer than 513), scored,
        zoomed x8 with score k on pixel 8k and cropped to ``x``; softmax of the zoomed scores."""
        height, width = x.shape[-2:]
        padded = F.pad(x, (0, _test_side(width) - width, 0, _test_side(height) - height))
        return torch.softmax(self.test_zoom(self.score_map(padded), x).float(), dim=1)


def _test_side(length: int, stride: int = DeepLabLargeFOV.score_stride) -> int:
    """The padded side of the test input: 513, or the next 8k + 1 for a longer side."""
    return max(TEST_SIZE, -(-(length - 1) // stride) * stride + 1)


def deeplab_fc_decimation(channels: int = 1024) -> FcSurgery:
    """torchvision's fc6/fc7 decimated as DeepLab-LargeFOV initialises them: fc6's 7x7 taps
    0, 3, 6 in each axis give the 3x3 kernel (whose dilation then spans the same extent, Sec 3.1),
    and every ``4096 // channels``-th filter (and fc7 input) is kept."""
    step = 4096 // channels

    def fc6_weight(w: torch.Tensor) -> torch.Tensor:
        return w.reshape(4096, 512, 7, 7)[::step, :, ::3, ::3]

    return {
        "classifier.0.weight": ("fc6.weight", fc6_weight),
        "classifier.0.bias": ("fc6.bias", lambda b: b[::step]),
        "classifier.3.weight": ("fc7.weight", lambda w: w[::step, ::step].reshape(channels, channels, 1, 1)),
        "classifier.3.bias": ("fc7.bias", lambda b: b[::step]),
    }


@register("deeplab_v1", paper=f"{PAPER}, Sec 3.1 and Table 2 (DeepLab-LargeFOV)", caffe_init=DEEPLAB_INIT)
def deeplab_v1(num_classes: int = 21, width: float = 1.0, pretrained: bool | str = False,
               weights_path: str | os.PathLike[str] | None = None) -> DeepLabLargeFOV:
    """DeepLab-LargeFOV (Table 2): kernel 3x3, input stride 12, 1024 fc channels, RF via dilation."""
    model = DeepLabLargeFOV(num_classes, width=width)
    apply_pretrained(model, pretrained, weights_path, deeplab_fc_decimation(1024), width, caffe_init=DEEPLAB_INIT)
    return model
