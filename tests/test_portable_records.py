"""Records are portable (issue 11): no path of the machine that wrote them, the data found again
from what identifies it, and every consumer working when the data or weights are gone."""

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.data.datasets import resolve_dataset, source_from_facts
from benchmarks.data.embedded_scenes import EmbeddedConfig
from benchmarks.data.voc import DataError
from benchmarks.report import write_report

ROOT = Path(__file__).resolve().parents[1]
ABSOLUTE_PATH = re.compile(r"(?<![\w.~-])(/(?:tmp|home|root|work|Users|var|opt|mnt|srv|data|private)/|[A-Za-z]:\\\\)")
REAL_MINI = "../shared/data/voc-real-mini"  # as a user gives it, relative to the checkout


def test_no_tracked_result_or_report_holds_an_absolute_path():
    tracked = subprocess.run(["git", "ls-files", "results", "reports"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    texts = [name for name in tracked if Path(name).suffix in (".json", ".md", ".csv")]
    assert texts, "the committed results are expected to be tracked"
    machine = (str(ROOT), str(Path.home()))
    leaks = [name for name in texts if ABSOLUTE_PATH.search(text := (ROOT / name).read_text())
             or any(m in text for m in machine)]
    assert leaks == []


def test_the_path_pattern_catches_what_it_must():
    assert ABSOLUTE_PATH.search('"root": "/tmp/freshcache/embedded-481451f2929a"')
    assert ABSOLUTE_PATH.search("weights at /home/ann/runs/x.pt") and ABSOLUTE_PATH.search(r"C:\\Users\\ann")
    assert not ABSOLUTE_PATH.search('"root": "../shared/data/voc-real-mini"')
    assert not ABSOLUTE_PATH.search("see results/records/quick-embedded/fcn8s/seed0.json")


def test_embedded_dataset_is_found_again_from_its_facts(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGREPRO_CACHE", str(tmp_path / "cache"))
    config = EmbeddedConfig(train_images=3, val_images=2, crf_holdout_images=1)
    facts = resolve_dataset(None, config).facts("val")
    assert "root" not in facts and facts["generator"]["fingerprint"] == config.fingerprint()
    shutil.rmtree(tmp_path / "cache")  # a new machine: empty cache
    source = source_from_facts(json.loads(json.dumps(facts)))  # as read back from a record
    assert source.split("val").ids == ["embedded_000003", "embedded_000004"]
    assert source.embedded == config and not source.comparable_to_paper
    with pytest.raises(DataError, match="generator version 3"):
        source_from_facts({**facts, "generator": {**facts["generator"], "version": 3}})
    with pytest.raises(DataError, match="not the list the record was scored on"):
        source_from_facts({**facts, "list_sha256": "0" * 64})


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, shared_dir):
    """A tiny quick-profile run of DeepLab on genuine VOC samples (images of different sizes),
    through the report: what every run on real VOC does after training."""
    out = tmp_path_factory.mktemp("real")
    command = [sys.executable, "-m", "benchmarks", "run", "deeplab_v1", "--data", REAL_MINI, "--profile", "quick",
               "--set", "iterations=2", "--set", "batch_size=1", "--results", str(out / "results"),
               "--runs", str(out / "runs"), "--reports", str(out / "reports")]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    return out, done


def test_real_voc_run_writes_its_report_with_overlays(real_run):
    out, done = real_run
    assert done.returncode == 0, done.stderr[-3000:]
    (record_file,) = (out / "results").rglob("seed0*.json")  # overridden: seed0-<run key>.json
    record = json.loads(record_file.read_text())
    assert record["dataset"]["root"] == REAL_MINI and record["dataset"]["images"] == 76
    assert len(_image_sizes(ROOT / REAL_MINI, "val")) > 1, "the test needs evaluation images of different sizes"
    lock = hashlib.sha256((ROOT / "uv.lock").read_bytes()).hexdigest()
    assert record["environment"]["uv_lock_sha256"] == lock
    assert record["environment"]["packages"]["torch"] == torch.__version__.split("+")[0]
    report = (out / "reports" / "report.md").read_text()
    assert "![qualitative](quick-voc2012-qualitative.png)" in report and "Effective receptive" in report
    assert (out / "reports" / "quick-voc2012-qualitative.png").stat().st_size > 10_000
    assert f"uv.lock {lock[:12]}" in report


def test_report_and_check_when_data_and_weights_are_gone(real_run, tmp_path):
    out, done = real_run
    assert done.returncode == 0, done.stderr[-3000:]
    results = tmp_path / "results"
    shutil.copytree(out / "results", results)
    (record_file,) = results.rglob("seed0*.json")
    record = json.loads(record_file.read_text())
    record["dataset"]["root"] = "../no/such/voc"  # the user's VOC folder was moved away
    record_file.write_text(json.dumps(record))
    write_report(results, tmp_path / "reports", out / "runs")
    text = (tmp_path / "reports" / "report.md").read_text()
    label = "deeplab_v1 [iterations=2, batch_size=1]"  # an overridden run: its own row and column
    assert f"leave out {label}: the evaluation images cannot be had" in text and "no/such/voc" in text
    write_report(results, tmp_path / "reports2", tmp_path / "no-runs")
    assert f"leave out {label}: no seed-0 weights" in (tmp_path / "reports2" / "report.md").read_text()
    check = subprocess.run([sys.executable, "-m", "benchmarks", "check", "--results", str(results), "--json"],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr
    assert {v["verdict"] for v in json.loads(check.stdout)["verdicts"]} == {"not comparable"}


def _image_sizes(data: Path, split: str) -> set[tuple[int, int]]:
    from PIL import Image

    voc = data / "VOCdevkit" / "VOC2012"
    ids = (voc / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()
    sizes = set()
    for image_id in ids:
        with Image.open(voc / "JPEGImages" / f"{image_id}.jpg") as image:
            sizes.add(image.size)
    return sizes


def test_records_name_what_ran_them_and_how_it_was_launched(monkeypatch):
    """Issue 25 item 5 on the CPU: the launcher (one process, a launcher's job, torchrun) goes into
    ``hardware`` and the report's line; the CUDA stack is recorded only on a CUDA device (not
    tested here: no GPU)."""
    import torch

    from benchmarks.records import hardware, hardware_summary
    from benchmarks.stage_command import LAUNCHER_ENV_VAR

    monkeypatch.delenv(LAUNCHER_ENV_VAR, raising=False)
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    alone = hardware(torch.device("cpu"), 1)
    assert alone["launcher"] == "one process" and "cuda" not in alone and "gpu_count" not in alone
    monkeypatch.setenv(LAUNCHER_ENV_VAR, "submitit-local")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    launched = hardware(torch.device("cpu"), 2)
    assert launched["launcher"] == "submitit-local + torchrun"
    line = hardware_summary({"hardware": launched, "precision": "fp32"})
    assert line == (f"{launched['name']} (cpu, {launched['torch_threads']} threads), precision fp32, 2 process(es), "
                    "launcher submitit-local + torchrun")
