"""The evaluator against a confusion matrix counted by hand and against mmsegmentation's IoUMetric."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.cli import main
from benchmarks.data.voc import voc_palette
from benchmarks.evaluation import ConfusionMatrix


def test_hand_counted_confusion_matrix():
    # 3 classes; ground truth rows, predictions columns; 255 ignored
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 1]])
    prediction = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 0]])
    cm = ConfusionMatrix(num_classes=3)
    cm.update(prediction, target, "a")
    # gt 0: pred 0, 1        -> row [1, 1, 0]
    # gt 1: pred 1, 1, 0     -> row [1, 2, 0]
    # gt 2: pred 2, 0        -> row [1, 0, 1]
    assert cm.matrix.tolist() == [[1, 1, 0], [1, 2, 0], [1, 0, 1]]
    m = cm.metrics()
    # IoU_0 = 1 / (2 + 3 - 1) = 1/4; IoU_1 = 2 / (3 + 3 - 2) = 1/2; IoU_2 = 1 / (2 + 1 - 1) = 1/2
    assert m["per_class_iou"] == pytest.approx([0.25, 0.5, 0.5])
    assert m["miou"] == pytest.approx(5 / 12)
    assert m["pixel_acc"] == pytest.approx(4 / 7)
    assert m["mean_acc"] == pytest.approx((1 / 2 + 2 / 3 + 1 / 2) / 3)
    assert m["fwiou"] == pytest.approx(2 / 7 * 0.25 + 3 / 7 * 0.5 + 2 / 7 * 0.5)


def test_absent_class_is_none_and_left_out_of_the_mean():
    cm = ConfusionMatrix(num_classes=4)
    cm.update(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), "x")
    m = cm.metrics()
    assert m["per_class_iou"][2] is None and m["per_class_iou"][3] is None
    assert m["miou"] == pytest.approx((1 / 2 + 1 / 2) / 2)


def test_bad_inputs_are_errors():
    cm = ConfusionMatrix(num_classes=3)
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.zeros(2, 3), torch.zeros(3, 2), "img")
    with pytest.raises(ValueError, match=r"label values \[7\]"):
        cm.update(torch.zeros(2, 2), torch.full((2, 2), 7), "img")
    cm.update(torch.zeros(2, 2), torch.zeros(2, 2), "a")
    cm.update(torch.zeros(2, 2), torch.zeros(2, 2), "a")
    with pytest.raises(RuntimeError, match=r"exactly once.*missing \[.b.\].*more than once \[.a.\]"):
        cm.check_complete(["a", "b"])


def random_maps(rng, n, num_classes=21):
    pairs = []
    for _ in range(n):
        h, w = rng.integers(20, 60, size=2)
        present = rng.choice(num_classes - 5, size=rng.integers(2, 8), replace=False)  # last 5 absent
        gt = rng.choice(present, size=(h, w))
        gt[rng.random((h, w)) < 0.1] = 255
        pred = np.where(rng.random((h, w)) < 0.6, np.where(gt == 255, 0, gt), rng.choice(present, size=(h, w)))
        pairs.append((pred.astype(np.int64), gt.astype(np.int64)))
    return pairs


def test_agrees_with_mmsegmentation_to_1e9():
    from mmseg.evaluation.metrics import IoUMetric

    rng = np.random.default_rng(0)
    pairs = random_maps(rng, 30)
    cm = ConfusionMatrix(num_classes=21)
    totals = [torch.zeros(21, dtype=torch.float64) for _ in range(4)]
    for i, (pred, gt) in enumerate(pairs):
        cm.update(torch.from_numpy(pred), torch.from_numpy(gt), str(i))
        areas = IoUMetric.intersect_and_union(torch.from_numpy(pred), torch.from_numpy(gt), 21, 255)
        totals = [t + a.double() for t, a in zip(totals, areas, strict=True)]
    ours = cm.metrics()
    theirs = IoUMetric.total_area_to_metrics(*totals, metrics=["mIoU", "mDice"], nan_to_num=None)
    iou = np.asarray(theirs["IoU"], dtype=np.float64)
    assert np.isnan(iou).sum() > 0  # absent classes really occur in this test
    for our, their in zip(ours["per_class_iou"], iou, strict=True):
        assert (our is None) == bool(np.isnan(their))
        if our is not None:
            assert abs(our - their) < 1e-9
    assert abs(ours["miou"] - np.nanmean(iou)) < 1e-9
    assert abs(ours["pixel_acc"] - float(theirs["aAcc"])) < 1e-9
    assert abs(ours["mean_acc"] - np.nanmean(np.asarray(theirs["Acc"], dtype=np.float64))) < 1e-9


def save_palette_png(array, path):
    image = Image.fromarray(array.astype(np.uint8), mode="P")
    image.putpalette(voc_palette().flatten().tolist())
    image.save(path)


def test_evaluate_command_scores_directories(tmp_path, capsys):
    rng = np.random.default_rng(1)
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    cm = ConfusionMatrix(21)
    for i, (pred, gt) in enumerate(random_maps(rng, 5)):
        save_palette_png(gt, tmp_path / "gt" / f"2007_{i:06d}.png")
        Image.fromarray(pred.astype(np.uint8), mode="L").save(tmp_path / "pred" / f"2007_{i:06d}.png")
        cm.update(torch.from_numpy(pred), torch.from_numpy(gt), str(i))
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["images"] == 5 and len(out["per_class_iou"]) == 21
    assert out["miou"] == pytest.approx(cm.metrics()["miou"], abs=1e-12)
    assert set(out) >= {"miou", "pixel_acc", "mean_acc", "fwiou", "per_class_iou", "images"}
    (tmp_path / "pred" / "2007_000000.png").unlink()
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")]) == 2
    assert "no prediction" in capsys.readouterr().err
