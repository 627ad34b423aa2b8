"""Greedy maximisation of ``J_b`` (prototypes) and ``L`` (criticisms), exactly ``m`` picks."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from audit.criticism.mmd.checks import check_count, check_gamma, check_indices, check_x
from audit.criticism.mmd.objective import TINY, KernelData, col_means, witness


def greedy_prototypes(x: np.ndarray, m: int, gamma: float, start: Sequence[int] = ()) -> list[int]:
    """Standard greedy maximisation of ``J_b`` with exactly ``m`` picks.

    Args:
        x: Embeddings ``(n, d)``.
        m: Number of prototypes, at most ``n``.
        gamma: RBF parameter.
        start: Prototypes already chosen (for example a sieve's best set), kept first and
            extended greedily; distinct, at most ``m``.

    Returns:
        ``m`` distinct row indices in selection order (ties go to the smallest index).
    """
    x = check_x(x)
    n = x.shape[0]
    check_count(m, n, "m")
    check_gamma(gamma)
    first = check_indices(start, n, "start").tolist()
    if len(set(first)) != len(first) or len(first) > m:
        raise ValueError(
            f"The 'start' indices must be distinct and at most m={m}. Got {first} instead."
        )
    data = KernelData(x, gamma)
    mu = col_means(data.x, data.sq, data.x, data.sq, gamma, 2048)
    ksum = np.zeros(n)  # sum_{j in S} k(x_e, x_j)
    sum_mu = sum_k = 0.0
    chosen: list[int] = []
    taken = np.zeros(n, dtype=bool)
    for size in range(m):
        if size < len(first):
            j = int(first[size])
        else:
            value = 2.0 * (sum_mu + mu) / (size + 1) - (sum_k + 2.0 * ksum + 1.0) / (size + 1) ** 2
            value[taken] = -np.inf
            j = int(np.argmax(value))
        sum_k += 2.0 * ksum[j] + 1.0
        sum_mu += mu[j]
        ksum += data.column(j)
        taken[j] = True
        chosen.append(j)
    return chosen


def criticism_inputs(
    x: np.ndarray, prototypes: Sequence[int], c: int, gamma: float, lam: float
) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
    """Validate a criticism call; returns ``x``, ``n``, the prototype indices and their mask."""
    x = check_x(x)
    n = x.shape[0]
    protos = check_indices(prototypes, n, "prototypes")
    excluded = np.zeros(n, dtype=bool)
    excluded[protos] = True
    check_count(c, n - int(excluded.sum()), "c")
    check_gamma(gamma)
    if lam < 0:
        raise ValueError(f"The 'lam' parameter must be a float >= 0. Got {lam!r} instead.")
    return x, n, protos, excluded


def greedy_criticisms(
    x: np.ndarray, prototypes: Sequence[int], c: int, gamma: float, lam: float = 1e-5
) -> list[int]:
    """Greedy maximisation of ``L(C)`` over the non-prototype rows, with exactly ``c`` picks.

    The log-det gain of ``e`` is ``log r_e`` with the Schur complement
    ``r_e = 1 - k_eC K_CC^{-1} k_Ce``, kept for all rows by an incremental Cholesky factor.

    Args:
        x: Embeddings ``(n, d)``.
        prototypes: Row indices of the prototypes (never picked).
        c: Number of criticisms, at most ``n - len(set(prototypes))``.
        gamma: RBF parameter.
        lam: Non-negative weight of the log-det term.

    Returns:
        ``c`` distinct row indices in selection order (ties go to the smallest index).
    """
    x, n, protos, excluded = criticism_inputs(x, prototypes, c, gamma, lam)
    data = KernelData(x, gamma)
    absw = np.abs(witness(x, protos.tolist(), gamma))
    resid = np.ones(n)  # Schur complements r_e
    factor = np.zeros((c, n))  # rows of the incremental Cholesky factor
    chosen: list[int] = []
    for t in range(c):
        value = absw + lam * np.log(np.maximum(resid, TINY))
        value[excluded] = -np.inf
        j = int(np.argmax(value))
        if resid[j] > TINY:
            g = (data.column(j) - factor[:t].T @ factor[:t, j]) / math.sqrt(resid[j])
            factor[t] = g
            resid = resid - g * g
        excluded[j] = True
        chosen.append(j)
    return chosen
