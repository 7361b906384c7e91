#!/bin/bash
# The figures of benchmarks/bench/PERF.md "The local launcher on 2 cores": run --all --seeds 0,1 on
# the quick profile, through --launcher local --jobs 2 and sequentially, each with an empty cache.
# Usage: bash tools/time-launcher.sh OUT_FOLDER   (from the repository root)
set -u
out=${1:?usage: bash tools/time-launcher.sh OUT_FOLDER}
mkdir -p "$out"
for mode in local sequential; do
  extra=(); [ "$mode" = local ] && extra=(--launcher local --jobs 2)
  SEGREPRO_CACHE="$out/cache-$mode" /usr/bin/time -v python -m benchmarks run --all --seeds 0,1 "${extra[@]}" \
    --results "$out/$mode/results" --runs "$out/$mode/runs" --reports "$out/$mode/reports" > "$out/$mode.log" 2>&1
  echo "$mode: exit $?, $(grep -E 'Elapsed|Percent of CPU' "$out/$mode.log" | tr -s ' \t' ' ' | tr '\n' ';')"
done
