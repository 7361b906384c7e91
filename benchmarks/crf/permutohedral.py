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

__all__ = ["LatticeStack", "PermutohedralLattice"]

_MAX_CODE = 2**62


def _radix(columns: torch.Tensor, margin: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(low, strides)`` of a mixed-radix integer code of the rows of ``columns`` (``M x k``
    integers) with room for ``+-margin`` in every column, or None when it would not fit in int64."""
    low = columns.amin(0) - margin
    span = columns.amax(0) + margin - low + 1
    if math.prod(int(s) for s in span) >= _MAX_CODE:
        return None
    strides = torch.ones_like(span)
    strides[:-1] = torch.cumprod(span.flip(0), 0)[:-1].flip(0)  # the last column varies fastest
    return low, strides


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

        # The simplex: rank of each coordinate of the remainder (0 = largest), ties broken by
        # coordinate order, i.e. the position in a stable descending sort.
        residual = elevated - rem0
        order = torch.sort(residual, dim=1, descending=True, stable=True).indices
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(d + 1, device=device).expand(count, d + 1))
        rank += plane_offset[:, None]
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

        # Points in the same simplex share its vertices: name the simplices (remainder-0 point, ranks
        # and segment), work the vertices out once per simplex, and hand them back to the points.
        simplex = rem0[:, :d].long().div(d + 1, rounding_mode="floor")
        simplex = torch.cat([simplex, rank[:, :d]], 1)
        if segments is not None:
            if segments.shape != (count,):
                raise ValueError(f"segments must have one entry per feature ({count}), got {tuple(segments.shape)}")
            simplex = torch.cat([simplex, segments.to(device).long()[:, None]], 1)
        radix = _radix(simplex, 0)
        if radix is None:  # too wide to name with one integer: every point is its own simplex
            point_simplex, first = None, torch.arange(count, device=device)
        else:
            _, point_simplex = torch.unique(((simplex - radix[0]) * radix[1]).sum(1), return_inverse=True)
            first = torch.empty(int(point_simplex.max()) + 1, dtype=torch.long, device=device)
            first.scatter_(0, point_simplex, torch.arange(count, device=device))
        remainder = torch.arange(d + 1, device=device)
        shift = torch.where(rank[first, None, :d] <= d - remainder[None, :, None], remainder[None, :, None],
                            remainder[None, :, None] - (d + 1))
        keys = rem0[first, None, :d].long() + shift  # simplices x (d+1) vertices x d coordinates
        if segments is not None:
            keys = torch.cat([keys, simplex[first, None, -1:].expand(-1, d + 1, 1)], 2)

        # Name the vertices: a mixed-radix code with room for the neighbours (+-d per axis).
        radix = _radix(keys.reshape(-1, keys.shape[2]), d + 1)
        if radix is None:
            raise ValueError("features span too large a lattice (kernel widths far smaller than the feature range)")
        low, strides = radix
        self.codes, inverse = torch.unique(((keys - low) * strides).sum(2), return_inverse=True)
        # Row 0 of the value table is the zero of missing neighbours.
        self.offsets = (inverse if point_simplex is None else inverse[point_simplex]) + 1
        self.num_vertices = int(self.codes.numel())

        # Neighbours along lattice axis j: key - 1 in every coordinate but j, key[j] + d (and the
        # opposite); for j = d the stored coordinates all move by -1 (resp. +1). Indexed by table
        # row, so row 0 (no vertex) has row 0 as its neighbours and stays zero under the blur.
        self.neighbours = []
        no_vertex = torch.zeros(1, dtype=torch.long, device=device)
        for axis in range(d + 1):
            delta = torch.full((d,), -1, dtype=torch.long, device=device)
            if axis < d:
                delta[axis] = d
            step = (delta * strides[:d]).sum()
            self.neighbours.append((torch.cat([no_vertex, self._find(self.codes + step)]),
                                    torch.cat([no_vertex, self._find(self.codes - step)])))
        self.alpha = 1.0 / (1.0 + 2.0 ** (-d))
        self._stack: LatticeStack | None = None

    def _find(self, wanted: torch.Tensor) -> torch.Tensor:
        position = torch.searchsorted(self.codes, wanted).clamp(max=self.num_vertices - 1)
        return torch.where(self.codes[position] == wanted, position + 1, 0)

    def blur(self, table: torch.Tensor, scale: float = 1.0, reverse: bool = False) -> torch.Tensor:
        """``table`` (``(num_vertices + 1) x C``, row 0 zero) blurred with [1/2, 1, 1/2] along each
        lattice axis, times the reference's ``alpha`` and ``scale``. ``reverse`` runs the axes in the
        opposite order: the transpose (each axis blur is symmetric), the reference's backward pass."""
        for n1, n2 in (reversed(self.neighbours) if reverse else self.neighbours):
            table = torch.add(table, torch.index_select(table, 0, n1) + torch.index_select(table, 0, n2), alpha=0.5)
        return table * (self.alpha * scale)

    def filter(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` (``N x C``) splatted, blurred along every axis and sliced back (``N x C``)."""
        if self._stack is None:
            self._stack = LatticeStack([self])
        return self._stack.filter(values)


class LatticeStack:
    """Several lattices over the same points as one linear operator
    ``K v = sum_k diag(s_k) K_k diag(s_k) (m_k v)``, where ``K_k`` is lattice ``k``'s filter, ``s_k``
    a per-point scale (the dense CRF's symmetric normalisation ``D^-1/2``) and ``m_k`` a linear map of
    the channels applied on the lattice (a scalar kernel weight, or CRF-RNN's class matrices).

    Splat and slice of all lattices are one sparse (CSR, int32 indices where they fit) matrix each,
    so an iteration of mean field costs one splat and one slice product however many kernels
    there are. The two matrices hold the same entries (barycentric weight times the point's scale),
    transposed: each is the other's adjoint, which is what ``splat`` and ``slice`` use for their
    gradients (the positions are constants: the lattice depends on the image only)."""

    def __init__(self, lattices: list[PermutohedralLattice], scales: list[torch.Tensor] | None = None,
                 dtype: torch.dtype = torch.float32) -> None:
        count = lattices[0].num_points
        if any(lattice.num_points != count for lattice in lattices):
            raise ValueError("the lattices of a stack must be built on the same points")
        self.lattices = lattices
        self.num_points = count
        self.rows = [lattice.num_vertices + 1 for lattice in lattices]
        starts = [sum(self.rows[:k]) for k in range(len(lattices))]
        columns = torch.cat([lattice.offsets + start for lattice, start in zip(lattices, starts, strict=True)], 1)
        width = columns.shape[1]
        self._block = torch.cat([torch.full((lattice.dims + 1,), k, device=columns.device)
                                 for k, lattice in enumerate(lattices)])
        self._weights = torch.cat([lattice.weights for lattice in lattices], 1).to(dtype)
        index = torch.int32 if max(columns.numel(), sum(self.rows)) < 2**31 else torch.long
        flat = columns.reshape(-1).to(index)
        self._order = torch.argsort(flat, stable=True)  # int32 sorts about twice as fast
        vertex_rows = torch.zeros(sum(self.rows) + 1, dtype=torch.long, device=flat.device)
        vertex_rows[1:] = torch.cumsum(torch.bincount(flat, minlength=sum(self.rows)), 0)
        self._structure = {
            "slice": (torch.arange(0, count * width + 1, width, device=flat.device).to(index), flat,
                      (count, sum(self.rows))),
            "splat": (vertex_rows.to(index), (self._order // width).to(index), (sum(self.rows), count)),
        }
        self.set_scales(scales)

    def set_scales(self, scales: list[torch.Tensor] | None) -> None:
        """Scale the points of lattice ``k`` by ``scales[k]`` (``N``) on both sides; None: all ones."""
        entries = self._weights
        if scales is not None:
            entries = entries * torch.stack([s.to(entries.dtype) for s in scales], 1)[:, self._block]
        entries = entries.reshape(-1)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            rows, columns, size = self._structure["slice"]
            self._slice = torch.sparse_csr_tensor(rows, columns, entries, size, check_invariants=False)
            rows, columns, size = self._structure["splat"]
            self._splat = torch.sparse_csr_tensor(rows, columns, entries[self._order], size, check_invariants=False)

    def splat(self, values: torch.Tensor) -> list[torch.Tensor]:
        """``values`` (``N x C``) on each lattice: one table per lattice, row 0 zero."""
        if values.shape[0] != self.num_points:
            raise ValueError(f"values have {values.shape[0]} rows, the lattice {self.num_points} points")
        return list(_SparseProduct.apply(values, self._splat, self._slice).split(self.rows))

    def blur(self, tables: list[torch.Tensor], scales: tuple[float, ...] | None = None) -> list[torch.Tensor]:
        """Each table blurred on its lattice, times ``scales[k]`` (a kernel weight; default 1)."""
        scales = scales or (1.0,) * len(tables)
        return [lattice.blur(table, scale) for lattice, table, scale in zip(self.lattices, tables, scales, strict=True)]

    def slice(self, tables: list[torch.Tensor]) -> torch.Tensor:
        """The sum over lattices of each table read back at the points (``N x C``)."""
        return _SparseProduct.apply(torch.cat(tables), self._slice, self._splat)

    def filter(self, values: torch.Tensor) -> torch.Tensor:
        """The operator with every ``m_k`` the identity."""
        return self.slice(self.blur(self.splat(values)))

    def filter_each(self, values: torch.Tensor) -> list[torch.Tensor]:
        """Each lattice's filter of ``values`` (N x C) on its own (no gradient; e.g. ``K_k 1``)."""
        tables = self.blur(self.splat(values))
        zeros = [torch.zeros_like(table) for table in tables]
        return [self.slice([table if j == k else zero for j, zero in enumerate(zeros)])
                for k, table in enumerate(tables)]


class _SparseProduct(torch.autograd.Function):
    """``matrix @ values`` whose gradient is ``transpose @ grad``: splat and slice are each
    other's transpose, so each one's backward is the other."""

    @staticmethod
    def forward(ctx, values: torch.Tensor, matrix: torch.Tensor, transpose: torch.Tensor) -> torch.Tensor:
        ctx.transpose = transpose
        return matrix @ values.contiguous()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return ctx.transpose @ grad.contiguous(), None, None
