"""``prepare-data``: SBD .mat conversion into SegmentationClassAug and the trainaug formula, on a
small tree in the official formats (SBD GTcls structs written with scipy)."""

import shutil

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from benchmarks.cli import main
from benchmarks.data.prepare_data import prepare_data, read_sbd_mat, trainaug_ids
from benchmarks.data.voc import DataError, VOCSplit, read_label, read_split, voc_palette


def _write_png(path, label):
    image = Image.fromarray(label.astype(np.uint8), mode="P")
    image.putpalette(voc_palette().reshape(-1).tolist())
    image.save(path)


@pytest.fixture
def trees(tmp_path):
    """VOC: train a,b; val c,d. SBD: train b,c,e; val f. trainaug = {a,b,e,f}."""
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / folder).mkdir(parents=True)
    for image_id in "abcdef":
        Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(voc / "JPEGImages" / f"{image_id}.jpg")
    for image_id in "abcd":
        label = np.full((6, 8), 1, np.uint8)
        label[0] = 255
        _write_png(voc / "SegmentationClass" / f"{image_id}.png", label)
    (voc / "ImageSets/Segmentation/train.txt").write_text("a\nb\n")
    (voc / "ImageSets/Segmentation/val.txt").write_text("c\nd\n")
    sbd = tmp_path / "benchmark_RELEASE" / "dataset"
    (sbd / "cls").mkdir(parents=True)
    for index, image_id in enumerate("bcef"):
        segmentation = np.full((6, 8), 2 + index, np.uint8)
        savemat(sbd / "cls" / f"{image_id}.mat",
                {"GTcls": {"Segmentation": segmentation, "Boundaries": np.zeros(1), "CategoriesPresent": 2 + index}})
    (sbd / "train.txt").write_text("b\nc\ne\n")
    (sbd / "val.txt").write_text("f\n")
    return tmp_path, voc, sbd


def test_trainaug_formula_and_conversion(trees):
    root, voc, _ = trees
    done = prepare_data(root, root)
    assert (done.trainaug, done.from_voc, done.from_sbd, done.kept) == (4, 2, 3, 0)  # + SBD-train c
    split = VOCSplit(root, "trainaug")
    assert split.ids == ["a", "b", "e", "f"]
    labels = {s.image_id: s.label for s in (split[i] for i in range(len(split)))}
    assert (labels["b"][0] == 255).all() and (labels["b"][1:] == 1).all()  # VOC's annotation wins over SBD's
    assert (labels["e"] == 4).all() and (labels["f"] == 5).all()
    assert read_split(voc / "ImageSets/Segmentation/sbdtrain.txt") == ["b", "c", "e"]
    sbd_train = VOCSplit(root, "sbdtrain")
    # FCN's labels: SBD's GTcls for every id, also b, which VOC annotates (fcn.berkeleyvision.org voc_layers.py)
    assert [int(sbd_train[i].label.max()) for i in range(3)] == [2, 3, 4]
    assert all((sbd_train[i].label == sbd_train[i].label.max()).all() for i in range(3))
    assert (done.fcn_written, done.fcn_kept) == (3, 0)
    again = prepare_data(root, root)
    assert (again.kept, again.from_voc, again.from_sbd, again.fcn_written, again.fcn_kept) == (5, 0, 0, 0, 3)


def test_formula_on_the_official_lists(shared_dir):
    splits = shared_dir / "data" / "voc2012-splits"
    train, val = read_split(splits / "train.txt"), read_split(splits / "val.txt")
    official = read_split(splits / "train_aug.txt")
    sbd_like = sorted(set(official) - set(train))
    assert trainaug_ids(train, val, sbd_like, list(val)) == sorted(official)
    assert len(official) == 10582


def test_bad_sbd_inputs_are_named(trees, tmp_path):
    root, _, sbd = trees
    (sbd / "cls" / "e.mat").write_bytes(b"not a mat file")
    with pytest.raises(DataError, match=r"e\.mat"):
        prepare_data(root, root)
    savemat(sbd / "cls" / "e.mat", {"GTinst": {"Segmentation": np.zeros((2, 2))}})
    with pytest.raises(DataError, match="GTcls"):
        read_sbd_mat(sbd / "cls" / "e.mat")
    savemat(sbd / "cls" / "e.mat", {"GTcls": {"Segmentation": np.full((2, 2), 40, np.uint8)}})
    with pytest.raises(DataError, match="values"):
        read_sbd_mat(sbd / "cls" / "e.mat")
    (sbd / "cls" / "e.mat").unlink()
    with pytest.raises(DataError, match=r"e\.mat does not exist"):
        prepare_data(root, root)
    shutil.rmtree(sbd / "cls")
    with pytest.raises(DataError, match=r"benchmark\.tgz"):
        prepare_data(root, root)


def test_prepare_data_command(trees, capsys):
    root, voc, _ = trees
    assert main(["prepare-data", "--data", str(root), "--sbd", str(root)]) == 0
    assert "trainaug 4 ids" in capsys.readouterr().out
    assert read_label(voc / "SegmentationClassAug" / "f.png").max() == 5
    assert main(["prepare-data", "--data", str(root)]) == 2


def test_a_label_of_another_size_than_its_image_is_refused(trees):
    """An SBD .mat whose class map is 9 x 7 for an 8 x 6 image was written as that image's label
    (issue 26; the run failed only later): prepare-data names the .mat and both sizes, writes no
    label for it."""
    root, voc, sbd = trees
    savemat(sbd / "cls" / "e.mat", {"GTcls": {"Segmentation": np.full((7, 9), 2, np.uint8)}})
    with pytest.raises(DataError, match=r"e\.mat: the label is 9 x 7 but its image .*e\.jpg is 8 x 6"):
        prepare_data(root, root)
    assert not (voc / "SegmentationClassAug" / "e.png").exists()


def test_a_label_follows_its_changed_source(trees):
    """A second prepare-data after an SBD .mat (or a VOC annotation) is fixed rewrote nothing: the
    stale PNG existed (issue 26). The source's sha256 is recorded beside the outputs; a changed
    source is converted again, an unchanged one is kept."""
    root, voc, sbd = trees
    prepare_data(root, root)
    fixed = np.arange(48, dtype=np.uint8).reshape(6, 8) % 21
    savemat(sbd / "cls" / "e.mat", {"GTcls": {"Segmentation": fixed}})
    relabelled = np.full((6, 8), 7, np.uint8)
    _write_png(voc / "SegmentationClass" / "a.png", relabelled)
    again = prepare_data(root, root)
    assert (again.from_voc, again.from_sbd, again.kept, again.fcn_written, again.fcn_kept) == (1, 1, 3, 1, 2)
    for folder in ("SegmentationClassAug", "SegmentationClassSBD"):
        assert np.array_equal(read_label(voc / folder / "e.png"), read_sbd_mat(sbd / "cls" / "e.mat"))
    assert np.array_equal(read_label(voc / "SegmentationClassAug" / "a.png"), relabelled)
    third = prepare_data(root, root)
    assert (third.from_voc, third.from_sbd, third.kept, third.fcn_written) == (0, 0, 5, 0)


def test_a_png_from_before_the_source_record_is_rewritten(trees):
    """A label PNG with no recorded source hash (a tree prepared before the record, or a PNG put
    there by hand) is converted again from its source."""
    root, voc, _ = trees
    (voc / "SegmentationClassAug").mkdir()
    _write_png(voc / "SegmentationClassAug" / "f.png", np.zeros((6, 8), np.uint8))
    done = prepare_data(root, root)
    assert done.kept == 0 and (read_label(voc / "SegmentationClassAug" / "f.png") == 5).all()
