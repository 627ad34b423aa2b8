"""Prototype and criticism selectors for one class, in scikit-learn's shape (no Ray here).

``__init__`` stores parameters, ``fit`` computes, learned attributes end in ``_``:
``prototypes_`` / ``criticisms_`` (image ids, best first) and ``prototype_scores_`` /
``criticism_scores_`` (what they were ranked by). Every selector first sorts its rows by image
id, so the result never depends on the order rows arrive in; ties are broken by image id.

The four methods of Stock & Cisse (2018, section 3.3):

- :class:`AdversarialSelector`: prototypes are images still correct after M IFGSM steps
  (``steps_to_flip`` null), ranked by clean margin p(label) - p(runner-up), largest first;
  criticisms are images flipped by the first step (``steps_to_flip == 1``), ranked by the
  adversarial class's probability, largest first (the most confidently fooled).
- :class:`MMDCriticSelector`: MMD-critic (Kim et al. 2016) on the penultimate embeddings, solved
  greedily (default) or by the streaming sieve; prototypes are ranked in greedy order (the
  sieve's set is reordered so), scored by J_b of the first ``rank`` of them; criticisms are
  ranked by |witness|, largest first.
- :class:`ProbabilitySelector`: prototypes have p(label) above a threshold (largest first),
  criticisms below one (smallest first).
- :class:`RandomSelector`: a seeded draw, prototypes and criticisms disjoint.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from audit.criticism import mmd


def _sorted(image_ids: Sequence[str], *columns: np.ndarray) -> tuple[np.ndarray, ...]:
    ids = np.asarray(image_ids, dtype=object)
    order = np.argsort(ids.astype(str), kind="stable")
    return (ids[order], *(np.asarray(c)[order] for c in columns))


def _rank(
    ids: np.ndarray, scores: np.ndarray, k: int, descending: bool
) -> tuple[list[str], list[float]]:
    """The ``k`` best ids by score (ties: smaller image id first); ``ids`` are sorted already."""
    key = -scores if descending else scores
    order = np.lexsort((np.arange(len(ids)), key))[:k]
    return [str(ids[i]) for i in order], [float(scores[i]) for i in order]


class _Selector:
    prototypes_: list[str]
    criticisms_: list[str]
    prototype_scores_: list[float]
    criticism_scores_: list[float]

    def __init__(self, n_prototypes: int = 3, n_criticisms: int = 3) -> None:
        self.n_prototypes = n_prototypes
        self.n_criticisms = n_criticisms


class AdversarialSelector(_Selector):
    """Prototypes survive the attack; criticisms flip after one step.

    ``fit(image_ids, steps_to_flip, margin, adv_prob)`` takes the class's correctly classified
    images only (the caller filters: with ``attack.target`` 'prediction' a misclassified image
    can also never flip); ``steps_to_flip`` uses -1 for never flipped; ``margin`` is the clean p(label) - p(runner-up); ``adv_prob`` the adversarial
    class's probability.
    """

    def fit(
        self,
        image_ids: Sequence[str],
        steps_to_flip: np.ndarray,
        margin: np.ndarray,
        adv_prob: np.ndarray,
    ) -> AdversarialSelector:
        ids, steps, margin, adv_prob = _sorted(image_ids, steps_to_flip, margin, adv_prob)
        never = steps < 0
        once = steps == 1
        self.prototypes_, self.prototype_scores_ = _rank(
            ids[never], margin[never].astype(float), self.n_prototypes, descending=True
        )
        self.criticisms_, self.criticism_scores_ = _rank(
            ids[once], adv_prob[once].astype(float), self.n_criticisms, descending=True
        )
        return self


class ProbabilitySelector(_Selector):
    """Prototypes: p(label) > ``proto_threshold``; criticisms: p(label) < ``crit_threshold``."""

    def __init__(
        self,
        n_prototypes: int = 3,
        n_criticisms: int = 3,
        proto_threshold: float = 0.9,
        crit_threshold: float = 0.1,
    ) -> None:
        super().__init__(n_prototypes, n_criticisms)
        self.proto_threshold = proto_threshold
        self.crit_threshold = crit_threshold

    def fit(self, image_ids: Sequence[str], label_prob: np.ndarray) -> ProbabilitySelector:
        ids, p = _sorted(image_ids, label_prob)
        p = p.astype(float)
        hi, lo = p > self.proto_threshold, p < self.crit_threshold
        self.prototypes_, self.prototype_scores_ = _rank(ids[hi], p[hi], self.n_prototypes, True)
        self.criticisms_, self.criticism_scores_ = _rank(ids[lo], p[lo], self.n_criticisms, False)
        return self


class RandomSelector(_Selector):
    """A seeded draw without replacement; prototypes and criticisms are disjoint.

    The draw depends on ``seed`` and ``stream`` (e.g. the class index, so that classes differ)
    and on the set of image ids, not on their order.
    """

    def __init__(
        self, n_prototypes: int = 3, n_criticisms: int = 3, seed: int = 0, stream: int = 0
    ) -> None:
        super().__init__(n_prototypes, n_criticisms)
        self.seed = seed
        self.stream = stream

    def fit(self, image_ids: Sequence[str]) -> RandomSelector:
        (ids,) = _sorted(image_ids)
        perm = np.random.default_rng([self.seed, self.stream]).permutation(len(ids))
        p, c = self.n_prototypes, self.n_criticisms
        self.prototypes_ = [str(ids[i]) for i in perm[:p]]
        self.criticisms_ = [str(ids[i]) for i in perm[p : p + c]]
        self.prototype_scores_ = [float(r) for r in range(1, len(self.prototypes_) + 1)]
        self.criticism_scores_ = [float(r) for r in range(1, len(self.criticisms_) + 1)]
        return self


def _greedy_order(x: np.ndarray, members: list[int], gamma: float) -> list[int]:
    """``members`` reordered as greedy would pick them among themselves: each next one the
    largest gain in J_b (ties: the earlier position)."""
    order: list[int] = []
    left = list(members)
    while left:
        gains = [mmd.prototype_objective(x, [*order, j], gamma) for j in left]
        order.append(left.pop(int(np.argmax(gains))))
    return order


class MMDCriticSelector(_Selector):
    """MMD-critic on embeddings: prototypes maximise J_b, criticisms the regularised witness.

    Args:
        gamma: RBF kernel width; None means the median heuristic on this class's embeddings.
        lam: Weight of the log-determinant diversity term of the criticisms.
        solver: ``greedy`` or ``sieve`` (one streaming pass; its best set is completed greedily
            when it holds fewer than ``n_prototypes``).
        eps: The sieve's threshold grid ratio.
        seed: Seeds the sieve's pass order (a permutation of the id-sorted rows) and the
            median-heuristic subsample.
    """

    def __init__(
        self,
        n_prototypes: int = 3,
        n_criticisms: int = 3,
        gamma: float | None = None,
        lam: float = 1e-5,
        solver: str = "greedy",
        eps: float = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__(n_prototypes, n_criticisms)
        self.gamma = gamma
        self.lam = lam
        self.solver = solver
        self.eps = eps
        self.seed = seed

    def fit(self, image_ids: Sequence[str], embeddings: np.ndarray) -> MMDCriticSelector:
        ids, x = _sorted(image_ids, embeddings)
        x = np.asarray(x, dtype=np.float64).reshape(len(ids), -1)
        self.gamma_ = self.gamma if self.gamma is not None else mmd.median_gamma(x, seed=self.seed)
        m = min(self.n_prototypes, len(ids))
        if self.solver == "greedy":
            protos = mmd.greedy_prototypes(x, m, self.gamma_) if m else []
        else:
            order = np.random.default_rng(self.seed).permutation(len(ids))
            protos = mmd.sieve_prototypes(x, m, self.gamma_, eps=self.eps, order=order) if m else []
        if len(protos) < m:  # the sieve's best set can be smaller: extend it greedily
            protos = mmd.greedy_prototypes(x, m, self.gamma_, start=protos)
        if self.solver != "greedy":  # the sieve keeps stream order: rank its set greedily
            protos = _greedy_order(x, list(protos), self.gamma_)
        c = min(self.n_criticisms, len(ids) - len(protos))
        if c <= 0:
            crits: list[int] = []
        elif self.solver == "greedy":
            crits = mmd.greedy_criticisms(x, protos, c, self.gamma_, lam=self.lam)
        else:
            order = np.random.default_rng(self.seed + 1).permutation(len(ids))
            crits = mmd.sieve_criticisms(
                x, protos, c, self.gamma_, lam=self.lam, eps=self.eps, order=order
            )
        w = np.abs(mmd.witness(x, protos, self.gamma_, points=x[crits])) if crits else []
        if crits and self.solver != "greedy":  # stream order -> largest |witness| first
            order_w = np.argsort(-np.asarray(w), kind="stable")
            crits, w = [crits[i] for i in order_w], np.asarray(w)[order_w]
        self.prototypes_ = [str(ids[i]) for i in protos]
        self.criticisms_ = [str(ids[i]) for i in crits]
        self.prototype_scores_ = [
            float(mmd.prototype_objective(x, protos[: r + 1], self.gamma_))
            for r in range(len(protos))
        ]
        self.criticism_scores_ = [float(v) for v in w]
        return self
