"""The MMD-critic objectives: RBF kernel, kernel means, ``J_b``, the witness and ``L``.

Nothing here builds an ``n x n`` matrix of the data: kernel means are summed in row blocks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from audit.criticism.mmd.checks import check_gamma, check_indices, check_x

TINY = 1e-300  # floor for Schur complements before taking logs


def sqnorms(a: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", a, a)


def rbf(
    a: np.ndarray, a_sq: np.ndarray, b: np.ndarray, b_sq: np.ndarray, gamma: float
) -> np.ndarray:
    d2 = a_sq[:, None] + b_sq[None, :] - 2.0 * (a @ b.T)
    np.maximum(d2, 0.0, out=d2)
    d2 *= -gamma
    return np.exp(d2, out=d2)


def median_gamma(x: np.ndarray, seed: int = 0, max_points: int = 1000) -> float:
    """RBF ``gamma`` from the median heuristic.

    Args:
        x: Embeddings ``(n, d)``.
        seed: Seed of the subsample of rows used when ``n > max_points``.
        max_points: At most this many rows are used (``O(max_points^2)`` memory).

    Returns:
        ``1 / median(||x_i - x_j||^2)`` over pairs ``i < j`` of the subsample. A zero median
        falls back to the mean of the positive squared distances, and to ``1.0`` when all
        points coincide (or there is a single point).
    """
    x = check_x(x)
    if max_points < 2:
        raise ValueError(f"The 'max_points' parameter must be an int >= 2. Got {max_points!r}.")
    n = x.shape[0]
    if n > max_points:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))
        x = x[rows]
    sub = x.astype(np.float64)
    sq = sqnorms(sub)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (sub @ sub.T), 0.0)
    pairs = d2[np.triu_indices(sub.shape[0], k=1)]
    if pairs.size == 0:
        return 1.0
    med = float(np.median(pairs))
    if med <= 0.0:
        positive = pairs[pairs > 0.0]
        if positive.size == 0:
            return 1.0
        med = float(positive.mean())
    return 1.0 / med


def rbf_kernel(a: np.ndarray, b: np.ndarray, gamma: float) -> np.ndarray:
    """RBF kernel matrix ``exp(-gamma ||a_i - b_j||^2)``.

    Args:
        a: Points ``(n_a, d)``.
        b: Points ``(n_b, d)``.
        gamma: Positive inverse squared length scale.

    Returns:
        ``(n_a, n_b)`` float64.
    """
    check_gamma(gamma)
    a64 = np.atleast_2d(np.asarray(a, dtype=np.float64))
    b64 = np.atleast_2d(np.asarray(b, dtype=np.float64))
    if a64.shape[1] != b64.shape[1]:
        raise ValueError(f"a and b must have the same width. Got {a64.shape} and {b64.shape}.")
    return rbf(a64, sqnorms(a64), b64, sqnorms(b64), gamma)


def col_means(
    x64: np.ndarray, x_sq: np.ndarray, z64: np.ndarray, z_sq: np.ndarray, gamma: float, block: int
) -> np.ndarray:
    """``1/n sum_i k(x_i, z_j)`` for every ``j``, in row blocks of ``x``: ``(len(z),)``."""
    total = np.zeros(z64.shape[0], dtype=np.float64)
    for start in range(0, x64.shape[0], block):
        stop = start + block
        total += rbf(x64[start:stop], x_sq[start:stop], z64, z_sq, gamma).sum(axis=0)
    return total / x64.shape[0]


def mean_kernel(x: np.ndarray, gamma: float, block: int = 2048) -> np.ndarray:
    """Kernel mean embedding at the data, ``mu_j = 1/n sum_i k(x_i, x_j)``.

    Computed in blocks of ``block`` rows (``O(n * block)`` memory, never ``n x n``).

    Args:
        x: Embeddings ``(n, d)``.
        gamma: RBF parameter.
        block: Rows per block.

    Returns:
        ``(n,)`` float64.
    """
    x = check_x(x)
    check_gamma(gamma)
    if block < 1:
        raise ValueError(f"The 'block' parameter must be a positive int. Got {block!r} instead.")
    x64 = np.asarray(x, dtype=np.float64)
    sq = sqnorms(x64)
    return col_means(x64, sq, x64, sq, gamma, block)


def prototype_objective(x: np.ndarray, s: Sequence[int], gamma: float) -> float:
    """``J_b(S)`` of a prototype set (``0`` for the empty set).

    Args:
        x: Embeddings ``(n, d)``.
        s: Row indices of the prototypes.
        gamma: RBF parameter.

    Returns:
        ``2/(n|S|) sum_{i in [n], j in S} k(x_i, x_j) - 1/|S|^2 sum_{i, j in S} k(x_i, x_j)``.
    """
    x = check_x(x)
    idx = check_indices(s, x.shape[0], "s")
    if idx.size == 0:
        return 0.0
    k_xs = rbf_kernel(x, x[idx], gamma)
    k_ss = k_xs[idx]
    size = idx.size
    return float(2.0 * k_xs.sum() / (x.shape[0] * size) - k_ss.sum() / size**2)


def witness(
    x: np.ndarray, s: Sequence[int], gamma: float, points: np.ndarray | None = None
) -> np.ndarray:
    """Witness function of the prototypes, ``w(z) = mean_i k(x_i, z) - mean_{j in S} k(x_j, z)``.

    Args:
        x: Embeddings ``(n, d)``.
        s: Row indices of the prototypes (empty: the second term is 0).
        gamma: RBF parameter.
        points: Where to evaluate ``(n_z, d)``; all of ``x`` when None.

    Returns:
        ``(n_z,)`` float64.
    """
    x = check_x(x)
    check_gamma(gamma)
    idx = check_indices(s, x.shape[0], "s")
    x64 = np.asarray(x, dtype=np.float64)
    x_sq = sqnorms(x64)
    if points is None:
        z64, z_sq = x64, x_sq
    else:
        z64 = np.atleast_2d(np.asarray(points, dtype=np.float64))
        z_sq = sqnorms(z64)
    w = col_means(x64, x_sq, z64, z_sq, gamma, 2048)
    if idx.size:
        w -= rbf(z64, z_sq, x64[idx], x_sq[idx], gamma).mean(axis=1)
    return w


def criticism_objective(
    x: np.ndarray, s: Sequence[int], c: Sequence[int], gamma: float, lam: float
) -> float:
    """``L(C) = sum_{l in C} |w(x_l)| + lam * log det K_CC`` (``0`` for the empty set).

    Args:
        x: Embeddings ``(n, d)``.
        s: Row indices of the prototypes.
        c: Row indices of the criticisms.
        gamma: RBF parameter.
        lam: Weight of the log-det diversity term.

    Returns:
        The objective; ``-inf`` when ``K_CC`` is singular (repeated points).
    """
    x = check_x(x)
    cidx = check_indices(c, x.shape[0], "c")
    if cidx.size == 0:
        return 0.0
    pts = np.asarray(x[cidx], dtype=np.float64)
    w = witness(x, s, gamma, points=pts)
    sign, logdet = np.linalg.slogdet(rbf_kernel(pts, pts, gamma))
    if sign <= 0:
        logdet = -math.inf
    reg = 0.0 if lam == 0 else lam * logdet
    return float(np.abs(w).sum() + reg)


class KernelData:
    """``x`` in float64 with squared norms, and kernel columns against chosen rows."""

    def __init__(self, x: np.ndarray, gamma: float) -> None:
        self.x = np.asarray(x, dtype=np.float64)
        self.sq = sqnorms(self.x)
        self.gamma = gamma

    def column(self, j: int) -> np.ndarray:
        """``k(x_i, x_j)`` for all ``i``: ``(n,)``."""
        return rbf(self.x, self.sq, self.x[j : j + 1], self.sq[j : j + 1], self.gamma)[:, 0]
