"""Building blocks shared by every method family: input conventions, the segmentation-model base
class, fixed bilinear upsampling (FCN Sec 3.3) and Caffe-style cropping."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from .errors import MethodError

__all__ = [
    "CAFFE_VGG",
    "TORCHVISION_VGG",
    "BilinearUpsample",
    "CaffeInterp",
    "CaffeZoom",
    "Crop",
    "InputConvention",
    "ReflectPad101",
    "Scale",
    "SegmentationModel",
    "UpsampleCrop",
    "bilinear_kernel",
    "reflect_pad_101",
    "scaled_channels",
]


@dataclass(frozen=True)
class InputConvention:
    """How an image (uint8 RGB, 0..255) becomes the network input: reorder, subtract ``mean``,
    divide by ``std`` (both per channel, in the network's channel order, on the 0..255 scale)."""

    name: str
    channel_order: str  # "RGB" or "BGR"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def normalize(self, image_rgb_uint8: torch.Tensor) -> torch.Tensor:
        """``N x 3 x H x W`` (or ``3 x H x W``) RGB 0..255 -> normalised float tensor."""
        x = image_rgb_uint8.float()
        if self.channel_order == "BGR":
            x = x.flip(-3)
        shape = (3, 1, 1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
        return (x - mean) / std


CAFFE_VGG = InputConvention(
    name="caffe",
    channel_order="BGR",
    mean=(104.00699, 116.66877, 122.67892),
    std=(1.0, 1.0, 1.0),
)
"""The convention of the Caffe VGG-16 release that all four papers fine-tuned from."""

TORCHVISION_VGG = InputConvention(
    name="torchvision",
    channel_order="RGB",
    mean=(0.485 * 255, 0.456 * 255, 0.406 * 255),
    std=(0.229 * 255, 0.224 * 255, 0.225 * 255),
)
"""The convention of torchvision's ImageNet ``vgg16`` weights (what ``pretrained=True`` loads)."""


class SegmentationModel(nn.Module):
    """Base class of every registered method.

    ``score_map(x)`` returns the class scores before the final upsampling (stride
    ``score_stride``); ``forward(x)`` returns scores at input resolution. ``input_convention`` is
    the convention of the weights the model holds; ``paper_input_convention`` the one the paper
    used. ``caffe_aliases`` maps the Caffe layer names of the authors' released nets that differ
    from our module names to the module (``methods.caffe_weights``).
    """

    score_stride: int
    input_convention: InputConvention = TORCHVISION_VGG
    paper_input_convention: InputConvention = CAFFE_VGG
    caffe_aliases: ClassVar[dict[str, str]] = {}

    input_margin: int = 0
    """Pixels the model pads on every side of its input itself (Yu & Koltun's 186-px reflection)."""

    final_upsample: nn.Module  # called as final_upsample(scores, input) -> scores at input size
    unused_parameters: bool = False  # some parameters take no gradient (auxiliary outputs): DDP must look for them

    def staged_split(self) -> tuple[Callable[[torch.Tensor], torch.Tensor], nn.Module] | None:
        """For models trained in stages on the cached output of a frozen part: ``(stem, head)``
        with ``score_map(x) == head(stem(x))``; ``None`` for models trained end to end."""
        return None

    def score_map(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def score_map_of_padded(self, x: torch.Tensor) -> torch.Tensor:
        """The score map of an input that already carries ``input_margin`` pixels of padding on
        every side (fyu/dilation trains on crops of the padded image); ``score_map`` when the
        model pads nothing."""
        if self.input_margin:
            raise NotImplementedError(f"{type(self).__name__} pads its input but cannot skip the padding")
        return self.score_map(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        try:
            scores = self.score_map(x)
        except SystemExit as error:
            raise MethodError(f"{type(self).__name__}.score_map called sys.exit({error.code!r}); it must return "
                              "scores, not end the command") from None
        if not isinstance(scores, torch.fx.Proxy):  # torch.fx traces forward for the receptive field
            _check_scores(type(self).__name__, scores, x)
        return self.final_upsample(scores, x)

    def published_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities at input resolution by the paper's own test procedure: the softmax
        of ``forward`` (FCN's whole image, DeepLab's x8 ``Interp``) unless a family says otherwise."""
        return torch.softmax(self(x).float(), dim=1)


def _check_scores(model: str, scores: object, x: torch.Tensor) -> None:
    """A :class:`MethodError` when a (user's) ``score_map`` gave no floating-point
    ``(batch, classes, height, width)`` tensor with no extent 0 for the input ``x``."""
    if not isinstance(scores, torch.Tensor):
        raise MethodError(f"{model}.score_map returned {type(scores).__name__}, not a tensor; it must return a tensor "
                          "of scores (batch, classes, height, width)")
    if not scores.is_floating_point():
        raise MethodError(f"{model}.score_map returned scores of dtype {scores.dtype}; they must be floating point "
                          "(the logits before the softmax)")
    if scores.dim() != 4 or scores.shape[0] != x.shape[0] or 0 in scores.shape[1:]:
        raise MethodError(f"{model}.score_map returned scores of shape {tuple(scores.shape)} for an input of shape "
                          f"{tuple(x.shape)}; it must return (batch, classes, height, width), none of them 0")


def scaled_channels(channels: int, width: float) -> int:
    """``channels`` scaled by ``width`` (at least 1): the reduced-width option of the CPU profile."""
    if width <= 0:
        raise MethodError(f"width must be positive, got {width}")
    return max(1, round(channels * width))


def bilinear_kernel(kernel_size: int) -> torch.Tensor:
    """The ``kernel_size x kernel_size`` bilinear interpolation kernel of FCN's ``upsample_filt``
    (Caffe's ``bilinear`` filler): factor ``ceil(k/2)``, centred between taps for even k."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    taps = 1 - (torch.arange(kernel_size, dtype=torch.float64) - center).abs() / factor
    return torch.outer(taps, taps).float()


class BilinearUpsample(nn.Module):
    """Per-class transposed convolution with a fixed bilinear kernel and no bias (FCN Sec 3.3; the
    reference nets set ``lr_mult: 0``). The kernel is a non-persistent buffer: not trainable, not
    counted as a parameter, not in checkpoints; it acts channel by channel like Caffe's diagonal
    C x C kernel."""

    def __init__(self, channels: int, kernel_size: int, stride: int, padding: int = 0) -> None:
        super().__init__()
        self.channels, self.kernel_size, self.stride, self.padding = channels, kernel_size, stride, padding
        kernel = bilinear_kernel(kernel_size).expand(channels, 1, kernel_size, kernel_size).clone()
        self.register_buffer("weight", kernel, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(
            x, self.weight.to(x.dtype), stride=self.stride, padding=self.padding, groups=self.channels
        )

    def extra_repr(self) -> str:
        return f"{self.channels}, kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class Crop(nn.Module):
    """Caffe's ``Crop`` layer on the two spatial axes: take ``size`` from ``offset``."""

    def __init__(self, offset: int) -> None:
        super().__init__()
        self.offset = offset

    def forward(self, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        h, w = reference.shape[-2], reference.shape[-1]
        o = self.offset
        if x.shape[-2] < o + h or x.shape[-1] < o + w:
            raise MethodError(
                f"cannot crop {h}x{w} at offset {o} from a {x.shape[-2]}x{x.shape[-1]} map; "
                "the input is too small for this network"
            )
        return x[..., o : o + h, o : o + w]

    def extra_repr(self) -> str:
        return f"offset={self.offset}"


class Scale(nn.Module):
    """Multiply by a constant (Caffe ``Scale`` with a fixed factor, as ``voc-fcn8s-atonce`` scales its
    pool3/pool4 skips)."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


class UpsampleCrop(nn.Module):
    """Fixed bilinear upsampling followed by a crop to the reference's size (FCN's ``upscore`` +
    ``score`` crop; the front end's ``k16 s8 p4`` deconvolution, crop offset 0)."""

    def __init__(self, channels: int, kernel_size: int, stride: int, padding: int = 0, offset: int = 0) -> None:
        super().__init__()
        self.upsample = BilinearUpsample(channels, kernel_size, stride, padding)
        self.crop = Crop(offset)

    def forward(self, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        return self.crop(self.upsample(x), reference)


class CaffeInterp(nn.Module):
    """Caffe's ``Interp`` layer as DeepLab uses it at test time: bilinear resize that maps corner
    to corner (``align_corners=True``), to the reference's size (an 8k+1 input gives exactly
    ``zoom_factor: 8``)."""

    def forward(self, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        size = (reference.shape[-2], reference.shape[-1])
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class CaffeZoom(CaffeInterp):
    """Caffe's ``Interp`` with ``zoom_factor`` (and fyu/dilation's ``util.interp_map``): score k
    lands on pixel ``zoom * k``, bilinear between neighbouring scores; the last score row and
    column are repeated where the reference reaches past them, then the result is cropped to the
    reference's size."""

    def __init__(self, zoom: int) -> None:
        super().__init__()
        self.zoom = zoom

    def forward(self, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        height, width = reference.shape[-2], reference.shape[-1]
        rows, columns = x.shape[-2], x.shape[-1]
        if (height - 1) > self.zoom * rows or (width - 1) > self.zoom * columns:
            raise MethodError(f"a {rows}x{columns} score map zoomed x{self.zoom} cannot cover {height}x{width}")
        x = F.pad(x, (0, 1, 0, 1), mode="replicate")
        size = (self.zoom * rows + 1, self.zoom * columns + 1)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)[..., :height, :width]

    def extra_repr(self) -> str:
        return f"zoom={self.zoom}"


def reflect_pad_101(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Pad the last two axes by reflection without repeating the edge pixel (OpenCV
    ``BORDER_REFLECT_101``). Pads wider than the map reflect again off the far edge, as OpenCV
    does, so small maps work too."""
    pads = [left, right, top, bottom]
    while any(pads):
        h, w = x.shape[-2], x.shape[-1]
        if min(h, w) < 2:
            raise MethodError(f"cannot reflect-pad a {h}x{w} map")
        step = [min(p, w - 1) for p in pads[:2]] + [min(p, h - 1) for p in pads[2:]]
        x = F.pad(x, step, mode="reflect")
        pads = [p - s for p, s in zip(pads, step, strict=True)]
    return x


class ReflectPad101(nn.Module):
    """:func:`reflect_pad_101` by ``margin`` on every side (the official front end's input padding)."""

    def __init__(self, margin: int) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reflect_pad_101(x, self.margin, self.margin, self.margin, self.margin)

    def extra_repr(self) -> str:
        return f"margin={self.margin}"
