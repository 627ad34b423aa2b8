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

Sampled means (:func:`sieve_prototypes`, ``mean_sample``, default 2048): for ``n > mean_sample``
``mu`` is estimated from a seeded uniform subsample of ``mean_sample`` rows (float32 BLAS blocks,
float64 sums), so the sieve costs ``O(n * mean_sample * d)`` instead of ``O(n^2 d)`` and memory
stays linear in ``n``. It then maximises an unbiased Monte-Carlo estimate of ``J_b``'s data term;
the ``1/2 - eps`` guarantee holds for that estimated objective, whose standard error is
``O(1/sqrt(mean_sample))``. With ``n <= mean_sample`` (or ``None``) the means are exact.

All functions are deterministic: the same inputs (``order``, ``seed``) give the same output.

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
from collections.abc import Callable, Sequence

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
        ``2/(n|S|) sum_{i in [n], j in S} k(x_i, x_j) - 1/|S|^2 sum_{i, j in S} k(x_i, x_j)``.
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
    x = _check_x(x)
    n = x.shape[0]
    _check_count(m, n, "m")
    _check_gamma(gamma)
    first = _check_indices(start, n, "start").tolist()
    if len(set(first)) != len(first) or len(first) > m:
        raise ValueError(
            f"The 'start' indices must be distinct and at most m={m}. Got {first} instead."
        )
    data = _Data(x, gamma)
    mu = _col_means(data.x, data.sq, data.x, data.sq, gamma, 2048)
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


