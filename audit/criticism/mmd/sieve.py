"""Sieve-Streaming for prototypes (``F = J_b + 1``) and criticisms (``L``): one pass each.

Both keep one candidate set per threshold of a :class:`~audit.criticism.mmd.candidates.
ThresholdGrid` and the rows of their members in a :class:`~audit.criticism.mmd.candidates.
RowPool`; the package docstring states the rules and guarantees.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from audit.criticism.mmd.candidates import (
    RowPool,
    ThresholdGrid,
    exact_fetch,
    lazy_fetch,
)
from audit.criticism.mmd.checks import check_count, check_eps, check_gamma, check_order, check_x
from audit.criticism.mmd.greedy import criticism_inputs
from audit.criticism.mmd.objective import TINY, KernelData, col_means, witness
from audit.criticism.mmd.proto_sieve import ProtoSieve, sampled_means


def sieve_prototypes(
    x: np.ndarray,
    m: int,
    gamma: float,
    eps: float = 0.1,
    order: np.ndarray | None = None,
    mean_sample: int | None = 2048,
    seed: int = 0,
) -> list[int]:
    """Sieve-Streaming maximisation of ``J_b`` (shifted by +1, see the package docstring).

    When ``n > mean_sample`` the data term uses the Monte-Carlo estimate
    ``mu_j ~= 1/s sum_{i in R} k(x_i, x_j)`` over a seeded uniform subsample ``R`` of
    ``s = mean_sample`` rows (drawn without replacement), computed in float32 BLAS blocks with
    float64 sums: ``O(n s d)`` time and ``O(n + s * block)`` memory instead of ``O(n^2 d)``. The
    sieve then maximises an unbiased estimate of ``J_b``'s data term (the within-set term stays
    exact); its ``1/2 - eps`` guarantee holds for that estimated objective, whose data term has a
    standard error of ``O(1/sqrt(mean_sample))`` (each ``mu_j`` is a mean of ``s`` values in
    ``[0, 1]``). With ``n <= mean_sample`` or ``mean_sample=None`` all rows are used, in float64,
    and ``mu`` is exact.

    The per-item work is vectorised over all live thresholds: one kernel evaluation of the item
    against every current member of every candidate set. Items whose gain cannot reach any live
    set's threshold even with a zero kernel to its members (an upper bound, since the RBF kernel
    is non-negative) are skipped without a kernel evaluation; this never changes the result.

    Args:
        x: Embeddings ``(n, d)``.
        m: Maximum number of prototypes.
        gamma: RBF parameter.
        eps: Grid ratio of the thresholds, in ``(0, 1)``.
        order: Permutation of ``range(n)`` giving the stream order; ``0..n-1`` when None.
        mean_sample: Rows used to estimate ``mu``; all rows (exact) when None or ``>= n``.
        seed: Seed of that subsample.

    Returns:
        At most ``m`` distinct row indices, in insertion order, of the best candidate set.
    """
    x = check_x(x)
    n = x.shape[0]
    check_count(m, n, "m")
    check_gamma(gamma)
    check_eps(eps)
    _check_mean_sample(mean_sample)
    stream = check_order(order, n)
    if m == 0:
        return []
    rows = _mean_rows(n, mean_sample, seed)
    if rows is None:
        data = KernelData(x, gamma)
        mu = col_means(data.x, data.sq, data.x, data.sq, gamma, 2048)
        fetch, raw = exact_fetch(data.x, data.sq), None
    else:
        mu = sampled_means(x, rows, gamma)
        fetch, raw = lazy_fetch(x), x
    return ProtoSieve(mu, m, gamma, eps, fetch, raw=raw).run(stream)


def _check_mean_sample(mean_sample: int | None) -> None:
    if mean_sample is not None and not (
        isinstance(mean_sample, int | np.integer) and mean_sample >= 1
    ):
        raise ValueError(
            f"The 'mean_sample' parameter must be a positive int or None. Got {mean_sample!r}."
        )


def _mean_rows(n: int, mean_sample: int | None, seed: int) -> np.ndarray | None:
    """Sorted seeded uniform subsample of ``mean_sample`` rows, or None to use all ``n``."""
    if mean_sample is None or n <= mean_sample:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, size=int(mean_sample), replace=False))


@dataclass
class _CriticismSet:
    """One candidate set: members, their pool slots, the Cholesky factor of ``K_CC`` ``(k, k)``
    and its value ``L(C)``."""

    members: list[int] = field(default_factory=list)
    slots: list[int] = field(default_factory=list)
    chol: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    value: float = 0.0


def sieve_criticisms(
    x: np.ndarray,
    prototypes: Sequence[int],
    c: int,
    gamma: float,
    lam: float = 1e-5,
    eps: float = 0.1,
    order: np.ndarray | None = None,
) -> list[int]:
    """Sieve-Streaming maximisation of ``L(C)`` over the non-prototype rows.

    Each candidate set keeps the Cholesky factor of its ``K_CC`` so a gain costs one triangular
    solve. Prototype rows in the stream are skipped.

    Args:
        x: Embeddings ``(n, d)``.
        prototypes: Row indices of the prototypes (never picked).
        c: Maximum number of criticisms.
        gamma: RBF parameter.
        lam: Non-negative weight of the log-det term.
        eps: Grid ratio of the thresholds, in ``(0, 1)``.
        order: Permutation of ``range(n)`` giving the stream order; ``0..n-1`` when None.

    Returns:
        At most ``c`` distinct row indices, in insertion order, of the best candidate set.
    """
    x, n, protos, excluded = criticism_inputs(x, prototypes, c, gamma, lam)
    check_eps(eps)
    stream = check_order(order, n)
    if c == 0:
        return []
    data = KernelData(x, gamma)
    fetch = exact_fetch(data.x, data.sq)
    absw = np.abs(witness(x, protos.tolist(), gamma))
    grid, pool = ThresholdGrid(c, eps), RowPool(fetch)
    sets: list[_CriticismSet] = []  # in the grid's order
    for e in map(int, stream):
        if excluded[e]:
            continue
        if absw[e] > grid.best_single:
            keep = grid.raise_to(float(absw[e]))
            sets = [sets[k] if k >= 0 else _CriticismSet() for k in keep]
        if not sets:
            continue
        xe, sqe = fetch(np.array([e], dtype=np.int64))
        krow = pool.kernel(xe, sqe, gamma)
        for s, v in zip(sets, grid.values.tolist(), strict=True):
            if _offer_criticism(s, e, float(absw[e]), krow, v, c, lam):
                s.slots.append(pool.add(e, xe, sqe))
    best: list[int] = []
    best_val = -math.inf
    for s in sets:
        if s.members and s.value > best_val:
            best, best_val = s.members, s.value
    return list(best)


def _offer_criticism(
    s: _CriticismSet, e: int, absw_e: float, krow: np.ndarray, v: float, c: int, lam: float
) -> bool:
    """Add ``e`` to ``s`` (all but its pool slot) when the sieve's rule takes it.

    ``krow`` is the kernel of ``e`` against the pool, ``v`` the set's threshold.
    """
    size = len(s.members)
    if size >= c:
        return False
    if size:
        z = forward_solve(s.chol, krow[s.slots])
        resid = 1.0 - float(z @ z)
    else:
        z = np.zeros(0)
        resid = 1.0
    if resid <= TINY:
        return False  # log det would be -inf
    gain = absw_e + (lam * math.log(resid) if lam else 0.0)
    if not (gain > 0 and gain >= (v / 2.0 - s.value) / (c - size)):
        return False
    grown = np.zeros((size + 1, size + 1))
    grown[:size, :size] = s.chol
    grown[size, :size] = z
    grown[size, size] = math.sqrt(resid)
    s.members.append(e)
    s.chol, s.value = grown, s.value + gain
    return True


def forward_solve(lower: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve ``lower @ z = b`` for a lower-triangular ``(k, k)`` matrix: ``(k,)``."""
    z = np.zeros_like(b)
    for r in range(b.size):
        z[r] = (b[r] - lower[r, :r] @ z[:r]) / lower[r, r]
    return z
