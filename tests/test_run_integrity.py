"""Results integrity (issue 12): a run is keyed by what determines its weights, records of other
recipes never pool, history is kept, one process per run folder, the splits are checked before
training, and training images are never scored unless the user says so."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.records import PROTOCOL_VERSION, load_records
from benchmarks.report import summary_table

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--profile", "quick", "--set", "batch_size=1", "--no-report"]


def _run(data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks", "run", "deeplab_v1", "--data", str(data), *TINY,
                           "--results", str(out / "results"), "--runs", str(out / "runs"), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_each_recipe_gets_its_own_run_and_record(tmp_path, small_voc):
    data = small_voc(tmp_path / "voc")
    short = _run(data, tmp_path, "--set", "iterations=1")
    longer = _run(data, tmp_path, "--set", "iterations=3")
    twice = _run(data, tmp_path, "--set", "iterations=1", "--set", "iterations=2")  # the last one counts
    assert short.returncode == longer.returncode == twice.returncode == 0, longer.stderr[-2000:]
    records = load_records(tmp_path / "results")
    assert sorted(r["recipe"]["iterations"] for r in records) == [1, 2, 3]
    assert {r["protocol_version"] for r in records} == {PROTOCOL_VERSION}  # what groups records by protocol
    assert len({r["run_key"] for r in records}) == 3 and len({r["trained_weights_sha256"] for r in records}) == 3
    folders = sorted(p.name for p in (tmp_path / "runs" / "quick-voc2012" / "deeplab_v1").iterdir())
    assert folders == sorted(f"seed0-{r['run_key']}" for r in records)
    for record in records:  # each log holds exactly its own run's iterations; run.json states the record's facts
        folder = tmp_path / "runs" / "quick-voc2012" / "deeplab_v1" / f"seed0-{record['run_key']}"
        assert (folder / "log.csv").read_text().splitlines()[-1].split(",")[0] == str(record["recipe"]["iterations"])
        run = json.loads((folder / "run.json").read_text())
        assert (run["key"], run["weights_sha256"], run["recipe"]["iterations"]) == \
            (record["run_key"], record["trained_weights_sha256"], record["recipe"]["iterations"])
        assert {key: run[key] for key in ("initial_weights", "train_dataset", "weights_source", "init_from",
                                          "profile")} == \
            {key: record[key] for key in ("initial_weights", "train_dataset", "weights_source", "init_from",
                                          "profile")}
    table = summary_table(records)
    assert sorted(table["method"]) == ["deeplab_v1 [batch_size=1, iterations=1, iterations=2]",
                                       "deeplab_v1 [batch_size=1, iterations=1]",
                                       "deeplab_v1 [batch_size=1, iterations=3]"]
    assert set(table["seeds"]) == {1}
    again = _run(data, tmp_path, "--set", "iterations=3")  # the same identity: reused, nothing trained
    assert "exists; reusing it" in again.stdout and "it 1/3" not in again.stdout


def test_replacing_a_record_keeps_every_generation(tmp_path, small_voc):
    data = small_voc(tmp_path / "voc")
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


def test_a_run_folder_is_held_by_one_process(tmp_path, small_voc):
    data = small_voc(tmp_path / "voc")
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


def test_splits_are_checked_before_training(tmp_path, small_voc):
    data = small_voc(tmp_path / "voc")
    val = (data / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
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
    assert not list((tmp_path / "runs").rglob("*.pt"))  # nothing trained

    ignored = small_voc(tmp_path / "ignored")
    for image_id in val:
        path = ignored / "VOCdevkit" / "VOC2012" / "SegmentationClass" / f"{image_id}.png"
        with Image.open(path) as image:
            Image.fromarray(np.full_like(np.array(image), 255), mode="L").save(path)
    nothing = _run(ignored, tmp_path / "second")
    assert nothing.returncode == 2 and "is 255 (ignore)" in nothing.stderr


def test_training_images_are_not_scored_unless_allowed(tmp_path, small_voc, shared_dir):
    lists = shared_dir / "data" / "voc-real-mini" / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation"
    first = (lists / "train.txt").read_text().split()[0]
    data = small_voc(tmp_path / "voc", extra_val=(first,))
    leaked = _run(data, tmp_path, "--set", "iterations=1")
    assert leaked.returncode == 2 and "1 of its 3 training images" in leaked.stderr and first in leaked.stderr
    assert not list((tmp_path / "runs").rglob("*.pt"))
    allowed = _run(data, tmp_path, "--set", "iterations=1", "--allow-train-eval-overlap")
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    (record,) = load_records(tmp_path / "results")
    assert record["train_eval_overlap"] == 1 and not record["comparable_to_paper"]


def test_ctrl_c_is_one_line_and_the_run_resumes(tmp_path, small_voc):
    data = small_voc(tmp_path / "voc")
    command = [sys.executable, "-m", "benchmarks", "run", "deeplab_v1", "--data", str(data), *TINY, "--set",
               "iterations=400", "--set", "checkpoint_every=1", "--results", str(tmp_path / "results"), "--runs",
               str(tmp_path / "runs")]
    # A shell starts background jobs with SIGINT ignored and children inherit that: give the run the
    # default handling whatever launched the tests (a suite run under nohup failed here otherwise).
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while not list((tmp_path / "runs").rglob("checkpoint.pt")) and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("interrupted: nothing half-written is left; run the same command")


def test_the_hardware_record_names_what_decides_cpu_weights() -> None:
    """Trained weights on the CPU depend on the thread count and oneDNN's SIMD kernels (see
    ``records.hardware``); the record states both, as /proc/cpuinfo and torch report them."""
    import torch

    from benchmarks.records import hardware

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        facts = hardware(torch.device("cpu"), world_size=1)
    finally:
        torch.set_num_threads(threads)
    assert facts["torch_threads"] == 1
    cpu_flags = next(line for line in open("/proc/cpuinfo") if line.startswith(("flags", "Features"))).split(":")[1]
    assert set(facts["cpu_simd"]) <= set(cpu_flags.split())
    assert ("avx2" in facts["cpu_simd"]) == ("avx2" in cpu_flags.split())
    assert facts["aten_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
