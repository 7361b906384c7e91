"""``python -m benchmarks prepare-data``: turn the two official archives into the tree of SPEC §4.

Input: PASCAL VOC 2012 (``VOCtrainval_11-May-2012.tar`` extracted) and the Semantic Boundaries
Dataset (``benchmark.tgz`` extracted: ``benchmark_RELEASE/dataset/{cls/*.mat, train.txt,
val.txt}``). Output, inside ``VOC2012``:

- ``SegmentationClassAug/<id>.png``: a palette PNG for every ``trainaug`` and SBD ``train`` id.
  Ids with a VOC 2012 training annotation keep it (it has VOC's 255 boundary bands); the others
  are SBD's ``GTcls.Segmentation`` converted from ``.mat``.
- ``SegmentationClassSBD/<id>.png``: SBD's ``GTcls.Segmentation`` for every SBD ``train`` id, VOC
  annotation or not: FCN's training labels (fcn.berkeleyvision.org ``voc_layers.py``:
  ``SBDDSegDataLayer.load_label`` reads ``cls/<id>.mat`` for each id of SBD's ``train.txt``); the
  ``sbdtrain`` split reads them.
- ``ImageSets/Segmentation/trainaug.txt``: (VOC train ∪ SBD train ∪ SBD val) − VOC val, 10,582
  ids on the full data; ``sbdtrain.txt`` (SBD train, 8,498 ids, FCN's training set) and
  ``sbdval.txt``.

Every file is written to a temporary name and renamed, so an interrupted run can be repeated and
resumes where it stopped: an existing PNG is kept while its source's sha256 is the one recorded in
the folder's ``.sources.json`` when it was written, and rewritten once the source changed
(:mod:`benchmarks.data.sources`); files get the usual mode (0666 less the umask),
so a shared data tree stays readable by others. Ids are plain file stems
(:func:`benchmarks.data.voc.check_image_id`), so nothing is read or written outside the two trees.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.data.sources import SourceManifest
from benchmarks.data.voc import (
    IGNORE_INDEX,
    NUM_CLASSES,
    DataError,
    id_path,
    read_label,
    read_split,
    resolve_voc_root,
    voc_palette,
)
from benchmarks.files import file_sha256, write_bytes_atomic

__all__ = ["PreparedData", "palette_png", "prepare_data", "read_sbd_mat", "resolve_sbd_root", "trainaug_ids"]


def resolve_sbd_root(sbd: str | os.PathLike[str]) -> Path:
    """The SBD ``dataset`` folder (holding ``cls/`` and ``train.txt``) from the path given."""
    root = Path(sbd).expanduser()
    for candidate in (root / "benchmark_RELEASE" / "dataset", root / "dataset", root):
        if (candidate / "cls").is_dir() and (candidate / "train.txt").is_file():
            return candidate
    raise DataError(
        f"{root} holds no SBD dataset (looked for benchmark_RELEASE/dataset, dataset and the folder itself, each "
        "with cls/ and train.txt); extract benchmark.tgz from the SBD page and pass the folder with --sbd"
    )


def read_sbd_mat(path: Path) -> np.ndarray:
    """The class map of one SBD ``cls/<id>.mat`` (``GTcls.Segmentation``) as ``H x W`` uint8."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    if path.exists() and not path.is_file():
        raise DataError(f"SBD annotation {path} is not a regular file (a folder or a pipe); re-extract the SBD archive")
    if not path.is_file():
        raise DataError(f"SBD annotation {path} does not exist; the SBD archive looks incomplete")
    try:
        content = loadmat(path, squeeze_me=True, struct_as_record=False)
    except (MatReadError, ValueError, OSError, TypeError, NotImplementedError) as error:  # NotImplemented: v7.3
        raise DataError(f"SBD annotation {path} is not a readable .mat file ({error}); re-extract benchmark.tgz") \
            from None
    if "GTcls" not in content or not hasattr(content["GTcls"], "Segmentation"):
        raise DataError(f"SBD annotation {path} has no GTcls.Segmentation; is it from dataset/cls (not dataset/inst)?")
    label = np.asarray(content["GTcls"].Segmentation)
    bad = np.setdiff1d(np.unique(label), [*range(NUM_CLASSES), IGNORE_INDEX])
    if label.ndim != 2 or bad.size:
        raise DataError(f"SBD annotation {path} has shape {label.shape} / values {bad.tolist()[:10]}; expected a 2-D "
                        f"map of 0..{NUM_CLASSES - 1}")
    return label.astype(np.uint8)


