"""`score --save-predictions`: one palette PNG per image in the VOC evaluation server's layout
(``results/VOC2012/Segmentation/comp6_test_cls/<id>.png``), for a labelled split and for one without
labels (VOC 2012 test); `evaluate` reads them back to the `score` record's numbers."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import methods
from benchmarks.cli import main
from benchmarks.data.voc import voc_palette

SERVER = ("results", "VOC2012", "Segmentation", "comp6_test_cls")


@pytest.fixture
def scored(tmp_path, small_voc):
    """Random DeepLab weights (width 1/16) scored on 3 genuine VOC val images, predictions saved."""
    data = small_voc(tmp_path / "voc", train=1, val=3)
    torch.manual_seed(0)
    weights = tmp_path / "w.pt"
    torch.save(methods.create("deeplab_v1", width=1 / 16).state_dict(), weights)
    base = ["score", "deeplab_v1", "--weights", str(weights), "--option", "width=0.0625", "--data", str(data),
            "--results", str(tmp_path / "results")]
    assert main([*base, "--split", "val", "--save-predictions", str(tmp_path / "val-out")]) == 0
    return data, base


def _read(folder):
    return {path.stem: np.asarray(Image.open(path)) for path in sorted(folder.glob("*.png"))}


def test_saved_predictions_read_back_to_the_records_numbers(tmp_path, scored, capsys):
    data, _ = scored
    voc = data / "VOCdevkit" / "VOC2012"
    val_ids = (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    folder = tmp_path.joinpath("val-out", *SERVER)
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{i}.png" for i in val_ids)
    for image_id in val_ids:
        png = Image.open(folder / f"{image_id}.png")
        assert png.mode == "P" and png.size == Image.open(voc / "JPEGImages" / f"{image_id}.jpg").size
        assert np.array_equal(np.array(png.getpalette()[:63]).reshape(21, 3), voc_palette()[:21])
    [record_path] = (tmp_path / "results" / "records").rglob("*.json")
    record = json.loads(record_path.read_text())
    gt = tmp_path / "gt"
    gt.mkdir()
    for image_id in val_ids:
        shutil.copy(voc / "SegmentationClass" / f"{image_id}.png", gt)
    capsys.readouterr()
    assert main(["evaluate", "--pred", str(folder), "--gt", str(gt), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["images"] == 3
    for key in ("miou", "pixel_acc", "mean_acc", "fwiou"):
        assert evaluated[key] == pytest.approx(record["metrics"][key], abs=1e-12), key


def test_a_split_without_labels_is_predicted_not_scored(tmp_path, scored, capsys):
    """VOC 2012 test has images and a list but no labels: the same images listed as `test`, with
    every label file removed, give the same PNGs as the labelled pass and no record."""
    data, base = scored
    voc = data / "VOCdevkit" / "VOC2012"
    lists = voc / "ImageSets" / "Segmentation"
    (lists / "test.txt").write_text((lists / "val.txt").read_text())
    shutil.rmtree(voc / "SegmentationClass")
    records = sorted((tmp_path / "results").rglob("*.json"))
    capsys.readouterr()
    assert main([*base, "--split", "test"]) == 2
    error = capsys.readouterr().err
    assert "no labels" in error and "--save-predictions" in error and error.count("\n") == 1
    assert main([*base, "--split", "test", "--save-predictions", str(tmp_path / "test-out")]) == 0
    assert sorted((tmp_path / "results").rglob("*.json")) == records
    test, val = _read(tmp_path.joinpath("test-out", *SERVER)), _read(tmp_path.joinpath("val-out", *SERVER))
    assert test.keys() == val.keys() and all(np.array_equal(test[k], val[k]) for k in val)
