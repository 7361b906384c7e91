#!/bin/bash
# The figures of benchmarks/bench/PERF.md "The local launcher on 2 cores": run --all --seeds 0,1 on
# the quick profile, each with an empty cache: sequentially with 1 torch thread, through
# --launcher local --jobs 2 (1 thread per job), and sequentially with 2 threads; then whether the
# launcher's records equal the 1-thread sequential run's (weights sha256 and metrics).
# Usage: bash tools/time-launcher.sh OUT_FOLDER   (from the repository root)
set -u
out=${1:?usage: bash tools/time-launcher.sh OUT_FOLDER}
mkdir -p "$out"
for mode in sequential1 local sequential2; do
  extra=(); threads=1
  [ "$mode" = local ] && extra=(--launcher local --jobs 2)
  [ "$mode" = sequential2 ] && threads=2
  OMP_NUM_THREADS=$threads SEGREPRO_CACHE="$out/cache-$mode" /usr/bin/time -v python -m benchmarks run --all \
    --seeds 0,1 "${extra[@]}" --results "$out/$mode/results" --runs "$out/$mode/runs" --reports "$out/$mode/reports" \
    > "$out/$mode.log" 2>&1
  echo "$mode: exit $?, $(grep -E 'Elapsed|Percent of CPU' "$out/$mode.log" | tr -s ' \t' ' ' | tr '\n' ';')"
done
python - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
same = differ = 0
for path in sorted((out / "sequential1/results/records").rglob("seed*.json")):
    other = out / "local/results/records" / path.relative_to(out / "sequential1/results/records")
    a, b = (json.loads(p.read_text()) if p.is_file() else {} for p in (path, other))
    equal = all(a.get(k) == b.get(k) for k in ("trained_weights_sha256", "metrics"))
    same, differ = same + equal, differ + (not equal)
print(f"launcher vs 1-thread sequential: {same} records equal, {differ} differ")
PY
