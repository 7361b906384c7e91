"""``python -m benchmarks check``: each method's seeds, per group of records, against the published numbers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.errors import UsageError

NAME = "check"
HELP = (
    "each method's seeds (per group) against the published numbers (exit 1 if a "
    "comparable row missed; "
    "2 if there are no records or one does not read)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", default="results")
    parser.add_argument("--json", action="store_true")


def main(args: argparse.Namespace) -> int:
    from benchmarks.check import check_records, load_references, summary_line
    from benchmarks.records import load_records

    records = load_records(Path(args.results))
    if not records:
        raise UsageError(
            f"no records under {Path(args.results) / 'records'}; run `python -m benchmarks run` first, "
            "or pass --results"
        )
    verdicts = check_records(records, load_references())
    if args.json:
        print(json.dumps({"verdicts": verdicts, "summary": summary_line(verdicts)}, indent=2))
    else:
        for v in verdicts:
            interval = "" if v["low"] is None else f" [{v['low']:6.2f}, {v['high']:6.2f}]"
            print(
                f"{v['method']:<24} {v['reference']:<20} group {v['group']}  {len(v['seeds'])} seeds  published "
                f"{v['published']:6.2f}  mean {v['mean']:6.2f}{interval}  {v['verdict']}: {v['reason']}  "
                f"[weights: {v['weights']}] [{v['software']}]"
            )
        print(summary_line(verdicts))
    failed = [v for v in verdicts if v["verdict"] in ("below", "above") and v["authoritative"]]
    return 1 if failed else 0
