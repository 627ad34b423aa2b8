"""Fragile slices: clusters of one class's images on which the model errs more or flips sooner.

:func:`class_slices` clusters the penultimate-layer embeddings of one class's images
(``predictions.embedding``) with scikit-learn's :class:`~sklearn.cluster.KMeans`
(Lloyd, ``n_init`` restarts, ``random_state=seed``), after sorting the images by id and, by
default, scaling every embedding to unit length (cosine geometry; an all-zero embedding stays
zero). The number of clusters is

    ``k = min(k_max, n // min_size, distinct embeddings)``

so that an average cluster has at least ``min_size`` images; a class with ``k < 2`` (tiny, or
all embeddings equal) has no slices. Clusters are numbered by their first image in id order,
so the numbering does not depend on k-means' internal labels.

Each cluster with at least ``min_size`` images is a :class:`Slice`, scored by

- ``error_rate``: the share of its images with ``correct_top1`` false;
- ``mean_steps``: the mean IFGSM ``steps_to_flip``, a never-flipped image (null) counting as
  ``max_steps + 1`` (one more step than the attack tried: a lower bound of its true value);
  lower is more fragile;

and compared with the rest of the class: ``p_value`` is Fisher's exact test (two-sided,
:func:`audit.report.bias.fisher_two_sided`) of errors in the slice vs the class's other images.
The clusters were chosen by looking at the same images, but not at their errors, so the test
is fair for the error counts; the many slices of a run still call for a multiple-testing
correction (:mod:`audit.bias.candidates` applies Benjamini-Hochberg).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans

from audit.report.bias import fisher_two_sided

ORDERS = ("error", "steps")


@dataclass(frozen=True)
class Slice:
    """One cluster of one class's images (see the module docstring).

    Attributes:
        label: The class index.
        cluster: The cluster's number within the class (0 = the one holding the first id).
        k: Clusters the class was cut into.
        image_ids: Its images, sorted by id.
        exemplar_ids: Its images closest to the centroid (in the clustered geometry), closest
            first; ties go to the smaller id.
        size: ``len(image_ids)``.
        errors: Its images with ``correct_top1`` false.
        error_rate: ``errors / size``.
        mean_steps: Mean steps to flip, never-flipped as ``max_steps + 1``.
        rest_size: The class's other images.
        rest_error_rate: Their error rate; NaN when there are none.
        rest_mean_steps: Their mean steps to flip; NaN when there are none.
        p_value: Fisher's exact test of the slice's errors vs the rest's.
    """

    label: int
    cluster: int
    k: int
    image_ids: tuple[str, ...]
    exemplar_ids: tuple[str, ...]
    size: int
    errors: int
    error_rate: float
    mean_steps: float
    rest_size: int
    rest_error_rate: float
    rest_mean_steps: float
    p_value: float

    @property
    def effect(self) -> float:
        """``error_rate - rest_error_rate``."""
        return self.error_rate - self.rest_error_rate


def n_clusters(n: int, k_max: int, min_size: int, distinct: int | None = None) -> int:
    """``min(k_max, n // min_size, distinct)`` (the module docstring's rule); below 2 means
    no slices."""
    k = min(int(k_max), int(n) // int(min_size))
    return min(k, int(distinct)) if distinct is not None else k


def steps_with_never(
    steps_to_flip: Sequence[float | None] | np.ndarray, max_steps: int
) -> np.ndarray:
    """``steps_to_flip`` as floats, null or NaN (never flipped) replaced by ``max_steps + 1``.

    Raises:
        ValueError: a value outside ``[0, max_steps]``.
    """
    s = np.array([math.nan if v is None else float(v) for v in steps_to_flip], dtype=np.float64)
    known = s[np.isfinite(s)]
    if known.size and (known.min() < 0 or known.max() > max_steps):
        raise ValueError(
            f"steps_to_flip must be in [0, {max_steps}] or null. "
            f"Got [{known.min()}, {known.max()}] instead."
        )
    return np.where(np.isfinite(s), s, float(max_steps + 1))


def class_slices(
    embeddings: np.ndarray,
    image_ids: Sequence[str],
    correct: Sequence[bool] | np.ndarray,
    steps_to_flip: Sequence[float | None] | np.ndarray,
    *,
    label: int,
    max_steps: int,
    k_max: int = 5,
    min_size: int = 5,
    seed: int = 0,
    n_init: int = 10,
    normalize: bool = True,
    n_exemplars: int = 3,
    order: str = "error",
) -> list[Slice]:
    """The slices of one class, worst first.

    Args:
        embeddings: ``(n, d)`` finite embeddings of the class's images.
        image_ids: Their ids (distinct).
        correct: Their ``correct_top1``.
        steps_to_flip: Their ``steps_to_flip`` (None or NaN = never flipped).
        label: The class index (kept in the slices).
        max_steps: The attack's step budget ``M`` (``attack.steps``).
        k_max: Most clusters.
        min_size: Smallest reported cluster, and the average cluster size the rule aims at.
        seed: ``KMeans(random_state=seed)``.
        n_init: ``KMeans(n_init=n_init)``.
        normalize: Scale embeddings to unit length first.
        n_exemplars: Exemplar ids per slice.
        order: ``error``: highest error rate first, then fewest mean steps; ``steps``: fewest
            mean steps first, then highest error rate. Further ties: larger slice, smaller
            cluster number.

    Returns:
        The clusters with at least ``min_size`` images; empty when ``k < 2``.

    Raises:
        ValueError: mismatched lengths, repeated ids, non-finite embeddings, bad settings.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}. Got {order!r}.")
    if k_max < 1 or min_size < 1 or n_init < 1:
        raise ValueError(
            f"k_max, min_size and n_init must be at least 1. Got {k_max}, {min_size}, {n_init}."
        )
    x = np.asarray(embeddings, dtype=np.float64)
    ids = np.asarray([str(i) for i in image_ids], dtype=object)
    ok = np.asarray(correct, dtype=bool)
    steps = steps_with_never(steps_to_flip, max_steps)
    n = ids.size
    if x.ndim != 2 or x.shape[0] != n or ok.shape != (n,) or steps.shape != (n,):
        raise ValueError(
            f"embeddings (n, d), image_ids, correct and steps_to_flip must describe the same n "
            f"images. Got {x.shape}, {n}, {ok.shape}, {steps.shape}."
        )
    if not np.all(np.isfinite(x)):
        raise ValueError("embeddings must be finite (drop the images without one).")
    if np.unique(ids).size != n:
        raise ValueError("image_ids repeat an image.")
    if n == 0:
        return []
    by_id = np.argsort(ids.astype(str), kind="stable")
    x, ids, ok, steps = x[by_id], ids[by_id], ok[by_id], steps[by_id]
    if normalize:
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    k = n_clusters(n, k_max, min_size, np.unique(x, axis=0).shape[0])
    if k < 2:
        return []
    model = KMeans(n_clusters=k, n_init=n_init, random_state=seed, algorithm="lloyd").fit(x)
    raw = np.asarray(model.labels_)
    _, first = np.unique(raw, return_index=True)
    renumber = {int(raw[i]): c for c, i in enumerate(sorted(first.tolist()))}
    labels = np.array([renumber[int(r)] for r in raw])
    errors = ~ok
    found: list[Slice] = []
    for c in range(k):
        mine = labels == c
        size = int(mine.sum())
        if size < min_size:
            continue
        members = np.flatnonzero(mine)
        centre = x[members].mean(axis=0)
        dist = np.linalg.norm(x[members] - centre, axis=1)
        closest = sorted(zip(dist.tolist(), ids[members].tolist(), strict=True))
        e, rest = int(errors[mine].sum()), int((~mine).sum())
        e_rest = int(errors[~mine].sum())
        _, p = fisher_two_sided([[e, size - e], [e_rest, rest - e_rest]])
        found.append(
            Slice(
                int(label),
                c,
                k,
                tuple(ids[members].tolist()),
                tuple(i for _, i in closest[:n_exemplars]),
                size,
                e,
                e / size,
                float(steps[mine].mean()),
                rest,
                e_rest / rest if rest else math.nan,
                float(steps[~mine].mean()) if rest else math.nan,
                p,
            )
        )
    if order == "error":
        found.sort(key=lambda s: (-s.error_rate, s.mean_steps, -s.size, s.cluster))
    else:
        found.sort(key=lambda s: (s.mean_steps, -s.error_rate, -s.size, s.cluster))
    return found
