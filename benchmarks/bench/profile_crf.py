"""Where the torch dense CRF spends its time on one 500x375 image (the input of
``benchmarks.bench.crf``): a ``torch.profiler`` table of the operators, self time first.

    python -m benchmarks.bench.profile_crf [--threads 1] [--rows 25] [--cpu-time 5]

Used to find what to speed up in ``benchmarks/crf/permutohedral.py`` (figures in PERF.md).
``--cpu-time N`` instead prints the median process CPU time of N alternating calls of pydensecrf
and the torch backend: on a shared, oversubscribed machine wall time mostly measures the others.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile, record_function

from benchmarks.bench.crf import crf_inputs
from benchmarks.crf.dense_crf import CRFParams, TorchDenseCRF, dense_crf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--cpu-time", type=int, default=0, metavar="N")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image, probs, origin = crf_inputs()
    params = CRFParams()
    TorchDenseCRF([image], [probs]).refine(params)  # warm-up
    if args.cpu_time:
        calls = {"pydensecrf": lambda: dense_crf(image, probs, params, "pydensecrf"),
                 f"torch ({args.threads} thread(s))": lambda: TorchDenseCRF([image], [probs]).refine(params)}
        spent: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(args.cpu_time):
            for name, call in calls.items():
                started = time.process_time()
                call()
                spent[name].append(time.process_time() - started)
        medians = {name: 1000 * float(np.median(values)) for name, values in spent.items()}
        reference = medians["pydensecrf"]
        for name, ms in medians.items():
            print(f"{name:<22} {ms:8.1f} ms CPU per image  {reference / ms:.2f}x vs pydensecrf")
        return
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
