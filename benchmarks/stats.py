"""The statistics that ``report``, ``check`` and ``compare`` share: mIoU of summed per-image
counts, the paired bootstrap of an mIoU difference over the same images, and the Student-t
interval of a mean over seeds. A library module: no command imports another command."""

from __future__ import annotations

import math
import warnings

import numpy as np

from benchmarks.evaluation import iou_from_counts

__all__ = ["miou_from_counts", "paired_bootstrap", "seed_interval"]


def miou_from_counts(summed: np.ndarray) -> np.ndarray:
    """mIoU of summed per-image counts ``(..., 3, C)`` = (intersection, ground truth, prediction),
    the evaluator's own formula."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample without any labelled pixel: NaN
        return np.nanmean(iou_from_counts(summed), axis=-1)


def paired_bootstrap(new: np.ndarray, base: np.ndarray, resamples: int = 2000, seed: int = 0,
                     chunk: int = 250) -> dict[str, float]:
    """mIoU(new) − mIoU(base) on the same images (``images x 3 x C`` counts each) and its 95%
    percentile interval, resampling images with replacement (paired: one draw for both)."""
    if new.shape != base.shape:
        raise ValueError(f"counts cover different images: {new.shape} vs {base.shape}")
    rng = np.random.default_rng(seed)
    images = new.shape[0]
    differences = []
    for start in range(0, resamples, chunk):
        draws = rng.integers(0, images, size=(min(chunk, resamples - start), images))
        differences.append(miou_from_counts(new[draws].sum(1)) - miou_from_counts(base[draws].sum(1)))
    samples = np.concatenate(differences)
    low, high = np.percentile(samples, [2.5, 97.5])
    return {"difference": float(miou_from_counts(new.sum(0)) - miou_from_counts(base.sum(0))),
            "low": float(low), "high": float(high), "resamples": resamples, "images": images}


_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def seed_interval(differences: list[float]) -> dict[str, float | int | None]:
    """Mean of per-seed values (an mIoU, or a paired difference) and its 95% Student-t interval
    (needs >= 2 seeds; ``low`` and ``high`` are ``None`` below that)."""
    n = len(differences)
    mean = float(np.mean(differences)) if n else math.nan
    if n < 2:
        return {"mean": mean, "low": None, "high": None, "seeds": n}
    half = _T975.get(n - 1, 1.96) * float(np.std(differences, ddof=1)) / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "seeds": n}
