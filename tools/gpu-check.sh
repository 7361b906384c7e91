#!/usr/bin/env bash
# The GPU figures of benchmarks/bench/PERF.md in one call of a lent machine (9 minutes): the bf16
# peak and `bench --size paper --json` of every method, each in its own process so one failure
# loses one row; the dense-CRF bench; the paper profile end to end on genuine VOC images (`run --all`,
# full width and batch, a few iterations per stage, torch CRF), records and reports tarred for this
# machine; and profiles of the training steps that bench predicts are bound by the host.
#
# Prepare here (../shared does not travel), then run from the repository root on the device:
#   mkdir -p .gpu && echo /.gpu/ >> .git/info/exclude
#   PYTHONPATH=. python -c "import sys; sys.path.insert(0, '.ci'); from pathlib import Path; from paper_tree import \
#     build; build(Path('../shared/data/voc-real-mini/VOCdevkit/VOC2012'), Path('.gpu/tree'), 16, 16, 8, 4)"
#   python -m benchmarks prepare-data --data .gpu/tree --sbd .gpu/tree/sbd --coco .gpu/tree/coco
#   cp ../shared/data/voc-real-mini/VOCdevkit/VOC2012/JPEGImages/2007_000123.jpg .gpu/; git rev-parse HEAD > .gpu/commit
#   device run (carry .gpu): bash tools/gpu-check.sh
# Output (at most 8 files, as the device tool returns them): $OUT/{env.txt,bench.jsonl,crf.json,profile.txt,run.log,
# run.tar.gz}. GPU_CHECK_DEVICE=cpu GPU_CHECK_SECONDS=N tries it here (reduced size).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu-check}
mkdir -p "$out"
device=${GPU_CHECK_DEVICE:-cuda}
python=${PYTHON:-python3}
export PYTHONPATH=. PYTHONUNBUFFERED=1 SEGREPRO_CACHE=/tmp/gpu-check-cache
start=$(date +%s)
say() { echo "[gpu-check +$(( $(date +%s) - start ))s] $*"; }

{ cat .gpu/commit; date -u +%FT%TZ; nvidia-smi; nproc; free -g
  $python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"
} > "$out/env.txt" 2>&1

budget=${GPU_CHECK_SECONDS:-550}  # the whole script; the device tool allows 600 s a command
left() { echo $(( budget - ( $(date +%s) - start ) )); }
# the methods of the paper's tables first, then the variants (COCO stages, joint fine-tuning)
methods=$($python -c "from benchmarks.recipes import recipe_methods as m; first = ['fcn32s', 'fcn16s', 'fcn8s', \
'deeplab_v1', 'frontend', 'context_basic', 'context_large']; print(*first, *(x for x in m() if x not in first))")
for method in $methods; do
    [ "$(left)" -gt 330 ] || { say "bench $method skipped: time"; continue; }
    say "bench $method"
    timeout 90 $python -m benchmarks bench --methods "$method" --device "$device" --json 2> "$out/bench-$method.err" \
        | $python -c "import json, sys; print(json.dumps(json.load(sys.stdin)))" >> "$out/bench.jsonl" \
        || { say "bench $method failed: $(tail -c 600 "$out/bench-$method.err")"; }
    rm -f "$out/bench-$method.err"
done

say "dense CRF bench"
timeout 90 $python -m benchmarks.bench.crf --repeats 5 --batch 8 --threads "1,$(nproc)" --image .gpu/2007_000123.jpg \
    --json > "$out/crf.json" || say "CRF bench failed"

say "paper profile end to end on .gpu/tree (20 iterations a stage)"
work=/tmp/gpu-check-run
tiny=(--all --data .gpu/tree --profile paper --set iterations=20 --set pretrained=false --set crfrnn_iterations=5
      --crf-backend torch --eval-batch 8 --device "$device" --results "$work/results" --runs "$work/runs")
$python -m benchmarks run "${tiny[@]}" --plan > "$out/run.log" 2>&1
seconds=$(( $(left) - 110 ))  # leave time for the profiles
if [ "$seconds" -gt 10 ]; then
    timeout "$seconds" $python -m benchmarks run "${tiny[@]}" --reports "$work/reports" >> "$out/run.log" 2>&1
    say "run --all: rc $? (124: stopped at its $seconds s)"
fi
(cd "$work" && tar -czf "$out/run.tar.gz" --exclude '*.pt' --exclude '*.npy' --exclude '*.npz' results reports runs)
for profiled in "fcn8s" "deeplab_v1" "frontend" "frontend --scoring"; do
    [ "$(left)" -gt 15 ] || { say "profile $profiled skipped: time"; continue; }
    say "profile $profiled"
    # shellcheck disable=SC2086
    timeout "$(( $(left) < 45 ? $(left) : 45 ))" $python -m benchmarks.bench.profile_method $profiled --device "$device" \
        --rows 20 >> "$out/profile.txt" 2>&1 || say "profile $profiled failed"
done

say "done"