def _criticism_inputs(
    x: np.ndarray, prototypes: Sequence[int], c: int, gamma: float, lam: float
) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
    """Validate a criticism call; returns ``x``, ``n``, the prototype indices and their mask."""
    x = _check_x(x)
    n = x.shape[0]
    protos = _check_indices(prototypes, n, "prototypes")
    excluded = np.zeros(n, dtype=bool)
    excluded[protos] = True
    _check_count(c, n - int(excluded.sum()), "c")
    _check_gamma(gamma)
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
    x, n, protos, excluded = _criticism_inputs(x, prototypes, c, gamma, lam)
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
    mean_sample: int | None = 2048,
    seed: int = 0,
) -> list[int]:
    """Sieve-Streaming maximisation of ``J_b`` (shifted by +1, see the module docstring).

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
    x = _check_x(x)
    n = x.shape[0]
    _check_count(m, n, "m")
    _check_gamma(gamma)
    _check_eps(eps)
    _check_mean_sample(mean_sample)
    stream = _check_order(order, n)
    if m == 0:
        return []
    rows = _mean_rows(n, mean_sample, seed)
    if rows is None:
        data = _Data(x, gamma)
        mu = _col_means(data.x, data.sq, data.x, data.sq, gamma, 2048)
        fetch, raw = _exact_fetch(data.x, data.sq), None
    else:
        mu = _sampled_means(x, rows, gamma)
        fetch, raw = _lazy_fetch(x), x
    return _ProtoSieve(mu, m, gamma, eps, fetch, raw=raw).run(stream)


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


def _sampled_means(x: np.ndarray, rows: np.ndarray, gamma: float, block: int = 2048) -> np.ndarray:
    """``1/s sum_{i in rows} k(x_i, x_j)`` for every ``j``: ``(n,)`` float64.

    Float32 BLAS on data centred at the subsample mean (distances are unchanged, and centring
    keeps ``||a||^2 + ||b||^2`` close to ``||a - b||^2`` so float32 loses little); the exponent
    ``2 gamma <a, b> - gamma ||a||^2 - gamma ||b||^2`` comes out of a single product of matrices
    augmented by two columns, and the row sums of the kernel are accumulated in float64.
    """
    n, d = x.shape
    s = rows.size
    centre = np.asarray(x[rows], dtype=np.float64).mean(axis=0).astype(np.float32)
    right = np.empty((s, d + 2), dtype=np.float32)
    np.subtract(x[rows], centre, out=right[:, :d], casting="unsafe")
    r_sq = np.einsum("ij,ij->i", right[:, :d], right[:, :d], dtype=np.float64)
    right[:, :d] *= np.float32(2.0 * gamma)
    right[:, d] = 1.0
    right[:, d + 1] = -gamma * r_sq
    mu = np.empty(n, dtype=np.float64)
    buf = np.empty((min(block, n), d + 2), dtype=np.float32)
    for start in range(0, n, block):
        stop = min(start + block, n)
        left = buf[: stop - start]
        np.subtract(x[start:stop], centre, out=left[:, :d], casting="unsafe")
        l_sq = np.einsum("ij,ij->i", left[:, :d], left[:, :d], dtype=np.float64)
        left[:, d] = -gamma * l_sq
        left[:, d + 1] = 1.0
        expo = left @ right.T  # -gamma ||x_j - x_i||^2, (block, s)
        np.minimum(expo, 0.0, out=expo)
        np.exp(expo, out=expo)
        mu[start:stop] = expo.sum(axis=1, dtype=np.float64)
    return mu / s


Fetch = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def _exact_fetch(x64: np.ndarray, sq: np.ndarray) -> Fetch:
    """Rows of a float64 copy with their precomputed squared norms."""
    return lambda idx: (x64[idx], sq[idx])


def _lazy_fetch(x: np.ndarray) -> Fetch:
    """Rows converted to float64 on demand (no ``n x d`` float64 copy)."""

    def fetch(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = np.asarray(x[idx], dtype=np.float64)
        return rows, _sqnorms(rows)

    return fetch


class _ProtoSieve:
    """Sieve-Streaming on ``F = J_b + 1`` with every live threshold handled at once.

    The live sets are the rows of arrays ordered by threshold exponent: size, sum of ``mu``,
    sum of the kernel within the set (diagonal included) and members as slots of a pool that
    holds, in float64, the rows of all current members. The arithmetic per set is the same, in
    the same order, as the one-set-at-a-time formulation.
    """

    def __init__(
        self,
        mu: np.ndarray,
        m: int,
        gamma: float,
        eps: float,
        fetch: Fetch,
        raw: np.ndarray | None = None,
    ) -> None:
        self.mu, self.m, self.gamma, self.eps, self.fetch = mu, m, gamma, eps, fetch
        self.raw = raw  # the input rows, for the float32 screen (None: screen in float64)
        self.exps: list[int] = []
        self.v = np.zeros(0)
        self.size = np.zeros(0, dtype=np.int64)
        self.sum_mu = np.zeros(0)
        self.sum_k = np.zeros(0)
        self.members = np.zeros((0, m), dtype=np.int64)
        self.slots = np.zeros((0, m), dtype=np.int64)  # -1: empty (the trailing 0 of a row)
        self.pool_rows: list[int] = []
        self.pool_slot: dict[int, int] = {}
        self.pool_x = np.zeros((0, 0))
        self.pool_sq = np.zeros(0)

    # -- state -----------------------------------------------------------------------------

    def _regrid(self, best_single: float) -> None:
        """Keep the sets whose exponent stays on the new grid, add empty ones for the rest."""
        grid = list(_grid(best_single, self.m, self.eps))
        where = {i: k for k, i in enumerate(self.exps)}
        keep = np.array([where.get(i, -1) for i in grid], dtype=np.int64)
        old = keep >= 0
        count = len(grid)

        def take(arr: np.ndarray, fill: float | int) -> np.ndarray:
            out = np.full((count, *arr.shape[1:]), fill, dtype=arr.dtype)
            out[old] = arr[keep[old]]
            return out

        self.exps = grid
        self.v = np.array([(1.0 + self.eps) ** i for i in grid], dtype=np.float64)
        self.size = take(self.size, 0)
        self.sum_mu = take(self.sum_mu, 0.0)
        self.sum_k = take(self.sum_k, 0.0)
        self.members = take(self.members, -1)
        self.slots = take(self.slots, -1)
        live_members = int(self.size.sum())
        if len(self.pool_rows) > 2 * live_members + 16:
            self._rebuild_pool()

    def _rebuild_pool(self) -> None:
        rows = list(dict.fromkeys(int(r) for r in self.members[self.members >= 0].tolist()))
        self.pool_rows = rows
        self.pool_slot = {r: k for k, r in enumerate(rows)}
        if rows:
            self.pool_x, self.pool_sq = self.fetch(np.asarray(rows, dtype=np.int64))
            self.pool_x = np.array(self.pool_x, dtype=np.float64, order="C")
            self.pool_sq = np.array(self.pool_sq, dtype=np.float64)
        else:
            self.pool_x, self.pool_sq = np.zeros((0, 0)), np.zeros(0)
        mapped = np.full(self.slots.shape, -1, dtype=np.int64)
        filled = self.members >= 0
        mapped[filled] = [self.pool_slot[int(r)] for r in self.members[filled].tolist()]
        self.slots = mapped

    def _pool_add(self, e: int, xe: np.ndarray, sqe: np.ndarray) -> int:
        if e in self.pool_slot:
            return self.pool_slot[e]
        k = len(self.pool_rows)
        if k == self.pool_x.shape[0]:
            grown = np.zeros((max(64, 2 * k), xe.shape[1]))
            if k:
                grown[:k] = self.pool_x[:k]
            self.pool_x = grown
            grown_sq = np.zeros(grown.shape[0])
            grown_sq[:k] = self.pool_sq[:k]
            self.pool_sq = grown_sq
        self.pool_x[k] = xe[0]
        self.pool_sq[k] = sqe[0]
        self.pool_rows.append(e)
        self.pool_slot[e] = k
        return k

    def _f_old(self) -> np.ndarray:
        size = self.size.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            f = 2.0 * self.sum_mu / size - self.sum_k / size**2 + 1.0
        return np.where(self.size == 0, 0.0, f)

    # -- one item ----------------------------------------------------------------------------

    def _offer(self, e: int) -> bool:
        """Offer item ``e`` to every live set; True when some set took it."""
        count = len(self.exps)
        xe, sqe = self.fetch(np.array([e], dtype=np.int64))
        npool = len(self.pool_rows)
        krow = np.zeros(npool + 1)
        if npool and (self.size > 0).any():
            krow[:npool] = _rbf(xe, sqe, self.pool_x[:npool], self.pool_sq[:npool], self.gamma)[0]
        ke = krow[self.slots].sum(axis=1) if count else np.zeros(0)
        size = self.size.astype(np.float64)
        f_old = self._f_old()
        new_k = self.sum_k + 2.0 * ke + 1.0
        mu_e = self.mu[e]
        f_new = 2.0 * (self.sum_mu + mu_e) / (size + 1) - new_k / (size + 1) ** 2 + 1.0
        gain = f_new - f_old
        with np.errstate(divide="ignore", invalid="ignore"):
            bar = (self.v / 2.0 - f_old) / (self.m - size)
        take = (self.size < self.m) & (gain > 0) & (gain >= bar)
        if not take.any():
            return False
        slot = self._pool_add(e, xe, sqe)
        idx = np.flatnonzero(take)
        pos = self.size[idx]
        self.members[idx, pos] = e
        self.slots[idx, pos] = slot
        self.size[idx] += 1
        self.sum_mu[idx] = self.sum_mu[idx] + mu_e
        self.sum_k[idx] = new_k[idx]
        return True

    # -- the pass ------------------------------------------------------------------------------

    def _kernel_low(self, items: np.ndarray, used: np.ndarray) -> np.ndarray:
        """Lower bounds on ``k(x_i, x_p)`` for ``items`` and pool slots ``used``.

        Exact float64 (up to rounding) when the data were already converted; otherwise float32
        BLAS on the raw rows, with the squared distance raised by the worst-case float32 error
        bound ``(gamma_d + 4u)(||a|| + ||b||)^2`` (``u = 2^-24``, ``gamma_d = d u / (1 - d u)``,
        inputs rounded to float32 included), so no value exceeds the true kernel.
        """
        if self.raw is None:
            xi, sqi = self.fetch(items)
            return _rbf(xi, sqi, self.pool_x[used], self.pool_sq[used], self.gamma)
        a = np.asarray(self.raw[items], dtype=np.float32)
        b = self.pool_x[used].astype(np.float32)
        sq_a = np.einsum("ij,ij->i", a, a).astype(np.float64)
        sq_b = np.einsum("ij,ij->i", b, b).astype(np.float64)
        dots = (a @ b.T).astype(np.float64)
        unit = 2.0**-24
        d = a.shape[1] + 1
        slack = (d * unit / (1.0 - d * unit) + 4.0 * unit) * 1.01
        norm_a, norm_b = np.sqrt(sq_a * (1 + slack)), np.sqrt(sq_b * (1 + slack))
        err = slack * (norm_a[:, None] + norm_b[None, :]) ** 2
        d2 = sq_a[:, None] + sq_b[None, :] - 2.0 * dots + err
        np.maximum(d2, 0.0, out=d2)
        return np.exp(-self.gamma * d2)

    def _screen(self, items: np.ndarray) -> np.ndarray:
        """Which of ``items`` some live set could take, given the current state: ``(len,)``.

        Evaluates every (item, set) gain at once from one kernel product of the items against
        the members of the sets that are not full, with a rounding margin, so it only filters:
        every item the exact one-item step (:meth:`_offer`) would accept is flagged.
        """
        live = self.size < self.m
        if not live.any():
            return np.zeros(items.size, dtype=bool)
        slots = self.slots[live]
        used = np.unique(slots[slots >= 0])
        ke = np.zeros((items.size, slots.shape[0]))
        if used.size:
            kern = np.zeros((items.size, self.pool_sq.shape[0] + 1))
            kern[:, used] = self._kernel_low(items, used)
            ke = kern[:, slots].sum(axis=2)  # padding slots -1 read the zero last column
        size = self.size[live].astype(np.float64)
        f_old = self._f_old()[live]
        new_k = self.sum_k[live] + 2.0 * ke + 1.0
        mu_i = self.mu[items][:, None]
        f_new = 2.0 * (self.sum_mu[live] + mu_i) / (size + 1) - new_k / (size + 1) ** 2 + 1.0
        gain = f_new - f_old
        bar = np.maximum((self.v[live] / 2.0 - f_old) / (self.m - size), 0.0)
        margin = 1e-9 * (1.0 + np.abs(bar) + np.abs(f_new) + np.abs(f_old))
        return np.asarray((gain >= bar - margin).any(axis=1))

    def run(self, stream: np.ndarray) -> list[int]:
        n = stream.size
        single = 2.0 * self.mu[stream]
        previous = np.concatenate([[-math.inf], np.maximum.accumulate(single)[:-1]])
        record = single > previous  # the running maximum M grows here
        pos, chunk = 0, 32
        while pos < n:
            stop = min(pos + chunk, n)
            flag = record[pos:stop].copy()
            if self.exps:
                flag |= self._screen(stream[pos:stop])
            hits = np.flatnonzero(flag)
            if hits.size == 0:
                pos, chunk = stop, min(2 * chunk, 4096)
                continue
            p = pos + int(hits[0])
            pos, chunk = p + 1, 32
            if record[p]:
                self._regrid(float(single[p]))
            if self.exps:
                self._offer(int(stream[p]))
        return self._best()

    def _best(self) -> list[int]:
        best: list[int] = []
        best_val = -math.inf
        for k in range(len(self.exps)):
            size = int(self.size[k])
            if size:
                val = 2.0 * float(self.sum_mu[k]) / size - float(self.sum_k[k]) / size**2
                if val > best_val:
                    best, best_val = [int(r) for r in self.members[k, :size]], val
        return best


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
    x, n, protos, excluded = _criticism_inputs(x, prototypes, c, gamma, lam)
    _check_eps(eps)
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
