"""Any mmsegmentation decode head as a registered method, on the front-end trunk of Yu & Koltun
(ICLR 2016, Sec 4; :class:`methods.dilation.FrontEnd`): ``register_mmseg_head(name, head_cfg,
feature="fc7" | "conv5")``, and a curated set of heads with the decode-head settings of
mmsegmentation 1.2.2's ``configs/_base_/models/*_r50-d8.py`` (its ResNet-50-D8 trunk has stride 8,
as the front end has).

The head reads one level (``in_index=0``): fc7 (stride 8, 4096 x width channels), or conv5_3
(512 x width channels) cropped by 12 units on each side so that it lies on fc7's grid (fc6 is a
7x7 convolution of dilation 4 without padding). Its C-way output is upsampled x8 as the front
end's scores are (fixed bilinear deconvolution k16 s8 p4). BN replaces mmsegmentation's SyncBN
(``norm_cfg`` of the configs); ``width`` scales the trunk and every ``*channels`` entry of the
head (``in_channels`` excepted). A head that returns a tuple (DANet's PAM and CAM outputs) is
reduced to its main output, ``[0]``, as mmsegmentation's ``predict`` does; the parameters of the
other outputs then take no gradient (``unused_parameters``).

mmcv-lite has no compiled ops, and ``mmseg.models`` imports ``mmcv.ops`` unconditionally
(open-mmlab/mmsegmentation#871): when ``mmcv.ops`` does not import, a stand-in module provides
mmcv's pure-PyTorch ``point_sample`` and raises for any compiled op (CCNet, PSANet need them).
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import re
import sys
import types
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .common import SegmentationModel, UpsampleCrop, scaled_channels
from .dilation import FrontEnd
from .errors import MethodError, described
from .pretrained import apply_pretrained
from .registry import register
from .vgg import fc_as_convolutions

__all__ = ["CURATED_HEADS", "FEATURES", "MMSegHeadNetwork", "MainOutput", "mmseg_versions", "register_mmseg_head"]

FC6_CROP = 12  # (7 - 1) * 4 / 2: conv5_3 units outside fc7's grid on each side
FEATURES = ("fc7", "conv5")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_CONFIGS = "mmsegmentation 1.2.2 configs/_base_/models"

CURATED_HEADS: dict[str, tuple[dict[str, object], str]] = {
    "mmseg_fcn": (dict(type="FCNHead", channels=512, num_convs=2, concat_input=True),
                  f"Long et al. CVPR 2015 (FCN head); {_CONFIGS}/fcn_r50-d8.py"),
    "mmseg_aspp": (dict(type="ASPPHead", channels=512, dilations=(1, 12, 24, 36)),
                   f"Chen et al. 2017, DeepLab v3 Sec 3.3 (ASPP + image pooling); {_CONFIGS}/deeplabv3_r50-d8.py"),
    "mmseg_dsaspp": (dict(type="DepthwiseSeparableASPPHead", channels=512, dilations=(1, 12, 24, 36),
                          c1_in_channels=0, c1_channels=0),
                     f"Chen et al. ECCV 2018, DeepLab v3+ (separable ASPP; no low-level decoder input: the trunk "
                     f"gives one level); {_CONFIGS}/deeplabv3plus_r50-d8.py"),
    "mmseg_psp": (dict(type="PSPHead", channels=512, pool_scales=(1, 2, 3, 6)),
                  f"Zhao et al. CVPR 2017, PSPNet Sec 3.3 (pyramid pooling); {_CONFIGS}/pspnet_r50-d8.py"),
    "mmseg_da": (dict(type="DAHead", channels=512, pam_channels=64),
                 f"Fu et al. CVPR 2019, DANet (PAM + CAM; main output); {_CONFIGS}/danet_r50-d8.py"),
    "mmseg_nl": (dict(type="NLHead", channels=512, reduction=2, use_scale=True, mode="embedded_gaussian"),
                 f"Wang et al. CVPR 2018, non-local block; {_CONFIGS}/nonlocal_r50-d8.py"),
    "mmseg_gc": (dict(type="GCHead", channels=512, ratio=1 / 4.0, pooling_type="att", fusion_types=("channel_add",)),
                 f"Cao et al. ICCVW 2019, GCNet; {_CONFIGS}/gcnet_r50-d8.py"),
    "mmseg_ema": (dict(type="EMAHead", channels=256, ema_channels=512, num_bases=64, num_stages=3, momentum=0.1),
                  f"Li et al. ICCV 2019, EMANet; {_CONFIGS}/emanet_r50-d8.py"),
    "mmseg_isa": (dict(type="ISAHead", channels=512, isa_channels=256, down_factor=(8, 8)),
                  f"Huang et al. 2019, interlaced sparse self-attention; {_CONFIGS}/isanet_r50-d8.py"),
    "mmseg_apc": (dict(type="APCHead", channels=512, pool_scales=(1, 2, 3, 6)),
                  f"He et al. CVPR 2019, APCNet; {_CONFIGS}/apcnet_r50-d8.py"),
    "mmseg_dm": (dict(type="DMHead", channels=512, filter_sizes=(1, 3, 5, 7)),
                 f"He et al. ICCV 2019, DMNet; {_CONFIGS}/dmnet_r50-d8.py"),
}
"""Registered name -> (decode-head settings besides in_channels, in_index, num_classes and
norm_cfg; the paper and the mmsegmentation config they come from)."""


def _compiled_op(name: str) -> object:
    """What the stand-in ``mmcv.ops`` gives for any other name: a callable that raises when used."""
    if name.startswith("__"):
        raise AttributeError(name)

    def unavailable(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"mmcv.ops.{name} is a compiled op, absent from mmcv-lite; install the full mmcv "
                           "(with its compiled ops) to use a head that needs it")

    return unavailable


def _shim_mmcv_ops() -> None:
    """Install the stand-in ``mmcv.ops`` when mmcv's compiled ops do not import (mmcv-lite)."""
    try:
        import mmcv.ops
        return
    except ImportError:
        pass
    import mmcv

    point_sample_file = Path(mmcv.__file__).parent / "ops" / "point_sample.py"  # imports torch only
    spec = importlib.util.spec_from_file_location("mmcv.ops.point_sample", point_sample_file)
    point_sample = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(point_sample)
    ops = types.ModuleType("mmcv.ops", "mmcv-lite stand-in (segrepro): point_sample only; compiled ops raise")
    ops.point_sample = point_sample.point_sample
    ops.__getattr__ = _compiled_op
    sys.modules["mmcv.ops"], sys.modules["mmcv.ops.point_sample"] = ops, point_sample
    mmcv.ops = ops
    warnings.warn("mmcv has no compiled ops (mmcv-lite): segrepro installed a stand-in mmcv.ops with the pure-PyTorch "
                  "point_sample; heads that need compiled ops (CCHead, PSAHead) raise when built", stacklevel=2)


