"""A node of the launcher's graph as a submitit job (``benchmarks.launch``). Standard library only,
so that submitit's worker process, which unpickles the job and waits for its command, does not
import the harness (torch, torchvision: seconds of CPU for each of a sweep's jobs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

__all__ = ["LAUNCHER_ENV_VAR", "StageCommand"]

LAUNCHER_ENV_VAR = "SEGREPRO_LAUNCHER"
"""Set in each job's environment (``submitit-local``, ``submitit-slurm``); records name it."""


class StageCommand:
    """A submitit job: ``python -m benchmarks run ...`` (or under torchrun, ``gpus`` processes per
    node) in ``cwd``, with the launching command's torch thread count. Its output goes to the
    job's log. A SLURM time-limit or preemption signal reaches submitit first, which calls
    :meth:`checkpoint`: the run is stopped with SIGTERM (it writes its checkpoint,
    ``benchmarks.preemption``) and the same command is requeued, to resume there."""

    def __init__(self, argv: list[str], *, cwd: Path, threads: int, gpus: int = 1, nodes: int = 1,
                 launcher: str = "submitit-local") -> None:
        self.argv, self.cwd, self.threads, self.gpus, self.nodes = argv, cwd, threads, gpus, nodes
        self.launcher = launcher
        self._process: subprocess.Popen | None = None

    def command(self, rendezvous_host: str | None = None) -> list[str]:
        """The command line; with several GPUs or nodes, torchrun's (rendezvous on the first node)."""
        if self.gpus == 1 and self.nodes == 1:
            return [sys.executable, "-m", "benchmarks", "run", *self.argv]
        rendezvous = ["--standalone"] if self.nodes == 1 else \
            ["--nnodes", str(self.nodes), "--rdzv-backend", "c10d", "--rdzv-endpoint", f"{rendezvous_host}:29500"]
        return [sys.executable, "-m", "torch.distributed.run", *rendezvous, "--nproc-per-node", str(self.gpus),
                "-m", "benchmarks", "run", *self.argv]

    def __call__(self) -> int:
        host = None
        if self.nodes > 1:
            import submitit

            host = submitit.JobEnvironment().hostnames[0]
        environment = {**os.environ, "OMP_NUM_THREADS": str(self.threads), "PYTHONUNBUFFERED": "1",
                       LAUNCHER_ENV_VAR: self.launcher}
        self._process = subprocess.Popen(self.command(host), cwd=self.cwd, env=environment)
        status = self._process.wait()
        if status != 0:
            raise ChildProcessError(f"`run {' '.join(self.argv)}` exited with status {status}")
        return status

    def checkpoint(self) -> object:
        import submitit

        if self._process is not None and self._process.returncode is None:
            # the handler runs inside __call__'s Popen.wait, which holds Popen's wait lock: reap directly
            os.kill(self._process.pid, signal.SIGTERM)
            os.waitpid(self._process.pid, 0)
        return submitit.helpers.DelayedSubmission(StageCommand(self.argv, cwd=self.cwd, threads=self.threads,
                                                               gpus=self.gpus, nodes=self.nodes))

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_process": None}
