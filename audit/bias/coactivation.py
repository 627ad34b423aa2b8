"""The model's other classes as concept detectors: which classes' scores separate two groups of
one class's images.

Given per-image scores over the model's classes (probabilities or logits,
``n_images x n_classes``; :func:`scores_from_top5` builds them from the ``predictions`` table)
and two disjoint groups of images of one class, group ``a`` (e.g. criticisms, or errors) and
group ``b`` (e.g. prototypes, or correct images), :func:`coactivation` tests every other class
``j``:

- ``effect``: the rank-biserial correlation ``2 U_a / (n_a n_b) - 1 = P(s_a > s_b) - P(s_a <
  s_b)``, over all pairs of an ``a`` image and a ``b`` image, of class ``j``'s score (ties count
  half); in [-1, 1], +1 when every ``a`` image scores ``j`` higher than every ``b`` image. It
  depends only on the order of the scores, so probabilities and logits give the same effect;
- ``cohens_d``: ``(mean_a - mean_b) / s_pooled`` with the pooled sample standard deviation
  (``ddof=1``); NaN when ``n_a + n_b < 3`` or ``s_pooled`` is 0;
- ``p_value``: two-sided Mann-Whitney U (:func:`scipy.stats.mannwhitneyu`, ``method="auto"``:
  exact for small groups without ties, else the normal approximation with tie and continuity
  correction); 1 when every score of the class is equal in both groups;
- ``q_value``: Benjamini-Hochberg adjusted across the tested classes of this one comparison
  (:func:`audit.report.bias.benjamini_hochberg`).

The *co-activated* classes are those more active in group ``a``: the ``k`` largest positive
effects (optionally only those with ``q_value <= alpha``). Swap the groups for the classes more
active in ``b``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import mannwhitneyu

from audit.report.bias import benjamini_hochberg


@dataclass(frozen=True)
class Coactivation:
    """One co-activated class (see the module docstring for the statistics).

    Attributes:
        label: The class the groups belong to (None when not given).
        other: The co-activated class's index (a column of the scores).
        effect: Rank-biserial correlation, ``a`` over ``b``.
        cohens_d: Cohen's d, ``a`` minus ``b``.
        mean_a: Mean score of ``other`` in group ``a``.
        mean_b: In group ``b``.
        p_value: Two-sided Mann-Whitney U p-value.
        q_value: Benjamini-Hochberg adjusted across the comparison's tested classes.
        exemplar_ids: Group ``a``'s images with the highest score of ``other``, highest first.
    """

    label: int | None
    other: int
    effect: float
    cohens_d: float
    mean_a: float
    mean_b: float
    p_value: float
    q_value: float
    exemplar_ids: tuple[str, ...]


@dataclass(frozen=True)
class CoactivationResult:
    """Every tested class of one comparison, and the top co-activated ones.

    Attributes:
        label: The class the groups belong to (None when not given).
        names: How the two groups are called, ``(a, b)`` (for the evidence sentences).
        n_a: Images in group ``a``.
        n_b: Images in group ``b``.
        classes: ``(m,)`` the tested class indices, ascending (all but ``label`` and
            ``exclude``).
        effect: ``(m,)`` rank-biserial correlations.
        cohens_d: ``(m,)`` Cohen's d.
        mean_a: ``(m,)`` mean scores in group ``a``.
        mean_b: ``(m,)`` in group ``b``.
        p_value: ``(m,)`` Mann-Whitney U p-values.
        q_value: ``(m,)`` Benjamini-Hochberg adjusted.
        top: The co-activated classes, largest effect first (ties: smaller p, smaller index).
    """

    label: int | None
    names: tuple[str, str]
    n_a: int
    n_b: int
    classes: np.ndarray
    effect: np.ndarray
    cohens_d: np.ndarray
    mean_a: np.ndarray
    mean_b: np.ndarray
    p_value: np.ndarray
    q_value: np.ndarray
    top: tuple[Coactivation, ...]


def scores_from_top5(
    top5_classes: Sequence[Sequence[int]], top5_probs: Sequence[Sequence[float]], n_classes: int
) -> np.ndarray:
    """``(n, n_classes)`` probabilities from the ``predictions`` table's top-5 columns.

    The table keeps only the five most probable classes of each image; every other class gets
    0 (a lower bound of its probability, below the fifth one). Fine for Mann-Whitney, which
    only uses the order, as long as the many zeros (ties) are kept in mind.

    Raises:
        ValueError: a class index outside ``[0, n_classes)`` or lists of unequal lengths.
    """
    out = np.zeros((len(top5_classes), n_classes), dtype=np.float64)
    for row, (cls, probs) in enumerate(zip(top5_classes, top5_probs, strict=True)):
        c = np.asarray(cls, dtype=np.int64)
        p = np.asarray(probs, dtype=np.float64)
        if c.shape != p.shape or (c.size and (c.min() < 0 or c.max() >= n_classes)):
            raise ValueError(
                f"Row {row}: top-5 classes {c.tolist()} must be in [0, {n_classes}) with one "
                f"probability each ({p.tolist()})."
            )
        out[row, c] = p
    return out


def _rows(group: Sequence[int] | np.ndarray, n: int, name: str) -> np.ndarray:
    g = np.asarray(group)
    if g.dtype == bool:
        if g.shape != (n,):
            raise ValueError(f"The boolean {name} must have one flag per row ({n}).")
        return np.flatnonzero(g)
    g = g.astype(np.int64).ravel()
    if g.size and (g.min() < 0 or g.max() >= n):
        raise ValueError(f"{name} must be row indices in [0, {n}). Got {g.tolist()}.")
    if np.unique(g).size != g.size:
        raise ValueError(f"{name} repeats a row.")
    return g


def coactivation(
    scores: np.ndarray,
    group_a: Sequence[int] | np.ndarray,
    group_b: Sequence[int] | np.ndarray,
    *,
    label: int | None = None,
    exclude: Sequence[int] = (),
    names: tuple[str, str] = ("group a", "group b"),
    image_ids: Sequence[str] | None = None,
    k: int = 5,
    alpha: float | None = None,
    n_exemplars: int = 3,
) -> CoactivationResult:
    """Test every class but ``label`` (and ``exclude``) for separating group ``a`` from ``b``.

    Args:
        scores: ``(n, C)`` finite per-image scores.
        group_a: Rows of group ``a``: indices or an ``(n,)`` boolean mask.
        group_b: Rows of group ``b``; disjoint from ``a``.
        label: The class of the groups' images; its own column is not tested.
        exclude: Further columns not to test.
        names: The groups' names, kept in the result.
        image_ids: The rows' image ids (for the exemplars); default the row numbers.
        k: Most co-activated classes in ``top``.
        alpha: Keep in ``top`` only classes with ``q_value <= alpha``; None keeps any positive
            effect.
        n_exemplars: Exemplar ids per co-activated class.

    Raises:
        ValueError: non-finite scores, an empty group, overlapping groups, rows out of range.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or not np.all(np.isfinite(s)):
        raise ValueError(f"scores must be a finite (n, C) matrix. Got shape {s.shape}.")
    n, n_classes = s.shape
    a, b = _rows(group_a, n, "group_a"), _rows(group_b, n, "group_b")
    if a.size == 0 or b.size == 0:
        raise ValueError(f"Both groups need an image. Got {a.size} and {b.size}.")
    if np.intersect1d(a, b).size:
        raise ValueError("group_a and group_b share rows; they must be disjoint.")
    ids = [str(i) for i in (image_ids if image_ids is not None else range(n))]
    if len(ids) != n:
        raise ValueError(f"image_ids must name every row ({n}). Got {len(ids)}.")
    skip = {int(c) for c in exclude} | ({int(label)} if label is not None else set())
    classes = np.array([j for j in range(n_classes) if j not in skip], dtype=np.int64)
    xa, xb = s[np.ix_(a, classes)], s[np.ix_(b, classes)]
    n_a, n_b = int(a.size), int(b.size)
    if classes.size:
        test = mannwhitneyu(xa, xb, alternative="two-sided", axis=0)
        u = np.asarray(test.statistic, dtype=np.float64)
        p = np.asarray(test.pvalue, dtype=np.float64)
    else:
        u = p = np.zeros(0)
    constant = np.all(np.concatenate([xa, xb]) == xa[:1], axis=0)
    p = np.where(constant, 1.0, p)
    effect = 2.0 * u / (n_a * n_b) - 1.0
    mean_a, mean_b = xa.mean(axis=0), xb.mean(axis=0)
    dof = n_a + n_b - 2
    if dof > 0:
        var_a = xa.var(axis=0, ddof=1) if n_a > 1 else np.zeros(classes.size)
        var_b = xb.var(axis=0, ddof=1) if n_b > 1 else np.zeros(classes.size)
        pooled = np.sqrt(((n_a - 1) * var_a + (n_b - 1) * var_b) / dof)
        d = np.divide(mean_a - mean_b, pooled, out=np.full(classes.size, np.nan), where=pooled > 0)
    else:
        d = np.full(classes.size, np.nan)
    q = np.asarray(benjamini_hochberg(p.tolist()), dtype=np.float64)
    order = sorted(range(classes.size), key=lambda i: (-effect[i], p[i], int(classes[i])))
    top: list[Coactivation] = []
    for i in order:
        if len(top) >= k or effect[i] <= 0:
            break
        if alpha is not None and q[i] > alpha:
            continue
        column = xa[:, i]
        best = sorted(range(n_a), key=lambda r: (-column[r], ids[a[r]]))[:n_exemplars]
        top.append(
            Coactivation(
                None if label is None else int(label),
                int(classes[i]),
                float(effect[i]),
                float(d[i]),
                float(mean_a[i]),
                float(mean_b[i]),
                float(p[i]),
                float(q[i]),
                tuple(ids[a[r]] for r in best),
            )
        )
    return CoactivationResult(
        None if label is None else int(label),
        (str(names[0]), str(names[1])),
        n_a,
        n_b,
        classes,
        effect,
        d,
        mean_a,
        mean_b,
        p,
        q,
        tuple(top),
    )
