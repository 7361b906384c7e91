"""Gaussian filtering on the permutohedral lattice (Adams, Baek & Davis, Eurographics 2010), built
exactly as Krähenbühl & Koltun's fully connected CRF code builds it (NIPS 2011), in PyTorch.

Every step is a tensor operation, so the same code runs on the CPU and on CUDA:

* ``__init__`` embeds each ``d``-dimensional feature in the lattice, finds the enclosing simplex,
  its ``d + 1`` vertices and barycentric weights, names the vertices with ``torch.unique`` (the
  hash table of the reference) and looks up each vertex's two neighbours along each of the
  ``d + 1`` lattice axes with ``searchsorted``.
* ``filter`` splats values onto the vertices, blurs along each axis with the kernel
  [1/2, 1, 1/2], and slices back with the barycentric weights, scaled by the reference's constant
  ``1 / (1 + 2^-d)``. Splat and slice are sparse (CSR) matrix products, the blur is two gathers
  per axis.

The rounding of the reference is kept (nearest remainder-0 point, ties down; ranks with ties
broken by coordinate order; a missing neighbour contributes zero), so the lattice, and therefore
the filtered values, are those of the reference up to float32 summation order. Several images
are filtered at once by giving each its own ``segment``: lattice points never join across
segments.
"""

from __future__ import annotations

import math
import warnings

import torch

__all__ = ["PermutohedralLattice"]

_MAX_CODE = 2**62


