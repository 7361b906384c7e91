"""Scale-out (issue 25): the stages of a ``run`` command as a dependency graph, run in parallel on
this machine through submitit's ``LocalExecutor`` or submitted to a SLURM cluster through its
``AutoExecutor``.

The graph comes from what ``run`` already resolves (``expand_targets`` and each recipe's
``init_from``): one node per (target, seed); a staged network after the network it starts from
(FCN-16s after FCN-32s, a context module after its front end, a COCO stage 2 after stage 1),
``NAME+crf`` after ``NAME`` and after any earlier variant of ``NAME`` (they score in the same run
folder, which one process holds at a time). Each node is a real process running the same
command, ``python -m benchmarks run TARGETS --seeds K --stage TARGET``: the same checks, run
locks, records and logs as the sequential run, for that one stage.

On the CPU the trained weights depend on the torch thread count (``records.hardware``), and jobs
that together ask for more threads than the machine has run slower than one job after another
(OpenMP threads wait for each other's cores). So under ``--launcher local`` the launching
command's threads are shared out, ``--threads-per-job`` each (default: its thread count divided by
``--jobs``, at least 1), passed as ``OMP_NUM_THREADS``: a job's records equal a sequential run's
with that many threads, and the record's ``hardware.torch_threads`` says which. A SLURM or
``--gpus`` job keeps the launching command's thread count unless told otherwise."""

from __future__ import annotations

import argparse
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmarks.data.datasets import DatasetSource
from benchmarks.errors import SegreproError
from benchmarks.plan import check_plan
from benchmarks.resolve import RunPlan, base_method, expand_targets, resolve_run
from benchmarks.run import command_plan
from benchmarks.stage_command import StageCommand

__all__ = ["LaunchError", "Node", "SlurmOptions", "launch", "node_argv", "run_local",
           "slurm_submissions", "stage_dependencies", "submit_slurm", "sweep_graph"]

LAUNCH_OPTIONS = ("launcher", "jobs", "threads_per_job", "gpus", "per_run", "partition", "time", "nodes", "seeds",
                  "stage", "plan", "json", "no_report", "all", "methods")
"""``run`` options a node's command does not inherit (it gets its own seed, stage and no report)."""


class LaunchError(SegreproError, RuntimeError):
    """A job of the graph failed, or the machine cannot run what was asked; one line, with the fix."""


def stage_dependencies(ordered: list[str], plan: RunPlan) -> dict[str, list[str]]:
    """What each target of ``ordered`` (``expand_targets``' order) runs after: its ``init_from``
    network, or for ``NAME+crf``/``NAME+crfrnn`` the latest earlier stage of ``NAME``."""
    after: dict[str, list[str]] = {}
    latest: dict[str, str] = {}
    for target in ordered:
        base = base_method(target)
        if target == base:
            init = plan.recipe(base).init_from
            after[target] = [init] if init else []
        else:
            after[target] = [latest[base]]
        latest[base] = target
    return after


@dataclass(frozen=True)
class Node:
    """One stage of one seed, and the nodes it runs after."""

    target: str
    seed: int
    after: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        return f"{self.target}/seed{self.seed}"


def sweep_graph(targets: list[str], plan: RunPlan) -> list[Node]:
    """Every (target, seed) of the command, dependencies first; each seed is its own chain."""
    ordered = expand_targets(targets, plan)
    after = stage_dependencies(ordered, plan)
    return [Node(target, seed, tuple(f"{d}/seed{seed}" for d in after[target]))
            for seed in plan.seeds for target in ordered]


def node_argv(args: argparse.Namespace, parser: argparse.ArgumentParser, targets: list[str], node: Node) -> list[str]:
    """The ``run`` arguments of one node: the command's own options (as ``parser``, the ``run``
    subparser, defines them), its targets, the node's seed and ``--stage``, no report."""
    argv = [*targets]
    for action in parser._actions:
        value = getattr(args, action.dest, None)
        if not action.option_strings or action.dest in LAUNCH_OPTIONS or value in (None, False, []) \
                or value == action.default:
            continue
        option = action.option_strings[-1]
        if value is True:
            argv.append(option)
        elif isinstance(value, list):
            argv += [token for item in value for token in (option, str(item))]
        else:
            argv += [option, str(value)]
    return [*argv, "--seeds", str(node.seed), "--stage", node.target, "--no-report"]


