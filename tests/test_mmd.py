"""MMD-critic objectives against direct formulas, and both solvers against brute force.

Uses the ``seed`` fixture of conftest (seeds 0, 1, 2). Brute force enumerates every subset of
size m = 1..3 of n = 12 points. The ratio tests on ``J_b`` use a wide kernel (half the median
``gamma``), where ``J_b`` is positive and close to monotone submodular; at the median ``gamma``
the sieve's ratio is checked on the shifted ``F = J_b + 1`` it maximises (module docstring).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from audit.criticism.mmd import (
    criticism_objective,
    greedy_criticisms,
    greedy_prototypes,
    mean_kernel,
    median_gamma,
    prototype_objective,
    rbf_kernel,
    sieve_criticisms,
    sieve_prototypes,
    witness,
)

EPS = 0.1
LAM = 1e-5


def two_clusters(seed: int, n: int = 12, d: int = 3) -> np.ndarray:
    """``(n, d)`` float64: two Gaussian blobs 3 apart, cluster sizes random."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) + 3.0 * (rng.random((n, 1)) < 0.5)


def k_loop(a: np.ndarray, b: np.ndarray, gamma: float) -> float:
    return math.exp(-gamma * sum((float(p) - float(q)) ** 2 for p, q in zip(a, b, strict=True)))


def jb_loop(x: np.ndarray, s: list[int], gamma: float) -> float:
    n, m = len(x), len(s)
    first = sum(k_loop(x[i], x[j], gamma) for i in range(n) for j in s)
    second = sum(k_loop(x[i], x[j], gamma) for i in s for j in s)
    return 2.0 * first / (n * m) - second / m**2


def witness_loop(x: np.ndarray, s: list[int], gamma: float, z: np.ndarray) -> float:
    mean_all = sum(k_loop(xi, z, gamma) for xi in x) / len(x)
    mean_s = sum(k_loop(x[j], z, gamma) for j in s) / len(s)
    return mean_all - mean_s


def best_subset(f: Callable[[list[int]], float], ground: list[int], m: int) -> float:
    return max(f(list(s)) for s in itertools.combinations(ground, m))


# --- objectives against independent formulas -------------------------------------------------


def test_rbf_kernel_matches_cdist(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(7, 5)), rng.normal(size=(4, 5)).astype(np.float32)
    got = rbf_kernel(a, b, 0.3)
    assert got.dtype == np.float64 and got.shape == (7, 4)
    np.testing.assert_allclose(
        got, np.exp(-0.3 * cdist(a, b.astype(np.float64), "sqeuclidean")), atol=1e-12
    )


def test_mean_kernel_matches_full_matrix_for_any_block(seed: int) -> None:
    x = two_clusters(seed, n=23)
    gamma = median_gamma(x)
    want = np.exp(-gamma * cdist(x, x, "sqeuclidean")).mean(axis=0)
    for block in (1, 5, 23, 4096):
        np.testing.assert_allclose(mean_kernel(x, gamma, block=block), want, atol=1e-12)


def test_median_gamma_is_inverse_median_pair_distance(seed: int) -> None:
    x = two_clusters(seed, n=15)
    d2 = cdist(x, x, "sqeuclidean")[np.triu_indices(15, k=1)]
    assert median_gamma(x) == pytest.approx(1.0 / np.median(d2), rel=1e-10)
    # Subsampling is seeded: same seed, same value.
    big = np.random.default_rng(seed).normal(size=(300, 4))
    assert median_gamma(big, seed=5, max_points=50) == median_gamma(big, seed=5, max_points=50)
    # Coinciding points must not divide by zero.
    assert median_gamma(np.ones((6, 3))) == 1.0
    assert median_gamma(np.array([[0.0], [0.0], [0.0], [0.0], [2.0]])) == pytest.approx(1.0 / 4.0)


