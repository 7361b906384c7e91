"""``python -m benchmarks caffe-blobs FILE.caffemodel``: each layer's name, type and blobs (shape
as stored, mean and standard deviation), read with :mod:`methods.caffemodel` (no Caffe needed).

The statistics are taken in chunks over the memory-mapped blobs, so a 550 MB VGG-16 file needs
no copy of any blob (the largest, fc6, is 411 MB)."""

from __future__ import annotations

import os

import numpy as np

from methods.caffemodel import read_caffemodel

__all__ = ["blob_rows"]

_CHUNK = 1 << 16  # values per step of the statistics (float64 temporaries of 512 KiB)


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    """Mean and population standard deviation in float64, two passes over ``_CHUNK``-value slices."""
    if values.size == 0:
        return float("nan"), float("nan")
    chunks = [values[i:i + _CHUNK] for i in range(0, values.size, _CHUNK)]
    mean = sum(float(chunk.sum(dtype=np.float64)) for chunk in chunks) / values.size
    squares = sum(float(np.square(chunk.astype(np.float64) - mean).sum()) for chunk in chunks)
    return mean, float(np.sqrt(squares / values.size))


def blob_rows(path: str | os.PathLike[str]) -> list[dict[str, object]]:
    """One row per layer: ``layer``, ``type`` and ``blobs`` (each ``shape``, ``mean``, ``std``)."""
    rows = []
    for layer in read_caffemodel(path):
        blobs = []
        for blob in layer.blobs:
            mean, std = _mean_std(blob.data)
            blobs.append({"shape": list(blob.shape), "mean": mean, "std": std})
        rows.append({"layer": layer.name, "type": layer.type, "blobs": blobs})
    return rows
