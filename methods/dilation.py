"""Yu & Koltun, *Multi-Scale Context Aggregation by Dilated Convolutions* (ICLR 2016, arXiv
1511.07122): the front end (Sec 4) and the basic and large context modules (Sec 3, Table 1),
as the official fyu/dilation nets lay them out (``dilation8_pascal_voc``).

Front end (Sec 4): VGG-16 with pool4 and pool5 removed; conv5_x dilated by 2 and fc6 (7x7,
4096) dilated by 4, fc6 and fc7 each followed by Caffe's element-wise ``Dropout`` (``network.py``:
``L.Dropout(..., dropout_ratio=0.5)``); no padding inside the network ("we removed the padding of the intermediate
feature maps"); instead the input is reflection-padded (official: a 186-px margin,
``BORDER_REFLECT_101``; a 900x900 input gives a 66x66 output); ``final`` is a 1x1 C-way layer
initialised N(0, 0.001^2); score stride 8. The scores are zoomed x8 as the deploy net's test
code does (``util.py: interp_map``; the deploy prototxt has no deconvolution): score k on pixel
8k, where its training label sits (``label_slice`` at offset 186 of the padded crop), 3.5 px
before the centre of its receptive field. (``network.py``'s k16 s8 p4 deconvolution belongs to
the ``--up`` variant trained on full-resolution labels.)

Context module (Sec 3, Table 1): 8 layers; 3x3 convolutions in layers 1-7 with dilations
1, 1, 2, 4, 8, 16, 1 and a 1x1 layer 8; ReLU after layers 1-7; no padding inside: the input is
padded by a 33-px buffer (official deploy net: ``pad: 33`` on the first layer, i.e. zeros), so
the output has the input's size and each unit sees 67x67 input units. Basic: C channels in every
layer (64 C^2 weights). Large: 2C, 2C, 4C, 8C, 16C, 32C, 32C, C. Identity initialisation (Eq. 4
and Eq. 5). Layer names follow ``network.py`` (``ctx_conv1_1`` ... ``ctx_fc1``, ``ctx_final``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .caffe_weights import VGG_CONV
from .common import CaffeZoom, InputConvention, ReflectPad101, SegmentationModel, reflect_pad_101, scaled_channels
from .errors import MethodError
from .pretrained import apply_pretrained
from .registry import register
from .vgg import TrunkLayout, add_vgg16_trunk, fc_as_convolutions, run_layers

__all__ = ["CONTEXT_DILATIONS", "PASCAL_MEAN_BGR", "ContextModule", "ContextNetwork", "FrontEnd", "identity_init_"]

PAPER = "Yu & Koltun, Multi-Scale Context Aggregation by Dilated Convolutions, ICLR 2016"
FRONTEND_MARGIN = 186
CONTEXT_BUFFER = 33
TEST_TILE = 900  # fyu/dilation test.py: --input_size default 900 x 900 (66 x 66 scores)

PASCAL_MEAN_BGR = InputConvention(name="pascal-mean", channel_order="BGR", mean=(102.93, 111.36, 116.52),
                                  std=(1.0, 1.0, 1.0))
"""fyu/dilation's input convention: the PASCAL VOC mean pixel, BGR, subtracted from 0..255 values
(``train.py``: ``--mean`` default), not the ImageNet mean of the VGG release."""

FRONTEND_LAYOUT = TrunkLayout(
    conv_padding=(0, 0, 0, 0, 0),
    conv_dilation=(1, 1, 1, 1, 2),
    pools=((2, 2, 0), (2, 2, 0), (2, 2, 0), None, None),
)

# Table 1: (layer name, kernel, dilation) for layers 1..8.
CONTEXT_LAYERS = (
    ("ctx_conv1_1", 3, 1),
    ("ctx_conv1_2", 3, 1),
    ("ctx_conv2_1", 3, 2),
    ("ctx_conv3_1", 3, 4),
    ("ctx_conv4_1", 3, 8),
    ("ctx_conv5_1", 3, 16),
    ("ctx_fc1", 3, 1),
    ("ctx_final", 1, 1),
)
CONTEXT_DILATIONS = tuple(d for _, _, d in CONTEXT_LAYERS)
BASIC_MULTIPLIERS = (1, 1, 1, 1, 1, 1, 1, 1)
LARGE_MULTIPLIERS = (2, 2, 4, 8, 16, 32, 32, 1)


class FrontEnd(nn.Module):
    """The front-end trunk up to fc7 (no score layer): reflection pad, VGG-16 without pool4/pool5,
    conv5 dilation 2, fc6 7x7 dilation 4. ``fc=False`` stops at conv5_3 (no fc6/fc7; ``conv5``
    is then the only forward pass)."""

    def __init__(self, width: float = 1.0, margin: int = FRONTEND_MARGIN, fc: bool = True) -> None:
        super().__init__()
        self.pad = ReflectPad101(margin)
        self.blocks = add_vgg16_trunk(self, FRONTEND_LAYOUT, width)
        self.conv5_channels = scaled_channels(512, width)
        self.out_channels = scaled_channels(4096, width) if fc else self.conv5_channels
        if fc:
            self.fc6 = nn.Conv2d(self.conv5_channels, self.out_channels, 7, dilation=4)
            self.relu6, self.drop6 = nn.ReLU(inplace=True), nn.Dropout(0.5)
            self.fc7 = nn.Conv2d(self.out_channels, self.out_channels, 1)
            self.relu7, self.drop7 = nn.ReLU(inplace=True), nn.Dropout(0.5)

    def conv5(self, x: torch.Tensor, *, padded: bool = False) -> torch.Tensor:
        """conv5_3 after its ReLU (stride 8; fc6's 7x7 dilation-4 window makes fc7's map 24 units
        smaller) of ``x``, reflection-padded here unless it is ``padded`` already."""
        return run_layers(self, [name for block in self.blocks for name in block], x if padded else self.pad(x))

    def forward(self, x: torch.Tensor, *, padded: bool = False) -> torch.Tensor:
        """fc7 features of ``x`` (``padded``: as :meth:`conv5`)."""
        h = self.drop6(self.relu6(self.fc6(self.conv5(x, padded=padded))))
        return self.drop7(self.relu7(self.fc7(h)))


def identity_init_(
    conv: nn.Conv2d, num_classes: int, noise_std: float, generator: torch.Generator | None = None
) -> None:
    """Identity initialisation of Yu & Koltun Eq. 5 (Eq. 4 when in = out = C): weight
    k(t, a)[b] = C / c_out where t = 0 and floor(a C / c_in) == floor(b C / c_out), else
    N(0, sigma^2) with sigma = ``noise_std`` * C / c_out (sigma << C / c_out); bias 0."""
    c_out, c_in, kh, kw = conv.weight.shape
    scale = num_classes / c_out
    with torch.no_grad():
        weight = torch.randn(conv.weight.shape, generator=generator) * (noise_std * scale)
        group_in = torch.arange(c_in) * num_classes // c_in
        group_out = torch.arange(c_out) * num_classes // c_out
        same_group = group_out[:, None] == group_in[None, :]
        centre = weight[:, :, kh // 2, kw // 2]
        centre[same_group] = scale
        conv.weight.copy_(weight)
        nn.init.zeros_(conv.bias)


class ContextModule(nn.Module):
    """The context module of Table 1 with channel multipliers ``multipliers`` (of C).

    ``buffer``: how the 33-px buffer is made when the input does not carry one already:
    ``"zeros"`` (official deploy net), ``"reflect"`` (the paper found both alike), ``"none"``
    (the caller passes maps that already carry the buffer; the output is 66 units smaller).
    ``training_form`` runs the same layers as fyu/dilation's training net.
    """

    def __init__(self, num_classes: int, multipliers: tuple[int, ...], buffer: str = "zeros",
                 noise_std: float = 1e-3, seed: int = 0) -> None:
        super().__init__()
        buffers = {"zeros": nn.ZeroPad2d(CONTEXT_BUFFER), "reflect": nn.ReflectionPad2d(CONTEXT_BUFFER),
                   "none": nn.Identity()}
        if buffer not in buffers:
            raise MethodError(f"buffer must be one of {sorted(buffers)}, got {buffer!r}")
        self.buffer = buffers[buffer]
        generator = torch.Generator().manual_seed(seed)
        in_channels = num_classes
        self.layer_names: list[str] = []
        for (name, kernel, dilation), multiplier in zip(CONTEXT_LAYERS, multipliers, strict=True):
            out_channels = num_classes * multiplier
            conv = nn.Conv2d(in_channels, out_channels, kernel, dilation=dilation)
            identity_init_(conv, num_classes, noise_std, generator)
            self.add_module(name, conv)
            self.layer_names.append(name)
            if name != "ctx_final":
                relu_name = "ctx_fc1_relu" if name == "ctx_fc1" else name.replace("conv", "relu")
                self.add_module(relu_name, nn.ReLU(inplace=True))
                self.layer_names.append(relu_name)
            in_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_layers(self, self.layer_names, self.buffer(x))

    def training_form(self, x: torch.Tensor) -> torch.Tensor:
        """The same layers as fyu/dilation's *training* net lays them out (``network.py:
        build_context``): no buffer, each 3x3 layer zero-padded by its own dilation (``pad =
        dilation``), so every layer keeps the map's size. The deploy net (``forward``) pads once by
        33 and no layer pads; both give an output of the input's size and agree on units whose
        67x67 window lies inside the map, and differ near the border, where the training net
        zero-pads every layer's input (ReLU outputs) and the deploy net only the module's input."""
        for name in self.layer_names:
            layer = getattr(self, name)
            if isinstance(layer, nn.Conv2d):  # zero padding as Caffe's pad (the layer itself runs, hooks see it)
                x = F.pad(x, [layer.dilation[0] * (layer.kernel_size[0] // 2)] * 4)
            x = layer(x)
        return x


class ContextNetwork(SegmentationModel):
    """The front end, its C-way ``final`` layer, an optional context module, and the x8 bilinear
    upsampling."""

    score_stride = 8
    input_margin = FRONTEND_MARGIN
    paper_input_convention = PASCAL_MEAN_BGR
    # the spellings of fyu/dilation's deploy net (models/dilation8_pascal_voc_deploy.prototxt), which the
    # released caffemodels use; its training net (network.py) spells them as our modules do
    caffe_aliases: ClassVar[dict[str, str]] = {
        "fc-final": "final", **{f"ct_{name[4:]}": f"context.{name}" for name, _, _ in CONTEXT_LAYERS}}

    def __init__(self, num_classes: int, width: float = 1.0, context: ContextModule | None = None) -> None:
        super().__init__()
        self.frontend = FrontEnd(width)
        self.final = nn.Conv2d(self.frontend.out_channels, num_classes, 1)
        nn.init.normal_(self.final.weight, std=0.001)
        nn.init.zeros_(self.final.bias)
        self.context = context
        self.final_upsample = CaffeZoom(8)

    def frontend_scores(self, x: torch.Tensor, *, padded: bool = False) -> torch.Tensor:
        """The front end's stride-8 scores (the context module's input)."""
        return self.final(self.frontend(x, padded=padded))

    def score_map(self, x: torch.Tensor, *, padded: bool = False) -> torch.Tensor:
        scores = self.frontend_scores(x, padded=padded)
        return scores if self.context is None else self.context(scores)

    def score_map_of_padded(self, x: torch.Tensor) -> torch.Tensor:
        """fyu/dilation's training input: a crop of the reflection-padded image, (crop - 372) / 8
        scores a side (a 500x500 crop gives 16x16)."""
        return self.score_map(x, padded=True)

    def _tile(self, padded: torch.Tensor, top: int, left: int) -> torch.Tensor:
        """The 900 x 900 tile at (``top``, ``left``) of the reflection-padded image, reflect-padded
        at its bottom and right edges to 900 where the image ends (fyu/dilation ``test.py``)."""
        tile = padded[..., top : top + TEST_TILE, left : left + TEST_TILE]
        return reflect_pad_101(tile, 0, TEST_TILE - tile.shape[-2], 0, TEST_TILE - tile.shape[-1])

    def tile_features(self, x: torch.Tensor) -> torch.Tensor:
        """The context module's training input (fyu/dilation ``test.py --bin``): the front end's
        66 x 66 scores (``final``) of the image's first 900 x 900 tile, the image padded by 186
        (reflect-101) and then to 900 at the bottom and right, so the map includes the outputs
        over the reflected margin; unit k sits on image pixel 8k. A VOC image (at most 500 px a
        side) fits in the tile's 528 x 528 core; of a larger image only that core is seen."""
        margin = self.input_margin
        return self.frontend_scores(self._tile(reflect_pad_101(x, margin, margin, margin, margin), 0, 0), padded=True)

    def published_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """fyu/dilation's test procedure (``test.py: test_image``, ``util.py: interp_map``): pad the
        image by 186 (reflect-101); cut it into 900 x 900 tiles whose 528 x 528 cores tile the image,
        each reflect-padded at its bottom and right edges to 900; softmax of each tile's 66 x 66
        scores; then zoom the probabilities x8 with score k on pixel 8k, as ``forward`` zooms the
        scores of the whole image."""
        height, width = x.shape[-2:]
        margin, core = self.input_margin, TEST_TILE - 2 * self.input_margin
        padded = reflect_pad_101(x, margin, margin, margin, margin)
        rows = []
        for top in range(0, height, core):
            row = []
            for left in range(0, width, core):
                tile = self._tile(padded, top, left)
                row.append(torch.softmax(self.score_map_of_padded(tile).float(), dim=1))
            rows.append(torch.cat(row, dim=-1))
        return self.final_upsample(torch.cat(rows, dim=-2), x)

    def staged_split(self) -> tuple[Callable[[torch.Tensor], torch.Tensor], nn.Module] | None:
        """Yu & Koltun Sec 4: the context module is trained on the front end's output."""
        return None if self.context is None else (self.frontend_scores, self.context)