def _head_registry() -> object:
    """mmsegmentation's model registry, its heads registered (``mmseg.models`` imported)."""
    _shim_mmcv_ops()
    import mmseg.models  # noqa: F401  (registers the decode heads)
    from mmseg.registry import MODELS

    return MODELS


def mmseg_versions() -> dict[str, str]:
    """The installed versions of the packages an mmseg head's numbers depend on."""
    import importlib.metadata

    found = {}
    for package in ("mmsegmentation", "mmcv", "mmcv-lite", "mmengine"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def scaled_head_config(head_cfg: dict[str, object], width: float) -> dict[str, object]:
    """``head_cfg`` with every non-zero ``*channels`` entry (``in_channels`` and ``c1_in_channels`` excepted)
    scaled by ``width``."""
    scaled = copy.deepcopy(head_cfg)
    for key, value in head_cfg.items():
        if key.endswith("channels") and not key.endswith("in_channels") and isinstance(value, int) and value > 0:
            scaled[key] = scaled_channels(value, width)
    return scaled


def _quiet_init_weights(head: nn.Module) -> None:
    """The head's ``init_cfg`` initialisation (``conv_seg`` N(0, 0.01^2) in ``BaseDecodeHead``), as
    mmsegmentation's runner applies it, without its per-parameter log lines; nothing on the
    ``meta`` device (shapes only: ``list`` builds there)."""
    from mmengine.logging import MMLogger

    if next(head.parameters()).is_meta:
        return

    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        head.init_weights()
    finally:
        logger.setLevel(level)


class MainOutput(nn.Module):
    """An mmsegmentation decode head on one feature map, reduced to its main output (``[0]`` of a
    tuple, as mmsegmentation's ``predict`` takes it)."""

    def __init__(self, decode_head: nn.Module) -> None:
        super().__init__()
        self.decode_head = decode_head

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        output = self.decode_head([features])
        return output[0] if isinstance(output, tuple | list) else output


class MMSegHeadNetwork(SegmentationModel):
    """The front end up to ``feature`` (fc7 or conv5_3), an mmsegmentation decode head on it, and
    the front end's x8 bilinear upsampling. It can be trained end to end, or in stages like the
    context modules (Yu & Koltun Sec 4): the head on the cached features of a trained front end."""

    score_stride = 8

    def __init__(self, num_classes: int, head_cfg: dict[str, object], feature: str = "fc7",
                 width: float = 1.0) -> None:
        super().__init__()
        if feature not in FEATURES:
            raise MethodError(f"feature must be one of {FEATURES}, got {feature!r}")
        self.feature = feature
        self.frontend = FrontEnd(width, fc=feature == "fc7")
        self.head_config = {"norm_cfg": {"type": "BN", "requires_grad": True}, "align_corners": False,
                            **scaled_head_config(head_cfg, width), "in_channels": self.frontend.out_channels,
                            "in_index": 0, "num_classes": num_classes}
        with warnings.catch_warnings():  # mmcv-lite's and the unused loss module's notices
            warnings.filterwarnings("ignore", category=UserWarning, module=r"(mmcv|mmseg)\.")
            try:
                decode_head = _head_registry().build(copy.deepcopy(self.head_config))
            except Exception as error:  # mmseg's registry and the head's constructor check the user's config
                raise MethodError(f"mmseg head {head_cfg.get('type')!r} does not build from its config: "
                                  f"{described(error)}") from error
        _quiet_init_weights(decode_head)
        self.head = MainOutput(decode_head)
        self.final_upsample = UpsampleCrop(num_classes, 16, 8, padding=4)
        self.unused_parameters = self._check_output_stride(num_classes)

    def _check_output_stride(self, num_classes: int) -> bool:
        """Assert that the head keeps its input's grid (output stride 8) and gives ``num_classes``
        maps; True when the head returns several outputs (the others' parameters go unused)."""
        decode_head = self.head.decode_head
        features = torch.zeros(2, self.frontend.out_channels, 13, 11, device=next(decode_head.parameters()).device)
        training = decode_head.training
        decode_head.eval()
        with torch.no_grad():
            output = decode_head([features])
        decode_head.train(training)
        main = output[0] if isinstance(output, tuple | list) else output
        if tuple(main.shape) != (2, num_classes, 13, 11):
            raise MethodError(f"mmseg head {self.head_config['type']} maps a 13x11 stride-8 feature map to "
                             f"{tuple(main.shape[1:])}, not {num_classes}x13x11: its output stride is not 8; "
                             "this adapter takes heads that keep their input's grid")
        return isinstance(output, tuple | list)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The stride-8 map the head reads: fc7, or conv5_3 on fc7's grid."""
        if self.feature == "fc7":
            return self.frontend(x)
        return self.frontend.conv5(x)[..., FC6_CROP:-FC6_CROP, FC6_CROP:-FC6_CROP]

    def score_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def staged_split(self) -> tuple[Callable[[torch.Tensor], torch.Tensor], nn.Module]:
        return self.features, self.head


_FC_DROPPED = {f"classifier.{i}.{kind}": "fc6/fc7: the head reads conv5_3" for i in (0, 3)
               for kind in ("weight", "bias")}


def register_mmseg_head(name: str, head_cfg: dict[str, object], feature: str = "fc7", *,
                        paper: str | None = None) -> None:
    """Register ``name`` (a plain folder name) as the front end + the mmsegmentation decode head
    ``head_cfg`` (a config dict with ``type``; ``in_channels``, ``in_index`` and ``num_classes``
    are set here, ``norm_cfg`` defaults to BN). mmsegmentation is imported, and the head's output
    stride checked, when the method is built."""
    if not _SAFE_NAME.fullmatch(name):
        raise MethodError(f"method name {name!r} must be a plain folder name (letters, digits, _ . -)")
    if feature not in FEATURES:
        raise MethodError(f"feature must be one of {FEATURES}, got {feature!r}")
    if not isinstance(head_cfg, dict) or "type" not in head_cfg:
        raise MethodError(f"head_cfg of {name!r} must be a dict whose 'type' is an mmsegmentation decode head "
                          f"(e.g. {{'type': 'ASPPHead', 'channels': 512}}), got {head_cfg!r}"[:300])
    frozen = copy.deepcopy(head_cfg)

    def builder(num_classes: int = 21, width: float = 1.0, pretrained: bool = False,
                weights_path: str | None = None) -> MMSegHeadNetwork:
        model = MMSegHeadNetwork(num_classes, frozen, feature, width)
        surgery, dropped = (fc_as_convolutions(7), None) if feature == "fc7" else ({}, _FC_DROPPED)
        apply_pretrained(model, pretrained, weights_path, surgery, width, prefix="frontend.", dropped=dropped)
        return model

    details = {"mmseg_head": _as_json(frozen), "feature": feature, "packages": mmseg_versions()}
    register(name, paper=paper or f"mmsegmentation {frozen['type']} on the Yu & Koltun front end ({feature})",
             details=details)(builder)


def _as_json(value: object) -> object:
    """A config as JSON values (tuples as lists), as a record stores it."""
    if isinstance(value, dict):
        return {str(k): _as_json(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_as_json(v) for v in value]
    return value


def register_curated_heads() -> None:
    """Register :data:`CURATED_HEADS` on fc7."""
    for name, (head_cfg, paper) in CURATED_HEADS.items():
        register_mmseg_head(name, head_cfg, paper=paper)
