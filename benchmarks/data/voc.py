"""PASCAL VOC 2012 (+ SBD "aug") in the mmsegmentation layout (SPEC section 4), read and checked.

``<root>/VOCdevkit/VOC2012/{JPEGImages, SegmentationClass, SegmentationClassAug,
ImageSets/Segmentation/{train,val}.txt, ImageSets/Segmentation/trainaug.txt}``; ``root`` may also
be the ``VOC2012`` folder itself. Every failure names the file and the fix.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from benchmarks.files import OutsideRoot, under
from methods.errors import SegreproError

__all__ = [
    "DATA_ENV_VAR",
    "IGNORE_INDEX",
    "MAX_IMAGE_PIXELS",
    "NUM_CLASSES",
    "VOC_CLASSES",
    "VOC_HEIGHT",
    "VOC_VAL_IMAGES",
    "VOC_WIDTH",
    "DataError",
    "VOCSplit",
    "check_image_id",
    "id_path",
    "read_image",
    "read_label",
    "read_split",
    "resolve_voc_root",
    "voc_palette",
]

DATA_ENV_VAR = "SEGREPRO_DATA"
NUM_CLASSES = 21
IGNORE_INDEX = 255
VOC_HEIGHT, VOC_WIDTH, VOC_VAL_IMAGES = 375, 500, 1449
"""The size of most VOC 2012 images (500 x 375, the largest at 4:3), and the val split's image count."""
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)

MAX_IMAGE_PIXELS = 10_000 * 10_000
"""The largest image (or label) read, checked from its header before any pixel is decoded: VOC
images are at most 500 x 500; a bigger file is a mistake or a decompression bomb. PIL's own
checks (a warning above 89 Mpx, an error above 179 Mpx) give way to it: one DataError either way."""

IMAGE_ID = re.compile(r"\w[\w.-]*")
"""An image id is a plain file stem: letters, digits, ``_``, ``-`` and ``.``, not starting with
``.`` or ``-`` (so no path separator, ``..`` component, NUL or absolute path); VOC's and SBD's
ids (``2007_000032``) all are."""

# split -> (candidate list files under ImageSets, label folder; None: a split without labels)
SPLITS = {
    "train": (("Segmentation/train.txt",), "SegmentationClass"),
    "val": (("Segmentation/val.txt",), "SegmentationClass"),
    "trainaug": (("Segmentation/trainaug.txt", "Segmentation/aug.txt", "SegmentationAug/train_aug.txt"),
                 "SegmentationClassAug"),
    "seg11valid": (("Segmentation/seg11valid.txt",), "SegmentationClass"),
    # FCN's training set with FCN's labels: SBD's GTcls for every id (`prepare-data --sbd` writes them)
    "sbdtrain": (("Segmentation/sbdtrain.txt",), "SegmentationClassSBD"),
    "crfholdout": (("Segmentation/crfholdout.txt",), "SegmentationClassAug"),
    "coco": (("Segmentation/coco.txt",), "SegmentationClassCOCO"),  # `prepare-data --coco` (benchmarks/data/coco.py)
    "test": (("Segmentation/test.txt",), None),  # VOC 2012 test (VOC2012test.tar): no labels, predicted for the server
}
IMAGE_FOLDERS = {"coco": "JPEGImagesCOCO"}
"""The image folder of a split whose images are not in ``JPEGImages``."""


class DataError(SegreproError, ValueError):
    """A problem with the dataset on disk; the message names the file and the fix."""


