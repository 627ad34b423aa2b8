"""What both sieves share: the threshold grid of their candidate sets and the pool of member rows.

Sieve-Streaming keeps one candidate set per threshold ``v = (1 + eps)^i`` with ``v`` in
``[M, 2 m M]``, ``M`` the running maximum singleton value (:class:`ThresholdGrid`). Deciding
whether an item joins a set needs the kernel between the item and the set's members; the rows of
all current members live once in a :class:`RowPool`, and a set refers to its members by pool
slot, so one kernel evaluation per item serves every set.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from audit.criticism.mmd.objective import rbf, sqnorms

Fetch = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""Row indices ``(k,)`` -> their rows ``(k, d)`` float64 and squared norms ``(k,)``."""


def exact_fetch(x64: np.ndarray, sq: np.ndarray) -> Fetch:
    """Rows of a float64 copy with their precomputed squared norms."""
    return lambda idx: (x64[idx], sq[idx])


def lazy_fetch(x: np.ndarray) -> Fetch:
    """Rows converted to float64 on demand (no ``n x d`` float64 copy)."""

    def fetch(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = np.asarray(x[idx], dtype=np.float64)
        return rows, sqnorms(rows)

    return fetch


def threshold_exponents(best_single: float, m: int, eps: float) -> range:
    """Integer exponents ``i`` with ``(1+eps)^i`` in ``[best_single, 2 m best_single]``."""
    if best_single <= 0:
        return range(0)
    base = math.log1p(eps)
    lo = math.ceil(math.log(best_single) / base - 1e-12)
    hi = math.floor(math.log(2 * m * best_single) / base + 1e-12)
    return range(lo, hi + 1)


class ThresholdGrid:
    """The live thresholds, ascending, for sets of at most ``m`` items and grid ratio ``eps``.

    Empty until the first :meth:`raise_to` with a positive value. The sieves keep their sets in
    the grid's order (position ``k`` belongs to ``exponents[k]``), so :meth:`raise_to` tells
    them which of their sets survive.
    """

    def __init__(self, m: int, eps: float) -> None:
        self.m, self.eps = m, eps
        self.best_single = -math.inf
        self.exponents: list[int] = []
        self.values = np.zeros(0)  # (1 + eps)^i per live exponent, float64

    def __len__(self) -> int:
        return len(self.exponents)

    def raise_to(self, best_single: float) -> np.ndarray:
        """Move to a new running maximum ``M``.

        Returns:
            ``(len(self),)`` int64: for each new threshold, the position its exponent had
            before, or -1 for a new (empty) set; sets not listed are dropped.
        """
        grid = list(threshold_exponents(best_single, self.m, self.eps))
        where = {i: k for k, i in enumerate(self.exponents)}
        keep = np.array([where.get(i, -1) for i in grid], dtype=np.int64)
        self.best_single = best_single
        self.exponents = grid
        self.values = np.array([(1.0 + self.eps) ** i for i in grid], dtype=np.float64)
        return keep


class RowPool:
    """Rows that are members of some candidate set: ``x`` ``(capacity, d)`` float64 and ``sq``
    their squared norms, the first ``len(self)`` slots in use; ``slot[e]`` is row ``e``'s slot.

    The buffer doubles when full (at least 64 rows). :meth:`rebuild` compacts it to the rows
    still listed, which renumbers the slots.
    """

    def __init__(self, fetch: Fetch) -> None:
        self.fetch = fetch
        self.rows: list[int] = []
        self.slot: dict[int, int] = {}
        self.x = np.zeros((0, 0))
        self.sq = np.zeros(0)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def capacity(self) -> int:
        return int(self.sq.shape[0])

    def add(self, e: int, xe: np.ndarray, sqe: np.ndarray) -> int:
        """The slot of row ``e`` (``xe`` ``(1, d)``, ``sqe`` ``(1,)``), added when new."""
        if e in self.slot:
            return self.slot[e]
        k = len(self.rows)
        if k == self.x.shape[0]:
            grown = np.zeros((max(64, 2 * k), xe.shape[1]))
            if k:
                grown[:k] = self.x[:k]
            self.x = grown
            grown_sq = np.zeros(grown.shape[0])
            grown_sq[:k] = self.sq[:k]
            self.sq = grown_sq
        self.x[k] = xe[0]
        self.sq[k] = sqe[0]
        self.rows.append(e)
        self.slot[e] = k
        return k

    def kernel(self, xe: np.ndarray, sqe: np.ndarray, gamma: float) -> np.ndarray:
        """``k(x_e, x_p)`` for every slot ``p`` in use, plus a trailing 0 that padding slots
        (-1) read: ``(len(self) + 1,)``."""
        size = len(self.rows)
        out = np.zeros(size + 1)
        if size:
            out[:size] = rbf(xe, sqe, self.x[:size], self.sq[:size], gamma)[0]
        return out

    def rebuild(self, rows: list[int]) -> None:
        """Keep only ``rows`` (distinct), in that order, at slots ``0..len(rows)-1``."""
        self.rows = list(rows)
        self.slot = {r: k for k, r in enumerate(rows)}
        if rows:
            x, sq = self.fetch(np.asarray(rows, dtype=np.int64))
            self.x = np.array(x, dtype=np.float64, order="C")
            self.sq = np.array(sq, dtype=np.float64)
        else:
            self.x, self.sq = np.zeros((0, 0)), np.zeros(0)
