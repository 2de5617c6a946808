"""Spectral graph metrics of a sparse layer (docs/design.md, "Layer graph"), computed exactly and fast.

A layer's mask is a bipartite graph (outputs x inputs) with biadjacency `B`. The layers that have one:

- Linear `[C_out, C_in]` and convolutions `[C_out, C_in, k...]` (1-, 2- and 3-D): `B = M.reshape(C_out, -1)`,
  input nodes `(c_in, k...)`, as docs/design.md defines it.
- nn.MultiheadAttention's packed input projection `[3E, E]`: a Linear from the E inputs to the 3E query, key and
  value outputs (one graph: the three share their inputs); separate q/k/v projections and the output
  projection are Linears.
- A grouped convolution (G groups; weight `[C_out, C_in / G, k...]`) is one graph over all its channels: output
  node o, in group g = o // (C_out / G), has an edge to input node `(c_in, k...)` only if c_in is one of group
  g's input channels and the mask keeps that weight. So `B` is `[C_out, C_in * k...]` and block-diagonal: block
  g is group g's mask reshaped `[C_out / G, C_in / G * k...]`; equivalently, the weight expanded to all input
  channels with zeros outside the group. G = 1 is the plain convolution. An input node feeds at most C_out / G
  outputs, so a depthwise convolution with one output per channel (every input degree <= 1) has `delta_r` and
  `lambda_gap` undefined and both iterative means 0.

Every metric needs only the two largest singular values `s1 >= s2` (counted with multiplicity) of `B`, of the
weighted `B_w = |W * M|`, and of the subgraphs of equal-degree input nodes. The authors take them from `eigsh` on
the full square adjacency, which is slow; here each graph is solved on the small side of its biadjacency `X` (rows
or columns, whichever fewer):

- small graphs, and every graph on a GPU (or with `solver="gram"`, which tests that path on the CPU): the
  Gram matrix (`X X^T` or `X^T X`) in float64 and `torch.linalg.eigvalsh`, batched over graphs of similar
  shape. Its eigenvalues are the squared singular values.
- large graphs on the CPU: Lanczos on `X X^T`, applied as `X (X^T v)` with sparse matrices (the Gram is never
  formed), with full reorthogonalisation, until the residuals of the top two Ritz values are below
  `_LANCZOS_TOL * s1^2`. Lanczos from one start vector finds each distinct eigenvalue once, so it runs on one
  connected component at a time: a connected graph's top eigenvalue is simple (Perron-Frobenius), so the second
  Ritz value converges to the true `s2` even when `s1` has multiplicity > 1 across components. Small components
  go the dense way. The components of all graphs and both channels run in lockstep batches of similar size: one
  block-diagonal sparse product per step for the whole batch (MKL's, through torch: twice scipy's speed).

Squaring loses nothing that matters: a singular value close to s1 is as exact as with the full adjacency, and
one far below it (s2 of a near-complete graph) is off by at most ~1e-8 * s1, which moves no metric by more than
~1e-7 relative. tests/test_graph.py checks agreement with dense solves of the full adjacency to 1e-5 relative;
benchmarks/graph_metrics.py compares the speed with the straightforward method. Torch and BLAS run on one
thread (see `_single_threaded`); when the caller allows torch two or more threads, two worker threads parse the
layers and one runs the dense solves beside the Lanczos iterations (see `_workers`).
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
import warnings
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, NamedTuple

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from scipy.linalg import eigh_tridiagonal, lapack
from scipy.sparse.csgraph import connected_components
from threadpoolctl import ThreadpoolController
from torch import nn

from .masks import check_masks, prunable_parameters, weight_groups

METRICS = ("delta_r", "lambda_gap", "delta_r_imdb", "lambda_imdb", "l2")
COLUMNS = ("layer", "shape", "density", "n_out", "n_in", "dbar_out", "dbar_in") + METRICS
# "auto": Lanczos for large graphs on the CPU, batched Gram eigvalsh otherwise; "gram": batched Gram eigvalsh for
# every graph, the path every graph takes on a GPU (so the CPU can test it).
SOLVERS = ("auto", "gram")

# On the CPU a graph (or connected component) with at least this many nodes on its small side is solved by
# Lanczos; below it a dense Gram matrix and eigvalsh cost less (measured on the full-width ResNet18 at ERK 0.05:
# any threshold from 80 to 140 costs the same within 5%, 160 costs 7% more).
_LANCZOS_MIN_SIDE = 100
# Lanczos checks its Ritz values every this many steps, from step _LANCZOS_FIRST_CHECK on (no ResNet layer graph
# converged in fewer steps).
_LANCZOS_CHECK = 4
_LANCZOS_FIRST_CHECK = 24
# Lanczos stops when the residual norms of both top Ritz pairs are below this fraction of s1^2. The eigenvalue
# error is then about residual^2 / gap: on the ResNet18 at ERK 0.05 the metrics agree with eigsh to 3e-8 relative
# (1e-5 would cost 4e-6 for 10% fewer steps; 1e-8 takes 20% more steps for ~1e-15).
_LANCZOS_TOL = 1e-6
# A lockstep batch of Lanczos recurrences holds at most this many numbers in one step's vectors (its basis, some
# fifty vectors deep, about 4 MB) and at most _LANCZOS_BATCH_NNZ nonzeros in its operator. Past about that many
# nonzeros the products slow down per nonzero (on the largest ResNet18 layers: 0.56 ns each up to ~170k, 1.3 ns at
# 435k); within both limits, larger batches pay less Python overhead per step. Measured on the full-width ResNet18
# at ERK 0.05, alternating in one process: 8192 numbers cost 0.93-0.94x the time of 4096 (median of 30 runs each),
# 12288 0.97x; 120k nonzeros 1.04x of 200k, no cap 1.01x.
_LANCZOS_BATCH = 8192
_LANCZOS_BATCH_NNZ = 200_000
# A batch's block-diagonal operator is rebuilt without its finished recurrences once the running ones hold at most
# this fraction of its nonzeros: rebuilding costs as much as several products, more than multiplying zeros for a
# few steps.
_LANCZOS_REBUILD = 0.5
# model_metrics with a progress callback measures the layers in chunks of about this many weights.
_PROGRESS_CHUNK = 5_000_000
# The dense solves batch graphs whose small sides, zero-padded to a multiple of 8, are equal (padding adds zero
# eigenvalues, which never displace the top two of a semidefinite matrix) and whose large sides, padded to the
# batch's largest, are within a factor _DENSE_SPREAD of each other: on the full-width ResNet18 at ERK 0.05 that
# is 1.4x the multiplications of unpadded Grams, in 33 batches instead of 320 graphs' worth of small calls. A
# batch's biadjacencies hold at most _DENSE_BATCH numbers (128 MB), unless it is one graph that holds more. A batch's
# graphs are on one device.
_DENSE_SPREAD = 2
_DENSE_BATCH = 2**24


@dataclass
class _Graph:
    """A bipartite graph whose top two singular values are wanted, in two channels: topology and |weight|.

    Nodes are numbered 0.. with no isolated node; edges are listed column by column.
    """

    rows: torch.Tensor
    cols: torch.Tensor
    weights: torch.Tensor  # [edges] float64 |w|, the weighted B_w's entries (the binary B's are all 1)
    n_rows: int
    n_cols: int
    top: np.ndarray = field(default_factory=lambda: np.zeros((2, 2)))  # [channel, (s1, s2)], set by _solve


@dataclass
class _Layer:
    """A layer's degree statistics and the graphs its metrics need."""

    shape: tuple[int, ...]
    size: int
    edges: int
    n_out: int
    n_in: int
    whole: _Graph | None = None  # None when delta_r and lambda_gap are undefined
    groups: list[tuple[int, _Graph]] = field(default_factory=list)  # (input degree d, subgraph), valid ones

    def graphs(self) -> list[_Graph]:
        return ([self.whole] if self.whole is not None else []) + [graph for _, graph in self.groups]

    def record(self) -> dict[str, Any]:
        """The docs/design.md formulas, from the solved graphs."""
        dbar_out = self.edges / self.n_out if self.n_out else math.nan
        dbar_in = self.edges / self.n_in if self.n_in else math.nan
        delta_r = lambda_gap = math.nan
        if self.whole is not None:
            (_, s2), (w1, w2) = self.whole.top
            delta_r = math.sqrt(dbar_out - 1) + math.sqrt(dbar_in - 1) - s2
            lambda_gap = w1 - w2
        deltas, lambdas = [], []
        for d, graph in self.groups:
            (_, s2), (w1, w2) = graph.top
            n_in, n_out = graph.n_cols, graph.n_rows
            c = max(n_in, n_out) / (n_in + n_out - 1)
            deltas.append(c * (math.sqrt(n_in * d / n_out - 1) + math.sqrt(d - 1) - s2))
            lambdas.append(c * (w1 - w2))
        delta_r_imdb = float(np.mean(deltas)) if deltas else 0.0
        lambda_imdb = float(np.mean(lambdas)) if lambdas else 0.0
        parts = [0.0 if math.isnan(v) else v for v in (delta_r, lambda_gap, delta_r_imdb, lambda_imdb)]
        return {"shape": "x".join(map(str, self.shape)), "density": self.edges / self.size,
                "n_out": self.n_out, "n_in": self.n_in, "dbar_out": dbar_out, "dbar_in": dbar_in,
                "delta_r": delta_r, "lambda_gap": lambda_gap, "delta_r_imdb": delta_r_imdb,
                "lambda_imdb": lambda_imdb, "l2": math.sqrt(sum(v * v for v in parts))}


