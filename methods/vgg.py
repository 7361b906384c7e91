"""The VGG-16 trunk every method shares (Simonyan & Zisserman 2015, configuration D) and the
surgery that loads torchvision's ImageNet ``vgg16`` weights into it.

Layer names follow the Caffe blobs (``conv1_1`` ... ``conv5_3``, ``fc6``, ``fc7``), so loading
is a name map with asserted shapes. The families differ only in padding, pooling and dilation,
which :class:`TrunkLayout` states.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .common import scaled_channels
from .errors import MethodError, SegreproError

__all__ = [
    "TORCHVISION_VGG16_URL",
    "WEIGHTS_ENV_VAR",
    "LoadReport",
    "TrunkLayout",
    "WeightsUnavailable",
    "add_vgg16_trunk",
    "load_vgg16_imagenet",
    "resolve_vgg16_state_dict",
]

VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
TORCHVISION_VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
WEIGHTS_ENV_VAR = "SEGREPRO_VGG16_WEIGHTS"

# torchvision's ``vgg16().features`` indices of the 13 convolutions, in order.
TORCHVISION_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
CONV_NAMES = tuple(f"conv{b + 1}_{i + 1}" for b, (_, n) in enumerate(VGG16_BLOCKS) for i in range(n))


@dataclass(frozen=True)
class TrunkLayout:
    """How one family lays out the 13 VGG-16 convolutions and the pools after each block.

    ``conv_padding[b]`` / ``conv_dilation[b]``: padding and dilation of the 3x3 convolutions of
    block ``b`` (0-based); ``first_padding``: padding of ``conv1_1`` (FCN uses 100);
    ``pools[b]``: ``(kernel, stride, padding)`` of the max pool after block ``b`` or ``None``
    where the family removes it. Every pool uses Caffe's ceil-mode rounding.
    """

    conv_padding: tuple[int, int, int, int, int]
    conv_dilation: tuple[int, int, int, int, int]
    pools: tuple[tuple[int, int, int] | None, ...]
    first_padding: int | None = None


def add_vgg16_trunk(module: nn.Module, layout: TrunkLayout, width: float = 1.0) -> list[list[str]]:
    """Add ``conv1_1`` ... ``pool5`` to ``module`` as named children; return the names per block
    (each block's convolutions, ReLUs and pool, in order) for the forward pass."""
    blocks: list[list[str]] = []
    in_channels = 3
    for b, (channels, count) in enumerate(VGG16_BLOCKS):
        out_channels = scaled_channels(channels, width)
        names: list[str] = []
        for i in range(count):
            name = f"conv{b + 1}_{i + 1}"
            padding = layout.conv_padding[b]
            if b == 0 and i == 0 and layout.first_padding is not None:
                padding = layout.first_padding
            conv = nn.Conv2d(in_channels, out_channels, 3, padding=padding, dilation=layout.conv_dilation[b])
            module.add_module(name, conv)
            module.add_module(f"relu{b + 1}_{i + 1}", nn.ReLU(inplace=True))
            names += [name, f"relu{b + 1}_{i + 1}"]
            in_channels = out_channels
        pool = layout.pools[b]
        if pool is not None:
            kernel, stride, padding = pool
            module.add_module(f"pool{b + 1}", nn.MaxPool2d(kernel, stride, padding, ceil_mode=True))
            names.append(f"pool{b + 1}")
        blocks.append(names)
    return blocks


def run_layers(module: nn.Module, names: list[str], x: torch.Tensor) -> torch.Tensor:
    """Apply ``module``'s children ``names`` in order."""
    for name in names:
        x = getattr(module, name)(x)
    return x


@dataclass
class LoadReport:
    """What :func:`load_vgg16_imagenet` did: ``mapped`` target <- source names; ``dropped``
    source tensors left out by design, with the reason; ``unmapped`` source tensors nobody
    claimed (a bug in the map if not empty); ``initialised`` target tensors the paper
    initialises afresh (score layers, context module)."""

    source: str
    mapped: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    unmapped: list[str] = field(default_factory=list)
    initialised: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"loaded {len(self.mapped)} tensors from {self.source}; dropped {len(self.dropped)} by design; "
            f"{len(self.unmapped)} unmapped; {len(self.initialised)} initialised afresh"
        )


# How a family turns torchvision's fc tensors into its own: (target name, function of the source tensor).
FcSurgery = dict[str, tuple[str, Callable[[torch.Tensor], torch.Tensor]]]


def fc_as_convolutions(fc6_kernel: int = 7) -> FcSurgery:
    """torchvision's Linear fc6 (4096 x 25088) and fc7 (4096 x 4096) as 7x7 and 1x1
    convolutions: the "convolutionalization" of FCN Sec 3.1, used by FCN and the front end."""
    return {
        "classifier.0.weight": ("fc6.weight", lambda w: w.reshape(w.shape[0], 512, fc6_kernel, fc6_kernel)),
        "classifier.0.bias": ("fc6.bias", lambda b: b),
        "classifier.3.weight": ("fc7.weight", lambda w: w.reshape(w.shape[0], w.shape[1], 1, 1)),
        "classifier.3.bias": ("fc7.bias", lambda b: b),
    }