def test_prototype_objective_matches_loops(seed: int) -> None:
    x = two_clusters(seed)
    gamma = median_gamma(x)
    assert prototype_objective(x, [], gamma) == 0.0
    for s in ([3], [0, 7], [1, 5, 11], [2, 2]):
        assert prototype_objective(x, s, gamma) == pytest.approx(jb_loop(x, s, gamma), abs=1e-12)


def test_witness_matches_loops(seed: int) -> None:
    x = two_clusters(seed)
    gamma = median_gamma(x)
    s = [1, 4]
    got = witness(x, s, gamma)
    assert got.shape == (12,)
    for z in range(12):
        assert got[z] == pytest.approx(witness_loop(x, s, gamma, x[z]), abs=1e-12)
    pts = np.random.default_rng(seed + 10).normal(size=(3, 3))
    got_pts = witness(x, s, gamma, points=pts)
    for z in range(3):
        assert got_pts[z] == pytest.approx(witness_loop(x, s, gamma, pts[z]), abs=1e-12)


def test_criticism_objective_matches_direct_formula(seed: int) -> None:
    x = two_clusters(seed)
    gamma = median_gamma(x)
    s, c = [0, 5], [2, 7, 9]
    w = [witness_loop(x, s, gamma, x[j]) for j in c]
    k_cc = np.array([[k_loop(x[i], x[j], gamma) for j in c] for i in c])
    want = sum(abs(v) for v in w) + 0.3 * math.log(np.linalg.det(k_cc))
    assert criticism_objective(x, s, c, gamma, 0.3) == pytest.approx(want, abs=1e-10)
    assert criticism_objective(x, s, [], gamma, 0.3) == 0.0
    assert criticism_objective(x, s, [2, 2], gamma, 0.3) == -math.inf


# --- solvers against brute force -------------------------------------------------------------


@pytest.mark.parametrize("m", [1, 2, 3])
def test_prototype_solvers_against_brute_force(seed: int, m: int) -> None:
    x = two_clusters(seed)
    gamma = 0.5 * median_gamma(x)
    opt = best_subset(lambda s: prototype_objective(x, s, gamma), list(range(12)), m)
    assert opt > 0
    greedy = greedy_prototypes(x, m, gamma)
    sieve = sieve_prototypes(x, m, gamma, eps=EPS)
    assert len(greedy) == len(set(greedy)) == m
    assert 1 <= len(sieve) == len(set(sieve)) <= m
    assert prototype_objective(x, greedy, gamma) >= (1 - 1 / math.e) * opt
    assert prototype_objective(x, sieve, gamma) >= (0.5 - EPS) * opt
    if m == 1:
        assert prototype_objective(x, greedy, gamma) == pytest.approx(opt, abs=1e-12)


@pytest.mark.parametrize("m", [1, 2, 3])
def test_prototype_sieve_on_shifted_objective_at_median_gamma(seed: int, m: int) -> None:
    x = two_clusters(seed)
    gamma = median_gamma(x)
    opt = best_subset(lambda s: prototype_objective(x, s, gamma), list(range(12)), m)
    sieve = sieve_prototypes(x, m, gamma, eps=EPS)
    assert prototype_objective(x, sieve, gamma) + 1 >= (0.5 - EPS) * (opt + 1)


@pytest.mark.parametrize("m", [1, 2, 3])
def test_criticism_solvers_against_brute_force(seed: int, m: int) -> None:
    x = two_clusters(seed)
    gamma = median_gamma(x)
    protos = greedy_prototypes(x, 2, gamma)
    rest = [i for i in range(12) if i not in protos]
    objective = lambda c: criticism_objective(x, protos, c, gamma, LAM)  # noqa: E731
    opt = best_subset(objective, rest, m)
    greedy = greedy_criticisms(x, protos, m, gamma, lam=LAM)
    sieve = sieve_criticisms(x, protos, m, gamma, lam=LAM, eps=EPS)
    assert len(greedy) == len(set(greedy)) == m
    assert 1 <= len(sieve) == len(set(sieve)) <= m
    assert set(protos).isdisjoint(greedy) and set(protos).isdisjoint(sieve)
    assert objective(greedy) >= (1 - 1 / math.e) * opt
    assert objective(sieve) >= (0.5 - EPS) * opt
    if m == 1:
        assert objective(greedy) == pytest.approx(opt, abs=1e-12)


