"""Where the torch dense CRF spends its time on one 500x375 image (the input of
``benchmarks.bench.crf``): a ``torch.profiler`` table of the operators, self time first.

    python -m benchmarks.bench.profile_crf [--threads 1] [--rows 25]

Used to find what to speed up in ``benchmarks/crf/permutohedral.py`` (figures in PERF.md).
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from benchmarks.bench.crf import crf_inputs
from benchmarks.crf.dense_crf import CRFParams, TorchDenseCRF


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", type=int, default=25)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image, probs, origin = crf_inputs()
    params = CRFParams()
    TorchDenseCRF([image], [probs]).refine(params)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as profiled:
        with record_function("build"):
            crf = TorchDenseCRF([image], [probs])
            crf.refine(CRFParams(iterations=1))
        with record_function("mean_field"):
            crf.refine(params)
    print(f"image: {origin}, {args.threads} thread(s)")
    print(profiled.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
