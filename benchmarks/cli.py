"""``python -m benchmarks``: the segrepro command line (SPEC section 8). Each subcommand is one module
of :mod:`benchmarks.commands` (``NAME``, ``HELP``, ``add_arguments``, ``main``); this file assembles
the parser and holds the one error boundary."""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Sequence

from benchmarks.commands import COMMANDS
from benchmarks.errors import SegreproError


def expected_errors() -> tuple[type[Exception], ...]:
    """The failures a user causes and fixes: ``main`` prints them as one line and exits 2. They are
    the project's :class:`~benchmarks.errors.SegreproError` (data, recipe, record, weights, method,
    usage errors subclass it) and ``OSError`` from the system (a missing, unreadable or full
    folder). Anything else, ``ValueError`` included, is a bug and raises with its traceback."""
    return (SegreproError, OSError)


def error_message(error: Exception) -> str:
    """The one line ``main`` prints for an expected failure."""
    from methods.vgg import WeightsUnavailable

    if isinstance(error, WeightsUnavailable):
        return (f"{error} From the command line: --set pretrained=false (the run is then marked not comparable to "
                "the papers).")
    if isinstance(error, SegreproError):
        return str(error)
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT) and error.filename is None:
        return (f"{error}: a disk being written is full (the system names no file); free space under --runs, "
                "--results, the data folder or SEGREPRO_CACHE and run again")
    if isinstance(error, OSError) and error.filename is not None:  # from the OS: says which file, not what to do
        return f"{error} (check that the path is right and that you may read and write there)"
    return str(error)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description="segrepro, the reproducibility "
                                     "harness for the classic PASCAL VOC 2012 segmentation tables (SPEC section 8)")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        subparser = sub.add_parser(command.NAME, help=command.HELP)
        command.add_arguments(subparser)
        subparser.set_defaults(func=command.main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; an expected failure (``expected_errors``) is ``error: ...`` on stderr and exit 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted: nothing half-written is left; run the same command again to resume from the last "
              "checkpoint", file=sys.stderr)
        return 130
    except Exception as error:
        from benchmarks.preemption import REQUEUE_STATUS, Preempted

        if isinstance(error, Preempted):
            print(f"preempted: {error}; run the same command again (requeue) to resume from there "
                  f"(exit {REQUEUE_STATUS})", file=sys.stderr)
            return REQUEUE_STATUS
        if not isinstance(error, expected_errors()):
            raise
        for line in error_message(error).splitlines():  # a plan's missing inputs: one line each
            print(f"error: {line}", file=sys.stderr)
        return 2