def _build(num_classes: int, *, width: float, pretrained: bool | str, weights_path: str | os.PathLike[str] | None,
           multipliers: tuple[int, ...] | None = None, buffer: str = "zeros", noise_std: float = 0.0,
           seed: int = 0) -> ContextNetwork:
    context = None
    if multipliers is not None:
        # the reduced-width profile scales the large module's multipliers, keeping them whole
        # multiples of C so that Eq. 5 stays an exact identity
        multipliers = tuple(max(1, round(m * width)) if m > 1 else m for m in multipliers)
        context = ContextModule(num_classes, multipliers, buffer=buffer, noise_std=noise_std, seed=seed)
    model = ContextNetwork(num_classes, width=width, context=context)
    apply_pretrained(model, pretrained, weights_path, fc_as_convolutions(7), width, prefix="frontend.",
                     caffe_init=VGG_CONV)
    return model


@register("frontend", paper=f"{PAPER}, Sec 4 (front end); fyu/dilation dilation8_pascal_voc", caffe_init=VGG_CONV)
def frontend(num_classes: int = 21, width: float = 1.0, pretrained: bool | str = False,
             weights_path: str | os.PathLike[str] | None = None) -> ContextNetwork:
    """The front-end prediction module alone (Sec 4)."""
    return _build(num_classes, width=width, pretrained=pretrained, weights_path=weights_path)