def trainaug_ids(voc_train: list[str], voc_val: list[str], sbd_train: list[str], sbd_val: list[str]) -> list[str]:
    """(VOC train ∪ SBD train ∪ SBD val) − VOC val, sorted (SPEC section 4)."""
    return sorted((set(voc_train) | set(sbd_train) | set(sbd_val)) - set(voc_val))


def palette_png(label: np.ndarray) -> bytes:
    image = Image.fromarray(label, mode="P")
    image.putpalette(voc_palette().reshape(-1).tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class PreparedData:
    voc_root: Path
    trainaug: int
    from_voc: int
    from_sbd: int
    kept: int
    fcn_written: int  # SegmentationClassSBD PNGs written now
    fcn_kept: int  # ... already there


def _sized_like_image(label: np.ndarray, image: Path, source: Path) -> np.ndarray:
    """``label`` if it has ``image``'s size (only the header is read), else a :class:`DataError`."""
    with Image.open(image) as opened:
        width, height = opened.size
    if label.shape != (height, width):
        raise DataError(f"{source}: the label is {label.shape[1]} x {label.shape[0]} but its image {image} is "
                        f"{width} x {height}; the annotation belongs to another image (re-extract it)")
    return label


def _write_labels(voc: Path, folder: str, ids: list[str], source_of: Callable[[str], Path]) -> dict[str, int]:
    """Convert each id's source (a VOC ``.png`` or an SBD ``.mat``) into ``voc/folder/<id>.png``
    unless that PNG was written from a source of the same sha256 (:mod:`benchmarks.data.sources`);
    returns the counts written per source suffix and ``kept``."""
    out = voc / folder
    out.mkdir(exist_ok=True)
    manifest = SourceManifest(out)
    counts = {".png": 0, ".mat": 0, "kept": 0}
    try:
        for image_id in ids:
            target, source = id_path(out, image_id, ".png"), source_of(image_id)
            digest = file_sha256(source) if source.is_file() else ""  # a missing source: the reader names it
            if digest and manifest.is_current(target, image_id, digest):
                counts["kept"] += 1
                continue
            label = read_sbd_mat(source) if source.suffix == ".mat" else read_label(source)
            write_bytes_atomic(target, palette_png(_sized_like_image(label, id_path(voc / "JPEGImages", image_id,
                                                                                    ".jpg"), source)))
            manifest.record(image_id, digest)
            counts[source.suffix] += 1
    finally:
        manifest.save()
    return counts


def prepare_data(data: str | os.PathLike[str] | None, sbd: str | os.PathLike[str]) -> PreparedData:
    """Build ``SegmentationClassAug``, ``SegmentationClassSBD`` and the ``trainaug`` / ``sbdtrain`` /
    ``sbdval`` lists."""
    voc = resolve_voc_root(data)
    lists = voc / "ImageSets" / "Segmentation"
    voc_train, voc_val = read_split(lists / "train.txt"), read_split(lists / "val.txt")
    sbd_root = resolve_sbd_root(sbd)
    sbd_train, sbd_val = read_split(sbd_root / "train.txt"), read_split(sbd_root / "val.txt")
    ids = trainaug_ids(voc_train, voc_val, sbd_train, sbd_val)
    labelled = sorted(set(ids) | set(sbd_train))
    missing_images = [i for i in labelled if not id_path(voc / "JPEGImages", i, ".jpg").is_file()]
    if missing_images:
        raise DataError(f"{len(missing_images)} trainaug/sbdtrain ids have no image in {voc / 'JPEGImages'}, e.g. "
                        f"{missing_images[:5]}; is the VOC 2012 trainval archive fully extracted?")
    in_voc = set(voc_train)
    aug = _write_labels(voc, "SegmentationClassAug", labelled,
                        lambda i: id_path(voc / "SegmentationClass", i, ".png") if i in in_voc
                        else id_path(sbd_root / "cls", i, ".mat"))
    fcn = _write_labels(voc, "SegmentationClassSBD", sbd_train, lambda i: id_path(sbd_root / "cls", i, ".mat"))
    for name, content in (("trainaug.txt", ids), ("sbdtrain.txt", sbd_train), ("sbdval.txt", sbd_val)):
        write_bytes_atomic(lists / name, "".join(f"{i}\n" for i in content).encode())
    return PreparedData(voc, len(ids), aug[".png"], aug[".mat"], aug["kept"], fcn[".mat"], fcn["kept"])
