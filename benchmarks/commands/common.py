"""Steps several commands share: importing the user's modules, a run plan from the options, the
dataset, checking output folders, printing a table, writing the report."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.errors import UsageError

if TYPE_CHECKING:
    from benchmarks.data.datasets import DatasetSource
    from benchmarks.resolve import RunPlan


def print_table(rows: list[dict[str, object]], columns: list[str]) -> None:
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        print("  ".join(str(row[c]).ljust(w) for c, w in zip(columns, widths, strict=True)))


def import_modules(names: list[str]) -> None:
    """``--import my_heads``: modules whose ``@register`` calls add the user's methods."""
    import importlib
    import traceback

    for name in names:
        if name.endswith(".py") or not all(part.isidentifier() for part in name.split(".")):
            raise UsageError(
                f"--import takes a module name such as my_heads (the file my_heads.py on PYTHONPATH or in "
                f"the current folder), not {name!r}"
            )
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name == name:
                raise UsageError(
                    f"--import {name}: no module named {name!r}; put the folder that holds {name}.py on "
                    "PYTHONPATH (or run from that folder)"
                ) from None
            raise UsageError(f"--import {name}: it imports {error.name!r}, which is not installed") from None
        except SystemExit as error:  # would end the command silently, with no record
            raise UsageError(
                f"--import {name}: the module called sys.exit({error.code!r}) while being imported; a "
                "module of heads should only define and register them"
            ) from None
        except Exception as error:  # the user's module is broken: where, and what
            where = traceback.extract_tb(error.__traceback__)[-1]
            line = error.lineno if isinstance(error, SyntaxError) else where.lineno
            file = error.filename if isinstance(error, SyntaxError) else where.filename
            raise UsageError(f"--import {name} failed at {file}:{line}: {type(error).__name__}: {error}") from None


def run_plan(args: argparse.Namespace, profile: str) -> RunPlan:
    from benchmarks.resolve import RunPlan

    precision = [f"precision={args.precision}"] if getattr(args, "precision", None) not in (None, "fp32") else []
    return RunPlan(
        profile=profile,
        seeds=tuple(args.seeds),
        overrides=(*args.set, *precision),
        results=Path(args.results),
        runs=Path(args.runs),
        workers=args.workers,
        rerun=getattr(args, "rerun", False),
        crf_backend=args.crf_backend,
        eval_batch=args.eval_batch,
        allow_overlap=args.allow_train_eval_overlap,
        sanity_gate=not args.no_sanity_gate,
    )


def profile_of(args: argparse.Namespace) -> str:
    return args.profile or ("paper" if (args.data or os.environ.get("SEGREPRO_DATA")) else "quick")


def writable_folder(path: Path, option: str) -> None:
    """Create ``path`` if missing and write a probe file into it (a read-only mount fails even as root)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise UsageError(
            f"{option} {path} is not a folder you can write to ({error.strerror}); pass another {option}"
        ) from None


def check_outputs(args: argparse.Namespace, reports: bool = False) -> None:
    """Before any work (training, generating data): the output folders are writable and every
    record under ``--results`` reads, rather than failing when the first record or report is written."""
    from benchmarks.records import load_records

    folders = {"--results": args.results, "--runs": args.runs, **({"--reports": args.reports} if reports else {})}
    for option, folder in folders.items():
        writable_folder(Path(folder), option)
    load_records(Path(args.results))


def data_source(data: str | None) -> DatasetSource:
    """``--data``, else the embedded dataset, generated into the cache on first use."""
    from benchmarks.data.datasets import resolve_dataset
    from benchmarks.data.embedded import CACHE_ENV_VAR, default_cache_dir

    try:
        return resolve_dataset(data)
    except OSError as error:  # only generating the embedded dataset writes
        raise UsageError(
            f"cannot write the embedded dataset into {default_cache_dir()} ({error.strerror}: "
            f"{error.filename}); point ${CACHE_ENV_VAR} at a folder you can write to"
        ) from None


def write_report_files(args: argparse.Namespace) -> None:
    from benchmarks.report import write_report

    for path in write_report(
        Path(args.results), Path(args.reports), Path(args.runs), warn=lambda line: print(line, file=sys.stderr)
    ):
        print(f"wrote {path}")