def test_criticisms_never_pick_prototypes_even_when_they_score_best(seed: int) -> None:
    x = two_clusters(seed, n=30)
    gamma = median_gamma(x)
    protos = list(range(25))  # leaves 5 candidates, all must be used
    assert sorted(greedy_criticisms(x, protos, 5, gamma)) == [25, 26, 27, 28, 29]
    assert set(sieve_criticisms(x, protos, 5, gamma)) <= {25, 26, 27, 28, 29}


def test_log_det_term_steers_away_from_duplicates() -> None:
    # Rows 0 and 1 coincide and have the largest witness; row 5 is the other uncovered point.
    x = np.array([[3.0, 3.0], [3.0, 3.0], [0.0, 0.0], [0.0, 0.1], [0.1, 0.0], [-3.0, 3.0]])
    protos, gamma = [2, 3, 4], 0.5
    assert sorted(greedy_criticisms(x, protos, 2, gamma, lam=0.0)) == [0, 1]
    assert greedy_criticisms(x, protos, 2, gamma, lam=1.0) == [0, 5]
    assert sorted(sieve_criticisms(x, protos, 2, gamma, lam=1.0)) == [0, 5]


# --- determinism and stream-order semantics --------------------------------------------------


def test_solvers_are_deterministic(seed: int) -> None:
    x = two_clusters(seed, n=60, d=4)
    gamma = median_gamma(x)
    order = np.random.default_rng(seed).permutation(60)
    protos = greedy_prototypes(x, 4, gamma)
    assert greedy_prototypes(x, 4, gamma) == protos
    assert sieve_prototypes(x, 4, gamma, order=order) == sieve_prototypes(x, 4, gamma, order=order)
    assert greedy_criticisms(x, protos, 3, gamma) == greedy_criticisms(x, protos, 3, gamma)
    assert sieve_criticisms(x, protos, 3, gamma, order=order) == sieve_criticisms(
        x, protos, 3, gamma, order=order
    )


