"""segrepro's method registry: ``create(name)``, ``list_methods()``, ``register``.

Importing this package registers the built-in families (one file each). A new head is a file
that decorates a builder with ``@register`` and is imported before ``create`` is called (see the
README, "Adding your own method").
"""

import importlib.util

from . import deeplab, dilation, fcn  # noqa: F401  (registers the built-in methods)
from .common import CAFFE_VGG, TORCHVISION_VGG, InputConvention, SegmentationModel
from .registry import MethodEntry, create, get_entry, list_methods, register

if all(importlib.util.find_spec(package) for package in ("mmseg", "mmcv", "mmengine")):  # the mmseg extra
    from .mmseg import register_curated_heads

    register_curated_heads()

__all__ = [
    "CAFFE_VGG",
    "TORCHVISION_VGG",
    "InputConvention",
    "MethodEntry",
    "SegmentationModel",
    "create",
    "get_entry",
    "list_methods",
    "register",
]
