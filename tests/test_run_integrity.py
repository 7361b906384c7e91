"""Results integrity (issue 12): a run is keyed by what determines its weights, records of other
recipes never pool, history is kept, one process per run folder, the splits are checked before
training, and training images are never scored unless the user says so."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.records import load_records
from benchmarks.report import summary_table

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--profile", "quick", "--set", "batch_size=1", "--no-report"]


def _voc(shared_dir: Path, folder: Path, train: list[str], val: list[str]) -> Path:
    """A VOC tree of genuine samples with the given split lists (trainaug = ``train``)."""
    source = shared_dir / "data" / "voc-real-mini" / "VOCdevkit" / "VOC2012"
    voc = folder / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "SegmentationClassAug", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    for image_id in {*train, *val}:
        shutil.copy(source / "JPEGImages" / f"{image_id}.jpg", voc / "JPEGImages")
        for labels in ("SegmentationClass", "SegmentationClassAug"):
            shutil.copy(source / "SegmentationClass" / f"{image_id}.png", voc / labels)
    for name, ids in (("train", train), ("trainaug", train), ("val", val)):
        (voc / "ImageSets" / "Segmentation" / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    return folder


@pytest.fixture(scope="module")
def ids(shared_dir):
    lists = shared_dir / "data" / "voc-real-mini" / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation"
    return (lists / "train.txt").read_text().split()[:3], (lists / "val.txt").read_text().split()[:3]


def _run(data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks", "run", "deeplab_v1", "--data", str(data), *TINY,
                           "--results", str(out / "results"), "--runs", str(out / "runs"), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_each_recipe_gets_its_own_run_and_record(tmp_path, shared_dir, ids):
    data = _voc(shared_dir, tmp_path / "voc", *ids)
    short = _run(data, tmp_path, "--set", "iterations=1")
    longer = _run(data, tmp_path, "--set", "iterations=3")
    twice = _run(data, tmp_path, "--set", "iterations=1", "--set", "iterations=2")  # the last one counts
    assert short.returncode == longer.returncode == twice.returncode == 0, longer.stderr[-2000:]
    records = load_records(tmp_path / "results")
    assert sorted(r["recipe"]["iterations"] for r in records) == [1, 2, 3]
    assert len({r["run_key"] for r in records}) == 3 and len({r["trained_weights_sha256"] for r in records}) == 3
    folders = sorted(p.name for p in (tmp_path / "runs" / "quick-voc2012" / "deeplab_v1").iterdir())
    assert folders == sorted(f"seed0-{r['run_key']}" for r in records)
    for record in records:  # each log holds exactly its own run's iterations
        log = tmp_path / "runs" / "quick-voc2012" / "deeplab_v1" / f"seed0-{record['run_key']}" / "log.csv"
        assert log.read_text().splitlines()[-1].split(",")[0] == str(record["recipe"]["iterations"])
    table = summary_table(records)
    assert sorted(table["method"]) == ["deeplab_v1 [batch_size=1, iterations=1, iterations=2]",
                                       "deeplab_v1 [batch_size=1, iterations=1]",
                                       "deeplab_v1 [batch_size=1, iterations=3]"]
    assert set(table["seeds"]) == {1}
    again = _run(data, tmp_path, "--set", "iterations=3")  # the same identity: reused, nothing trained
    assert "exists; reusing it" in again.stdout and "it 1/3" not in again.stdout


def test_replacing_a_record_keeps_every_generation(tmp_path, shared_dir, ids):
    data = _voc(shared_dir, tmp_path / "voc", *ids)
    runs = [_run(data, tmp_path, "--set", "iterations=1", "--rerun") for _ in range(3)]
    assert all(r.returncode == 0 for r in runs), runs[-1].stderr[-2000:]
    folder = tmp_path / "results" / "records" / "quick-voc2012" / "deeplab_v1"
    names = sorted(p.name for p in folder.iterdir())
    stem = next(p.stem for p in folder.glob("seed0*.json"))
    assert names == sorted([f"{stem}.json", f"{stem}.npz", f"{stem}.1.json.superseded",
                            f"{stem}.1.npz.superseded", f"{stem}.2.json.superseded", f"{stem}.2.npz.superseded"])
    created = [json.loads((folder / n).read_text())["created"] for n in names if "json" in n]
    assert len(created) == 3
    with np.load(folder / f"{stem}.1.npz.superseded") as first:
        assert len(first["image_ids"]) == 3


def test_a_run_folder_is_held_by_one_process(tmp_path, shared_dir, ids):
    data = _voc(shared_dir, tmp_path / "voc", *ids)
    first = _run(data, tmp_path, "--set", "iterations=1")
    assert first.returncode == 0, first.stderr[-2000:]
    (folder,) = (tmp_path / "runs" / "quick-voc2012" / "deeplab_v1").glob("seed0-*")
    assert not (folder / ".lock").exists()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (folder / ".lock").write_text(json.dumps({"pid": live.pid, "host": os.uname().nodename, "since": "then"}))
        held = _run(data, tmp_path, "--set", "iterations=1", "--rerun")
        assert held.returncode == 2 and f"held by pid {live.pid}" in held.stderr and "Traceback" not in held.stderr
    finally:
        live.kill()
        live.wait()
    stale = _run(data, tmp_path, "--set", "iterations=1", "--rerun")  # its holder is dead: taken over
    assert stale.returncode == 0, stale.stderr[-2000:]
    assert not (folder / ".lock").exists()


def test_splits_are_checked_before_training(tmp_path, shared_dir, ids):
    train, val = ids
    data = _voc(shared_dir, tmp_path / "voc", train, val)
    label = data / "VOCdevkit" / "VOC2012" / "SegmentationClass" / f"{val[-1]}.png"
    with Image.open(label) as image:
        broken = np.array(image)
        palette = image.getpalette()
    broken[0, 0] = 50
    picture = Image.fromarray(broken, mode="P")
    picture.putpalette(palette)
    picture.save(label)
    bad = _run(data, tmp_path, "--set", "iterations=1")
    assert bad.returncode == 2 and str(label) in bad.stderr and "values [50]" in bad.stderr
    assert not (tmp_path / "runs").exists()  # nothing trained

    ignored = _voc(shared_dir, tmp_path / "ignored", train, val)
    for image_id in val:
        path = ignored / "VOCdevkit" / "VOC2012" / "SegmentationClass" / f"{image_id}.png"
        with Image.open(path) as image:
            Image.fromarray(np.full_like(np.array(image), 255), mode="L").save(path)
    nothing = _run(ignored, tmp_path / "second")
    assert nothing.returncode == 2 and "is 255 (ignore)" in nothing.stderr


def test_training_images_are_not_scored_unless_allowed(tmp_path, shared_dir, ids):
    train, val = ids
    data = _voc(shared_dir, tmp_path / "voc", train, [*val, train[0]])
    leaked = _run(data, tmp_path, "--set", "iterations=1")
    assert leaked.returncode == 2 and "1 of its 3 training images" in leaked.stderr and train[0] in leaked.stderr
    assert not (tmp_path / "runs").exists()
    allowed = _run(data, tmp_path, "--set", "iterations=1", "--allow-train-eval-overlap")
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    (record,) = load_records(tmp_path / "results")
    assert record["train_eval_overlap"] == 1 and not record["comparable_to_paper"]
