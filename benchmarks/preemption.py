"""Preemption: SIGTERM (what SLURM sends a preempted or timed-out job, ``KillWait`` seconds before
SIGKILL) and SIGUSR1 (what ``sbatch --signal=USR1@T`` sends ahead of the time limit) stop a
command so that running it again resumes it exactly. Inside the training loop the signal is
noted and the loop writes a checkpoint at the current iteration before it stops
(``benchmarks.train``); anywhere else (data checks, scoring) the command stops at once, as
Ctrl-C does. Either way the command exits with :data:`REQUEUE_STATUS` and one line."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

__all__ = ["PREEMPTION_SIGNALS", "REQUEUE_STATUS", "Preempted", "deferred", "handled", "requested"]

PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
REQUEUE_STATUS = 75
"""``EX_TEMPFAIL`` of sysexits.h: the command did not finish and can be run again as it is."""


class Preempted(Exception):
    """A preemption signal stopped the command; the message says where it stopped."""


_state = {"signal": None, "deferring": 0}


def _note(signum: int, frame: object) -> None:
    _state["signal"] = signal.Signals(signum).name
    if not _state["deferring"]:
        raise Preempted(f"{_state['signal']} received before training started or while scoring")


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """While the block runs, :data:`PREEMPTION_SIGNALS` stop it (:class:`Preempted`) instead of
    killing the process; the previous handlers come back afterwards. Off the main thread (where
    Python cannot install handlers) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.signal(number, _note) for number in PREEMPTION_SIGNALS}
    _state["signal"] = None
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Inside the block a preemption signal is only noted; the block polls :func:`requested`."""
    _state["deferring"] += 1
    try:
        yield
    finally:
        _state["deferring"] -= 1


def requested() -> str | None:
    """The name of the preemption signal received (``"SIGTERM"``), or None."""
    return _state["signal"]
