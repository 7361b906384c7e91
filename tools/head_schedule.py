"""Train one staged method of the quick profile with another iteration count while every stage it
starts from keeps its committed recipe (``--set`` would change them all); figures in NOTES.md.

    python tools/head_schedule.py context_large_coco 3000 --seeds 0,1,2,3,4 --results /tmp/longer

Each record's recipe ``source`` names the change. The records land under ``--results`` (default
``results-<method>-<iterations>``), never among the committed ones; the stages it starts from are
reused from ``--runs`` when trained there.
"""

from __future__ import annotations

import argparse
import dataclasses

from benchmarks import recipes
from benchmarks.cli import main as cli_main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("method")
    parser.add_argument("iterations", type=int)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--results")
    parser.add_argument("--runs", default="runs")
    args = parser.parse_args()
    quick = recipes.PROFILES["quick"]
    if args.method not in quick:
        parser.error(f"{args.method!r} has no quick recipe; methods with recipes: {', '.join(sorted(quick))}")
    recipe = quick[args.method]
    if recipe.init_from is None:
        parser.error(f"{args.method} starts from no other stage; use `run {args.method} --set iterations=N`")
    # the record's recipe says what was changed, as --set would
    change = f"tools/head_schedule.py: {args.iterations} iterations, not {recipe.iterations}"
    quick[args.method] = dataclasses.replace(recipe, iterations=args.iterations, source=f"{recipe.source}; {change}")
    results = args.results or f"results-{args.method}-{args.iterations}"
    return cli_main(["run", args.method, "--seeds", args.seeds, "--results", results, "--runs", args.runs,
                     "--no-report"])


if __name__ == "__main__":
    raise SystemExit(main())