class WeightsUnavailable(SegreproError, RuntimeError):
    """ImageNet VGG-16 weights were asked for but cannot be found or downloaded."""


def resolve_vgg16_state_dict(weights_path: str | os.PathLike[str] | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """torchvision's ImageNet VGG-16 state dict and where it came from.

    Order: ``weights_path``; the file named by ``$SEGREPRO_VGG16_WEIGHTS``; torch.hub's cache
    (``$TORCH_HOME/hub/checkpoints/vgg16-397923af.pth``), downloading it there if absent.
    """
    path = weights_path or os.environ.get(WEIGHTS_ENV_VAR)
    if path:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"VGG-16 weights file {path} does not exist. Pass the path of torchvision's "
                f"vgg16-397923af.pth (or any state dict in its layout) as weights_path= or ${WEIGHTS_ENV_VAR}."
            )
        return torch.load(path, map_location="cpu", weights_only=True), str(path)
    cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(TORCHVISION_VGG16_URL).name
    try:
        state = torch.hub.load_state_dict_from_url(
            TORCHVISION_VGG16_URL, map_location="cpu", progress=True, check_hash=True, weights_only=True
        )
    except OSError as error:  # URLError, socket errors and the like are OSErrors
        raise WeightsUnavailable(
            f"Could not download torchvision's ImageNet VGG-16 weights ({TORCHVISION_VGG16_URL}): {error}. "
            f"On a machine without internet access, copy that file (528 MB, sha256 prefix 397923af) to "
            f"{cache} (torch.hub's cache; set TORCH_HOME to move it), or put it anywhere and give its path "
            f"as weights_path=... or in the environment variable {WEIGHTS_ENV_VAR}; any state dict in "
            f"torchvision's vgg16 layout works. Or build the model with pretrained=False."
        ) from error
    return state, f"torch.hub:{TORCHVISION_VGG16_URL}"


def load_vgg16_imagenet(
    model: nn.Module, state: dict[str, torch.Tensor], fc_surgery: FcSurgery, source: str, prefix: str = "",
    dropped: dict[str, str] | None = None,
) -> LoadReport:
    """Copy a torchvision-layout VGG-16 ``state`` into ``model`` by name, asserting every shape.

    The 13 convolutions map one to one; ``fc_surgery`` says what becomes of fc6/fc7;
    ``classifier.6`` (the ImageNet 1000-way classifier) is dropped, as in all four papers.
    ``prefix`` is prepended to every target name (the trunk's place inside ``model``);
    ``dropped`` names further source tensors left out by design (source name -> reason).
    """
    report = LoadReport(source=source)
    target = model.state_dict()
    plan: dict[str, tuple[str, Callable[[torch.Tensor], torch.Tensor]]] = {}
    for conv_name, index in zip(CONV_NAMES, TORCHVISION_CONV_INDICES, strict=True):
        for kind in ("weight", "bias"):
            plan[f"features.{index}.{kind}"] = (f"{conv_name}.{kind}", lambda t: t)
    plan.update(fc_surgery)
    dropped = {
        "classifier.6.weight": "ImageNet 1000-way classifier; the papers replace it by a C-way score layer",
        "classifier.6.bias": "ImageNet 1000-way classifier; the papers replace it by a C-way score layer",
        **(dropped or {}),
    }
    new_values: dict[str, torch.Tensor] = {}
    for source_name, tensor in state.items():
        if source_name in dropped:
            report.dropped[source_name] = dropped[source_name]
            continue
        if source_name not in plan:
            report.unmapped.append(source_name)
            continue
        target_name, transform = plan[source_name]
        target_name = prefix + target_name
        if target_name not in target:
            raise KeyError(f"weight map targets {target_name!r}, which {type(model).__name__} does not have")
        value = transform(tensor)
        if value.shape != target[target_name].shape:
            raise MethodError(
                f"{source_name} {tuple(tensor.shape)} -> {target_name}: expected {tuple(target[target_name].shape)}, "
                f"got {tuple(value.shape)} (is the model built with width=1?)"
            )
        new_values[target_name] = value
        report.mapped[target_name] = source_name
    missing_sources = sorted(set(plan) - set(state))
    if missing_sources:
        raise KeyError(f"{source} lacks {missing_sources}; is it a torchvision vgg16 state dict?")
    with torch.no_grad():
        for name, value in new_values.items():
            target[name].copy_(value)
    report.initialised = sorted(
        name for name, p in model.named_parameters() if name not in report.mapped
    )
    return report