@register("context_basic", paper=f"{PAPER}, Sec 3 and Table 1 (basic context module)", caffe_init=VGG_CONV)
def context_basic(num_classes: int = 21, width: float = 1.0, pretrained: bool | str = False,
                  weights_path: str | os.PathLike[str] | None = None, buffer: str = "zeros",
                  noise_std: float = 0.0, seed: int = 0) -> ContextNetwork:
    """Front end + basic context module: C channels in every layer, identity init (Eq. 4); with
    ``noise_std`` the off-identity weights are N(0, noise_std^2), as fyu/caffe-dilation's identity
    filler adds N(0, 0.01^2) (``filler.hpp``; the paper recipe sets 0.01; 0 keeps Eq. 4 exact)."""
    return _build(num_classes, width=width, pretrained=pretrained, weights_path=weights_path,
                  multipliers=BASIC_MULTIPLIERS, buffer=buffer, noise_std=noise_std, seed=seed)


@register("context_large", paper=f"{PAPER}, Sec 3 and Table 1 (large context module)", caffe_init=VGG_CONV)
def context_large(num_classes: int = 21, width: float = 1.0, pretrained: bool | str = False,
                  weights_path: str | os.PathLike[str] | None = None, buffer: str = "zeros",
                  noise_std: float = 1e-3, seed: int = 0) -> ContextNetwork:
    """Front end + large context module: channels 2C ... 32C, C; identity init of Eq. 5 with
    noise sigma = ``noise_std`` * C / c_out."""
    return _build(num_classes, width=width, pretrained=pretrained, weights_path=weights_path,
                  multipliers=LARGE_MULTIPLIERS, buffer=buffer, noise_std=noise_std, seed=seed)
