"""Scale-out (issue 25 items 1-3): the stages of a command as a graph, `--gpus` refused without the
devices, the graph run by submitit's LocalExecutor (real processes) to the sequential run's records,
and the SLURM jobs with their `afterok` dependencies."""

import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.cli import build_parser, main
from benchmarks.data.embedded import embedded_root
from benchmarks.data.embedded_scenes import EmbeddedConfig
from benchmarks.launch import Node, SlurmOptions, node_argv, slurm_submissions, sweep_graph
from benchmarks.records import load_records
from benchmarks.resolve import RunPlan, main_command_targets
from benchmarks.stage_command import StageCommand

ROOT = Path(__file__).resolve().parents[1]
SMALL = EmbeddedConfig(seed=13, train_images=6, val_images=3, crf_holdout_images=1, coco_images=4, height=64,
                       width=80)


def test_the_main_command_is_a_graph_of_chains_one_per_seed():
    nodes = sweep_graph(main_command_targets(), RunPlan(profile="quick", seeds=(0, 1)))
    after = {node.name: node.after for node in nodes}
    assert len(nodes) == 2 * 16  # 8 networks (the COCO stage 1 included) + 5 +crf + 3 +crfrnn, per seed
    expected = {  # the papers' staging (FCN Sec 4.2, Yu & Koltun Sec 5), stated independently of the code
        "fcn32s/seed0": (), "deeplab_v1/seed1": (), "frontend_coco_stage1/seed0": (),
        "fcn16s/seed0": ("fcn32s/seed0",), "fcn8s/seed1": ("fcn16s/seed1",),
        "frontend_coco/seed1": ("frontend_coco_stage1/seed1",),
        "context_basic_coco/seed0": ("frontend_coco/seed0",), "context_large_coco/seed1": ("frontend_coco/seed1",),
        "fcn8s+crf/seed0": ("fcn8s/seed0",), "deeplab_v1+crf/seed1": ("deeplab_v1/seed1",),
        # +crfrnn scores in the run folder +crf scores in (one process holds it at a time): after it
        "frontend_coco+crfrnn/seed0": ("frontend_coco+crf/seed0",),
    }
    assert {name: after[name] for name in expected} == expected
    position = {node.name: i for i, node in enumerate(nodes)}
    assert all(position[d] < position[node.name] and d.endswith(f"/seed{node.seed}") for node in nodes
               for d in node.after)


def test_plan_shows_each_stage_after_what(tmp_path, capsys):
    data = embedded_root(SMALL, cache_dir=tmp_path / "cache")
    status = main(["run", "fcn8s+crf", "--data", str(data), "--profile", "quick", "--plan", "--json",
                   "--runs", str(tmp_path / "runs")])
    plan = json.loads(capsys.readouterr().out)
    assert status == 0
    assert {s["target"]: s["after"] for s in plan["stages"]} == {
        "fcn32s": [], "fcn16s": ["fcn32s"], "fcn8s": ["fcn16s"], "fcn8s+crf": ["fcn8s"]}