def run_local(nodes: list[Node], make_job: Callable[[Node], StageCommand], folder_of: Callable[[Node], Path], *,
              jobs: int, gpus_per_run: int = 0, gpus: int = 0, progress: Callable[[str], None] = print,
              poll_s: float = 0.5, report_s: float = 30.0) -> None:
    """Run ``nodes`` through submitit's LocalExecutor, at most ``jobs`` at a time (``gpus`` split
    into ``gpus_per_run`` per job when given), each once every node it runs after has succeeded.
    The job's log lies in ``folder_of(node)/launch``. One line when a job starts or ends, and every
    ``report_s`` one line per running job (the last line of its log). A failed job stops the
    launching of new ones; the running ones finish; then :class:`LaunchError`."""
    import submitit

    pending, running, done = list(nodes), {}, set()
    free_gpus = list(range(gpus))
    failed: list[str] = []
    last_report = time.monotonic()
    while pending or running:
        for node in [n for n in pending if not failed and set(n.after) <= done][: max(jobs - len(running), 0)]:
            executor = submitit.LocalExecutor(folder=folder_of(node) / "launch")
            assigned = [free_gpus.pop(0) for _ in range(gpus_per_run)] if gpus else []
            executor.update_parameters(timeout_min=60 * 24 * 7, gpus_per_node=len(assigned), visible_gpus=assigned)
            job = executor.submit(make_job(node))
            running[node.name] = (job, assigned)
            pending.remove(node)
            progress(f"[launch] started {node.name} (job {job.job_id}, log {job.paths.stdout})")
        if failed and not running:
            break
        time.sleep(poll_s)
        for name, (job, assigned) in list(running.items()):
            if not job.done():
                continue
            del running[name]
            free_gpus += assigned
            try:
                job.result()
            except Exception as error:  # the job's own failure, with its log
                failed.append(f"{name} failed ({str(error).strip().splitlines()[-1][:300]}); its log: "
                              f"{job.paths.stderr}")
                progress(f"[launch] {failed[-1]}")
                continue
            done.add(name)
            progress(f"[launch] finished {name} ({len(done)}/{len(nodes)})")
        if running and time.monotonic() - last_report >= report_s:
            last_report = time.monotonic()
            for name, (job, _) in running.items():
                progress(f"[launch] {name}: {_last_line(job.paths.stdout)}")
    if failed:
        blocked = [n.name for n in pending]
        raise LaunchError(f"{failed[0]}" + (f"; not started: {', '.join(blocked)}" if blocked else "")
                          + "; fix it and run the same command again (finished stages are reused)")


def _last_line(path: Path) -> str:
    """The run's latest line in a job's log (submitit's own lines skipped)."""
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines()
                 if line.strip() and not line.startswith("submitit ")]
    except OSError:
        lines = []
    return lines[-1][:200] if lines else "starting"


@dataclass(frozen=True)
class SlurmOptions:
    """Where and how long each job runs: partition, time limit (minutes), GPUs per run and nodes
    per run (a run on several GPUs or nodes is one job running torchrun)."""

    partition: str | None = None
    time_min: int = 60 * 24
    gpus_per_run: int = 1
    nodes: int = 1
    signal_delay_s: int = 120  # submitit's USR2 before the time limit: time to write a checkpoint


def slurm_submissions(nodes: list[Node], options: SlurmOptions) -> list[dict[str, object]]:
    """The jobs ``submit_slurm`` submits, in order: name, AutoExecutor parameters and the names of
    the jobs it runs after (``--dependency=afterok:`` their job ids)."""
    parameters = {"timeout_min": options.time_min, "gpus_per_node": options.gpus_per_run, "nodes": options.nodes,
                  "tasks_per_node": 1, "slurm_signal_delay_s": options.signal_delay_s,
                  **({"slurm_partition": options.partition} if options.partition else {})}
    return [{"name": node.name, "parameters": {**parameters, "name": node.name}, "after": list(node.after)}
            for node in nodes]


