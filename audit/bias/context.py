"""Context reliance: how much an explanation's evidence lies outside the labelled object.

**One explanation.** From the super-pixel map of an ``explanations`` row
(:func:`audit.data.segments.decode_segments`), its ``weights`` and ``top_features``, and a boolean
object mask of the same crop (pixels inside the labelled object's boxes mapped into the crop,
e.g. :func:`audit.data.boxes.box_mask`), :func:`context_reliance` gives

- ``positive_outside``: the share of the positive LIME weight that lies outside the object. Each
  super-pixel's positive weight ``max(w_s, 0)`` is split between inside and outside in
  proportion to its pixels: ``sum_s w+_s * out_s / area_s  /  sum_s w+_s``;
- ``topk_area_outside``: the share of the top-K super-pixels' area that lies outside the object:
  ``sum_{s in K} out_s  /  sum_{s in K} area_s``.

Both are in [0, 1]; 1 means the explanation rests entirely on the background. NaN rules: both
are NaN when the mask is empty (no object to be outside of); ``positive_outside`` is NaN when no
super-pixel with pixels has a positive weight; ``topk_area_outside`` is NaN when the top-K list is
empty. A super-pixel id without pixels in the map (possible for a relabelled map) is ignored:
it has no area to split.

**Per class.** :func:`class_context` summarises the values of one class's explained images by
group (prototype / criticism / other) and runs two seeded permutation tests
(:func:`permutation_test`): criticisms vs prototypes, and the class vs all other classes.
:func:`rank_classes_by_context` ranks classes by their *context score* (see
:class:`ContextRank`), with a one-sided permutation p-value against the pooled other classes,
Benjamini-Hochberg adjusted across classes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from audit.report.bias import benjamini_hochberg

GROUPS = ("prototype", "criticism", "other")
"""The group labels :func:`class_context` summarises (others are summarised too, after these)."""

ALTERNATIVES = ("two-sided", "greater", "less")


@dataclass(frozen=True)
class ContextReliance:
    """Context reliance of one explanation (see the module docstring).

    Attributes:
        positive_outside: Share of the positive weight outside the object; NaN when the mask is
            empty or there is no positive weight.
        topk_area_outside: Share of the top-K super-pixels' area outside the object; NaN when
            the mask is empty or the top-K list is empty.
        positive_weight: Sum of the positive weights of the super-pixels with pixels.
        object_fraction: Share of the crop's pixels inside the object mask.
    """

    positive_outside: float
    topk_area_outside: float
    positive_weight: float
    object_fraction: float


def _check_explanation(
    segments: np.ndarray, weights: np.ndarray, top: np.ndarray, mask: np.ndarray
) -> None:
    if segments.ndim != 2 or segments.size == 0:
        raise ValueError(f"segments must be a non-empty (H, W) map. Got shape {segments.shape}.")
    if not np.issubdtype(segments.dtype, np.integer):
        raise ValueError(f"segments must hold integer labels. Got dtype {segments.dtype}.")
    if weights.ndim != 1 or not np.all(np.isfinite(weights)):
        raise ValueError("weights must be one finite weight per super-pixel.")
    if segments.min() < 0 or segments.max() >= weights.size:
        raise ValueError(
            f"segments must hold labels in [0, {weights.size}) (one weight each). "
            f"Got [{segments.min()}, {segments.max()}] instead."
        )
    if top.ndim != 1 or (top.size and (top.min() < 0 or top.max() >= weights.size)):
        raise ValueError(
            f"top_features must be super-pixel ids in [0, {weights.size}). Got {top.tolist()}."
        )
    if mask.shape != segments.shape or mask.dtype != bool:
        raise ValueError(
            f"object_mask must be a boolean map of the segments' shape {segments.shape}. "
            f"Got {mask.dtype} {mask.shape} instead."
        )


def context_reliance(
    segments: np.ndarray,
    weights: Sequence[float] | np.ndarray,
    top_features: Sequence[int] | np.ndarray,
    object_mask: np.ndarray,
) -> ContextReliance:
    """Context reliance of one explanation (formulas and NaN rules in the module docstring).

    Args:
        segments: ``(H, W)`` integer super-pixel labels, ``0 .. len(weights) - 1``.
        weights: One LIME weight per super-pixel (0 for those not chosen).
        top_features: The K chosen super-pixel ids; repeats count once.
        object_mask: ``(H, W)`` booleans, True inside the labelled object.

    Raises:
        ValueError: shapes or labels that do not fit together, or non-finite weights.
    """
    seg = np.asarray(segments)
    w = np.asarray(weights, dtype=np.float64)
    top = np.unique(np.asarray(top_features, dtype=np.int64))
    mask = np.asarray(object_mask)
    _check_explanation(seg, w, top, mask)
    d = w.size
    labels = seg.ravel()
    area = np.bincount(labels, minlength=d).astype(np.float64)
    inside = np.bincount(labels, weights=mask.ravel().astype(np.float64), minlength=d)
    outside = area - inside
    present = area > 0
    positive = np.where(present, np.maximum(w, 0.0), 0.0)
    total = float(positive.sum())
    object_fraction = float(mask.mean())
    if not mask.any():
        return ContextReliance(math.nan, math.nan, total, object_fraction)
    if total > 0:
        share = np.divide(outside, area, out=np.zeros(d), where=present)
        positive_outside = float(np.dot(positive, share) / total)
    else:
        positive_outside = math.nan
    top_area = float(area[top].sum())
    topk_outside = float(outside[top].sum() / top_area) if top_area > 0 else math.nan
    return ContextReliance(positive_outside, topk_outside, total, object_fraction)


@dataclass(frozen=True)
class GroupSummary:
    """Summary of one group's context-reliance values (NaN values left out).

    Attributes:
        group: The group label.
        n: Finite values.
        missing: NaN values left out.
        mean: Their mean; NaN when ``n`` is 0.
        median: Their median; NaN when ``n`` is 0.
        std: Their sample standard deviation (``ddof=1``); NaN when ``n < 2``.
    """

    group: str
    n: int
    missing: int
    mean: float
    median: float
    std: float


def summarize(group: str, values: Sequence[float] | np.ndarray) -> GroupSummary:
    """:class:`GroupSummary` of ``values``."""
    v = np.asarray(values, dtype=np.float64).ravel()
    finite = v[np.isfinite(v)]
    n = int(finite.size)
    return GroupSummary(
        group,
        n,
        int(v.size - n),
        float(finite.mean()) if n else math.nan,
        float(np.median(finite)) if n else math.nan,
        float(finite.std(ddof=1)) if n > 1 else math.nan,
    )


def summarize_groups(
    values: Sequence[float] | np.ndarray, groups: Sequence[str] | np.ndarray
) -> dict[str, GroupSummary]:
    """One :class:`GroupSummary` per group: every label of :data:`GROUPS` (empty ones too),
    then any other label present, sorted."""
    v = np.asarray(values, dtype=np.float64)
    g = np.asarray(groups, dtype=object)
    if v.shape != g.shape or v.ndim != 1:
        raise ValueError(
            f"values and groups must be 1-D and of one length. Got {v.shape} and {g.shape}."
        )
    names = list(GROUPS) + sorted({str(x) for x in g} - set(GROUPS))
    return {name: summarize(name, v[g == name]) for name in names}


@dataclass(frozen=True)
class PermutationTest:
    """A permutation test of the difference in means of two groups.

    Attributes:
        statistic: ``mean(a) - mean(b)``; NaN when a group has no finite value.
        p_value: The permutation p-value (see :func:`permutation_test`); NaN with the statistic.
        n_a: Finite values of ``a``.
        n_b: Finite values of ``b``.
        n_permutations: Splits the p-value is computed over (all of them when ``exact``).
        exact: Whether every split was enumerated.
        alternative: ``two-sided``, ``greater`` (``a`` larger) or ``less``.
    """

    statistic: float
    p_value: float
    n_a: int
    n_b: int
    n_permutations: int
    exact: bool
    alternative: str


def _subset_sums(values: np.ndarray, k: int, draws: int, rng: np.random.Generator) -> np.ndarray:
    """Sums of ``draws`` uniformly random ``k``-subsets of ``values`` (without replacement).

    Small ``k`` (``k * k <= n``: at most even odds of a repeat) draws ``k`` indices with
    replacement and redraws the rows with a repeat (each accepted row is then a uniform ordered
    draw without replacement), costing ``O(draws * k)``; otherwise the first ``k`` of a random
    ordering, in batches of ``O(draws * n)`` work.
    """
    n = values.size
    if k * k <= n:
        idx = rng.integers(0, n, size=(draws, k))
        bad = np.arange(draws)
        while bad.size:
            idx[bad] = rng.integers(0, n, size=(bad.size, k))
            ordered = np.sort(idx[bad], axis=1)
            bad = bad[np.any(ordered[:, 1:] == ordered[:, :-1], axis=1)]
        return values[idx].sum(axis=1)
    out = np.empty(draws)
    batch = max(1, (1 << 20) // n)
    for start in range(0, draws, batch):
        rows = min(batch, draws - start)
        keys = rng.random((rows, n))
        chosen = np.argpartition(keys, k - 1, axis=1)[:, :k]
        out[start : start + rows] = values[chosen].sum(axis=1)
    return out


def permutation_test(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    n_permutations: int = 9999,
    seed: int | Sequence[int] = 0,
    alternative: str = "two-sided",
) -> PermutationTest:
    """Permutation test of ``mean(a) - mean(b)`` under exchangeable group labels.

    NaN values are left out first. When the pooled values have at most ``n_permutations``
    distinct splits into groups of the two sizes (``comb(n_a + n_b, n_a)``), every split is
    enumerated and the p-value is exact: the fraction of splits (the observed one included)
    whose statistic is at least as extreme. Otherwise ``n_permutations`` random splits are
    drawn from ``numpy.random.default_rng(seed)`` and ``p = (1 + extreme) / (1 + draws)``
    (never 0). "At least as extreme" is ``T >= t`` (greater), ``T <= t`` (less) or
    ``|T| >= |t|`` (two-sided), with a relative tolerance of 1e-12 so that ties in the data
    count as ties.

    Args:
        a: Values of the first group.
        b: Values of the second group.
        n_permutations: Random splits (at least 1); also the enumeration threshold.
        seed: Seed of the random splits (unused when exact).
        alternative: ``two-sided``, ``greater`` (``a`` has the larger mean) or ``less``.

    Raises:
        ValueError: an unknown ``alternative`` or ``n_permutations < 1``.
    """
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}. Got {alternative!r}.")
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be at least 1. Got {n_permutations}.")
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    n_a, n_b = int(x.size), int(y.size)
    if n_a == 0 or n_b == 0:
        return PermutationTest(math.nan, math.nan, n_a, n_b, 0, False, alternative)
    pooled = np.concatenate([x, y])
    total = float(pooled.sum())

    def stat(sum_a: np.ndarray | float) -> np.ndarray:
        return np.asarray(sum_a) / n_a - (total - np.asarray(sum_a)) / n_b

    observed = float(stat(float(x.sum())))
    splits = math.comb(n_a + n_b, n_a)
    exact = splits <= n_permutations
    if exact:
        combos = np.array(list(itertools.combinations(range(n_a + n_b), n_a)), dtype=np.int64)
        null = stat(pooled[combos].sum(axis=1))
    else:
        rng = np.random.default_rng(seed)
        if n_a <= n_b:
            null = stat(_subset_sums(pooled, n_a, n_permutations, rng))
        else:
            null = stat(total - _subset_sums(pooled, n_b, n_permutations, rng))
    tol = 1e-12 * max(1.0, abs(observed), float(np.max(np.abs(pooled))))
    if alternative == "greater":
        extreme = int(np.count_nonzero(null >= observed - tol))
    elif alternative == "less":
        extreme = int(np.count_nonzero(null <= observed + tol))
    else:
        extreme = int(np.count_nonzero(np.abs(null) >= abs(observed) - tol))
    p = extreme / null.size if exact else (1 + extreme) / (1 + null.size)
    return PermutationTest(observed, p, n_a, n_b, int(null.size), exact, alternative)


@dataclass(frozen=True)
class ClassContext:
    """One class's context reliance by group, and its two permutation tests.

    Attributes:
        label: The class index.
        groups: Group label -> summary of the class's values (:func:`summarize_groups`).
        overall: Summary of all the class's values.
        criticism_vs_prototype: ``mean(criticism) - mean(prototype)``, two-sided.
        class_vs_rest: ``mean(this class) - mean(every other class)``, two-sided.
    """

    label: int
    groups: Mapping[str, GroupSummary]
    overall: GroupSummary
    criticism_vs_prototype: PermutationTest
    class_vs_rest: PermutationTest


def _per_image(values: object, labels: object) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(values, dtype=np.float64)
    lab = np.asarray(labels)
    if v.ndim != 1 or v.shape != lab.shape:
        raise ValueError(
            f"The per-image arrays must be 1-D and of one length. Got {v.shape} and {lab.shape}."
        )
    return v, lab.astype(np.int64)


def class_context(
    values: Sequence[float] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    groups: Sequence[str] | np.ndarray,
    label: int,
    *,
    n_permutations: int = 9999,
    seed: int = 0,
) -> ClassContext:
    """Context reliance of class ``label`` by group, with its two permutation tests.

    Args:
        values: One context-reliance value per explained image of the run (any class; NaN where
            undefined), e.g. ``positive_outside`` of the ``clean`` variant.
        labels: The images' ground-truth classes.
        groups: The images' roles in their class's selection of one method: ``prototype``,
            ``criticism`` or ``other`` (any other label is summarised as its own group).
        label: The class.
        n_permutations: Random splits per test (:func:`permutation_test`).
        seed: The tests draw from ``default_rng([seed, label, 0])`` (criticism vs prototype) and
            ``[seed, label, 1]`` (class vs rest), so a class's result does not depend on which
            other classes are analysed or in which order.
    """
    v, lab = _per_image(values, labels)
    g = np.asarray(groups, dtype=object)
    if g.shape != v.shape:
        raise ValueError(f"groups must have one label per image. Got shape {g.shape}.")
    mine = lab == label
    cv, cg = v[mine], g[mine]
    return ClassContext(
        int(label),
        summarize_groups(cv, cg),
        summarize("all", cv),
        permutation_test(
            cv[cg == "criticism"],
            cv[cg == "prototype"],
            n_permutations=n_permutations,
            seed=(seed, int(label), 0),
        ),
        permutation_test(cv, v[~mine], n_permutations=n_permutations, seed=(seed, int(label), 1)),
    )


@dataclass(frozen=True)
class ContextRank:
    """One class in the ranking by context score.

    Attributes:
        label: The class index.
        rank: 1 = the class that decides most from context.
        score: The context score: the mean context reliance of the class's correctly
            classified explained images (finite values only).
        n: Those images.
        rest_mean: The same mean over the other classes' correctly classified explained
            images (pooled image by image, not class by class).
        effect: ``score - rest_mean``.
        p_value: One-sided permutation p-value of ``score > rest_mean``
            (:func:`permutation_test`, ``alternative="greater"``); NaN when no other class has
            such images.
        q_value: ``p_value`` Benjamini-Hochberg adjusted across the ranked classes that have one.
        exemplar_ids: The class's images with the highest context reliance, highest first.
    """

    label: int
    rank: int
    score: float
    n: int
    rest_mean: float
    effect: float
    p_value: float
    q_value: float
    exemplar_ids: tuple[str, ...]


def rank_classes_by_context(
    values: Sequence[float] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    correct: Sequence[bool] | np.ndarray,
    image_ids: Sequence[str] | np.ndarray,
    *,
    n_permutations: int = 9999,
    seed: int = 0,
    min_images: int = 1,
    n_exemplars: int = 3,
) -> list[ContextRank]:
    """Rank classes by their context score (see :class:`ContextRank`), highest first.

    Only correctly classified images with a finite value count, so a class's score says how
    much the model relies on context where it gets the class right. A class with fewer than
    ``min_images`` such images is not ranked. Ties in score go to the smaller p-value, then to
    the smaller class index. Each class's test draws from ``default_rng([seed, label, 2])``.

    Args:
        values: One context-reliance value per explained image (NaN where undefined).
        labels: The images' ground-truth classes.
        correct: The images' ``correct_top1``.
        image_ids: The images' ids (for the exemplars; ties go to the smaller id).
        n_permutations: Random splits per class.
        seed: See above.
        min_images: Fewest counted images a ranked class needs (at least 1).
        n_exemplars: Exemplar ids per class.
    """
    if min_images < 1:
        raise ValueError(f"min_images must be at least 1. Got {min_images}.")
    v, lab = _per_image(values, labels)
    ok = np.asarray(correct, dtype=bool)
    ids = np.asarray([str(i) for i in image_ids], dtype=object)
    if ok.shape != v.shape or ids.shape != v.shape:
        raise ValueError("correct and image_ids must have one entry per image.")
    use = ok & np.isfinite(v)
    pv, plab, pids = v[use], lab[use], ids[use]
    found: list[ContextRank] = []
    for cls in np.unique(plab).tolist():
        mine = plab == cls
        if int(mine.sum()) < min_images:
            continue
        test = permutation_test(
            pv[mine],
            pv[~mine],
            n_permutations=n_permutations,
            seed=(seed, int(cls), 2),
            alternative="greater",
        )
        score = float(pv[mine].mean())
        rest = float(pv[~mine].mean()) if (~mine).any() else math.nan
        order = sorted(zip((-pv[mine]).tolist(), pids[mine].tolist(), strict=True))
        exemplars = tuple(i for _, i in order[:n_exemplars])
        found.append(
            ContextRank(
                int(cls),
                0,
                score,
                int(mine.sum()),
                rest,
                score - rest,
                test.p_value,
                math.nan,
                exemplars,
            )
        )
    tested = [i for i, r in enumerate(found) if math.isfinite(r.p_value)]
    qs = dict(zip(tested, benjamini_hochberg([found[i].p_value for i in tested]), strict=True))
    found = [replace(r, q_value=qs.get(i, math.nan)) for i, r in enumerate(found)]
    found.sort(key=lambda r: (-r.score, _nan_last(r.p_value), r.label))
    return [replace(r, rank=k) for k, r in enumerate(found, start=1)]


def _nan_last(x: float) -> float:
    return x if math.isfinite(x) else math.inf