def test_sieve_depends_only_on_data_and_order(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = two_clusters(seed, n=60, d=4)
    gamma = median_gamma(x)
    order = rng.permutation(60)
    perm = rng.permutation(60)  # x_perm[i] = x[perm[i]]
    inverse = np.argsort(perm)
    x_perm, order_perm = x[perm], inverse[order]  # same stream of points
    protos = sieve_prototypes(x, 4, gamma, order=order)
    protos_perm = sieve_prototypes(x_perm, 4, gamma, order=order_perm)
    assert perm[protos_perm].tolist() == protos
    crits = sieve_criticisms(x, protos, 3, gamma, order=order)
    crits_perm = sieve_criticisms(x_perm, protos_perm, 3, gamma, order=order_perm)
    assert perm[crits_perm].tolist() == crits


def test_invalid_arguments_raise() -> None:
    x = two_clusters(0)
    with pytest.raises(ValueError, match="gamma"):
        rbf_kernel(x, x, 0.0)
    with pytest.raises(ValueError, match="'m'"):
        greedy_prototypes(x, 13, 1.0)
    with pytest.raises(ValueError, match="eps"):
        sieve_prototypes(x, 2, 1.0, eps=1.5)
    with pytest.raises(ValueError, match="order"):
        sieve_prototypes(x, 2, 1.0, order=np.zeros(12, dtype=int))
    with pytest.raises(ValueError, match="'c'"):
        greedy_criticisms(x, list(range(10)), 3, 1.0)


# --- the vectorised and sampled-mean sieve ---------------------------------------------------


def sieve_prototypes_reference(
    x: np.ndarray, m: int, gamma: float, eps: float = 0.1, order: np.ndarray | None = None
) -> list[int]:
    """The one-threshold-at-a-time sieve with exact ``mu`` (the implementation before
    vectorisation), kept as the reference for the exact path."""
    n = x.shape[0]
    stream = np.arange(n) if order is None else np.asarray(order)
    mu = np.exp(-gamma * cdist(x, x, "sqeuclidean")).mean(axis=0)
    sets: dict[int, tuple[list[int], float, float]] = {}
    best_single = -math.inf
    for e in map(int, stream):
        single = 2.0 * mu[e]
        if single > best_single:
            best_single = single
            base = math.log1p(eps)
            lo = math.ceil(math.log(best_single) / base - 1e-12)
            hi = math.floor(math.log(2 * m * best_single) / base + 1e-12)
            sets = {i: sets.get(i, ([], 0.0, 0.0)) for i in range(lo, hi + 1)}
        for i in list(sets):
            members, sum_mu, sum_k = sets[i]
            size = len(members)
            if size >= m:
                continue
            f_old = 0.0 if size == 0 else 2.0 * sum_mu / size - sum_k / size**2 + 1.0
            ke = (
                float(np.exp(-gamma * cdist(x[[e]], x[members], "sqeuclidean")).sum())
                if size
                else 0.0
            )
            new_k = sum_k + 2.0 * ke + 1.0
            f_new = 2.0 * (sum_mu + mu[e]) / (size + 1) - new_k / (size + 1) ** 2 + 1.0
            gain = f_new - f_old
            if gain > 0 and gain >= ((1.0 + eps) ** i / 2.0 - f_old) / (m - size):
                sets[i] = ([*members, e], sum_mu + mu[e], new_k)
    best: list[int] = []
    best_val = -math.inf
    for i in sorted(sets):
        members, sum_mu, sum_k = sets[i]
        if members:
            size = len(members)
            val = 2.0 * sum_mu / size - sum_k / size**2
            if val > best_val:
                best, best_val = members, val
    return best


@pytest.mark.parametrize("m", [1, 3, 6, 10])
def test_vectorised_sieve_matches_reference(seed: int, m: int) -> None:
    for n, d, gscale in ((40, 3, 1.0), (150, 5, 0.5), (300, 8, 2.0)):
        x = two_clusters(seed + 7 * n, n=n, d=d)
        gamma = gscale * median_gamma(x)
        order = np.random.default_rng(seed + n).permutation(n)
        for o in (None, order, order[::-1].copy()):
            want = sieve_prototypes_reference(x, m, gamma, order=o)
            assert sieve_prototypes(x, m, gamma, order=o) == want
            # mean_sample >= n and mean_sample=None both mean exact means.
            assert sieve_prototypes(x, m, gamma, order=o, mean_sample=None) == want
            assert sieve_prototypes(x, m, gamma, order=o, mean_sample=n) == want


def clustered(n: int, d: int, seed: int, clusters: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = 4.0 * rng.standard_normal((clusters, d))
    return rng.standard_normal((n, d)) + centres[rng.integers(0, clusters, size=n)]


def test_sampled_mean_sieve_is_deterministic_for_a_seed() -> None:
    x = clustered(1500, 16, 3)
    gamma = median_gamma(x)
    a = sieve_prototypes(x, 5, gamma, mean_sample=300, seed=4)
    assert a == sieve_prototypes(x, 5, gamma, mean_sample=300, seed=4)
    assert 1 <= len(a) == len(set(a)) <= 5


def test_sampled_mean_sieve_is_close_to_greedy_on_exact_objective() -> None:
    x = clustered(3000, 32, 11)
    gamma = median_gamma(x)
    m = 6
    greedy = prototype_objective(x, greedy_prototypes(x, m, gamma), gamma)
    for seed in (0, 1, 2):
        protos = sieve_prototypes(x, m, gamma, mean_sample=512, seed=seed)
        assert prototype_objective(x, protos, gamma) >= 0.9 * greedy


def test_mean_sample_must_be_positive() -> None:
    x = two_clusters(0)
    with pytest.raises(ValueError, match="mean_sample"):
        sieve_prototypes(x, 2, 1.0, mean_sample=0)