def submit_slurm(nodes: list[Node], options: SlurmOptions, make_job: Callable[[Node], StageCommand], folder: Path,
                 progress: Callable[[str], None] = print) -> dict[str, str]:
    """Submit every node as a SLURM job (submitit's AutoExecutor), each with ``afterok`` on the jobs
    of the nodes it runs after; returns the job id of each node."""
    import submitit

    job_ids: dict[str, str] = {}
    for submission, node in zip(slurm_submissions(nodes, options), nodes, strict=True):
        executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
        after = [job_ids[name] for name in submission["after"]]
        executor.update_parameters(**submission["parameters"], **(
            {"slurm_additional_parameters": {"dependency": "afterok:" + ":".join(after)}} if after else {}))
        job_ids[node.name] = executor.submit(make_job(node)).job_id
        progress(f"[slurm] {node.name}: job {job_ids[node.name]}" + (f" after {', '.join(after)}" if after else ""))
    return job_ids


def _threads_per_job(args: argparse.Namespace, jobs: int) -> int:
    """``--threads-per-job``, or under ``--launcher local`` on the CPU the launching command's torch
    threads divided among ``jobs`` (at least 1); otherwise the launching command's thread count."""
    if args.threads_per_job:
        return args.threads_per_job
    if args.launcher == "local" and not args.gpus:
        return max(1, torch.get_num_threads() // max(1, jobs))
    return torch.get_num_threads()


def launch(targets: list[str], args: argparse.Namespace, plan: RunPlan, source: DatasetSource, *,
           run_parser: argparse.ArgumentParser, progress: Callable[[str], None] = print) -> None:
    """``run ... --launcher local|slurm`` or ``--gpus N``: check every stage's inputs (as ``run``
    does), build the graph and run it here or submit it to SLURM; ``run_parser`` (the ``run``
    command's options) says which options each node's command carries over."""
    if args.launcher == "slurm" and shutil.which("sbatch") is None:
        raise LaunchError("--launcher slurm: sbatch is not on PATH (not a SLURM login node); run the command where "
                          "SLURM is, or use --launcher local")
    on_gpus = bool(args.gpus) or args.launcher == "slurm"
    device = torch.device("cuda" if on_gpus else (args.device or ("cuda" if torch.cuda.is_available() else "cpu")))
    check_plan(command_plan(targets, source, plan), plan.runs, device)
    nodes = sweep_graph(targets, plan)
    parser = run_parser
    jobs = args.gpus // args.per_run if args.gpus else args.jobs
    threads = _threads_per_job(args, jobs)

    def make_job(node: Node) -> StageCommand:
        gpus = args.per_run if (args.gpus or args.launcher == "slurm") else 1
        return StageCommand(node_argv(args, parser, targets, node), cwd=Path.cwd(), threads=threads, gpus=gpus,
                            nodes=args.nodes if args.launcher == "slurm" else 1,
                            launcher=f"submitit-{args.launcher or 'local'}")

    if args.launcher == "slurm":
        options = SlurmOptions(partition=args.partition, time_min=args.time, gpus_per_run=args.per_run,
                               nodes=args.nodes)
        submit_slurm(nodes, options, make_job, plan.runs / "slurm", progress)
        return
    if jobs < 1:
        raise LaunchError(f"--gpus {args.gpus} cannot give {args.per_run} GPUs to a run; pass --per-run <= --gpus")
    progress(f"[launch] {len(nodes)} stages, at most {jobs} at a time, {threads} torch threads each")
    run_local(nodes, make_job, lambda node: resolve_run(plan, source, base_method(node.target), node.seed).folder,
              jobs=jobs, gpus_per_run=args.per_run if args.gpus else 0, gpus=args.gpus or 0, progress=progress)
