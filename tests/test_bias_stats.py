"""The bias-discovery statistics of :mod:`audit.bias` against independent references: hand-made
segment maps with known answers and brute-force pixel loops (context reliance), exhaustive
enumeration of every split (permutation test), scipy per column and pairwise loops
(co-activation), planted Gaussian blobs (fragile slices), and the ``bias_candidates`` schema."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from statistics import fmean
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from scipy.stats import fisher_exact, mannwhitneyu

from audit.bias.candidates import (
    BIAS_CANDIDATES,
    EFFECT_SIZE_MEANING,
    KINDS,
    P_VALUE_MEANING,
    STATISTIC_MEANING,
    candidates_table,
    coactivation_rows,
    context_rows,
    slice_rows,
)
from audit.bias.coactivation import coactivation, scores_from_top5
from audit.bias.context import (
    _subset_sums,
    class_context,
    context_reliance,
    permutation_test,
    rank_classes_by_context,
    summarize_groups,
)
from audit.bias.slices import class_slices, n_clusters, steps_with_never
from audit.report.bias import benjamini_hochberg

QUADRANTS = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])


# ------------------------------------------------------------------ context reliance


def brute_force_reliance(
    segments: np.ndarray, weights: list[float], top: list[int], mask: np.ndarray
) -> tuple[float, float]:
    """Both shares by a plain loop over the pixels."""
    area: Counter[int] = Counter()
    out: Counter[int] = Counter()
    for r in range(segments.shape[0]):
        for c in range(segments.shape[1]):
            s = int(segments[r, c])
            area[s] += 1
            out[s] += 0 if mask[r, c] else 1
    if not mask.any():
        return math.nan, math.nan
    pos = {s: max(weights[s], 0.0) for s in area}
    total = sum(pos.values())
    share = sum(pos[s] * out[s] / area[s] for s in area) / total if total > 0 else math.nan
    chosen = set(top)
    top_area = sum(area[s] for s in chosen)
    topk = sum(out[s] for s in chosen) / top_area if top_area else math.nan
    return share, topk


def test_context_hand_made_whole_segments() -> None:
    # object = left half: segments 0 and 2 inside, 1 and 3 outside; positive weight 1 (in)
    # and 3 (out); top-2 = segments 1 (out, 4 px) and 2 (in, 4 px)
    mask = np.zeros((4, 4), dtype=bool)
    mask[:, :2] = True
    got = context_reliance(QUADRANTS, [1.0, 3.0, -2.0, 0.0], [1, 2], mask)
    assert got.positive_outside == pytest.approx(3 / 4)
    assert got.topk_area_outside == pytest.approx(4 / 8)
    assert got.positive_weight == pytest.approx(4.0)
    assert got.object_fraction == pytest.approx(0.5)


def test_context_hand_made_split_segments() -> None:
    # object = top row: segments 0 and 1 half inside, 2 and 3 outside
    # positive outside = (2 * 1/2 + 2 * 1/2 + 1 * 1) / 5; top {3, 0}: (4 + 2) / 8 outside
    mask = np.zeros((4, 4), dtype=bool)
    mask[0] = True
    got = context_reliance(QUADRANTS, [2.0, 2.0, 0.0, 1.0], [3, 0, 3], mask)
    assert got.positive_outside == pytest.approx(3 / 5)
    assert got.topk_area_outside == pytest.approx(6 / 8)


def test_context_nan_rules() -> None:
    empty = np.zeros((4, 4), dtype=bool)
    got = context_reliance(QUADRANTS, [1.0, 1.0, 1.0, 1.0], [0], empty)
    assert math.isnan(got.positive_outside) and math.isnan(got.topk_area_outside)
    full = np.ones((4, 4), dtype=bool)
    got = context_reliance(QUADRANTS, [1.0, 1.0, 1.0, 1.0], [0, 1], full)
    assert (got.positive_outside, got.topk_area_outside) == (0.0, 0.0)
    half = np.zeros((4, 4), dtype=bool)
    half[:2] = True
    got = context_reliance(QUADRANTS, [-1.0, 0.0, -3.0, 0.0], [2], half)
    assert math.isnan(got.positive_outside)
    assert got.topk_area_outside == 1.0
    got = context_reliance(QUADRANTS, [1.0, 0.0, 0.0, 0.0], [], half)
    assert got.positive_outside == 0.0 and math.isnan(got.topk_area_outside)


def test_context_absent_segment_is_ignored() -> None:
    # label 4 has a (positive) weight but no pixel: it splits nothing and is not counted
    mask = np.zeros((4, 4), dtype=bool)
    mask[:, :2] = True
    got = context_reliance(QUADRANTS, [1.0, 1.0, 0.0, 0.0, 5.0], [4, 1], mask)
    assert got.positive_outside == pytest.approx(0.5)
    assert got.topk_area_outside == pytest.approx(1.0)


@pytest.mark.parametrize("case", range(6))
def test_context_matches_pixel_loop(case: int) -> None:
    rng = np.random.default_rng(case)
    h, w, d = 9, 11, 7
    segments = rng.integers(0, d, size=(h, w))
    weights = rng.normal(size=d + 1).tolist()  # one id (d) without pixels
    top = rng.choice(d + 1, size=3, replace=False).tolist()
    mask = rng.random((h, w)) < (0.0 if case == 5 else 0.4)
    got = context_reliance(segments, weights, top, mask)
    share, topk = brute_force_reliance(segments, weights, top, mask)
    np.testing.assert_allclose(
        [got.positive_outside, got.topk_area_outside], [share, topk], rtol=1e-12
    )


def test_context_rejects_mismatches() -> None:
    mask = np.ones((4, 4), dtype=bool)
    with pytest.raises(ValueError, match="labels in"):
        context_reliance(QUADRANTS, [1.0, 1.0, 1.0], [0], mask)
    with pytest.raises(ValueError, match="top_features"):
        context_reliance(QUADRANTS, [1.0] * 4, [4], mask)
    with pytest.raises(ValueError, match="object_mask"):
        context_reliance(QUADRANTS, [1.0] * 4, [0], mask[:3])
    with pytest.raises(ValueError, match="object_mask"):
        context_reliance(QUADRANTS, [1.0] * 4, [0], mask.astype(int))


# ------------------------------------------------------------------ permutation test


def brute_force_p(a: list[float], b: list[float], alternative: str) -> float:
    """Exact permutation p: every split of the pooled values, by plain means."""
    pooled = a + b
    t = fmean(a) - fmean(b)
    hits = total = 0
    for chosen in itertools.combinations(range(len(pooled)), len(a)):
        rest = [pooled[i] for i in range(len(pooled)) if i not in chosen]
        tp = fmean(pooled[i] for i in chosen) - fmean(rest)
        eps = 1e-9
        hit = {
            "greater": tp >= t - eps,
            "less": tp <= t + eps,
            "two-sided": abs(tp) >= abs(t) - eps,
        }[alternative]
        hits += hit
        total += 1
    return hits / total


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([0.9, 0.8, 0.7], [0.1, 0.2, 0.3, 0.4]),
        ([1.0, 2.0], [2.0, 2.0, 3.0, 1.0, 0.0]),  # ties
        ([0.5, 0.1, 0.4, 0.3], [0.2, 0.6, 0.0]),
        ([3.0], [1.0, 2.0, 3.0, 4.0]),
    ],
)
def test_permutation_exact_matches_enumeration(
    a: list[float], b: list[float], alternative: str
) -> None:
    got = permutation_test(a, b, alternative=alternative)
    assert got.exact and got.n_permutations == math.comb(len(a) + len(b), len(a))
    assert got.statistic == pytest.approx(fmean(a) - fmean(b))
    assert got.p_value == pytest.approx(brute_force_p(a, b, alternative))


@pytest.mark.parametrize(("n_a", "n_b", "draws"), [(3, 17, 1000), (5, 7, 700), (7, 5, 700)])
def test_permutation_monte_carlo_close_to_enumeration(n_a: int, n_b: int, draws: int) -> None:
    # (3, 17): small-k redraw path; (5, 7): random-ordering path; (7, 5): samples group b
    rng = np.random.default_rng(n_a * 100 + n_b)
    a = (rng.normal(size=n_a) + 0.6).tolist()
    b = rng.normal(size=n_b).tolist()
    assert math.comb(n_a + n_b, n_a) > draws
    exact = brute_force_p(a, b, "two-sided")
    got = permutation_test(a, b, n_permutations=draws, seed=4)
    assert not got.exact and got.n_permutations == draws
    se = math.sqrt(exact * (1 - exact) / draws)
    assert abs(got.p_value - exact) < 4 * se + 2 / draws


@pytest.mark.parametrize(("n", "k"), [(6, 2), (5, 3)])
def test_subset_sums_are_uniform_subsets(n: int, k: int) -> None:
    # powers of two: a sum names its subset; (6, 2) redraws repeats, (5, 3) orders randomly
    values = 2.0 ** np.arange(n)
    draws = 20000
    sums = _subset_sums(values, k, draws, np.random.default_rng(0))
    counts = Counter(sums.astype(int).tolist())
    subsets = {sum(1 << i for i in c) for c in itertools.combinations(range(n), k)}
    assert set(counts) == subsets
    expected = draws / len(subsets)
    assert max(abs(c - expected) for c in counts.values()) < 5 * math.sqrt(expected)


def test_permutation_seed_determinism_and_nan() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=30) + 0.3, rng.normal(size=40)
    first = permutation_test(a, b, n_permutations=500, seed=11)
    assert permutation_test(a, b, n_permutations=500, seed=11) == first
    others = {permutation_test(a, b, n_permutations=500, seed=s).p_value for s in range(5)}
    assert len(others) > 1
    with_nan = permutation_test([*a, math.nan], b, n_permutations=500, seed=11)
    assert with_nan == first
    empty = permutation_test([math.nan], b)
    assert math.isnan(empty.statistic) and math.isnan(empty.p_value) and empty.n_a == 0


def test_summaries_and_class_context() -> None:
    values = [0.9, 0.8, 0.1, 0.2, 0.5, math.nan, 0.3, 0.4, 0.35]
    labels = [1, 1, 1, 1, 1, 1, 2, 2, 2]
    groups = ["criticism", "criticism", "prototype", "prototype", "other", "other"] + ["other"] * 3
    summary = summarize_groups(values[:6], groups[:6])
    assert list(summary) == ["prototype", "criticism", "other"]
    assert summary["criticism"].mean == pytest.approx(0.85)
    assert summary["criticism"].std == pytest.approx(np.std([0.9, 0.8], ddof=1))
    assert (summary["other"].n, summary["other"].missing) == (1, 1)
    assert math.isnan(summary["other"].std)
    got = class_context(values, labels, groups, 1)
    assert got.overall.n == 5 and got.overall.mean == pytest.approx(0.5)
    cvp = got.criticism_vs_prototype
    assert cvp.statistic == pytest.approx(0.85 - 0.15)
    assert cvp.p_value == pytest.approx(brute_force_p([0.9, 0.8], [0.1, 0.2], "two-sided"))
    rest = got.class_vs_rest
    assert rest.statistic == pytest.approx(0.5 - 0.35)
    assert rest.p_value == pytest.approx(
        brute_force_p([0.9, 0.8, 0.1, 0.2, 0.5], [0.3, 0.4, 0.35], "two-sided")
    )


def test_rank_classes_by_context_planted() -> None:
    rng = np.random.default_rng(3)
    values, labels, correct, ids = [], [], [], []
    for cls in range(5):
        for i in range(12):
            base = 0.8 if cls == 3 else 0.3
            values.append(float(np.clip(base + rng.normal(scale=0.05), 0, 1)))
            labels.append(cls)
            correct.append(i < 10)
            ids.append(f"img_{cls}_{i:02d}")
    # misclassified images of class 0 rely fully on context: they must not count
    for j in range(len(values)):
        if labels[j] == 0 and not correct[j]:
            values[j] = 1.0
    values[1] = math.nan  # a class-0 image without a value
    ranks = rank_classes_by_context(values, labels, correct, ids, n_permutations=999, seed=5)
    assert [r.rank for r in ranks] == [1, 2, 3, 4, 5]
    top = ranks[0]
    assert top.label == 3
    use = [j for j in range(len(values)) if correct[j] and math.isfinite(values[j])]
    mine = [values[j] for j in use if labels[j] == 3]
    rest = [values[j] for j in use if labels[j] != 3]
    assert top.score == pytest.approx(fmean(mine))
    assert top.rest_mean == pytest.approx(fmean(rest))
    assert top.effect == pytest.approx(fmean(mine) - fmean(rest))
    assert top.p_value == pytest.approx(1 / 1000)  # no random split beats the planted class
    assert top.exemplar_ids == tuple(
        i for _, i in sorted((-values[j], ids[j]) for j in use if labels[j] == 3)[:3]
    )
    class0 = next(r for r in ranks if r.label == 0)
    assert class0.n == 9 and class0.score < 0.5
    assert [r.q_value for r in ranks] == pytest.approx(
        benjamini_hochberg([r.p_value for r in ranks])
    )
    again = rank_classes_by_context(values, labels, correct, ids, n_permutations=999, seed=5)
    assert again == ranks
    assert rank_classes_by_context(values, labels, correct, ids, min_images=11) == []


# ------------------------------------------------------------------ co-activation


def brute_force_rank_biserial(a: np.ndarray, b: np.ndarray) -> float:
    wins = sum((x > y) + 0.5 * (x == y) for x in a for y in b)
    return 2 * wins / (len(a) * len(b)) - 1


def test_coactivation_matches_scipy_and_loops() -> None:
    rng = np.random.default_rng(7)
    scores = rng.normal(size=(40, 9))
    scores[:, 4] = np.round(scores[:, 4])  # ties
    a, b = np.arange(0, 15), np.arange(15, 40)
    got = coactivation(scores, a, b, label=2, exclude=[6], k=9)
    assert got.classes.tolist() == [0, 1, 3, 4, 5, 7, 8]
    for i, j in enumerate(got.classes):
        xa, xb = scores[a, j], scores[b, j]
        assert got.p_value[i] == pytest.approx(mannwhitneyu(xa, xb).pvalue, rel=1e-10)
        assert got.effect[i] == pytest.approx(brute_force_rank_biserial(xa, xb))
        pooled = math.sqrt(
            (sum((x - xa.mean()) ** 2 for x in xa) + sum((y - xb.mean()) ** 2 for y in xb))
            / (len(xa) + len(xb) - 2)
        )
        assert got.cohens_d[i] == pytest.approx((xa.mean() - xb.mean()) / pooled)
    assert got.q_value.tolist() == pytest.approx(benjamini_hochberg(got.p_value.tolist()))
    effects = [c.effect for c in got.top]
    assert effects == sorted(effects, reverse=True) and all(e > 0 for e in effects)
    # only the order of the scores matters for the effect and the p-value
    monotone = coactivation(np.exp(scores) * 3 + 1, a, b, label=2, exclude=[6], k=9)
    np.testing.assert_allclose(monotone.effect, got.effect)
    np.testing.assert_allclose(monotone.p_value, got.p_value)


def test_coactivation_planted_class_comes_first() -> None:
    rng = np.random.default_rng(8)
    scores = rng.random((60, 20))
    errors = np.zeros(60, dtype=bool)
    errors[:20] = True
    scores[errors, 13] += 0.6  # the errors co-activate class 13
    scores[:, 5] += 5.0  # the class itself: always high, excluded
    ids = [f"im{i:02d}" for i in range(60)]
    got = coactivation(
        scores, errors, ~errors, label=5, names=("errors", "correct"), image_ids=ids, k=3
    )
    assert 5 not in got.classes.tolist()
    first = got.top[0]
    assert (first.label, first.other) == (5, 13)
    assert first.q_value < 1e-4 and first.effect > 0.8
    best = sorted(range(20), key=lambda r: -scores[r, 13])[:3]
    assert first.exemplar_ids == tuple(ids[r] for r in best)
    strict = coactivation(scores, errors, ~errors, label=5, alpha=0.01)
    assert [c.other for c in strict.top] == [13]
    same = coactivation(scores, np.flatnonzero(errors), np.flatnonzero(~errors), label=5, k=3)
    np.testing.assert_array_equal(same.p_value, got.p_value)


def test_coactivation_constant_column_and_errors() -> None:
    scores = np.zeros((6, 3))
    scores[:3, 1] = [0.5, 0.6, 0.7]
    got = coactivation(scores, [0, 1, 2], [3, 4, 5])
    assert got.p_value[0] == 1.0 and got.effect[0] == 0.0 and math.isnan(got.cohens_d[0])
    assert [c.other for c in got.top] == [1]
    with pytest.raises(ValueError, match="disjoint"):
        coactivation(scores, [0, 1], [1, 2])
    with pytest.raises(ValueError, match="Both groups"):
        coactivation(scores, [], [1, 2])
    with pytest.raises(ValueError, match="finite"):
        coactivation(np.full((2, 2), np.nan), [0], [1])


def test_scores_from_top5() -> None:
    got = scores_from_top5([[2, 0], [1]], [[0.7, 0.2], [0.9]], 4)
    np.testing.assert_array_equal(got, [[0.2, 0.0, 0.7, 0.0], [0.0, 0.9, 0.0, 0.0]])
    with pytest.raises(ValueError, match="must be in"):
        scores_from_top5([[4]], [[1.0]], 4)


# ------------------------------------------------------------------ fragile slices


def blobs(seed: int = 0) -> tuple[np.ndarray, list[str], np.ndarray, list[float | None]]:
    """60 images in 3 tight blobs along different axes; blob 1 all errors, blob 2 flips at
    step 1, the others never flip."""
    rng = np.random.default_rng(seed)
    centres = np.eye(8)[:3] * 10
    x = np.concatenate([c + rng.normal(scale=0.3, size=(20, 8)) for c in centres])
    ids = [f"img{i:03d}" for i in range(60)]
    correct = np.ones(60, dtype=bool)
    correct[20:40] = False
    correct[45] = False  # one error in blob 2
    steps: list[float | None] = [None] * 60
    for i in range(40, 60):
        steps[i] = 1
    return x, ids, correct, steps


def test_slices_find_planted_error_blob() -> None:
    x, ids, correct, steps = blobs()
    got = class_slices(x, ids, correct, steps, label=4, max_steps=10, k_max=3, min_size=10)
    assert len(got) == 3 and {s.k for s in got} == {3}
    worst = got[0]
    assert worst.image_ids == tuple(ids[20:40])
    assert (worst.size, worst.errors, worst.error_rate) == (20, 20, 1.0)
    assert worst.rest_error_rate == pytest.approx(1 / 40)
    assert worst.mean_steps == 11.0  # never flipped = max_steps + 1
    assert worst.p_value == pytest.approx(fisher_exact([[20, 0], [1, 39]])[1], rel=1e-9, abs=0)
    assert worst.effect == pytest.approx(1 - 1 / 40)
    # exemplars: the members closest to the centroid of the unit-length embeddings
    unit = x[20:40] / np.linalg.norm(x[20:40], axis=1, keepdims=True)
    dist = np.linalg.norm(unit - unit.mean(axis=0), axis=1)
    assert worst.exemplar_ids == tuple(ids[20 + i] for i in np.argsort(dist)[:3])
    fragile = class_slices(
        x, ids, correct, steps, label=4, max_steps=10, k_max=3, min_size=10, order="steps"
    )
    assert fragile[0].image_ids == tuple(ids[40:60])
    assert fragile[0].mean_steps == 1.0
    assert fragile[0].rest_mean_steps == 11.0


def test_slices_deterministic_and_order_free() -> None:
    x, ids, correct, steps = blobs(1)
    kw: dict[str, Any] = {"label": 0, "max_steps": 5, "k_max": 4, "min_size": 5, "seed": 3}
    first = class_slices(x, ids, correct, steps, **kw)
    assert class_slices(x, ids, correct, steps, **kw) == first
    perm = np.random.default_rng(2).permutation(60)
    shuffled = class_slices(
        x[perm], [ids[i] for i in perm], correct[perm], [steps[i] for i in perm], **kw
    )
    assert shuffled == first


def test_slices_edge_cases() -> None:
    x, ids, correct, steps = blobs()
    tiny = class_slices(x[:9], ids[:9], correct[:9], steps[:9], label=0, max_steps=3, min_size=5)
    assert tiny == []
    same = class_slices(np.ones((30, 4)), ids[:30], correct[:30], steps[:30], label=0, max_steps=3)
    assert same == []
    assert class_slices(np.zeros((0, 4)), [], [], [], label=0, max_steps=3) == []
    with pytest.raises(ValueError, match="repeat"):
        class_slices(x[:2], ["a", "a"], correct[:2], steps[:2], label=0, max_steps=3)
    with pytest.raises(ValueError, match="finite"):
        class_slices(
            np.full((2, 2), np.nan), ["a", "b"], [True, True], [1, 1], label=0, max_steps=3
        )


def test_cluster_count_rule_and_steps() -> None:
    assert n_clusters(100, 5, 10) == 5
    assert n_clusters(23, 5, 10) == 2
    assert n_clusters(9, 5, 10) == 0
    assert n_clusters(100, 5, 10, distinct=3) == 3
    np.testing.assert_array_equal(steps_with_never([0, None, 3, math.nan], 4), [0, 5, 3, 5])
    with pytest.raises(ValueError, match="steps_to_flip"):
        steps_with_never([7], 4)


# ------------------------------------------------------------------ bias_candidates


def test_candidates_schema() -> None:
    want = {
        "class": (pa.int32(), False),
        "class_id": (pa.string(), False),
        "kind": (pa.string(), False),
        "evidence": (pa.string(), False),
        "statistic": (pa.float64(), False),
        "p_value": (pa.float64(), True),
        "effect_size": (pa.float64(), True),
        "exemplar_ids": (pa.list_(pa.string()), False),
        "rank": (pa.int32(), False),
    }
    assert BIAS_CANDIDATES.names == list(want)
    for name, (typ, nullable) in want.items():
        field = BIAS_CANDIDATES.field(name)
        assert (field.type, field.nullable) == (typ, nullable)
    for meanings in (STATISTIC_MEANING, EFFECT_SIZE_MEANING, P_VALUE_MEANING):
        assert set(meanings) == set(KINDS)
        assert all(m.endswith(".") and "\n" not in m for m in meanings.values())
    assert candidates_table([]).schema == BIAS_CANDIDATES


def test_candidate_builders_rank_within_kind() -> None:
    class_ids = {i: f"n{i:08d}" for i in range(20)}
    rng = np.random.default_rng(9)
    values = np.concatenate([rng.normal(0.8, 0.05, 8), rng.normal(0.3, 0.05, 24)])
    labels = np.repeat([3, 0, 1, 2], 8)
    ids = [f"c{i:02d}" for i in range(32)]
    ranks = rank_classes_by_context(values, labels, np.ones(32, bool), ids, n_permutations=99)
    ctx = context_rows(ranks, class_ids)
    assert [r.rank for r in ctx] == [1, 2, 3, 4] and ctx[0].label == 3
    assert ctx[0].class_id == "n00000003" and ctx[0].statistic == pytest.approx(ranks[0].score)
    assert [r.label for r in context_rows(ranks, class_ids, alpha=0.05)] == [3]

    scores = rng.random((40, 20))
    scores[:20, 13] += 0.7
    scores[20:, 2] += 0.4  # a weaker planted class, in another class's comparison
    strong = coactivation(scores[:40], np.arange(20), np.arange(20, 40), label=5, k=2)
    weak = coactivation(scores[:40], np.arange(20, 40), np.arange(20), label=6, k=2)
    co = coactivation_rows([weak, strong], class_ids)
    assert [r.rank for r in co] == list(range(1, len(co) + 1))
    assert (co[0].label, co[0].kind) == (5, "coactivation") and "n00000013" in co[0].evidence
    assert [r.statistic for r in co] == sorted((r.statistic for r in co), reverse=True)

    x, bids, correct, steps = blobs()
    slices = class_slices(x, bids, correct, steps, label=7, max_steps=10, k_max=3, min_size=10)
    rows = slice_rows(slices, list(class_ids.values()))
    assert [r.rank for r in rows] == [1, 2, 3]
    assert rows[0].statistic == 1.0 and rows[0].exemplar_ids == slices[0].exemplar_ids
    adjusted = benjamini_hochberg([s.p_value for s in slices])
    q = dict(zip((s.exemplar_ids for s in slices), adjusted, strict=True))
    assert [r.p_value for r in rows] == pytest.approx(
        [q[r.exemplar_ids] for r in rows], rel=1e-9, abs=0
    )

    nan_row = context_rows(
        rank_classes_by_context([0.5], [4], [True], ["only"], n_permutations=9), ["x"] * 3
    )
    assert nan_row[0].class_id == "4" and math.isnan(nan_row[0].p_value)
    table = candidates_table([*ctx, *co, *rows, *nan_row])
    assert table.schema == BIAS_CANDIDATES
    assert table.num_rows == len(ctx) + len(co) + len(rows) + 1
    last = table.slice(table.num_rows - 1).to_pylist()[0]
    assert last["p_value"] is None and last["effect_size"] is None
    assert last["exemplar_ids"] == ["only"] and last["kind"] == "context"
