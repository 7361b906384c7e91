"""Preemption (issue 25 item 4): SIGTERM, as SLURM sends it to a preempted job, stops a training
run with a checkpoint at the current iteration and exit status 75; running the same command again
(a requeue) resumes it to the record and weights of a run that was never interrupted."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks.data.embedded import embedded_root
from benchmarks.data.embedded_scenes import EmbeddedConfig
from benchmarks.files import file_sha256
from benchmarks.preemption import REQUEUE_STATUS

ROOT = Path(__file__).resolve().parents[1]
SMALL = EmbeddedConfig(seed=11, train_images=8, val_images=3, crf_holdout_images=1, coco_images=4, height=64,
                       width=80)
ITERATIONS = 40


def _command(data: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "benchmarks", "run", "deeplab_v1", "--data", str(data), "--profile", "quick",
            "--set", f"iterations={ITERATIONS}", "--set", "log_every=5", "--set", "batch_size=2", "--no-report",
            "--results", str(out / "results"), "--runs", str(out / "runs")]


def _environment() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}  # the log lines arrive as they are printed


def _outputs(out: Path) -> tuple[dict, str]:
    (record_file,) = (out / "results" / "records").rglob("seed0*.json")
    (weights,) = (out / "runs").rglob("weights.pt")
    return json.loads(record_file.read_text()), file_sha256(weights)


def test_sigterm_checkpoints_and_the_requeued_run_resumes_exactly(tmp_path):
    data = embedded_root(SMALL, cache_dir=tmp_path / "cache")
    whole = subprocess.run(_command(data, tmp_path / "whole"), cwd=ROOT, capture_output=True, text=True,
                           env=_environment(), timeout=600)
    assert whole.returncode == 0, whole.stderr[-2000:]

    out = tmp_path / "preempted"
    process = subprocess.Popen(_command(data, out), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=_environment())
    for line in process.stdout:  # training has started: the first log line (iteration 5)
        if line.startswith(f"deeplab_v1 it 5/{ITERATIONS}"):
            break
    process.send_signal(signal.SIGTERM)
    rest, err = process.communicate(timeout=300)
    assert process.returncode == REQUEUE_STATUS, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("preempted: SIGTERM at iteration ") and "Traceback" not in err, err[-2000:]
    stopped = int(last.split("at iteration ")[1].split("/")[0])
    assert 5 <= stopped < ITERATIONS and f"it {ITERATIONS}/{ITERATIONS}" not in rest
    (checkpoint,) = (out / "runs").rglob("checkpoint.pt")
    state = torch.load(checkpoint, weights_only=True)
    assert state["iteration"] == stopped and "cuda_rng" not in state  # CUDA states only where CUDA trained
    assert not list((out / "runs").rglob("weights.pt")) and not list(out.rglob("*.json"))

    requeued = subprocess.run(_command(data, out), cwd=ROOT, capture_output=True, text=True, env=_environment(),
                              timeout=600)
    assert requeued.returncode == 0, requeued.stderr[-2000:]
    assert f"deeplab_v1: resuming from iteration {stopped}" in requeued.stdout
    (whole_record, whole_weights), (record, weights) = _outputs(tmp_path / "whole"), _outputs(out)
    assert weights == whole_weights == record["trained_weights_sha256"]
    assert record["metrics"] == whole_record["metrics"]
    assert record["hardware"]["torch_threads"] == whole_record["hardware"]["torch_threads"]


def test_sigusr1_stops_the_command_with_the_requeue_status(tmp_path):
    """SIGUSR1 (``sbatch --signal=USR1@T``) stops the command as SIGTERM does, wherever it lands
    (checking the splits, or a training step, which then writes its checkpoint)."""
    data = embedded_root(SMALL, cache_dir=tmp_path / "cache")
    out = tmp_path / "early"
    process = subprocess.Popen([*_command(data, out), "--set", "iterations=100000"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_environment())
    for line in process.stderr:  # the embedded-data note: the handlers are installed
        if line.startswith("NOTE: no VOC data given"):
            break
    process.send_signal(signal.SIGUSR1)
    _, err = process.communicate(timeout=300)
    assert process.returncode == REQUEUE_STATUS and "Traceback" not in err, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("preempted: SIGUSR1 ")
    assert not list(out.rglob("weights.pt")) and not list(out.rglob("*.json"))


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_submitit_requeues_a_preempted_stage_and_it_resumes_exactly(tmp_path):
    """The launcher's job (``benchmarks.launch.StageCommand``) under submitit's LocalExecutor: the
    preemption signal submitit handles (USR2, its SLURM ``--signal``) makes it stop the run with
    SIGTERM (checkpoint) and requeue the same command, which resumes to the uninterrupted weights."""
    import submitit

    from benchmarks.stage_command import StageCommand

    data = embedded_root(SMALL, cache_dir=tmp_path / "cache")
    whole = subprocess.run(_command(data, tmp_path / "whole"), cwd=ROOT, capture_output=True, text=True,
                           env=_environment(), timeout=600)
    assert whole.returncode == 0, whole.stderr[-2000:]
    out = tmp_path / "job"
    executor = submitit.LocalExecutor(folder=out / "launch")
    executor.update_parameters(timeout_min=60)
    job = executor.submit(StageCommand(_command(data, out)[4:], cwd=ROOT, threads=torch.get_num_threads()))
    while f"deeplab_v1 it 5/{ITERATIONS}" not in (job.paths.stdout.read_text() if job.paths.stdout.exists() else ""):
        assert not job.done(), job.paths.stderr.read_text()[-2000:]
        time.sleep(0.1)  # polling the log, not a timing assumption
    (task,) = _children(job._process.pid)  # the process running the StageCommand under submitit
    os.kill(task, signal.SIGUSR2)
    assert job.result() == 0
    log = job.paths.stdout.read_text() + job.paths.stderr.read_text()
    assert "preempted: SIGTERM at iteration" in log and "deeplab_v1: resuming from iteration" in log, log[-3000:]
    (record, weights), (whole_record, whole_weights) = _outputs(out), _outputs(tmp_path / "whole")
    assert weights == whole_weights and record["metrics"] == whole_record["metrics"]


CRF_UNTIL_STOPPED = """
import sys
import torch
from benchmarks.crf.dense_crf import CRFParams, dense_crf
from benchmarks.preemption import Preempted, handled

image = torch.randint(0, 256, (3, 60, 80), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
probabilities = torch.softmax(torch.randn(21, 60, 80, generator=torch.Generator().manual_seed(1)), 0)
with handled():
    print("refining", flush=True)
    try:
        dense_crf(image, probabilities, CRFParams(iterations=10**9), backend="pydensecrf")
    except Preempted as stopped:
        sys.exit(f"stopped: {stopped}")
"""


def test_sigterm_stops_pydensecrf_between_mean_field_iterations(tmp_path):
    """pydensecrf's inference(n) is one C call that Python cannot interrupt: SIGTERM waited for all
    n iterations (a stored search of 10^9 ran on after its job was preempted). The iterations now
    run one call each, so the signal stops scoring within one iteration."""
    process = subprocess.Popen([sys.executable, "-c", CRF_UNTIL_STOPPED], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=_environment())
    assert process.stdout.readline() == "refining\n"
    time.sleep(1)
    process.send_signal(signal.SIGTERM)
    try:
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 1 and err.strip() == "stopped: SIGTERM received before training started or while " \
        "scoring", err[-2000:]
