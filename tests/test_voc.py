"""The VOC loader on genuine VOC 2012 samples and the official split lists, and its errors."""

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from benchmarks.data.voc import DataError, VOCSplit, read_label, read_split, voc_palette

MINI = "data/voc-real-mini"


def test_genuine_samples_load(shared_dir):
    for split in ("train", "val", "trainaug"):
        data = VOCSplit(shared_dir / MINI, split)
        assert len(data) == 76
        for index in range(0, len(data), 5):
            sample = data[index]
            assert sample.image.shape[:2] == sample.label.shape and sample.image.shape[2] == 3
            assert set(np.unique(sample.label).tolist()) <= set(range(21)) | {255}
            assert 255 in sample.label  # VOC's boundary bands
    assert VOCSplit(shared_dir / MINI, "trainaug").label_dir.name == "SegmentationClassAug"


def test_official_split_lists(shared_dir):
    splits = shared_dir / "data" / "voc2012-splits"
    train, val = read_split(splits / "train.txt"), read_split(splits / "val.txt")
    trainaug = read_split(splits / "train_aug.txt")
    assert (len(train), len(val), len(trainaug)) == (1464, 1449, 10582)
    assert not set(train) & set(val) and not set(trainaug) & set(val) and set(train) <= set(trainaug)


def test_palette_is_the_voc_colour_map():
    palette = voc_palette()
    assert palette[1].tolist() == [128, 0, 0] and palette[15].tolist() == [192, 128, 128]
    assert palette[255].tolist() == [224, 224, 192]


@pytest.fixture
def tree(shared_dir, tmp_path):
    """A VOC tree with four genuine train samples."""
    source = shared_dir / MINI / "VOCdevkit" / "VOC2012"
    root = tmp_path / "VOCdevkit" / "VOC2012"
    ids = read_split(source / "ImageSets" / "Segmentation" / "train.txt")[:4]
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True)
    for i in ids:
        shutil.copy(source / "JPEGImages" / f"{i}.jpg", root / "JPEGImages")
        shutil.copy(source / "SegmentationClass" / f"{i}.png", root / "SegmentationClass")
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(ids) + "\n")
    return tmp_path, root, ids


def test_missing_root_and_split(tmp_path, tree):
    with pytest.raises(DataError, match=r"holds no VOC 2012 tree.*--data"):
        VOCSplit(tmp_path / "nowhere", "train")
    with pytest.raises(DataError, match="no VOC data given"):
        VOCSplit(None, "train")
    base, _root, _ = tree
    with pytest.raises(DataError, match=r"no split list for 'val'.*val\.txt"):
        VOCSplit(base, "val")
    with pytest.raises(DataError, match="prepare-data"):
        VOCSplit(base, "trainaug")


def test_empty_and_duplicate_splits(tree):
    base, root, ids = tree
    split = root / "ImageSets" / "Segmentation" / "train.txt"
    split.write_text("\n")
    with pytest.raises(DataError, match=f"{split} is empty"):
        VOCSplit(base, "train")
    split.write_text("\n".join([*ids, ids[1]]))
    with pytest.raises(DataError, match=rf"lists 1 ids twice \(\['{ids[1]}'\]\)"):
        VOCSplit(base, "train")


def test_missing_image_or_label(tree):
    base, root, ids = tree
    (root / "SegmentationClass" / f"{ids[2]}.png").unlink()
    with pytest.raises(DataError, match=f"SegmentationClass/{ids[2]}.png"):
        VOCSplit(base, "train")


@pytest.mark.parametrize("kind", ["folder", "pipe"])
def test_a_folder_or_pipe_where_a_file_belongs(tree, kind):
    """Named for what it is, not "missing" (and a pipe is never opened, so nothing blocks)."""
    base, root, ids = tree
    make = (lambda path: path.mkdir()) if kind == "folder" else os.mkfifo
    image = root / "JPEGImages" / f"{ids[1]}.jpg"
    image.unlink()
    make(image)
    with pytest.raises(DataError, match=f"{image} \\(id {ids[1]}\\) is not a regular file"):
        VOCSplit(base, "train")
    split_list = root / "ImageSets" / "Segmentation" / "train.txt"
    split_list.unlink()
    make(split_list)
    with pytest.raises(DataError, match=f"split list {split_list} is not a regular file"):
        VOCSplit(base, "train")


def test_truncated_jpeg(tree):
    base, root, ids = tree
    path = root / "JPEGImages" / f"{ids[0]}.jpg"
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(DataError, match=f"{path}.*corrupt or truncated"):
        VOCSplit(base, "train")[0]


def test_label_of_another_size(tree):
    base, root, ids = tree
    path = root / "SegmentationClass" / f"{ids[1]}.png"
    Image.open(path).crop((0, 0, 100, 80)).save(path)
    with pytest.raises(DataError, match=f"{path} is 100x80 but image"):
        VOCSplit(base, "train")[1]


def test_label_values_out_of_range(tree):
    base, root, ids = tree
    path = root / "SegmentationClass" / f"{ids[0]}.png"
    label = np.array(Image.open(path))
    label[0, :5] = 37
    Image.fromarray(label, mode="L").save(path)
    with pytest.raises(DataError, match=rf"{path} has values \[37\]"):
        VOCSplit(base, "train")[0]


def test_rgb_label_is_converted_through_the_palette_or_rejected(tree, tmp_path):
    _, root, ids = tree
    path = root / "SegmentationClass" / f"{ids[0]}.png"
    original = read_label(path)
    rgb_path = tmp_path / "rgb.png"
    Image.open(path).convert("RGB").save(rgb_path)
    assert np.array_equal(read_label(rgb_path), original)
    rgb = np.array(Image.open(rgb_path))
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb).save(rgb_path)
    with pytest.raises(DataError, match=r"not VOC class colours.*palette PNG"):
        read_label(rgb_path)
