"""The statistics that ``report``, ``check`` and ``compare`` share: mIoU of summed per-image
counts, the paired bootstrap of an mIoU difference over the same images, and the Student-t
interval of a mean over seeds. A library module: no command imports another command."""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.stats import t as student_t

from benchmarks.evaluation import iou_from_counts

__all__ = ["miou_from_counts", "paired_bootstrap", "seed_interval", "seeds_to_decide"]


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


def _t975(degrees_of_freedom: int) -> float:
    return float(student_t.ppf(0.975, degrees_of_freedom))


def seed_interval(differences: list[float]) -> dict[str, float | int | None]:
    """Mean of per-seed values (an mIoU, or a paired difference) and its 95% Student-t interval
    (needs >= 2 seeds; ``low`` and ``high`` are ``None`` below that)."""
    n = len(differences)
    mean = float(np.mean(differences)) if n else math.nan
    if n < 2:
        return {"mean": mean, "low": None, "high": None, "seeds": n}
    half = _t975(n - 1) * float(np.std(differences, ddof=1)) / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "seeds": n}


def seeds_to_decide(differences: list[float], most: int = 100) -> int | None:
    """The fewest seeds whose 95% t interval would exclude 0 if the per-seed values kept the mean
    and sd of ``differences`` (a projection, not a measurement); ``None`` with fewer than 2 values,
    a mean of 0, or more than ``most`` seeds needed."""
    if len(differences) < 2 or (mean := abs(float(np.mean(differences)))) == 0:
        return None
    sd = float(np.std(differences, ddof=1))
    return next((n for n in range(2, most + 1) if _t975(n - 1) * sd / math.sqrt(n) < mean), None)
