"""The straightforward computation of the graph metrics (docs/design.md, "Layer graph"), written independently of
fullspectrum.graph: square adjacencies, one eigenproblem per layer and per degree group.

A grouped convolution is measured as its ungrouped equivalent (`expand_groups`), the definition in
fullspectrum/graph.py's docstring. Two solvers for the top singular values: dense `eigvalsh` (the tests' oracle)
and ARPACK `eigsh`, k=3 (the benchmark's baseline, the method the authors' code uses).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import eigsh

TopTwo = Callable[[np.ndarray], tuple[float, float]]


def _nonisolated(biadjacency: np.ndarray) -> np.ndarray:
    return biadjacency[biadjacency.any(1)][:, biadjacency.any(0)]


def _first_and_third(values: np.ndarray) -> tuple[float, float]:
    """s1, s2 from the square adjacency's eigenvalues (each singular value appears as +s and -s)."""
    magnitudes = np.sort(np.abs(values))[::-1]
    return magnitudes[0], magnitudes[2] if magnitudes.size > 2 else 0.0


def dense_top_two(biadjacency: np.ndarray) -> tuple[float, float]:
    """s1 and s2 by a dense eigendecomposition of the full (n_out + n_in) adjacency."""
    x = _nonisolated(biadjacency)
    n_out, n_in = x.shape
    adjacency = np.zeros((n_out + n_in, n_out + n_in))
    adjacency[:n_out, n_out:] = x
    adjacency[n_out:, :n_out] = x.T
    return _first_and_third(np.linalg.eigvalsh(adjacency))


def eigsh_top_two(biadjacency: np.ndarray) -> tuple[float, float]:
    """s1 and s2 by eigsh(k=3) on the sparse square adjacency (dense when too small for eigsh)."""
    x = sp.csr_matrix(_nonisolated(biadjacency))
    square = sp.bmat([[None, x], [x.T, None]], format="csr")
    if square.shape[0] <= 4:  # eigsh needs k < n
        return _first_and_third(np.linalg.eigvalsh(square.toarray()))
    return _first_and_third(eigsh(square, k=3, which="LM", return_eigenvectors=False))


def expand_groups(weight: np.ndarray, groups: int) -> np.ndarray:
    """A grouped convolution's weight `[C_out, C_in / groups, k...]` as the ungrouped `[C_out, C_in, k...]`:
    output channel o (group o // (C_out / groups)) keeps its weights on its own group's input channels and
    has zeros on every other input channel. Works for masks (bool) as well."""
    out_channels, per_group = weight.shape[0], weight.shape[1]
    full = np.zeros((out_channels, per_group * groups) + weight.shape[2:], dtype=weight.dtype)
    outputs_per_group = out_channels // groups
    for o in range(out_channels):
        g = o // outputs_per_group
        full[o, g * per_group:(g + 1) * per_group] = weight[o]
    return full


def straightforward_metrics(weight: np.ndarray, mask: np.ndarray, top_two: TopTwo = dense_top_two) -> dict:
    """delta_r, lambda_gap, delta_r_imdb, lambda_imdb and l2 of one layer, straight from the definitions."""
    b = mask.reshape(mask.shape[0], -1).astype(np.float64)
    bw = np.abs(weight.reshape(mask.shape[0], -1)) * b
    edges, n_out, n_in = b.sum(), (b.sum(1) > 0).sum(), (b.sum(0) > 0).sum()
    delta_r = lambda_gap = math.nan
    if n_out and edges / n_out >= 3 and edges / n_in > 1:
        delta_r = math.sqrt(edges / n_out - 1) + math.sqrt(edges / n_in - 1) - top_two(b)[1]
        s1, s2 = top_two(bw)
        lambda_gap = s1 - s2
    degree = b.sum(0)
    deltas, lambdas = [], []
    for d in np.unique(degree):
        columns = degree == d
        if d == 0 or columns.sum() < 2:
            continue
        reached = b[:, columns].any(1)
        sub, sub_w = b[reached][:, columns], bw[reached][:, columns]
        group_in, group_out = columns.sum(), reached.sum()
        if d >= 3 and sub.sum() / group_out > 1:
            c = max(group_in, group_out) / (group_in + group_out - 1)
            deltas.append(c * (math.sqrt(sub.sum() / group_out - 1) + math.sqrt(d - 1) - top_two(sub)[1]))
            s1, s2 = top_two(sub_w)
            lambdas.append(c * (s1 - s2))
    out = {"delta_r": delta_r, "lambda_gap": lambda_gap,
           "delta_r_imdb": float(np.mean(deltas)) if deltas else 0.0,
           "lambda_imdb": float(np.mean(lambdas)) if lambdas else 0.0}
    out["l2"] = math.sqrt(sum(0.0 if math.isnan(v) else v * v for v in out.values()))
    return out