def test_gpus_without_the_devices_is_refused_before_any_work(tmp_path, capsys):
    import torch

    wanted = torch.cuda.device_count() + 1
    status = main(["run", "--all", "--seeds", "0,1", "--gpus", str(wanted), "--results", str(tmp_path / "results"),
                   "--runs", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1
    assert err[0].startswith(f"error: --gpus {wanted}: this machine has {wanted - 1} CUDA device(s)")
    assert not list(tmp_path.iterdir())


def test_a_node_runs_the_same_command_for_its_stage_and_seed():
    parser = next(a for a in build_parser()._actions if hasattr(a, "choices") and a.choices and "run" in a.choices)
    run_parser = parser.choices["run"]
    args = build_parser().parse_args(["run", "fcn8s+crf", "--data", "voc", "--set", "iterations=3", "--workers", "1",
                                      "--set", "batch_size=2", "--seeds", "0,1", "--launcher", "local", "--jobs", "2",
                                      "--no-sanity-gate"])
    argv = node_argv(args, run_parser, ["fcn8s+crf"], Node("fcn16s", 1, ("fcn32s/seed1",)))
    assert argv == ["fcn8s+crf", "--data", "voc", "--workers", "1", "--set", "iterations=3", "--set", "batch_size=2",
                    "--no-sanity-gate", "--seeds", "1", "--stage", "fcn16s", "--no-report"]
    assert build_parser().parse_args(["run", *argv]).stage == "fcn16s"  # what the job's process parses
    job = StageCommand(argv, cwd=ROOT, threads=2, gpus=4, nodes=2)
    command = job.command("node7")
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert command[command.index("--rdzv-endpoint") + 1] == "node7:29500" and "--nproc-per-node" in command


def test_slurm_jobs_and_their_afterok_dependencies():
    nodes = sweep_graph(["fcn8s"], RunPlan(profile="paper", seeds=(0, 1)))
    jobs = slurm_submissions(nodes, SlurmOptions(partition="gpu", time_min=600, gpus_per_run=2, nodes=1))
    assert [(j["name"], j["after"]) for j in jobs] == [
        ("fcn32s/seed0", []), ("fcn16s/seed0", ["fcn32s/seed0"]), ("fcn8s/seed0", ["fcn16s/seed0"]),
        ("fcn32s/seed1", []), ("fcn16s/seed1", ["fcn32s/seed1"]), ("fcn8s/seed1", ["fcn16s/seed1"])]
    assert jobs[1]["parameters"] == {"timeout_min": 600, "gpus_per_node": 2, "nodes": 1, "tasks_per_node": 1,
                                     "slurm_signal_delay_s": 120, "slurm_partition": "gpu", "name": "fcn16s/seed0"}


def _run(data: Path, out: Path, *extra: str, threads: int | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "benchmarks", "run", "fcn16s", "deeplab_v1+crf", "--data", str(data),
               "--profile", "quick", "--set", "iterations=3", "--set", "batch_size=2", "--no-report",
               "--results", str(out / "results"), "--runs", str(out / "runs"), *extra]
    threads_environment = {"OMP_NUM_THREADS": str(threads)} if threads else {}
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONUNBUFFERED": "1", **threads_environment})


def test_local_launcher_runs_the_graph_to_the_sequential_records(tmp_path):
    """2 jobs share a 2-thread command's threads, 1 each: their records are a 1-thread sequential run's."""
    data = embedded_root(SMALL, cache_dir=tmp_path / "cache")
    sequential = _run(data, tmp_path / "sequential", "--seeds", "0", threads=1)
    assert sequential.returncode == 0, sequential.stderr[-2000:]
    launched = _run(data, tmp_path / "launched", "--seeds", "0", "--launcher", "local", "--jobs", "2", threads=2)
    assert launched.returncode == 0, launched.stderr[-3000:] + launched.stdout[-3000:]
    assert "[launch] 4 stages, at most 2 at a time, 1 torch threads each" in launched.stdout
    started = [line for line in launched.stdout.splitlines() if line.startswith("[launch] started")]
    assert sorted(line.split()[2] for line in started) == sorted(
        ["fcn32s/seed0", "fcn16s/seed0", "deeplab_v1/seed0", "deeplab_v1+crf/seed0"])

    def records(out: Path) -> dict[str, dict]:
        return {f"{r['method']}/seed{r['seed']}": r for r in load_records(out / "results")}

    first, second = records(tmp_path / "sequential"), records(tmp_path / "launched")
    assert sorted(first) == sorted(second) == ["deeplab_v1+crf/seed0", "deeplab_v1/seed0", "fcn16s/seed0"]
    for name, record in first.items():
        assert second[name]["trained_weights_sha256"] == record["trained_weights_sha256"], name
        assert second[name]["metrics"] == record["metrics"], name
        assert second[name]["hardware"]["torch_threads"] == record["hardware"]["torch_threads"] == 1, name
    logs = list((tmp_path / "launched" / "runs").rglob("launch/*_log.out"))
    assert len(logs) == 4 and any("deeplab_v1 it 3/3" in log.read_text() for log in logs)


def test_slurm_launcher_without_slurm_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch on it, whatever this machine has
    status = main(["run", "fcn8s", "--launcher", "slurm", "--results", str(tmp_path / "results"),
                   "--runs", str(tmp_path / "runs"), "--no-report"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and err == ["error: --launcher slurm: sbatch is not on PATH (not a SLURM login node); run the "
                                   "command where SLURM is, or use --launcher local"]
    assert not list((tmp_path / "runs").iterdir())
