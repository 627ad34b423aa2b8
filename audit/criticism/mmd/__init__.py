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
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 8))
    >>> gamma = median_gamma(x)
    >>> protos = greedy_prototypes(x, 4, gamma)
    >>> crits = greedy_criticisms(x, protos, 2, gamma)
    >>> len(protos), len(crits), set(protos).isdisjoint(crits)
    (4, 2, True)

Modules, in the order a call goes through them: :mod:`.checks` (argument validation),
:mod:`.objective` (kernel, means, ``J_b``, witness, ``L``), :mod:`.greedy`, :mod:`.candidates`
(the threshold grid and row pool both sieves share), :mod:`.proto_sieve` (the vectorised
prototype sieve) and :mod:`.sieve` (the two sieve entry points).
"""

from audit.criticism.mmd.greedy import greedy_criticisms, greedy_prototypes
from audit.criticism.mmd.objective import (
    criticism_objective,
    mean_kernel,
    median_gamma,
    prototype_objective,
    rbf_kernel,
    witness,
)
from audit.criticism.mmd.sieve import sieve_criticisms, sieve_prototypes

__all__ = [
    "criticism_objective",
    "greedy_criticisms",
    "greedy_prototypes",
    "mean_kernel",
    "median_gamma",
    "prototype_objective",
    "rbf_kernel",
    "sieve_criticisms",
    "sieve_prototypes",
    "witness",
]
