"""The context module's training data as fyu/dilation made it, on disk: each training image's
front-end scores over its one 900 x 900 tile (``test.py --bin``: 66 x 66 maps of C scores) and its
labels sliced at stride 8 from offset 0 (``network.py: make_bin_label_data``, fyu/caffe-dilation
``bin_label_data_layer.cpp``: ``label_shape`` 66 66, 255 beyond the image), mirrored together
with probability 0.5 at training time.

The maps are computed once per (front-end weights, training split) and kept as float16
memory-mapped files under the cache (``$SEGREPRO_CACHE/context-features/<key>/``), so a batch
reads 60 maps from disk and memory stays bounded whatever the split's size (trainaug: 10,582
maps of 21 x 66 x 66, 1.9 GB). A cache is written in a staging folder and renamed into place
complete; before it is written, the free disk is checked against its size.

The quick profile's whole-image protocol (and a new head's staged training in ``compare``) keeps
its maps on disk too (``ImageFeatures``: float32 as computed, so its numbers are those of the
in-memory cache it replaces; ``$SEGREPRO_CACHE/image-features/<key>/``)."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from benchmarks.data.voc import IGNORE_INDEX
from benchmarks.files import space_checked
from benchmarks.progress import bar
from methods.errors import SegreproError

__all__ = ["CACHE_VERSION", "LABEL_STRIDE", "TILE_UNITS", "CacheTooLarge", "ImageFeatures", "TileFeatures",
           "cache_bytes", "image_feature_cache", "tile_feature_cache", "tile_labels"]

CACHE_VERSION = 1
TILE_UNITS = 66  # fyu/dilation docs/training.md: --label_shape 66 66 (900 x 900 tile, stride 8)
LABEL_STRIDE = 8


class CacheTooLarge(SegreproError, OSError):
    """The disk under the cache cannot hold the features; the message gives sizes and the fix."""


def tile_labels(label: torch.Tensor, units: int = TILE_UNITS, stride: int = LABEL_STRIDE) -> torch.Tensor:
    """``label`` (H x W) sliced at ``stride`` from offset 0 into ``units`` x ``units``, 255 where
    the slice runs beyond the image (the tile's reflected margin)."""
    sliced = label[:stride * units:stride, :stride * units:stride]
    out = torch.full((units, units), IGNORE_INDEX, dtype=torch.uint8)
    out[: sliced.shape[0], : sliced.shape[1]] = sliced.to(torch.uint8)
    return out


def cache_bytes(images: int, channels: int, units: int = TILE_UNITS) -> int:
    """Disk the cache of ``images`` maps of ``channels`` x ``units``² takes: float16 features, uint8 labels."""
    return images * units * units * (2 * channels + 1)


@dataclass(frozen=True)
class TileFeatures:
    """The cached maps (N x C x 66 x 66 float16) and labels (N x 66 x 66 uint8), memory-mapped."""

    folder: Path
    features: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def open(cls, folder: Path) -> TileFeatures:
        meta = json.loads((folder / "meta.json").read_text())
        count, channels, units = meta["images"], meta["channels"], meta["units"]
        features = np.memmap(folder / "features.f16", np.float16, "r", shape=(count, channels, units, units))
        labels = np.memmap(folder / "labels.u8", np.uint8, "r", shape=(count, units, units))
        return cls(folder, features, labels)

    def batch(self, items: Sequence[tuple[int, int]], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (float32) and labels (int64) of ``[(index, position), ...]``; each item mirrored
        with probability 0.5, decided by (``seed``, position) as the image augmentations are."""
        indices = [index for index, _ in items]
        features = torch.from_numpy(np.asarray(self.features[indices], dtype=np.float32))
        labels = torch.from_numpy(np.asarray(self.labels[indices], dtype=np.int64))
        for row, (_, position) in enumerate(items):
            if np.random.default_rng([seed, position]).random() < 0.5:
                features[row], labels[row] = features[row].flip(-1), labels[row].flip(-1)
        return features, labels


@dataclass(frozen=True)
class ImageFeatures:
    """Whole-image maps of varying sizes (float32, as computed) and full-resolution labels (uint8),
    each flat in one memory-mapped file, with every item's offsets and shape."""

    folder: Path
    features: np.ndarray
    labels: np.ndarray
    items: list[dict[str, list[int]]]

    def __len__(self) -> int:
        return len(self.items)

    @classmethod
    def open(cls, folder: Path) -> ImageFeatures:
        items = json.loads((folder / "meta.json").read_text())["items"]
        return cls(folder, np.memmap(folder / "features.f32", np.float32, "r"),
                   np.memmap(folder / "labels.u8", np.uint8, "r"), items)

    def item(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        entry = self.items[index]
        (start, stop), (label_start, label_stop) = entry["features"], entry["labels"]
        features = np.array(self.features[start:stop]).reshape(entry["shape"])
        labels = np.asarray(self.labels[label_start:label_stop], dtype=np.int64).reshape(entry["label_shape"])
        return torch.from_numpy(features), torch.from_numpy(labels)

    def batch(self, items: Sequence[tuple[int, int]], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and labels of ``[(index, position), ...]`` stacked (no augmentation: the
        whole-image protocol of the quick profile). Maps of different sizes (real VOC images) are
        padded at the bottom and right to the largest, the features with 0 and the labels with the
        ignore index, as mmsegmentation's ``stack_batch`` pads a batch (``pad_val`` 0,
        ``seg_pad_val`` 255); it pads the images, here the cached maps are padded."""
        pairs = [self.item(index) for index, _ in items]
        return _padded([f for f, _ in pairs], 0.0), _padded([lab for _, lab in pairs], IGNORE_INDEX)


def _padded(tensors: list[torch.Tensor], value: float) -> torch.Tensor:
    """``tensors`` (``... x H x W``) stacked after padding each at the bottom and right to the
    largest height and width."""
    height, width = max(t.shape[-2] for t in tensors), max(t.shape[-1] for t in tensors)
    return torch.stack([F.pad(t, (0, width - t.shape[-1], 0, height - t.shape[-2]), value=value) for t in tensors])


def image_feature_cache(compute: Callable[[torch.Tensor], torch.Tensor], dataset: Dataset,
                        identity: dict[str, object], cache_root: Path, *, device: torch.device, description: str,
                        main: bool = True) -> ImageFeatures:
    """Like :func:`tile_feature_cache` for whole-image maps (``compute`` of each image, any size),
    appended to flat files; the free disk is checked against the first map's size x the images."""
    folder = cache_root / "image-features" / _key(identity)
    if (folder / "meta.json").is_file():
        return ImageFeatures.open(folder)
    with _written_once(folder, main=main) as staging:
        items, offset, label_offset = [], 0, 0
        with (staging / "features.f32").open("wb") as features, (staging / "labels.u8").open("wb") as labels, \
                torch.inference_mode():
            for index in bar(description, len(dataset), "img", main=main, iterable=range(len(dataset))):
                image, label, _ = dataset[index]
                scores = compute(image[None].to(device))[0].float().cpu().numpy()
                if index == 0:
                    _check_free_disk((scores.nbytes + label.numel()) * len(dataset), staging, cache_root)
                features.write(scores.tobytes())
                labels.write(label.to(torch.uint8).numpy().tobytes())
                items.append({"features": [offset, offset + scores.size], "shape": list(scores.shape),
                              "labels": [label_offset, label_offset + label.numel()],
                              "label_shape": list(label.shape)})
                offset, label_offset = offset + scores.size, label_offset + label.numel()
        (staging / "meta.json").write_text(json.dumps({"items": items, "identity": identity}, sort_keys=True))
    return ImageFeatures.open(folder)


@contextmanager
def _written_once(folder: Path, *, main: bool) -> Iterator[Path]:
    """A staging folder beside ``folder``, renamed into place complete when the block ends (and
    removed if it fails); only the main process writes a cache, the others wait for it."""
    if not main:
        raise FileNotFoundError(f"{folder} is not complete; the main process writes it first")
    staging = folder.with_name(f".staging-{os.getpid()}-{secrets.token_hex(4)}")
    staging.mkdir(parents=True)
    try:
        with space_checked(folder.parent):
            yield staging
        try:
            os.replace(staging, folder)
        except OSError:  # another process completed the same cache first
            if not (folder / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_free_disk(needed: int, staging: Path, cache_root: Path) -> None:
    free = shutil.disk_usage(staging).free
    if needed > free:
        raise CacheTooLarge(f"the cached features need {needed / 1e9:.2f} GB under {cache_root}, {free / 1e9:.2f} GB "
                            "are free; free some space or set $SEGREPRO_CACHE to a larger disk")


def _key(identity: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps({**identity, "version": CACHE_VERSION}, sort_keys=True).encode()).hexdigest()[:16]


def tile_feature_cache(compute: Callable[[torch.Tensor], torch.Tensor], dataset: Dataset, identity: dict[str, object],
                       cache_root: Path, *, device: torch.device, description: str, main: bool = True) -> TileFeatures:
    """The cache of ``dataset`` (``(image uint8 3xHxW, label HxW, id)`` items) under ``cache_root``,
    named by ``identity`` (front-end weights and split facts), written first if missing:
    ``compute(image 1x3xHxW on device)`` gives the 1 x C x 66 x 66 map. Raises
    :class:`CacheTooLarge` before writing when the free disk cannot hold it."""
    folder = cache_root / "context-features" / _key(identity)
    if (folder / "meta.json").is_file():
        return TileFeatures.open(folder)
    with _written_once(folder, main=main) as staging:
        with torch.inference_mode():
            first = compute(dataset[0][0][None].to(device))[0]
        channels, units = first.shape[0], first.shape[-1]
        if first.shape[-2:] != (units, units):
            raise ValueError(f"tile features {tuple(first.shape)} are not square")
        _check_free_disk(cache_bytes(len(dataset), channels, units), staging, cache_root)
        features = np.memmap(staging / "features.f16", np.float16, "w+", shape=(len(dataset), channels, units, units))
        labels = np.memmap(staging / "labels.u8", np.uint8, "w+", shape=(len(dataset), units, units))
        with torch.inference_mode():
            for index in bar(description, len(dataset), "img", main=main, iterable=range(len(dataset))):
                image, label, _ = dataset[index]
                scores = first if index == 0 else compute(image[None].to(device))[0]
                features[index] = scores.float().cpu().numpy().astype(np.float16)
                labels[index] = tile_labels(label, units).numpy()
        features.flush()
        labels.flush()
        del features, labels
        meta = {"images": len(dataset), "channels": channels, "units": units, "identity": identity}
        (staging / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    return TileFeatures.open(folder)