def voc_palette() -> np.ndarray:
    """The standard 256-entry VOC colour map (bit-interleaved class index), ``256 x 3`` uint8."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for index in range(256):
        c, r, g, b = index, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette[index] = (r, g, b)
    return palette


def resolve_voc_root(data: str | os.PathLike[str] | None = None) -> Path:
    """The ``VOC2012`` folder from ``--data``, else ``$SEGREPRO_DATA``; either may point at the
    folder holding ``VOCdevkit``, at ``VOCdevkit``, or at ``VOC2012`` itself."""
    given = data or os.environ.get(DATA_ENV_VAR)
    if not given:
        raise DataError(f"no VOC data given: pass --data PATH or set ${DATA_ENV_VAR} to the folder holding VOCdevkit")
    root = Path(given).expanduser()
    for candidate in (root / "VOCdevkit" / "VOC2012", root / "VOC2012", root):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    raise DataError(
        f"{root} holds no VOC 2012 tree (looked for VOCdevkit/VOC2012/JPEGImages, VOC2012/JPEGImages and "
        f"JPEGImages under it). Extract VOCtrainval_11-May-2012.tar there, or point --data / ${DATA_ENV_VAR} "
        "at the folder that holds VOCdevkit; for the aug split run `python -m benchmarks prepare-data`."
    )


def check_image_id(image_id: str, where: str) -> str:
    """``image_id`` if it is a plain file stem (:data:`IMAGE_ID`) of at most 200 characters, else a
    DataError naming ``where``."""
    if len(image_id) > 200:
        raise DataError(f"{where}: image id {image_id[:20]!r}... is {len(image_id)} characters long (at most 200); "
                        "correct or remove that line")
    if not IMAGE_ID.fullmatch(image_id):
        raise DataError(f"{where}: image id {image_id!r} is not a plain file name (letters, digits, '_', '-' and '.', "
                        "not starting with '.' or '-'; no path separator); correct or remove that line")
    return image_id


def id_path(folder: Path, image_id: str, suffix: str) -> Path:
    """``folder/<image_id><suffix>``, or a DataError if that would lie outside ``folder``. The check
    normalises ``..`` without following symlinks, so a tree of symlinked files still reads."""
    try:
        return under(folder, f"{image_id}{suffix}")
    except OutsideRoot as error:
        raise DataError(f"image id {image_id!r}: {error}") from None


def read_split(path: Path) -> list[str]:
    """Ids of one split list (UTF-8, a BOM allowed), checked: present, non-empty, every id a plain
    file stem, no duplicates."""
    if not path.is_file():
        raise DataError(f"split list {path} does not exist")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(f"split list {path} is not UTF-8 text (byte {raw[error.start]:#04x} at offset {error.start}); "
                        "save it as UTF-8 or ASCII, one image id per line") from None
    ids = [check_image_id(line.split()[0], f"split list {path} line {number}")
           for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not ids:
        raise DataError(f"split list {path} is empty; it should list one image id per line")
    seen: set[str] = set()
    duplicates = sorted({i for i in ids if i in seen or seen.add(i)})
    if duplicates:
        raise DataError(f"split list {path} lists {len(duplicates)} ids twice ({duplicates[:5]}); remove the repeats")
    return ids


def _open(path: Path, kind: str) -> Image.Image:
    """``Image.open`` (the header only), refusing more than :data:`MAX_IMAGE_PIXELS` before decoding."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the explicit limit below decides
        try:
            image = Image.open(path)
        except Image.DecompressionBombError:
            size = "beyond PIL's decompression-bomb limit"
        else:
            if image.width * image.height <= MAX_IMAGE_PIXELS:
                return image
            size = f"{image.width} x {image.height} pixels"
            image.close()
    raise DataError(f"{kind} {path} is {size}, more than the {MAX_IMAGE_PIXELS:,} pixels (10,000 x 10,000) read "
                    "here; downscale it (VOC images are at most 500 x 500) or remove its id from the split list")


def read_image(path: Path) -> np.ndarray:
    """An image as ``H x W x 3`` uint8 RGB, fully decoded (a truncated JPEG is an error)."""
    try:
        with _open(path, "image") as image:
            image.load()
            return np.array(image.convert("RGB"))
    except FileNotFoundError:
        raise DataError(f"image {path} does not exist") from None
    except (OSError, UnidentifiedImageError, SyntaxError) as error:
        raise DataError(f"image {path} is corrupt or truncated ({error}); re-extract it from the VOC archive") from None


