"""The CPU measurements behind the choices in ``benchmarks/crf/permutohedral.py`` and
``dense_crf.py``: each line times two ways of doing one step of the dense CRF on the bench image
(``benchmarks.bench.crf``: 500x375, 21 labels), median microseconds, one thread.

    python -m benchmarks.bench.crf_primitives [--threads 1] [--repeats 21]
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.bench.crf import crf_inputs
from benchmarks.crf.dense_crf import CRFParams, TorchDenseCRF


def _median_us(call: Callable[[], object], repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return 1e6 * float(np.median(times))


def _csr(bags: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor], rows: int, columns: int) -> torch.Tensor:
    """The weighted bags as the sparse CSR matrix the lattice used before (``rows x columns``)."""
    indices, boundaries, weights = bags
    if boundaries is None:
        boundaries = torch.arange(0, indices.numel() + 1, indices.shape[1])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(boundaries.to(indices.dtype), indices.reshape(-1), weights.reshape(-1),
                                       (rows, columns), check_invariants=False)


def comparisons(repeats: int) -> list[tuple[str, str, float, str, float]]:
    """``(step, way A, us, way B, us)`` for each step."""
    image, probs, _ = crf_inputs()
    crf = TorchDenseCRF([image], [probs])
    crf.refine(CRFParams(iterations=1))
    stack = crf.kernels.stack(CRFParams().theta_gamma, CRFParams().theta_alpha, CRFParams().theta_beta)
    q = crf.probs / crf.probs.sum(1, keepdim=True)
    table = torch.cat(stack.blur(stack.splat(q)))
    points, rows = q.shape[0], table.shape[0]
    splat_matrix, slice_matrix = _csr(stack._splat, rows, points), _csr(stack._slice, points, rows)
    chunk = torch.randn(16384, q.shape[1]) * 4
    flat = stack._slice[2].reshape(-1)
    order = torch.randperm(flat.numel())
    pixels_by_coordinate = torch.randint(0, 100, (5, points))
    some = torch.randint(0, points, (points // 3,))

    def exp2_normalise() -> torch.Tensor:
        x = chunk.mul(math.log2(math.e)).exp2_()
        return x.div_(x.sum(1, keepdim=True))

    return [
        ("splat", "CSR matmul", _median_us(lambda: splat_matrix @ q, repeats),
         "embedding_bag", _median_us(lambda: stack.splat(q), repeats)),
        ("slice", "CSR matmul", _median_us(lambda: slice_matrix @ table, repeats),
         "embedding_bag", _median_us(lambda: F.embedding_bag(stack._slice[0], table, mode="sum",
                                                             per_sample_weights=stack._slice[2]), repeats)),
        ("exp of a 16384 x 21 chunk", "exp", _median_us(lambda: chunk.exp(), repeats),
         "exp2", _median_us(lambda: chunk.exp2(), repeats)),
        ("normalise a 16384 x 21 chunk", "torch.softmax", _median_us(lambda: torch.softmax(chunk, 1), repeats),
         "exp2, sum, divide", _median_us(exp2_normalise, repeats)),
        ("gather 9N weights", "weights[order]", _median_us(lambda: flat[order], repeats),
         "index_select", _median_us(lambda: flat.index_select(0, order), repeats)),
        ("gather columns of 5 x N", "index_select(1, ...)",
         _median_us(lambda: pixels_by_coordinate.index_select(1, some), repeats),
         "index_select per row", _median_us(lambda: [row.index_select(0, some) for row in pixels_by_coordinate],
                                            repeats)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"| step | way A | us | way B | us | B vs A |  ({args.threads} thread(s), median of {args.repeats})")
    print("|---|---|---|---|---|---|")
    for step, first, first_us, second, second_us in comparisons(args.repeats):
        print(f"| {step} | {first} | {first_us:,.0f} | {second} | {second_us:,.0f} | {first_us / second_us:.1f}x |")


if __name__ == "__main__":
    main()