class PermutohedralLattice:
    """The lattice of ``features`` (``N x d`` float, already divided by the kernel widths), a
    linear operator ``filter`` that approximates ``out_i = sum_j exp(-|f_i - f_j|^2 / 2) v_j``."""

    def __init__(self, features: torch.Tensor, segments: torch.Tensor | None = None) -> None:
        if features.ndim != 2 or not features.is_floating_point():
            raise ValueError(f"features must be a float N x d tensor, got {features.dtype} {tuple(features.shape)}")
        count, d = features.shape
        device = features.device
        features = features.float()
        self.dims = d
        self.num_points = count

        # Elevate onto the hyperplane x_0 + ... + x_d = 0 (Adams et al. 2010, p. 5), scaled so the
        # blur below has the standard deviation of a unit Gaussian.
        inv_std_dev = math.sqrt(2.0 / 3.0) * (d + 1)
        scale = torch.tensor([inv_std_dev / math.sqrt((i + 2) * (i + 1)) for i in range(d)], device=device)
        scaled = features * scale
        suffix = torch.flip(torch.cumsum(torch.flip(scaled, [1]), 1), [1])  # suffix[:, k] = sum_{i>=k}
        elevated = torch.empty(count, d + 1, device=device)
        elevated[:, 0] = suffix[:, 0]
        steps = torch.arange(1, d + 1, device=device, dtype=torch.float32)
        tail = torch.cat([suffix[:, 1:], torch.zeros(count, 1, device=device)], 1)
        elevated[:, 1:] = tail - steps * scaled

        # The nearest remainder-0 lattice point, ties rounded down.
        down_factor = torch.tensor(1.0 / (d + 1), dtype=torch.float32)
        v = elevated * down_factor.to(device)
        up = torch.ceil(v) * (d + 1)
        down = torch.floor(v) * (d + 1)
        rem0 = torch.where(up - elevated < elevated - down, up, down)
        plane_offset = (rem0.sum(1) / (d + 1)).round().long()

        # The simplex: rank of each coordinate of the remainder, ties broken by coordinate order.
        residual = elevated - rem0
        greater = (residual[:, None, :] > residual[:, :, None]).sum(2)
        earlier = torch.tril(torch.ones(d + 1, d + 1, dtype=torch.bool, device=device), diagonal=-1)
        ties = ((residual[:, None, :] == residual[:, :, None]) & earlier).sum(2)
        rank = greater + ties + plane_offset[:, None]
        below, above = rank < 0, rank > d
        rank = torch.where(below, rank + d + 1, torch.where(above, rank - d - 1, rank))
        rem0 = torch.where(below, rem0 + d + 1, torch.where(above, rem0 - d - 1, rem0))

        # Barycentric weights (p. 10), then the d + 1 enclosing vertices.
        contribution = (elevated - rem0) * down_factor.to(device)
        barycentric = torch.zeros(count, d + 2, device=device)
        barycentric.scatter_add_(1, d - rank, contribution)
        barycentric.scatter_add_(1, d - rank + 1, -contribution)
        barycentric[:, 0] += 1.0 + barycentric[:, d + 1]
        self.weights = barycentric[:, : d + 1].contiguous()

        remainder = torch.arange(d + 1, device=device)
        shift = torch.where(rank[:, None, :d] <= d - remainder[None, :, None], remainder[None, :, None],
                            remainder[None, :, None] - (d + 1))
        keys = rem0[:, None, :d].long() + shift  # N x (d+1) vertices x d coordinates
        if segments is not None:
            if segments.shape != (count,):
                raise ValueError(f"segments must have one entry per feature ({count}), got {tuple(segments.shape)}")
            keys = torch.cat([keys, segments.to(device).long()[:, None, None].expand(count, d + 1, 1)], 2)

        # Name the vertices: a mixed-radix code with room for the neighbours (+-d per axis).
        low = keys.reshape(-1, keys.shape[2]).amin(0) - (d + 1)
        span = keys.reshape(-1, keys.shape[2]).amax(0) + (d + 1) - low + 1
        if math.prod(int(s) for s in span) >= _MAX_CODE:
            raise ValueError("features span too large a lattice (kernel widths far smaller than the feature range)")
        strides = torch.ones_like(span)
        strides[1:] = torch.cumprod(span.flip(0), 0).flip(0)[1:]
        codes = ((keys - low) * strides).sum(2)
        self.codes, inverse = torch.unique(codes, return_inverse=True)
        self.offsets = inverse + 1  # row 0 of the value table is the zero of missing neighbours
        self.num_vertices = int(self.codes.numel())

        # Neighbours along lattice axis j: key - 1 in every coordinate but j, key[j] + d (and the
        # opposite); for j = d the stored coordinates all move by -1 (resp. +1).
        self.neighbours = []
        for axis in range(d + 1):
            delta = torch.full((d,), -1, dtype=torch.long, device=device)
            if axis < d:
                delta[axis] = d
            step = (delta * strides[:d]).sum()
            self.neighbours.append((self._find(self.codes + step), self._find(self.codes - step)))
        self.alpha = 1.0 / (1.0 + 2.0 ** (-d))

        # Splat and slice as sparse matrices: row i of ``_slice`` holds point i's barycentric
        # weights at its d + 1 vertices; ``_splat`` is its transpose (rows sorted by vertex).
        size = (count, self.num_vertices + 1)
        flat_offsets, flat_weights = self.offsets.reshape(-1), self.weights.reshape(-1)
        point_rows = torch.arange(0, count * (d + 1) + 1, d + 1, device=device)
        order = torch.argsort(flat_offsets, stable=True)
        vertex_rows = torch.zeros(size[1] + 1, dtype=torch.long, device=device)
        vertex_rows[1:] = torch.cumsum(torch.bincount(flat_offsets, minlength=size[1]), 0)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            self._slice = torch.sparse_csr_tensor(point_rows, flat_offsets, flat_weights, size,
                                                  check_invariants=False)
            self._splat = torch.sparse_csr_tensor(vertex_rows, order // (d + 1), flat_weights[order],
                                                  (size[1], size[0]), check_invariants=False)

    def _find(self, wanted: torch.Tensor) -> torch.Tensor:
        position = torch.searchsorted(self.codes, wanted).clamp(max=self.num_vertices - 1)
        return torch.where(self.codes[position] == wanted, position + 1, 0)

    def filter(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` (``N x C``) splatted, blurred along every axis and sliced back (``N x C``)."""
        if values.shape[0] != self.num_points:
            raise ValueError(f"values have {values.shape[0]} rows, the lattice {self.num_points} points")
        table = self._splat @ values
        for n1, n2 in self.neighbours:
            blurred = table.clone()
            blurred[1:] += 0.5 * (table[n1] + table[n2])
            table = blurred
        return (self._slice @ table) * self.alpha
