"""``python -m benchmarks report``: regenerate tables and reports/report.md from the records."""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.commands.common import writable_folder, write_report_files

NAME = "report"
HELP = "regenerate tables and reports/report.md from the records"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", default="results")
    parser.add_argument("--reports", default="reports")
    parser.add_argument("--runs", default="runs")


def main(args: argparse.Namespace) -> int:
    writable_folder(Path(args.reports), "--reports")
    write_report_files(args)
    return 0
