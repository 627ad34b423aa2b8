"""MMD-critic prototypes and criticisms on embeddings (Kim, Khanna & Koyejo, NeurIPS 2016).

Prototypes maximise

    J_b(S) = 2/(n|S|) sum_{i in [n], j in S} k(x_i, x_j) - 1/|S|^2 sum_{i, j in S} k(x_i, x_j),

which is ``mean(K) - MMD^2(X, S)``; ``J_b(empty) = 0``. Criticisms, given prototypes ``S``,
maximise ``L(C) = sum_{l in C} |w(x_l)| + lam * log det K_CC`` with the witness function
``w(z) = 1/n sum_i k(x_i, z) - 1/|S| sum_{j in S} k(x_j, z)``. The kernel is the RBF
``k(a, b) = exp(-gamma ||a - b||^2)``, with ``gamma`` from :func:`median_gamma` by default.

Memory: nothing here builds an ``n x n`` matrix. ``mu_j = 1/n sum_i k(x_i, x_j)`` is computed
once in row blocks (``O(n * block)``); after that every marginal gain needs only the kernel
between a candidate and the current set, so the solvers use ``O(n * (d + m))`` memory (the
greedy criticism solver keeps a ``(c, n)`` incremental Cholesky factor).

Guarantees:

- ``J_b`` is not monotone submodular in general (e.g. ``J_b({e}) = 2 mu_e - 1`` is negative
  when the kernel is narrow, although ``J_b(empty) = 0``). Kim et al. (Theorem 3) prove it is
  monotone submodular when the kernel matrix is diagonally dominant: constant diagonal and
  non-negative off-diagonal entries below a bound of order ``k_ii / n^3`` (see the paper for the
  exact constant), i.e. an RBF kernel with a small enough bandwidth. Only there do the ratios
  below hold for prototypes; elsewhere (including the median heuristic) both solvers are
  heuristics, which in practice come close to the brute-force optimum (see the tests).
- ``L`` is submodular (a modular term plus ``lam`` times the submodular ``log det``) but not
  monotone for an RBF kernel (``log det K_CC <= 0`` by Hadamard's inequality and decreases
  as ``C`` grows); with the paper's ``lam = 1e-5`` it is nearly modular.
- Greedy (:func:`greedy_prototypes`, :func:`greedy_criticisms`): ``f(S) >= (1 - 1/e) OPT`` for a
  monotone submodular ``f`` with ``f(empty) = 0`` (Nemhauser, Wolsey & Fisher 1978). Picks
  exactly ``m`` items, ties to the smallest index.
- Sieve-Streaming (:func:`sieve_prototypes`, :func:`sieve_criticisms`; Badanidiyuru,
  Mirzasoleiman, Karbasi & Krause, KDD 2014): ``f(S) >= (1/2 - eps) OPT`` under the same
  conditions, in one pass over the data in a given order, with ``O(log(m) / eps)`` candidate
  sets of at most ``m`` items each. It may return fewer than ``m`` items.

Sieve details: thresholds are ``v = (1 + eps)^i`` for integers ``i`` with
``v`` in ``[M, 2 m M]``, ``M`` the running maximum singleton value; they are instantiated
lazily as ``M`` grows and dropped once below ``M``. Item ``e`` joins ``S_v`` when
``|S_v| < m``, its gain ``D`` satisfies ``D >= (v/2 - f(S_v)) / (m - |S_v|)`` and ``D > 0``
(the last condition only matters for a non-monotone ``f``: an item never lowers a set's value).
The best candidate set is returned. The sieve needs positive singleton values, so:

- Prototypes run on the shifted ``F(S) = J_b(S) + 1`` for non-empty ``S`` (``F(empty) = 0``).
  Since RBF values lie in ``[0, 1]``, ``J_b(S) >= -1`` and ``F >= 0``; ``F({e}) = 2 mu_e``;
  the shift is constant over non-empty sets, so it changes no comparison between them. The
  ``1/2 - eps`` ratio is then relative to ``F``.
- Criticisms need no shift: ``L({e}) = |w(x_e)| >= 0`` and ``OPT <= c max_e |w(x_e)|`` by
  Hadamard's inequality, so the grid brackets ``OPT``. Gains can be negative (the log-det term)
  and are handled by the ``D > 0`` rule.

All functions are deterministic: the same inputs (and ``order``) give the same output.

Example:
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 8))
    >>> gamma = median_gamma(x)
    >>> protos = greedy_prototypes(x, 4, gamma)
    >>> crits = greedy_criticisms(x, protos, 2, gamma)
    >>> len(protos), len(crits), set(protos).isdisjoint(crits)
    (4, 2, True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

_TINY = 1e-300  # floor for Schur complements before taking logs


def _check_x(x: np.ndarray) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"x must be a non-empty 2-D array (n, d). Got shape {arr.shape} instead.")
    return arr


def _check_gamma(gamma: float) -> None:
    if not (math.isfinite(gamma) and gamma > 0):
        raise ValueError(f"The 'gamma' parameter must be a positive float. Got {gamma!r} instead.")


def _check_indices(idx: Sequence[int], n: int, name: str) -> np.ndarray:
    arr = np.asarray(list(idx), dtype=np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        raise ValueError(f"The '{name}' indices must lie in [0, {n}). Got {arr.tolist()} instead.")
    return arr


def _check_count(k: int, upper: int, name: str) -> None:
    if not (isinstance(k, int | np.integer) and 0 <= k <= upper):
        raise ValueError(
            f"The '{name}' parameter must be an int in [0, {upper}]. Got {k!r} instead."
        )


def _check_eps(eps: float) -> None:
    if not (0 < eps < 1):
        raise ValueError(f"The 'eps' parameter must be a float in (0, 1). Got {eps!r} instead.")


def _check_order(order: np.ndarray | None, n: int) -> np.ndarray:
    if order is None:
        return np.arange(n)
    arr = np.asarray(order, dtype=np.int64)
    if arr.ndim != 1 or arr.size != n or not np.array_equal(np.sort(arr), np.arange(n)):
        raise ValueError("The 'order' parameter must be a permutation of range(n).")
    return arr


def _sqnorms(a: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", a, a)


def _rbf(
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
    x = _check_x(x)
    if max_points < 2:
        raise ValueError(f"The 'max_points' parameter must be an int >= 2. Got {max_points!r}.")
    n = x.shape[0]
    if n > max_points:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))
        x = x[rows]
    sub = x.astype(np.float64)
    sq = _sqnorms(sub)
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
    _check_gamma(gamma)
    a64 = np.atleast_2d(np.asarray(a, dtype=np.float64))
    b64 = np.atleast_2d(np.asarray(b, dtype=np.float64))
    if a64.shape[1] != b64.shape[1]:
        raise ValueError(f"a and b must have the same width. Got {a64.shape} and {b64.shape}.")
    return _rbf(a64, _sqnorms(a64), b64, _sqnorms(b64), gamma)


def _col_means(
    x64: np.ndarray, x_sq: np.ndarray, z64: np.ndarray, z_sq: np.ndarray, gamma: float, block: int
) -> np.ndarray:
    """``1/n sum_i k(x_i, z_j)`` for every ``j``, in row blocks of ``x``: ``(len(z),)``."""
    total = np.zeros(z64.shape[0], dtype=np.float64)
    for start in range(0, x64.shape[0], block):
        stop = start + block
        total += _rbf(x64[start:stop], x_sq[start:stop], z64, z_sq, gamma).sum(axis=0)
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
    x = _check_x(x)
    _check_gamma(gamma)
    if block < 1:
        raise ValueError(f"The 'block' parameter must be a positive int. Got {block!r} instead.")
    x64 = np.asarray(x, dtype=np.float64)
    sq = _sqnorms(x64)
    return _col_means(x64, sq, x64, sq, gamma, block)


def prototype_objective(x: np.ndarray, s: Sequence[int], gamma: float) -> float:
    """``J_b(S)`` of a prototype set (``0`` for the empty set).

    Args:
        x: Embeddings ``(n, d)``.
        s: Row indices of the prototypes.
        gamma: RBF parameter.

    Returns:
        ``2/(n|S|) sum_{i, j in S} k(x_i, x_j) - 1/|S|^2 sum_{i, j in S} k(x_i, x_j)``.
    """
    x = _check_x(x)
    idx = _check_indices(s, x.shape[0], "s")
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
    x = _check_x(x)
    _check_gamma(gamma)
    idx = _check_indices(s, x.shape[0], "s")
    x64 = np.asarray(x, dtype=np.float64)
    x_sq = _sqnorms(x64)
    if points is None:
        z64, z_sq = x64, x_sq
    else:
        z64 = np.atleast_2d(np.asarray(points, dtype=np.float64))
        z_sq = _sqnorms(z64)
    w = _col_means(x64, x_sq, z64, z_sq, gamma, 2048)
    if idx.size:
        w -= _rbf(z64, z_sq, x64[idx], x_sq[idx], gamma).mean(axis=1)
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
    x = _check_x(x)
    cidx = _check_indices(c, x.shape[0], "c")
    if cidx.size == 0:
        return 0.0
    pts = np.asarray(x[cidx], dtype=np.float64)
    w = witness(x, s, gamma, points=pts)
    sign, logdet = np.linalg.slogdet(rbf_kernel(pts, pts, gamma))
    if sign <= 0:
        logdet = -math.inf
    reg = 0.0 if lam == 0 else lam * logdet
    return float(np.abs(w).sum() + reg)


class _Data:
    """``x`` in float64 with squared norms, and kernel columns against chosen rows."""

    def __init__(self, x: np.ndarray, gamma: float) -> None:
        self.x = np.asarray(x, dtype=np.float64)
        self.sq = _sqnorms(self.x)
        self.gamma = gamma

    def column(self, j: int) -> np.ndarray:
        """``k(x_i, x_j)`` for all ``i``: ``(n,)``."""
        return _rbf(self.x, self.sq, self.x[j : j + 1], self.sq[j : j + 1], self.gamma)[:, 0]

    def row(self, e: int, rows: np.ndarray) -> np.ndarray:
        """``k(x_e, x_r)`` for ``r`` in ``rows``: ``(len(rows),)``."""
        return _rbf(self.x[e : e + 1], self.sq[e : e + 1], self.x[rows], self.sq[rows], self.gamma)[
            0
        ]


def greedy_prototypes(x: np.ndarray, m: int, gamma: float) -> list[int]:
    """Standard greedy maximisation of ``J_b`` with exactly ``m`` picks.

    Args:
        x: Embeddings ``(n, d)``.
        m: Number of prototypes, at most ``n``.
        gamma: RBF parameter.

    Returns:
        ``m`` distinct row indices in selection order (ties go to the smallest index).
    """
    x = _check_x(x)
    n = x.shape[0]
    _check_count(m, n, "m")
    _check_gamma(gamma)
    data = _Data(x, gamma)
    mu = _col_means(data.x, data.sq, data.x, data.sq, gamma, 2048)
    ksum = np.zeros(n)  # sum_{j in S} k(x_e, x_j)
    sum_mu = sum_k = 0.0
    chosen: list[int] = []
    taken = np.zeros(n, dtype=bool)
    for size in range(m):
        value = 2.0 * (sum_mu + mu) / (size + 1) - (sum_k + 2.0 * ksum + 1.0) / (size + 1) ** 2
        value[taken] = -np.inf
        j = int(np.argmax(value))
        sum_k += 2.0 * ksum[j] + 1.0
        sum_mu += mu[j]
        ksum += data.column(j)
        taken[j] = True
        chosen.append(j)
    return chosen


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
    x = _check_x(x)
    n = x.shape[0]
    protos = _check_indices(prototypes, n, "prototypes")
    excluded = np.zeros(n, dtype=bool)
    excluded[protos] = True
    _check_count(c, n - int(excluded.sum()), "c")
    _check_gamma(gamma)
    if lam < 0:
        raise ValueError(f"The 'lam' parameter must be a float >= 0. Got {lam!r} instead.")
    data = _Data(x, gamma)
    absw = np.abs(witness(x, protos.tolist(), gamma))
    resid = np.ones(n)  # Schur complements r_e
    factor = np.zeros((c, n))  # rows of the incremental Cholesky factor
    chosen: list[int] = []
    for t in range(c):
        value = absw + lam * np.log(np.maximum(resid, _TINY))
        value[excluded] = -np.inf
        j = int(np.argmax(value))
        if resid[j] > _TINY:
            g = (data.column(j) - factor[:t].T @ factor[:t, j]) / math.sqrt(resid[j])
            factor[t] = g
            resid = resid - g * g
        excluded[j] = True
        chosen.append(j)
    return chosen


def _grid(best_single: float, m: int, eps: float) -> range:
    """Integer exponents ``i`` with ``(1+eps)^i`` in ``[best_single, 2 m best_single]``."""
    if best_single <= 0:
        return range(0)
    base = math.log1p(eps)
    lo = math.ceil(math.log(best_single) / base - 1e-12)
    hi = math.floor(math.log(2 * m * best_single) / base + 1e-12)
    return range(lo, hi + 1)


class _Pool:
    """Rows already in some candidate set, and the kernel of a new row against them."""

    def __init__(self, data: _Data, capacity: int) -> None:
        self.data = data
        self.rows = np.zeros(capacity, dtype=np.int64)
        self.size = 0
        self.where: dict[int, int] = {}

    def add(self, e: int) -> int:
        if e not in self.where:
            if self.size == self.rows.size:
                self.rows = np.concatenate([self.rows, np.zeros_like(self.rows)])
            self.rows[self.size] = e
            self.where[e] = self.size
            self.size += 1
        return self.where[e]

    def kernel(self, e: int) -> np.ndarray:
        """``k(x_e, x_p)`` for the pooled rows ``p``, plus a trailing 0 for padding slots."""
        out = np.zeros(self.size + 1)
        if self.size:
            out[: self.size] = self.data.row(e, self.rows[: self.size])
        return out


def sieve_prototypes(
    x: np.ndarray,
    m: int,
    gamma: float,
    eps: float = 0.1,
    order: np.ndarray | None = None,
) -> list[int]:
    """Sieve-Streaming maximisation of ``J_b`` (shifted by +1, see the module docstring).

    Args:
        x: Embeddings ``(n, d)``.
        m: Maximum number of prototypes.
        gamma: RBF parameter.
        eps: Grid ratio of the thresholds, in ``(0, 1)``.
        order: Permutation of ``range(n)`` giving the stream order; ``0..n-1`` when None.

    Returns:
        At most ``m`` distinct row indices, in insertion order, of the best candidate set.
    """
    x = _check_x(x)
    n = x.shape[0]
    _check_count(m, n, "m")
    _check_gamma(gamma)
    _check_eps(eps)
    stream = _check_order(order, n)
    if m == 0:
        return []
    data = _Data(x, gamma)
    mu = _col_means(data.x, data.sq, data.x, data.sq, gamma, 2048)
    pool = _Pool(data, 64)
    # One candidate set per threshold exponent: members as pool slots (-1 = empty),
    # size, sum of mu, sum of the kernel within the set, and the shifted value F.
    sets: dict[int, tuple[list[int], list[int], list[float]]] = {}
    best_single = -math.inf
    for e in map(int, stream):
        single = 2.0 * mu[e]
        if single > best_single:
            best_single = single
            grid = _grid(best_single, m, eps)
            sets = {i: sets.get(i, ([], [], [0.0, 0.0])) for i in grid}
        if not sets:
            continue
        keys = list(sets)
        krow = pool.kernel(e)
        for i in keys:
            members, slots, (sum_mu, sum_k) = sets[i]
            size = len(members)
            if size >= m:
                continue
            f_old = 0.0 if size == 0 else 2.0 * sum_mu / size - sum_k / size**2 + 1.0
            ke = float(krow[slots].sum()) if slots else 0.0
            new_k = sum_k + 2.0 * ke + 1.0
            f_new = 2.0 * (sum_mu + mu[e]) / (size + 1) - new_k / (size + 1) ** 2 + 1.0
            gain = f_new - f_old
            v = (1.0 + eps) ** i
            if gain > 0 and gain >= (v / 2.0 - f_old) / (m - size):
                members.append(e)
                slots.append(pool.add(e))
                sets[i] = (members, slots, [sum_mu + mu[e], new_k])
    best: list[int] = []
    best_val = -math.inf
    for i in sorted(sets):
        members, _, (sum_mu, sum_k) = sets[i]
        if members:
            size = len(members)
            val = 2.0 * sum_mu / size - sum_k / size**2
            if val > best_val:
                best, best_val = members, val
    return list(best)


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
    x = _check_x(x)
    n = x.shape[0]
    protos = _check_indices(prototypes, n, "prototypes")
    excluded = np.zeros(n, dtype=bool)
    excluded[protos] = True
    _check_count(c, n - int(excluded.sum()), "c")
    _check_gamma(gamma)
    _check_eps(eps)
    if lam < 0:
        raise ValueError(f"The 'lam' parameter must be a float >= 0. Got {lam!r} instead.")
    stream = _check_order(order, n)
    if c == 0:
        return []
    data = _Data(x, gamma)
    absw = np.abs(witness(x, protos.tolist(), gamma))
    pool = _Pool(data, 64)
    # Per threshold exponent: members, pool slots, Cholesky factor of K_CC, value L(C).
    sets: dict[int, tuple[list[int], list[int], np.ndarray, float]] = {}
    best_single = -math.inf
    for e in map(int, stream):
        if excluded[e]:
            continue
        if absw[e] > best_single:
            best_single = float(absw[e])
            grid = _grid(best_single, c, eps)
            sets = {i: sets.get(i, ([], [], np.zeros((0, 0)), 0.0)) for i in grid}
        if not sets:
            continue
        krow = pool.kernel(e)
        for i in list(sets):
            members, slots, chol, value = sets[i]
            size = len(members)
            if size >= c:
                continue
            if size:
                k_vec = krow[slots]
                z = _forward_solve(chol, k_vec)
                resid = 1.0 - float(z @ z)
            else:
                z = np.zeros(0)
                resid = 1.0
            if resid <= _TINY:
                continue  # log det would be -inf
            gain = float(absw[e]) + (lam * math.log(resid) if lam else 0.0)
            v = (1.0 + eps) ** i
            if gain > 0 and gain >= (v / 2.0 - value) / (c - size):
                grown = np.zeros((size + 1, size + 1))
                grown[:size, :size] = chol
                grown[size, :size] = z
                grown[size, size] = math.sqrt(resid)
                members.append(e)
                slots.append(pool.add(e))
                sets[i] = (members, slots, grown, value + gain)
    best: list[int] = []
    best_val = -math.inf
    for i in sorted(sets):
        members, _, _, value = sets[i]
        if members and value > best_val:
            best, best_val = members, value
    return list(best)


def _forward_solve(lower: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve ``lower @ z = b`` for a lower-triangular ``(k, k)`` matrix: ``(k,)``."""
    z = np.zeros_like(b)
    for r in range(b.size):
        z[r] = (b[r] - lower[r, :r] @ z[:r]) / lower[r, r]
    return z
