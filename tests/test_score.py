"""`score`: given weights, each method's published test procedure, a record that `check` and
`report` show with its weights source. The dilation network's tiles are checked against an
independent numpy transcription of fyu/dilation's test.py (test_image) and util.py (interp_map)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from test_caffe import _caffe_net, write_caffemodel

import methods
from benchmarks.data.voc import read_image

ROOT = Path(__file__).resolve().parents[1]
MARGIN, TILE = 186, 900


def _fyu_test_image(model, image: np.ndarray) -> np.ndarray:
    """test.py's loop: reflect-101 padding (np.pad 'reflect'), 900 x 900 tiles with 528 x 528 cores,
    softmax per tile, then interp_map's bilinear zoom (score k on pixel 8k)."""
    height, width = image.shape[:2]
    padded = np.pad(image, ((MARGIN, MARGIN), (MARGIN, MARGIN), (0, 0)), mode="reflect")
    core = TILE - 2 * MARGIN
    rows = []
    for h in range(-(-height // core)):
        row = []
        for w in range(-(-width // core)):
            tile = padded[h * core : h * core + TILE, w * core : w * core + TILE]
            tile = np.pad(tile, ((0, TILE - tile.shape[0]), (0, TILE - tile.shape[1]), (0, 0)), mode="reflect")
            with torch.no_grad():
                scores = model.score_map_of_padded(torch.from_numpy(tile).permute(2, 0, 1)[None].float())[0].numpy()
            exp = np.exp(scores - scores.max(0))
            row.append(exp / exp.sum(0))
        rows.append(np.concatenate(row, axis=2))
    prob = np.concatenate(rows, axis=1)
    zoom = np.zeros((prob.shape[0], height, width), np.float32)
    for y in range(height):
        for x in range(width):
            r0, c0 = y // 8, x // 8
            rt, ct = y / 8 - r0, x / 8 - c0
            v0 = rt * prob[:, r0 + 1, c0] + (1 - rt) * prob[:, r0, c0]
            v1 = rt * prob[:, r0 + 1, c0 + 1] + (1 - rt) * prob[:, r0, c0 + 1]
            zoom[:, y, x] = (1 - ct) * v0 + ct * v1
    return zoom


def test_dilation_network_scores_tiles_as_fyu_test_py(shared_dir):
    voc = shared_dir / "data" / "voc-real-mini" / "VOCdevkit" / "VOC2012"
    image_id = (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[0]
    image = read_image(voc / "JPEGImages" / f"{image_id}.jpg")[:200]
    image = np.concatenate([image, image[:, ::-1]], axis=1)[:, :600]  # 200 x 600: two tiles side by side
    assert image.shape[:2] == (200, 600)
    torch.manual_seed(0)
    model = methods.create("context_large", width=1 / 16).eval()
    expected = _fyu_test_image(model, image.astype(np.float32))
    with torch.no_grad():
        measured = model.published_probabilities(torch.from_numpy(image).permute(2, 0, 1)[None].float())[0]
    assert measured.shape == (21, 200, 600)
    np.testing.assert_allclose(measured.numpy(), expected, atol=1e-5)


def _cli(args, env):
    return subprocess.run([sys.executable, "-m", "benchmarks", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def test_converted_caffemodel_scores_into_a_record_that_check_and_report_show(tmp_path, small_voc):
    """A dilation8_pascal_voc-style caffemodel (deploy-net layer names, width 1/16, random values)
    through convert-caffe and score on genuine VOC samples."""
    data = small_voc(tmp_path / "voc", train=1, val=2)
    layers, _ = _caffe_net("context_large", methods.create("context_large", width=1 / 16))
    caffemodel = write_caffemodel(tmp_path / "dilation8_pascal_voc.caffemodel", layers)
    weights = tmp_path / "dilation8_pascal_voc.pt"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "SEGREPRO_CACHE": str(tmp_path / "cache")}
    width = ["--option", "width=0.0625"]
    converted = _cli(["convert-caffe", str(caffemodel), "--method", "context_large", "--out", str(weights), *width],
                     env)
    assert converted.returncode == 0, converted.stderr
    results = tmp_path / "results"
    scored = _cli(["score", "context_large_coco", "--weights", str(weights), *width, "--data", str(data),
                   "--condition", "coco_pretraining=true", "--results", str(results)], env)
    assert scored.returncode == 0, scored.stderr
    [path] = (results / "records").rglob("*.json")
    record = json.loads(path.read_text())
    assert record["profile"] == "released" and record["dataset"]["split"] == "val"
    assert record["weights_source"].startswith("released dilation8_pascal_voc.pt sha256 ")
    assert record["input_convention"] == "pascal-mean" and record["comparable_to_paper"]
    assert record["conditions"] == {"coco_pretraining": True}

    checked = _cli(["check", "--results", str(results)], env)  # comparable, and far below Table 3: exit 1
    assert checked.returncode == 1 and "yu_koltun_table3" in checked.stdout, checked.stdout
    assert "context_large_coco" in checked.stdout and "below" in checked.stdout, checked.stdout
    report = _cli(["report", "--results", str(results), "--reports", str(tmp_path / "reports"), "--runs",
                   str(tmp_path / "runs")], env)
    assert report.returncode == 0, report.stderr
    assert "released dilation8_pascal_voc.pt sha256" in (tmp_path / "reports" / "report.md").read_text()

    wrong = _cli(["score", "fcn8s", "--weights", str(weights), "--data", str(data), "--results", str(results)], env)
    assert wrong.returncode == 2 and "do not fit fcn8s" in wrong.stderr and len(wrong.stderr.splitlines()) == 1
