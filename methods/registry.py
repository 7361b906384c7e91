"""One strict registry of segmentation methods (timm-style ``@register`` on builder functions).

A method is a builder function ``builder(num_classes: int = 21, **options) -> nn.Module``. The
module it returns is a :class:`SegmentationModel`: it maps a normalised image batch (see its
``input_convention``) to per-pixel class scores at input resolution.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from .caffe_weights import CaffeInit
from .common import SegmentationModel
from .errors import MethodError, SegreproError, described

__all__ = ["MethodEntry", "create", "get_entry", "list_methods", "register"]

_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
"""A method name names folders of runs and records: no separators, nothing hidden."""


@dataclass(frozen=True)
class MethodEntry:
    """What the registry knows of one method before it is built."""

    name: str
    builder: Callable[..., nn.Module]
    paper: str
    caffe_init: CaffeInit | None = None  # the Caffe ImageNet model the paper fine-tuned from (pretrained="caffe")
    details: dict[str, object] = field(default_factory=dict)  # what a record states beside the paper (JSON)


_REGISTRY: dict[str, MethodEntry] = {}


Builder = Callable[..., nn.Module]


def register(name: str, *, paper: str, caffe_init: CaffeInit | None = None,
             details: dict[str, object] | None = None) -> Callable[[Builder], Builder]:
    """Register ``builder`` under ``name``; ``paper`` cites the paper and the table or section it
    follows; ``caffe_init`` is the Caffe init model its builder loads with ``pretrained="caffe"``;
    ``details`` (JSON values) is what the method's records state about it besides (e.g. a config)."""

    def decorator(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise MethodError(
                f"method {name!r} is already registered (by {_REGISTRY[name].builder.__module__}."
                f"{_REGISTRY[name].builder.__qualname__}); pick another name"
            )
        if "+" in name:
            raise MethodError(f"method name {name!r} may not contain '+': '+crf' marks a post-processing variant")
        if not _PLAIN_NAME.fullmatch(name) or ".." in name:
            raise MethodError(f"method name {name!r} is not a plain name: it names folders of runs and records, so use "
                             "letters, digits, '_', '-' and '.' only (no '/', no '..', not starting with '.' or '-')")
        _REGISTRY[name] = MethodEntry(name=name, builder=builder, paper=paper, caffe_init=caffe_init,
                                      details=dict(details or {}))
        return builder

    return decorator


def get_entry(name: str) -> MethodEntry:
    """The registry entry of ``name``; an unknown name is an error that lists the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "(none)"
        raise KeyError(f"unknown method {name!r}; registered methods: {known}") from None


def from_this_package(name: str) -> bool:
    """Whether method ``name`` is built by this package (a failure of its own is a bug and keeps its
    traceback), not by a user's module registered with ``--import``."""
    return get_entry(name).builder.__module__.split(".")[0] == __name__.split(".")[0]


def create(name: str, num_classes: int = 21, **options: object) -> nn.Module:
    """Build method ``name`` with ``num_classes`` outputs; ``options`` go to its builder, which must
    return a :class:`SegmentationModel` (the contract every harness step relies on)."""
    entry = get_entry(name)
    builder = f"{entry.builder.__module__}.{entry.builder.__qualname__}"
    try:
        model = entry.builder(num_classes=num_classes, **options)
    except (SegreproError, KeyboardInterrupt):  # Ctrl-C while building stays an interrupt
        raise
    except BaseException as error:  # SystemExit too: a builder must not end the command without a word
        if from_this_package(name):
            raise  # a bug of this package's own builders keeps its traceback
        raise MethodError(f"the builder of method {name!r} ({builder}) raised {described(error)}; fix the module "
                          "that registers it") from error
    if not isinstance(model, SegmentationModel):
        raise MethodError(f"the builder of method {name!r} ({builder}) "
                         f"returned {type(model).__name__}, not a methods.SegmentationModel; subclass it (see the "
                         "README's 'Adding your own method')")
    return model


def list_methods() -> list[str]:
    """Names of all registered methods, sorted."""
    return sorted(_REGISTRY)
