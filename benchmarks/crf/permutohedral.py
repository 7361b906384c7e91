"""Gaussian filtering on the permutohedral lattice (Adams, Baek & Davis, Eurographics 2010), built
exactly as Krähenbühl & Koltun's fully connected CRF code builds it (NIPS 2011), in PyTorch.

Every step is a tensor operation, so the same code runs on the CPU and on CUDA:

* ``__init__`` embeds each ``d``-dimensional feature in the lattice, finds the enclosing simplex,
  its ``d + 1`` vertices and barycentric weights, names the vertices with ``torch.unique`` (the
  hash table of the reference) and looks up each vertex's two neighbours along each of the
  ``d + 1`` lattice axes with ``searchsorted``.
* ``filter`` splats values onto the vertices, blurs along each axis with the kernel
  [1/2, 1, 1/2], and slices back with the barycentric weights, scaled by the reference's constant
  ``1 / (1 + 2^-d)``. Splat, each axis of the blur and slice are each one weighted
  ``embedding_bag`` (a fused gather-and-sum; FBGEMM on the CPU).

The rounding of the reference is kept (nearest remainder-0 point, ties down; ranks with ties
broken by coordinate order; a missing neighbour contributes zero), so the lattice, and therefore
the filtered values, are those of the reference up to float32 summation order. Several images
are filtered at once by giving each its own ``segment``: lattice points never join across
segments.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from benchmarks.errors import CRFParameterError

__all__ = ["LatticeStack", "PermutohedralLattice"]

_MAX_CODE = 2**62


def _radix(columns: list[torch.Tensor], margin: int) -> tuple[list[int], list[int], torch.dtype] | None:
    """``(lows, strides, dtype)`` of a mixed-radix integer code of the rows of ``columns`` (``k``
    integer vectors of one length) with room for ``+-margin`` in every column, in int32 where it
    fits (it sorts about twice as fast), or None when it would not fit in int64."""
    lows = [int(column.min()) - margin for column in columns]
    spans = [int(column.max()) + margin - low + 1 for column, low in zip(columns, lows, strict=True)]
    total = math.prod(spans)
    if total >= _MAX_CODE:
        return None
    strides = [math.prod(spans[k + 1:]) for k in range(len(spans))]  # the last column varies fastest
    return lows, strides, torch.int32 if total < 2**31 else torch.long


def _code(columns: list[torch.Tensor], radix: tuple[list[int], list[int], torch.dtype]) -> torch.Tensor:
    lows, strides, dtype = radix
    code = torch.zeros(columns[0].shape, dtype=dtype, device=columns[0].device)
    for column, low, stride in zip(columns, lows, strides, strict=True):
        code += (column.to(dtype) - low) * stride
    return code


class PermutohedralLattice:
    """The lattice of ``features`` (``N x d`` float, already divided by the kernel widths), a
    linear operator ``filter`` that approximates ``out_i = sum_j exp(-|f_i - f_j|^2 / 2) v_j``.

    The construction works on one length-``N`` vector per coordinate (``(d + 1) x N`` tensors):
    the reference's per-point loops over ``d + 1`` coordinates become ``d + 1`` vector operations,
    which is several times faster than reducing over a short last dimension."""

    def __init__(self, features: torch.Tensor, segments: torch.Tensor | None = None) -> None:
        # One algorithm, kept in one function on purpose (its length is allowed by tests/test_sizes.py):
        # Adams et al.'s lattice construction (elevate, find the enclosing simplex, barycentric weights,
        # hash the vertices, blur neighbours), step by step as the reference's PermutohedralLattice::init.
        if features.ndim != 2 or not features.is_floating_point():
            raise ValueError(f"features must be a float N x d tensor, got {features.dtype} {tuple(features.shape)}")
        count, d = features.shape
        device = features.device
        if segments is not None and segments.shape != (count,):
            raise ValueError(f"segments must have one entry per feature ({count}), got {tuple(segments.shape)}")
        coordinates = features.float().t().contiguous()
        self.dims = d
        self.num_points = count

        # Elevate onto the hyperplane x_0 + ... + x_d = 0 (Adams et al. 2010, p. 5), scaled so the
        # blur below has the standard deviation of a unit Gaussian; sums in the reference's order.
        inv_std_dev = math.sqrt(2.0 / 3.0) * (d + 1)
        scales = torch.tensor([inv_std_dev / math.sqrt((i + 2) * (i + 1)) for i in range(d)])
        elevated = torch.empty(d + 1, count, device=device)
        running = torch.zeros(count, device=device)
        for j in range(d, 0, -1):
            scaled = coordinates[j - 1] * scales[j - 1].item()
            torch.sub(running, scaled * j, out=elevated[j])  # two roundings, as the reference
            running += scaled
        elevated[0] = running

        # The nearest remainder-0 lattice point, ties rounded down.
        down_factor = torch.tensor(1.0 / (d + 1), dtype=torch.float32).item()
        v = elevated * down_factor
        up = torch.ceil(v).mul_(d + 1)
        down = torch.floor(v).mul_(d + 1)
        rem0 = torch.where(up - elevated < elevated - down, up, down)
        plane_offset = rem0.sum(0).div_(d + 1).round_()

        # The simplex: rank of each coordinate of the remainder (0 = largest), the reference's
        # pairwise comparisons (ties go to the later coordinate), then back onto the plane.
        residual = elevated - rem0
        ranks = plane_offset.expand(d + 1, count).clone()  # whole numbers in float: exact, and faster than int64
        for i in range(d):
            for j in range(i + 1, d + 1):
                smaller = residual[i] < residual[j]
                ranks[i] += smaller
                ranks[j] += ~smaller
        wrapped = torch.remainder(ranks, d + 1)
        rem0 += wrapped - ranks
        rank = wrapped.long()

        # Barycentric weights (p. 10): with v_p the scaled remainder of the coordinate of rank p,
        # weight k is v_(d-k) - v_(d-k+1), and weight 0 wraps around to 1 + v_d - v_0.
        by_rank = torch.empty(d + 1, count, device=device).scatter_(0, rank, (elevated - rem0).mul_(down_factor))
        by_rank = by_rank.flip(0)
        weights = torch.empty(d + 1, count, device=device)
        torch.sub(by_rank[1:], by_rank[:-1], out=weights[1:])
        torch.add(by_rank[0], 1.0 - by_rank[d], out=weights[0])
        self.weights = weights.t().contiguous()

        # Points in the same simplex share its vertices: name the simplices (remainder-0 point, ranks
        # and segment), work the vertices out once per simplex, and hand them back to the points.
        corner = rem0[:d].long()
        segment = [] if segments is None else [segments.to(device)]
        simplex = [*corner.div(d + 1, rounding_mode="floor"), *rank[:d], *segment]
        radix = _radix(simplex, 0)
        points = torch.arange(count, device=device)
        if radix is None:  # too wide to name with one integer: every point is its own simplex
            point_simplex, first = None, points
        else:
            _, point_simplex = torch.unique(_code(simplex, radix), sorted=False, return_inverse=True)
            first = torch.full((int(point_simplex.max()) + 1,), count, device=device)  # each simplex's first point
            first.scatter_reduce_(0, point_simplex, points, "amin")
        corner, rank = ([row.index_select(0, first) for row in rows] for rows in (corner, rank[:d]))  # dim 1 is slow
        segment = [s[first].expand(d + 1, -1).reshape(-1) for s in segment]

        # Vertex r of a simplex: the corner plus r in every coordinate, less d + 1 in those of rank
        # above d - r. Named by a mixed-radix code with room for the neighbours (+-d per axis).
        remainder = torch.arange(d + 1, device=device)[:, None]
        keys = [(corner[i] + remainder - (d + 1) * (rank[i] > d - remainder)).reshape(-1) for i in range(d)]
        radix = _radix(keys + segment, d + 1)
        if radix is None:
            raise CRFParameterError("features span too large a lattice (kernel widths far smaller than the feature "
                                    "range)")
        codes, vertex = torch.unique(_code(keys + segment, radix), sorted=False, return_inverse=True)
        self.num_vertices = vertices = int(codes.numel())

        # Table rows in the order the raster scan first meets the vertices (row 0 is the zero of
        # missing neighbours): splat, blur and slice then read nearly in order, ~20% faster here.
        vertex_first = torch.full((vertices,), count, device=device)
        vertex_first.scatter_reduce_(0, vertex, first.repeat(d + 1), "amin")
        row = torch.empty_like(vertex_first).scatter_(0, torch.argsort(vertex_first),
                                                      torch.arange(1, vertices + 1, device=device))
        offsets = row[vertex].view(d + 1, -1).t().contiguous()
        self.offsets = offsets if point_simplex is None else offsets.index_select(0, point_simplex)

        # Neighbours along lattice axis j: key - 1 in every coordinate but j, key[j] + d (and the
        # opposite); for j = d the stored coordinates all move by -1 (resp. +1). Row 0 (no vertex)
        # has row 0 as its neighbours and stays zero under the blur. The opposite neighbour is the
        # inverse of the first: v = u - step exactly when u = v + step.
        sorted_codes, by_code = torch.sort(codes)  # hashing then sorting the few names beats sorting all
        rows = torch.arange(vertices + 1, device=device)
        index = torch.int32 if vertices < 2**31 else torch.long
        self._blur_rows = []  # per axis, each table row's bag: itself and its two neighbours
        for axis in range(d + 1):
            step = sum((d if i == axis else -1) * stride for i, stride in enumerate(radix[1][:d]))
            wanted = codes + step
            position = torch.searchsorted(sorted_codes, wanted).clamp_(max=vertices - 1)
            ahead = torch.zeros_like(rows)
            ahead[row] = torch.where(sorted_codes[position] == wanted, row[by_code[position]], 0)
            behind = torch.zeros_like(rows)
            found = ahead > 0
            behind[ahead[found]] = rows[found]
            self._blur_rows.append(torch.stack([rows, ahead, behind], 1).to(index))
        self._blur_weights: dict[tuple, torch.Tensor] = {}
        self.alpha = 1.0 / (1.0 + 2.0 ** (-d))
        self._stack: LatticeStack | None = None
        self._by_vertex: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._kernel_sums: torch.Tensor | None = None

    def by_vertex(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The splat's view of the slice: the entries of ``offsets`` (flattened ``N x (d + 1)``)
        grouped by table row, the point of each, and the number in each row (row 0 has none)."""
        if self._by_vertex is None:
            flat = self.offsets.reshape(-1)
            rows = self.num_vertices + 1
            narrow = torch.int16 if rows < 2**15 else torch.int32 if rows < 2**31 else torch.long  # sorts faster
            entries = torch.argsort(flat.to(narrow), stable=True)
            index = torch.int32 if flat.numel() < 2**31 else torch.long
            self._by_vertex = (entries, torch.div(entries, self.dims + 1, rounding_mode="floor").to(index),
                               torch.bincount(flat, minlength=rows))
        return self._by_vertex

    def normaliser(self, normalisation: str) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The per-point scales ``(before, after)`` (``N`` each; ``before`` None: none) that make
        ``diag(after) K diag(before)`` this lattice's normalised kernel, ``K`` its filter, ``D = K 1``:

        * ``"after"``: ``(None, D^-1)``, each pixel's messages divided by its kernel sum
          (Krähenbühl's densecrf as DeepLab v1 built it, ``per_pixel_normalization``; CRF-RNN's
          ``MeanfieldIteration``, ``1 / (K 1 + 1e-20)``; pydensecrf's ``NORMALIZE_AFTER``);
        * ``"symmetric"``: ``(D^-1/2, D^-1/2)``, pydensecrf's default ``NORMALIZE_SYMMETRIC``."""
        if normalisation not in ("after", "symmetric"):
            raise ValueError(f"unknown kernel normalisation {normalisation!r}; known: after, symmetric")
        if self._kernel_sums is None:
            splatted = torch.bincount(self.offsets.reshape(-1), weights=self.weights.reshape(-1),
                                      minlength=self.num_vertices + 1).to(self.weights.dtype)
            blurred = self.blur_axes(splatted[:, None], 1.0, reverse=False)
            self._kernel_sums = _gather_sum(blurred, (self.offsets, None, self.weights))[:, 0] + 1e-20
        if normalisation == "after":
            return None, self._kernel_sums.reciprocal()
        scale = torch.rsqrt(self._kernel_sums)
        return scale, scale

    def blur(self, table: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """``table`` (``(num_vertices + 1) x C``, row 0 zero) blurred with [1/2, 1, 1/2] along each
        lattice axis, times the reference's ``alpha`` and ``scale``; differentiable in ``table``."""
        return _Blur.apply(table, self, scale)

    def blur_axes(self, table: torch.Tensor, scale: float, reverse: bool) -> torch.Tensor:
        """``blur`` without autograd; ``reverse`` runs the axes in the opposite order, which is its
        transpose (each axis blur is symmetric): the reference's backward pass. One axis is one
        weighted ``embedding_bag``: each row's bag is itself and its two neighbours."""
        key = (table.dtype, table.device)
        if key not in self._blur_weights:
            self._blur_weights[key] = torch.tensor([1.0, 0.5, 0.5], dtype=table.dtype, device=table.device).repeat(
                self.num_vertices + 1, 1)
        weights = self._blur_weights[key]
        for rows in (reversed(self._blur_rows) if reverse else self._blur_rows):
            table = torch.nn.functional.embedding_bag(rows, table, per_sample_weights=weights, mode="sum")
        return table * (self.alpha * scale)

    def filter(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` (``N x C``) splatted, blurred along every axis and sliced back (``N x C``)."""
        if self._stack is None:
            self._stack = LatticeStack([self])
        return self._stack.filter(values)


class LatticeStack:
    """Several lattices over the same points as one linear operator
    ``K v = sum_k diag(a_k) K_k diag(b_k) (m_k v)``, where ``K_k`` is lattice ``k``'s filter, ``b_k``
    and ``a_k`` per-point scales before and after it (the dense CRF's kernel normalisation,
    ``PermutohedralLattice.normaliser``) and ``m_k`` a linear map of the channels applied on the
    lattice (a scalar kernel weight, or CRF-RNN's class matrices).

    Slice reads each point's ``d + 1`` vertices of every lattice and sums them with its barycentric
    weights times its scale: one weighted ``embedding_bag`` (a fused gather-and-sum) over the
    concatenated vertex tables, whatever the number of kernels. Splat is its transpose, the same
    entries grouped by vertex: one ``embedding_bag`` whose bags are the vertices. The gradient of
    each is the other's layout with its own scales (the positions are constants: the lattice
    depends on the image only)."""

    def __init__(self, lattices: list[PermutohedralLattice], scales: list[tuple[torch.Tensor | None, torch.Tensor]]
                 | None = None, dtype: torch.dtype = torch.float32) -> None:
        count = lattices[0].num_points
        if any(lattice.num_points != count for lattice in lattices):
            raise ValueError("the lattices of a stack must be built on the same points")
        self.lattices = lattices
        self.num_points = count
        self.rows = [lattice.num_vertices + 1 for lattice in lattices]
        starts = [sum(self.rows[:k]) for k in range(len(lattices))]
        index = torch.int32 if max(count * sum(lattice.dims + 1 for lattice in lattices), sum(self.rows)) < 2**31 \
            else torch.long
        grouped = [lattice.by_vertex() for lattice in lattices]
        bag_ends = torch.cumsum(torch.cat([counts for *_, counts in grouped]), 0)
        slice_rows = torch.cat([lattice.offsets + start for lattice, start in zip(lattices, starts, strict=True)],
                               1).to(index)
        splat_rows = torch.cat([points for _, points, _ in grouped]).to(index)
        splat_ends = torch.cat([bag_ends.new_zeros(1), bag_ends]).to(index)

        def layouts(side: list[torch.Tensor | None]) -> tuple[_Bags, _Bags]:
            """(slice, splat) bags whose weights are the barycentric weights times ``side``'s scales."""
            weights = [lattice.weights.to(dtype) * (1.0 if scale is None else scale.to(dtype)[:, None])
                       for lattice, scale in zip(lattices, side, strict=True)]
            return ((slice_rows, None, torch.cat(weights, 1)),
                    (splat_rows, splat_ends, torch.cat([w.reshape(-1).index_select(0, entries)
                                                        for w, (entries, *_) in zip(weights, grouped, strict=True)])))

        before = [b for b, _ in scales] if scales is not None else [None] * len(lattices)
        after = [a for _, a in scales] if scales is not None else [None] * len(lattices)
        self._before = layouts(before)  # splat reads these, slice-shaped for its gradient
        self._after = self._before if all(b is a for b, a in zip(before, after, strict=True)) else layouts(after)

    def splat(self, values: torch.Tensor) -> list[torch.Tensor]:
        """``values`` (``N x C``) on each lattice: one table per lattice, row 0 zero."""
        if values.shape[0] != self.num_points:
            raise ValueError(f"values have {values.shape[0]} rows, the lattice {self.num_points} points")
        slice_bags, splat_bags = self._before
        return list(_BagProduct.apply(values, splat_bags, slice_bags).split(self.rows))

    def blur(self, tables: list[torch.Tensor], scales: tuple[float, ...] | None = None) -> list[torch.Tensor]:
        """Each table blurred on its lattice, times ``scales[k]`` (a kernel weight; default 1)."""
        scales = scales or (1.0,) * len(tables)
        return [lattice.blur(table, scale) for lattice, table, scale in zip(self.lattices, tables, scales, strict=True)]

    def slice(self, tables: list[torch.Tensor]) -> torch.Tensor:
        """The sum over lattices of each table read back at the points (``N x C``)."""
        slice_bags, splat_bags = self._after
        return _BagProduct.apply(torch.cat(tables), slice_bags, splat_bags)

    def slice_chunks(self, tables: list[torch.Tensor], size: int) -> Iterator[tuple[slice, torch.Tensor]]:
        """``slice``, ``size`` points at a time and without gradient: ``(points, values)`` pairs. A
        mean-field update that uses each chunk at once works in cache and allocates little."""
        table = torch.cat(tables)
        rows, _, weights = self._after[0]
        for start in range(0, self.num_points, size):
            points = slice(start, start + size)
            yield points, _gather_sum(table, (rows[points], None, weights[points]))

    def filter(self, values: torch.Tensor) -> torch.Tensor:
        """The operator with every ``m_k`` the identity."""
        return self.slice(self.blur(self.splat(values)))


_Bags = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]  # rows read, bag boundaries, weights


def _gather_sum(values: torch.Tensor, bags: _Bags) -> torch.Tensor:
    rows, boundaries, weights = bags
    return torch.nn.functional.embedding_bag(rows, values.contiguous(), boundaries, mode="sum",
                                             per_sample_weights=weights.reshape(-1) if boundaries is not None
                                             else weights, include_last_offset=boundaries is not None)


class _Blur(torch.autograd.Function):
    """A lattice's blur, whose gradient is the blur with the axes in the opposite order."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, lattice: PermutohedralLattice, scale: float) -> torch.Tensor:
        ctx.lattice, ctx.scale = lattice, scale
        return lattice.blur_axes(table.contiguous(), scale, reverse=False)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return ctx.lattice.blur_axes(grad.contiguous(), ctx.scale, reverse=True), None, None


class _BagProduct(torch.autograd.Function):
    """The weighted gather-and-sum ``bags`` of ``values``, whose gradient is the ``transpose``
    bags of the incoming gradient: splat and slice are each other's transpose."""

    @staticmethod
    def forward(ctx, values: torch.Tensor, bags: _Bags, transpose: _Bags) -> torch.Tensor:
        ctx.transpose = transpose
        return _gather_sum(values, bags)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return _gather_sum(grad, ctx.transpose), None, None