def _as_tensor(value: Any, what: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    raise ValueError(f"{what} must be a numpy array or a torch tensor, got {type(value).__name__}")


def _checked(weight: Any, mask: Any, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and mask as torch tensors on the weight's device, or a ValueError saying what was expected."""
    weight, mask = _as_tensor(weight, "weight"), _as_tensor(mask, "mask")
    if not 2 <= weight.dim() <= 5:
        raise ValueError(f"expected a weight of shape [C_out, C_in] or [C_out, C_in / groups, k...] (a 1-, 2- or "
                         f"3-D convolution), got a {weight.dim()}-D tensor of shape {tuple(weight.shape)}")
    if not isinstance(groups, int) or groups < 1 or weight.shape[0] % groups:
        raise ValueError(f"groups must be a positive divisor of C_out = {weight.shape[0]}, got {groups!r}")
    if tuple(mask.shape) != tuple(weight.shape):
        raise ValueError(f"mask shape {tuple(mask.shape)} differs from weight shape {tuple(weight.shape)}")
    if mask.dtype != torch.bool:
        raise ValueError(f"expected a boolean mask, got dtype {mask.dtype}")
    if weight.dtype == torch.bool or weight.is_complex():
        raise ValueError(f"expected a real-valued weight, got dtype {weight.dtype}")
    if weight.numel() == 0:
        raise ValueError(f"expected a weight with no zero-sized dimension, got shape {tuple(weight.shape)}")
    return weight, mask.to(weight.device)


def _column_major_edges(mask: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rows, cols) of the edges of a layer's biadjacency, column by column, and each edge's index in the mask.

    `mask` is `[C_out, width]`. With groups, output row o belongs to group g = o // (C_out / groups) and its
    column j is input node g * width + j: the biadjacency is block-diagonal, `[C_out, groups * width]`. The set
    entries are found in row-major order and put in column order by a stable sort of their columns, cheaper than
    transposing the mask. On the CPU numpy does it (3x faster than torch; a radix sort for 16-bit columns).
    """
    if mask.device.type != "cpu":
        return _column_major_edges_torch(mask, groups)
    per_group, width = mask.shape[0] // groups, mask.shape[1]
    flat = np.flatnonzero(mask.numpy())
    rows = flat // width
    cols = flat - rows * width
    if groups > 1:
        cols += rows // per_group * width
    order = np.argsort(cols.astype(np.uint16) if groups * width <= 2**16 else cols, kind="stable")
    return tuple(torch.from_numpy(part[order]) for part in (rows, cols, flat))


def _column_major_edges_torch(mask: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`_column_major_edges` in torch, on the mask's device (a GPU's)."""
    per_group, width = mask.shape[0] // groups, mask.shape[1]
    flat = mask.reshape(-1).nonzero().squeeze(1)
    rows = flat // width
    cols = flat - rows * width + (rows // per_group * width if groups > 1 else 0)
    order = torch.argsort(cols, stable=True)
    return rows[order], cols[order], flat[order]


def _renumber(nodes: torch.Tensor, degree: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Node ids renumbered 0..k-1 in order of id, dropping the ids of degree 0 (`degree`: per id)."""
    present = degree > 0
    if bool(present.all()):  # the usual case: nothing to renumber
        return nodes, degree.numel()
    rank = torch.cumsum(present, 0) - 1
    return rank.index_select(0, nodes), int(rank[-1]) + 1


def _layer(weight: Any, mask: Any, groups: int = 1) -> _Layer:
    """Degrees, validity and the graphs to solve: the whole layer and each valid equal-degree input group."""
    weight, mask = _checked(weight, mask, groups)
    shape = tuple(weight.shape)
    n_rows, width = shape[0], math.prod(shape[1:])
    n_cols = groups * width
    # B = mask.reshape(C_out, -1), block-diagonal over groups: rows are the outputs, columns the (c_in, k...) inputs.
    rows, cols, index = _column_major_edges(mask.reshape(n_rows, width), groups)
    magnitude = weight.reshape(-1).index_select(0, index).to(torch.float64).abs_()  # 2.5x torch.take's speed
    if not bool(torch.isfinite(magnitude).all()):
        raise ValueError("weight has non-finite values where the mask keeps it")
    col_degree = torch.bincount(cols, minlength=n_cols)
    whole_rows, n_out = _renumber(rows, torch.bincount(rows, minlength=n_rows))
    whole_cols, n_in = _renumber(cols, col_degree)
    edges = rows.numel()
    layer = _Layer(shape, n_rows * width, edges, n_out, n_in)
    # Integer forms of "mean output degree >= 3 and mean input degree > 1": no rounding at the boundary.
    if n_out and edges >= 3 * n_out and edges > n_in:
        layer.whole = _Graph(whole_rows, whole_cols, magnitude, n_out, n_in)

    # The equal-degree groups, all at once: reorder the edges by input degree, keeping each input's run of edges
    # whole, then number each group's inputs and reached outputs 0.. within the group.
    device = rows.device
    by_degree = torch.argsort(col_degree, stable=True)
    run = col_degree[by_degree]
    shift = _exclusive_cumsum(col_degree)[by_degree] - _exclusive_cumsum(run)
    order = torch.repeat_interleave(shift, run) + torch.arange(edges, device=device)
    rows, magnitude = rows.index_select(0, order), magnitude.index_select(0, order)
    edge_degree = torch.repeat_interleave(run, run)
    counts = torch.bincount(col_degree)  # counts[d]: input nodes of degree d
    first_edge = _exclusive_cumsum(counts * torch.arange(counts.numel(), device=device))  # of degree d's run
    position = torch.arange(edges, device=device) - first_edge.index_select(0, edge_degree)
    group_cols = position // edge_degree.clamp(min=1)
    cell = edge_degree * n_rows + rows  # (degree, output) pairs, flattened
    reached = torch.zeros(counts.numel() * n_rows, dtype=torch.bool, device=device).index_fill_(0, cell, True)
    row_rank = torch.cumsum(reached.view(counts.numel(), n_rows), 1) - 1
    group_rows = row_rank.view(-1).index_select(0, cell)
    n_reached = (row_rank[:, -1] + 1).tolist()
    for d, (count, start) in enumerate(zip(counts.tolist(), first_edge.tolist())):
        # validity: d >= 3 (d == 0 are the isolated inputs) and mean degree of the reached outputs > 1
        if d >= 3 and count >= 2 and count * d > n_reached[d]:
            part = slice(start, start + count * d)
            layer.groups.append((d, _Graph(group_rows[part], group_cols[part], magnitude[part], n_reached[d],
                                           count)))
    return layer


def _exclusive_cumsum(values: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    return values.cumsum(0) - values


class _Csr(NamedTuple):
    """A CSR matrix as bare arrays: scipy's matrix objects cost more to make than most of these graphs to solve."""

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    n_cols: int

    @property
    def n_rows(self) -> int:
        return self.indptr.size - 1

    def scipy(self) -> sp.csr_matrix:
        """A scipy copy (the arrays may be shared with another channel's matrix)."""
        return sp.csr_matrix((self.data, self.indices, self.indptr), shape=(self.n_rows, self.n_cols), copy=True)

    @classmethod
    def of(cls, matrix: sp.csr_matrix) -> _Csr:
        return cls(matrix.indptr, matrix.indices, matrix.data, matrix.shape[1])


def _stacked_indices(matrices: list[_Csr], heights: list[int], first_columns: list[int],
                     dtype: type = np.int32) -> tuple[np.ndarray, np.ndarray]:
    """CSR index arrays of `matrices` stacked top to bottom: matrix i padded with empty rows to `heights[i]` rows
    and its columns shifted by `first_columns[i]`."""
    indptr = np.zeros(sum(heights) + 1, dtype=dtype)
    indices = np.empty(sum(m.data.size for m in matrices), dtype=dtype)
    row = edge = 0
    for matrix, height, first in zip(matrices, heights, first_columns):
        n, end = matrix.n_rows, edge + matrix.data.size
        np.add(matrix.indptr[1:], edge, out=indptr[row + 1: row + 1 + n], casting="unsafe")
        indptr[row + 1 + n: row + 1 + height] = end
        np.add(matrix.indices, first, out=indices[edge:end], casting="unsafe")
        row, edge = row + height, end
    return indptr, indices


def _diagonal_stack(matrices: list[_Csr], rows: int | None = None, cols: int | None = None) -> torch.Tensor:
    """Block-diagonal torch CSR matrix, every block zero-padded to `rows` rows or `cols` columns when given
    (torch's CPU product, MKL's, is about twice scipy's speed)."""
    heights = [rows or m.n_rows for m in matrices]
    widths = [cols or m.n_cols for m in matrices]
    indptr, indices = _stacked_indices(matrices, heights, np.cumsum([0] + widths[:-1]).tolist())
    data = np.concatenate([m.data for m in matrices])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(torch.from_numpy(indptr), torch.from_numpy(indices), torch.from_numpy(data),
                                       size=(sum(heights), sum(widths)), check_invariants=False)


def _lanczos_top_two(problems: list[tuple[_Csr, _Csr]]) -> list[np.ndarray]:
    """Two largest eigenvalues (descending) of `M @ M.T` for each (M, M.T) (each M a connected graph).

    The matrices run in lockstep batches of similar size, the batch's vectors holding at most `_LANCZOS_BATCH`
    numbers and its operator at most `_LANCZOS_BATCH_NNZ` nonzeros.
    """
    order = np.argsort([m.n_rows for m, _ in problems], kind="stable")
    batches, batch, nnz = [], [], 0
    for index in order:
        rows, size = problems[index][0].n_rows, problems[index][0].data.size
        if batch and ((len(batch) + 1) * rows > _LANCZOS_BATCH or nnz + size > _LANCZOS_BATCH_NNZ):
            batches.append(batch)
            batch, nnz = [], 0
        batch.append(index)
        nnz += size
    found = {}
    for batch in batches + [batch] * bool(batch):
        found.update(zip(batch, _lanczos_batch([problems[i] for i in batch])))
    return [found[index] for index in range(len(problems))]


def _lanczos_batch(problems: list[tuple[_Csr, _Csr]]) -> list[np.ndarray]:
    """Two largest eigenvalues (descending) of `M @ M.T` for each (M, M.T), M connected: Lanczos in lockstep.

    The vectors are zero-padded to the largest M's row count and advance together on one block-diagonal
    operator, so a step's Python overhead is paid once for the whole batch; a matrix leaves the batch once its
    top two Ritz values have converged (checked every `_LANCZOS_CHECK` steps). Besides the three-term recurrence
    each new vector is orthogonalised against the whole basis, so converged Ritz values never come back as
    spurious copies. A fixed seed makes the result reproducible. A recurrence whose Krylov space became invariant
    (at the latest after as many steps as M has rows) has exact Ritz values.
    """
    sizes = np.array([m.n_rows for m, _ in problems])
    k, n = sizes.size, int(sizes.max())
    scale = np.array([float(m.data @ m.data) for m, _ in problems])  # Gram traces, bounds of the eigenvalues
    active = np.arange(k)  # the batch's problems still running, in slot order
    basis = np.zeros((k, min(n, 64), n))  # basis[slot, j]: a running problem's j-th vector
    # A start vector that depends on the problem alone, not on its batch: the first `size` draws of one seeded
    # stream (a prefix of a longer draw is the shorter draw), normalised.
    start = np.random.default_rng(0).standard_normal(n)
    # The current and the previous vector, kept contiguous: faster to read than rows of the basis.
    v, previous = np.where(np.arange(n) < sizes[:, None], start, 0.0), np.zeros((k, n))
    v /= np.sqrt(np.cumsum(start * start)[sizes - 1])[:, None]
    basis[:, 0] = v
    alpha, beta = np.zeros((k, n)), np.zeros((k, n))
    found: list[np.ndarray | None] = [None] * k
    nnz = np.array([m.data.size for m, _ in problems])
    members, operator, adjoint = active, None, None  # the problems the operator's blocks hold
    slots = None  # where the running problems sit among the operator's blocks; None when they changed
    for j in range(n):
        if operator is None:
            members = active
            operator = _diagonal_stack([problems[i][0] for i in members], rows=n)
            adjoint = _diagonal_stack([problems[i][1] for i in members], cols=n)
        if slots is None:
            slots = np.searchsorted(members, active)
            negligible, last_step = 1e-12 * scale[active], sizes[active] - 1
        w = _product(operator, adjoint, v, slots, members.size)
        alpha[:, j] = np.einsum("cn,cn->c", v, w)
        w -= alpha[:, j, None] * v
        if j:
            w -= beta[:, j - 1, None] * previous
        done = basis[:, : j + 1]
        w -= np.matmul(np.matmul(done, w[:, :, None]).transpose(0, 2, 1), done)[:, 0]
        beta[:, j] = np.sqrt(np.einsum("cn,cn->c", w, w))
        exhausted = (beta[:, j] <= negligible) | (j >= last_step)
        finished = exhausted.copy()
        checking = j + 1 >= _LANCZOS_FIRST_CHECK and (j + 1) % _LANCZOS_CHECK == 0
        if checking or exhausted.any():
            for slot in range(active.size) if checking else np.flatnonzero(exhausted):
                ritz, last = _top_ritz(alpha[slot, : j + 1], beta[slot, :j])
                if exhausted[slot] or beta[slot, j] * np.abs(last).max() <= _LANCZOS_TOL * ritz[-1]:
                    found[active[slot]] = np.array([ritz[-1], ritz[0] if ritz.size == 2 else 0.0])
                    finished[slot] = True
            if finished.all():
                return found
        if finished.any() or j + 1 == basis.shape[1]:  # drop the finished problems, grow the basis when full
            keep = ~finished
            grown = np.zeros((int(keep.sum()), basis.shape[1] * (1 + (j + 1 == basis.shape[1])), n))
            grown[:, : j + 1] = basis[keep, : j + 1]
            basis, alpha, beta, w, v = grown, alpha[keep], beta[keep], w[keep], v[keep]
            active, slots = active[keep], None
            if nnz[active].sum() <= _LANCZOS_REBUILD * nnz[members].sum():
                operator = None
        previous, v = v, np.divide(w, beta[:, j, None], out=w)
        basis[:, j + 1] = v
    raise AssertionError("unreachable: every recurrence ends by step n")


def _product(operator: torch.Tensor, adjoint: torch.Tensor, v: np.ndarray, slots: np.ndarray,
             blocks: int) -> np.ndarray:
    """`operator @ adjoint @ v` for the running recurrences' vectors `v` [running, n], held in `slots` of the
    operator's `blocks` blocks; the blocks of finished recurrences get zeros."""
    if slots.size == blocks:  # no block is finished
        return (operator @ (adjoint @ torch.from_numpy(v.ravel()))).numpy().reshape(blocks, -1)
    x = np.zeros((blocks, v.shape[1]))
    x[slots] = v
    return (operator @ (adjoint @ torch.from_numpy(x.ravel()))).numpy().reshape(blocks, -1)[slots]


def _top_ritz(alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The top two (or one) Ritz values of a Lanczos tridiagonal, ascending, and their vectors' last entries.

    LAPACK's dstemr directly: scipy's eigh_tridiagonal around it costs ten times as much.
    """
    j = alpha.size
    if j == 1:
        return alpha, np.zeros(1)
    count, ritz, vectors, info = lapack.dstemr(alpha, np.append(beta, 0.0), 3, 0.0, 0.0, j - 1, j)
    if info or count != 2:
        ritz, vectors = eigh_tridiagonal(alpha, beta, select="i", select_range=(j - 2, j - 1))
    return ritz[:2], vectors[-1, :2]


def _channels(graph: _Graph) -> list[tuple[_Csr, _Csr]]:
    """Per channel (topology, weight): the biadjacency with the small side as rows, and its transpose.

    The edges come column by column (CSR of the transpose); one radix sort by row gives the other orientation.
    The weight channel shares the topology's index arrays unless a kept weight is exactly 0 (no edge there).
    """
    rows, cols, weights = graph.rows.numpy(), graph.cols.numpy(), graph.weights.numpy()
    by_row = np.argsort(rows.astype(np.int16) if graph.n_rows < 2**15 else rows, kind="stable")
    col_ptr = np.concatenate([[0], np.cumsum(np.bincount(cols, minlength=graph.n_cols))])
    row_ptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=graph.n_rows))])
    ones, row_cols = np.ones(rows.size), cols[by_row]
    by_columns = [_Csr(col_ptr, rows, data, graph.n_rows) for data in (ones, weights)]
    by_rows = [_Csr(row_ptr, row_cols, data, graph.n_cols) for data in (ones, weights[by_row])]
    sides, others = (by_rows, by_columns) if graph.n_rows <= graph.n_cols else (by_columns, by_rows)
    if sides[1].data.all():
        return list(zip(sides, others))
    side, other = sides[1].scipy(), others[1].scipy()
    side.eliminate_zeros()
    other.eliminate_zeros()
    return [(sides[0], others[0]), (_Csr.of(side), _Csr.of(other))]


def _components(pairs: list[tuple[_Csr, _Csr]]) -> list[np.ndarray]:
    """Connected-component label of every node (small side first, then the other side) of each graph given as
    (side, other), numbered from 0 within the graph; pairs sharing index arrays (channels) share the labels.

    One scipy search for all the graphs, as diagonal blocks of one square adjacency (one call per graph cost
    more in overhead than in the search). Each block `[[0, side], [other, 0]]` is symmetric, so its strong
    components are the connected ones, and scipy finds those without transposing it.
    """
    distinct = {id(side.indices): (side, other) for side, other in pairs}
    sizes = [side.n_rows + other.n_rows for side, other in distinct.values()]
    matrices = [matrix for pair in distinct.values() for matrix in pair]
    # Graph g's nodes start at `first`: its small side's edges point past that side, the other side's back to it.
    neighbours = [start for (side, _), first in zip(distinct.values(), np.cumsum([0] + sizes[:-1]).tolist())
                  for start in (first + side.n_rows, first)]
    # int32 where it fits: scipy would copy int64 index arrays down to int32, twice (5 ms on the ResNet18).
    edges = sum(m.data.size for m in matrices)
    indptr, indices = _stacked_indices(matrices, [m.n_rows for m in matrices], neighbours,
                                       np.int32 if edges < 2**31 else np.int64)
    square = sp.csr_matrix((np.ones(edges), indices, indptr), shape=(sum(sizes), sum(sizes)))
    labels = connected_components(square, directed=True, connection="strong")[1]
    found = {key: _from_zero(part) for key, part in zip(distinct, np.split(labels, np.cumsum(sizes)[:-1]))}
    return [found[id(side.indices)] for side, _ in pairs]


def _from_zero(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 0.. in order (all 0 for a connected graph)."""
    if labels.min() == labels.max():
        return np.zeros_like(labels)
    return np.unique(labels, return_inverse=True)[1]


def _solve_sparse(graphs: list[_Graph]) -> None:
    """Set `graph.top` of large graphs on the CPU: Lanczos on every large connected component (of every graph
    and channel, in lockstep batches), one dense solve for the small components of a disconnected graph."""
    if not graphs:
        return
    channels = [_channels(graph) for graph in graphs]
    labels = iter(_components([pair for pairs in channels for pair in pairs]))
    problems, owners = [], []
    eigen: list[tuple[list, list]] = [([], []) for _ in graphs]  # per graph and channel: candidate eigenvalues
    for index, pairs in enumerate(channels):
        for channel, ((side, other), label) in enumerate(zip(pairs, labels)):
            parts = [(side, other)]
            if label.any():  # disconnected
                matrix, side_labels, other_labels = side.scipy(), label[: side.n_rows], label[side.n_rows:]
                large = np.flatnonzero(np.bincount(side_labels) >= _LANCZOS_MIN_SIDE)
                parts = [(_Csr.of(part), _Csr.of(part.T.tocsr())) for part in
                         (matrix[side_labels == c][:, other_labels == c] for c in large)]
                rest = matrix[~np.isin(side_labels, large)]
                if rest.shape[0]:
                    eigen[index][channel].append(np.linalg.eigvalsh((rest @ rest.T).toarray())[-2:])
            problems += parts
            owners += [eigen[index][channel]] * len(parts)
    for owner, top in zip(owners, _lanczos_top_two(problems)):
        owner.append(top)
    for graph, candidates in zip(graphs, eigen):
        graph.top = np.sqrt(np.clip(np.stack([_largest_two(c) for c in candidates]), 0.0, None))


def _largest_two(candidates: list[np.ndarray]) -> np.ndarray:
    """The two largest of a channel's candidate eigenvalues, descending (0 for a missing one: the candidates
    are eigenvalues of positive semidefinite matrices)."""
    return np.sort(np.concatenate([*candidates, np.zeros(2)]))[:-3:-1]


def _solve(graphs: list[_Graph], solver: str, workers: Executor | None) -> None:
    """Set `graph.top` for every graph, choosing the method by size and device (`solver`: see SOLVERS); the
    dense solves run on one of the `workers` when given, beside the Lanczos iterations."""
    dense, sparse = [], []
    for graph in graphs:
        lanczos = (solver == "auto" and graph.weights.device.type == "cpu"
                   and min(graph.n_rows, graph.n_cols) >= _LANCZOS_MIN_SIDE)
        (sparse if lanczos else dense).append(graph)
    dense_job = workers.submit(_solve_dense, dense) if workers else None
    _solve_sparse(sparse)
    if dense_job:
        dense_job.result()
    else:
        _solve_dense(dense)


def _solve_dense(graphs: list[_Graph]) -> None:
    """Set `graph.top` from the eigenvalues of the Gram matrices on each graph's small side, in batches of
    similar shape (a few large operations, which release the GIL, rather than many small ones)."""
    for batch, size, width in _dense_batches(graphs):
        top = torch.linalg.eigvalsh(_batched_grams(batch, size, width))[:, -2:].flip(-1)
        top = np.sqrt(np.clip(top.cpu().numpy(), 0.0, None)).reshape(len(batch), 2, 2)
        for graph, graph_top in zip(batch, top):
            graph.top = graph_top


def _dense_batches(graphs: list[_Graph]) -> Iterator[tuple[list[_Graph], int, int]]:
    """Batches of graphs for `_batched_grams`, each with its padded small side and its largest large side."""
    def shape(graph: _Graph) -> tuple[int, int]:
        return -(-min(graph.n_rows, graph.n_cols) // 8) * 8, max(graph.n_rows, graph.n_cols)

    def device(graph: _Graph) -> str:
        return str(graph.weights.device)

    batch: list[_Graph] = []
    # sorted by shape within each device: the last graph of a batch has its largest large side
    for graph in sorted(graphs, key=lambda g: (device(g), *shape(g))):
        size, width = shape(graph)
        first_size, first_width = shape(batch[0]) if batch else (size, width)
        too_big = bool(batch) and 2 * (len(batch) + 1) * size * width > _DENSE_BATCH  # a lone graph may exceed it
        elsewhere = bool(batch) and device(graph) != device(batch[0])
        if size != first_size or width > _DENSE_SPREAD * first_width or too_big or elsewhere:
            yield batch, *shape(batch[-1])
            batch = []
        batch.append(graph)
    if batch:
        yield batch, *shape(batch[-1])


def _batched_grams(graphs: list[_Graph], size: int, width: int) -> torch.Tensor:
    """[2 * len(graphs), size, size] float64 Gram matrices on the small side of each graph (its binary and
    weighted channels in turn), from its biadjacency with the small side as rows, zero-padded to [size, width]."""
    small = torch.cat([graph.rows if graph.n_rows <= graph.n_cols else graph.cols for graph in graphs])
    large = torch.cat([graph.cols if graph.n_rows <= graph.n_cols else graph.rows for graph in graphs])
    device = small.device
    edges = torch.tensor([graph.rows.numel() for graph in graphs], device=device)
    first_row = torch.repeat_interleave(torch.arange(0, 2 * len(graphs) * size, 2 * size, device=device), edges,
                                        output_size=small.numel())  # known: no wait for a GPU to tell
    flat = (first_row + small) * width + large  # binary channel; the weighted one is `size` rows further
    dense = torch.zeros(2 * len(graphs) * size * width, dtype=torch.float64, device=device)
    dense[flat] = 1.0
    dense[flat + size * width] = torch.cat([graph.weights for graph in graphs])
    dense = dense.view(2 * len(graphs), size, width)
    if dense.device.type == "cpu":  # numpy's matmul sees `A @ A.T` and computes one triangle (BLAS syrk): 2x torch's
        array = dense.numpy()
        return torch.from_numpy(np.matmul(array, array.transpose(0, 2, 1)))
    return dense @ dense.mT


@functools.cache
def _blas_pools() -> ThreadpoolController:
    return ThreadpoolController()  # made once numpy and scipy have loaded their BLAS; limiting it then costs ~10 us


_SETTINGS = threading.RLock()  # held by `_single_threaded` while it changes the process-wide thread settings


@contextlib.contextmanager
def _single_threaded() -> Iterator[int]:
    """Run torch and numpy's BLAS on one thread, then restore their settings; yields the caller's torch threads.

    The work is a long chain of small operations: torch's and BLAS's own threads only add synchronisation inside
    each one (measured on the 2-core machine: 0.50 s with 2 torch threads, 0.46 s with 1), and when another
    process holds a core, every parallel region waits for a descheduled thread: one ResNet18 call then took
    5-14 s instead of 0.8 s. The
    settings are process-wide, so calls from several threads of the caller's take turns: one call's restore
    would otherwise undo another's limit, or leave the caller's setting at 1.
    """
    with _SETTINGS:
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with _blas_pools().limit(limits=1, user_api="blas"):
                yield previous
        finally:
            torch.set_num_threads(previous)


def _measure(layers: Mapping[str | None, tuple], solver: str) -> dict[str | None, _Layer]:
    """Parse and solve layers; a bad one raises a ValueError naming it (unless its name is None)."""
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    with _single_threaded() as threads, _workers(threads if _on_cpu(layers) else 1) as workers:
        parsed = dict(zip(layers, (workers.map if workers else map)(_named_layer, layers, layers.values())))
        _solve([graph for layer in parsed.values() for graph in layer.graphs()], solver, workers)
    return parsed


def _on_cpu(layers: Mapping[str | None, tuple]) -> bool:
    """Whether no weight or mask given is a tensor on another device. On a GPU, worker threads would gain nothing
    (no graph goes to Lanczos) and would not run on the caller's CUDA stream."""
    return all(part.device.type == "cpu" for layer in layers.values() if isinstance(layer, tuple)
               for part in layer[:2] if isinstance(part, torch.Tensor))


@contextlib.contextmanager
def _workers(threads: int) -> Iterator[Executor | None]:
    """Two worker threads when the caller allows torch two or more `threads`, else None (work on this thread).

    They parse the layers, then one runs the dense solves beside the Lanczos iterations. That work is mostly
    large numpy operations and BLAS and LAPACK calls, which release the GIL; Lanczos is mostly short numpy calls,
    which do not gain from a second thread (measured: two threads running Lanczos batches took as long as one).
    On the full-width ResNet18 at ERK 0.05, alternating in one process: 0.87x the wall time of one thread, for
    about 1.2x its CPU time. No worker waits on another inside an operation, so a busy core slows only its own
    share. The values are the same either way.
    """
    if threads < 2:
        yield None
        return
    with ThreadPoolExecutor(2, thread_name_prefix="fullspectrum") as workers:
        yield workers


def _named_layer(name: str | None, layer: tuple) -> _Layer:
    try:
        if not isinstance(layer, tuple) or len(layer) not in (2, 3):
            raise ValueError("expected a (weight, mask) or (weight, mask, groups) tuple")
        return _layer(*layer)
    except ValueError as exc:
        if name is None:
            raise
        raise ValueError(f"layer {name!r}: {exc}") from exc


def measure_layers(layers: Mapping[str, tuple], *, solver: str = "auto") -> dict[str, dict[str, Any]]:
    """Per-layer records (shape, density, node counts, mean degrees, the five metrics) of
    {name: (weight, mask)} or {name: (weight, mask, groups)} (a grouped convolution's `groups`; default 1).

    The eigenproblems of all the layers are solved together, so passing several layers at once (a mask search
    passing the layers it changed) costs less than one call per layer. `solver="gram"` sends every graph the
    way a GPU does (batched Gram eigvalsh), whatever the device.
    """
    return {name: layer.record() for name, layer in _measure(layers, solver).items()}


def layer_metrics(weight: Any, mask: Any, groups: int = 1, *, solver: str = "auto") -> dict[str, float]:
    """The five metrics of one layer: delta_r, lambda_gap, delta_r_imdb, lambda_imdb, l2 (NaN = undefined).

    `weight`: [C_out, C_in] or [C_out, C_in / groups, k...], numpy or torch (CPU or CUDA); `mask`: boolean, same
    shape.
    """
    record = _measure({None: (weight, mask, groups)}, solver)[None].record()
    return {key: record[key] for key in METRICS}


def model_metrics(model: nn.Module, masks: Mapping[str, torch.Tensor], *, solver: str = "auto",
                  progress: Callable[[int], Any] | None = None) -> pd.DataFrame:
    """One row per prunable layer (columns `COLUMNS`) and a last row, layer "model_mean", for the model.

    The model row holds the mean over layers of each metric. delta_r and lambda_gap are averaged over the layers
    where they are defined: a layer too sparse for the Ramanujan bound has no value, and counting it as 0 would
    make such layers look better or worse for no reason. NaN if no layer has one. The iterative means and l2
    are defined for every layer. The row's density is the fraction of all prunable weights kept; its shape,
    node counts and degrees are left empty.

    With `progress`, the layers are measured in chunks of about `_PROGRESS_CHUNK` weights and `progress` is
    called with each chunk's weight count (for a progress bar); the values are the same.
    """
    params, groups = prunable_parameters(model), weight_groups(model)
    check_masks(masks, model)
    parsed, chunk, size = {}, {}, 0
    for index, (name, param) in enumerate(params.items()):
        chunk[name] = (param, masks[name], groups[name])
        size += param.numel()
        if index + 1 == len(params) or (progress is not None and size >= _PROGRESS_CHUNK):
            parsed.update(_measure(chunk, solver))
            if progress is not None:
                progress(size)
            chunk, size = {}, 0
    table = pd.DataFrame([{"layer": name, **layer.record()} for name, layer in parsed.items()], columns=list(COLUMNS))
    kept, total = (sum(getattr(layer, key) for layer in parsed.values()) for key in ("edges", "size"))
    mean_row = {"layer": "model_mean", "shape": "", "density": kept / total}
    mean_row.update({key: table[key].mean() for key in METRICS})  # pandas' mean skips NaN
    table = pd.concat([table, pd.DataFrame([mean_row], columns=list(COLUMNS))], ignore_index=True)
    return table.astype({"n_out": "Int64", "n_in": "Int64"})  # counts stay integers beside the empty model row