def read_label(path: Path, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """A label map as ``H x W`` uint8 class indices: palette or 8-bit grey PNGs are read as their
    indices; an RGB-coloured PNG is converted through the VOC colour map when every colour is a
    VOC colour. Values other than 0..num_classes-1 and 255 are an error."""
    try:
        with _open(path, "label") as image:
            image.load()
            if image.mode in ("P", "L"):
                label = np.array(image)
            elif image.mode in ("RGB", "RGBA"):
                label = _rgb_to_index(np.asarray(image.convert("RGB")), path)
            else:
                raise DataError(f"label {path} has PIL mode {image.mode}; expected a palette ('P') or 8-bit ('L') PNG")
    except FileNotFoundError:
        raise DataError(f"label {path} does not exist") from None
    except (OSError, UnidentifiedImageError, SyntaxError) as error:
        raise DataError(f"label {path} is corrupt or truncated ({error})") from None
    bad = np.setdiff1d(np.unique(label), [*range(num_classes), IGNORE_INDEX])
    if bad.size:
        raise DataError(
            f"label {path} has values {bad.tolist()[:10]} outside 0..{num_classes - 1} and {IGNORE_INDEX}; "
            "VOC labels are class indices (palette PNG), 255 = ignore"
        )
    return label


def _rgb_to_index(rgb: np.ndarray, path: Path) -> np.ndarray:
    palette = voc_palette().astype(np.int64)
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    palette_codes = (palette[:, 0] << 16) | (palette[:, 1] << 8) | palette[:, 2]
    valid = np.r_[0:NUM_CLASSES, IGNORE_INDEX]
    lookup = dict(zip(palette_codes[valid].tolist(), valid.tolist(), strict=True))
    unique, inverse = np.unique(codes, return_inverse=True)
    unknown = [hex(u) for u in unique.tolist() if u not in lookup]
    if unknown:
        raise DataError(
            f"label {path} is an RGB image with colours {unknown[:5]} that are not VOC class colours; save labels as "
            "palette PNGs of class indices (PIL: Image.fromarray(index_map).putpalette(...)), or as 8-bit grey indices"
        )
    return np.array([lookup[u] for u in unique.tolist()], dtype=np.uint8)[inverse].reshape(codes.shape)


@dataclass(frozen=True)
class Sample:
    image_id: str
    image: np.ndarray  # H x W x 3 uint8 RGB
    label: np.ndarray  # H x W uint8, 255 = ignore


def _prepare_hint(split: str) -> str:
    """How to build a split that ``prepare-data`` writes ("" for VOC's own splits)."""
    source = {"trainaug": "--sbd PATH", "sbdtrain": "--sbd PATH", "coco": "--coco PATH"}.get(split)
    return f" (run `python -m benchmarks prepare-data {source}` to build it)" if source else ""


class VOCSplit:
    """One split of a VOC-layout tree: ids from the split list, image and label paths checked at
    construction, pixels checked at read time. A split without labels (``labelled`` false: VOC
    2012 ``test``) reads every label as all ignore (255): its images can be predicted, not scored."""

    def __init__(self, root: str | os.PathLike[str] | None, split: str, num_classes: int = NUM_CLASSES) -> None:
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; known: {sorted(SPLITS)}")
        self.root = resolve_voc_root(root)
        self.split, self.num_classes = split, num_classes
        lists, label_folder = SPLITS[split]
        candidates = [self.root / "ImageSets" / name for name in lists]
        list_path = next((p for p in candidates if p.is_file()), None)
        odd = next((p for p in candidates if p.exists() and not p.is_file()), None)
        if list_path is None and odd is not None:
            raise DataError(f"split list {odd} is not a regular file (a folder or a pipe); replace it with the text "
                            "file of image ids")
        if list_path is None:
            hint = _prepare_hint(split)
            raise DataError(f"no split list for {split!r}: looked for {[str(p) for p in candidates]}{hint}")
        self.list_path = list_path
        self.ids = read_split(list_path)
        self.labelled = label_folder is not None
        self.image_dir = self.root / IMAGE_FOLDERS.get(split, "JPEGImages")
        self.label_dir = self.root / label_folder if self.labelled else None
        missing = [(i, p) for i in self.ids for p in (self.image_path(i), *self._label_paths(i)) if not p.is_file()]
        if missing:
            image_id, path = missing[0]
            what = "is not a regular file (a folder or a pipe)" if path.exists() else "is missing"
            raise DataError(
                f"{len(missing)} files of split {split!r} ({list_path}) are missing or not regular files; {path} "
                f"(id {image_id}) {what}; restore them or remove the ids from the list{_prepare_hint(split)}"
            )

    def check(self) -> None:
        """Every image and label decoded and checked now (values, sizes, truncation, the size
        limit), before a run spends hours on the split (a training run may never sample a broken
        image); and at least one label with a pixel that is not ignored."""
        if not self.labelled:
            raise DataError(f"split {self.split!r} ({self.list_path}) has no labels: nothing to train or score on; "
                            "predict it with `score NAME --weights W --split test --save-predictions OUT`")
        labelled = 0
        for index in range(len(self.ids)):
            labelled += bool((self[index].label != IGNORE_INDEX).any())
        if not labelled:
            raise DataError(f"every label of split {self.split!r} ({self.list_path}) is {IGNORE_INDEX} (ignore): there "
                            "is nothing to train or score on; check the label folder")

    def image_path(self, image_id: str) -> Path:
        return id_path(self.image_dir, image_id, ".jpg")

    def label_path(self, image_id: str) -> Path:
        if self.label_dir is None:
            raise DataError(f"split {self.split!r} ({self.list_path}) has no labels: it can be predicted, not scored")
        return id_path(self.label_dir, image_id, ".png")

    def _label_paths(self, image_id: str) -> tuple[Path, ...]:
        return (self.label_path(image_id),) if self.labelled else ()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Sample:
        image_id = self.ids[index]
        image = read_image(self.image_path(image_id))
        if not self.labelled:
            return Sample(image_id, image, np.full(image.shape[:2], IGNORE_INDEX, dtype=np.uint8))
        label = read_label(self.label_path(image_id), self.num_classes)
        if image.shape[:2] != label.shape:
            raise DataError(
                f"label {self.label_path(image_id)} is {label.shape[1]}x{label.shape[0]} but image "
                f"{self.image_path(image_id)} is {image.shape[1]}x{image.shape[0]}; they must match pixel for pixel"
            )
        return Sample(image_id, image, label)
