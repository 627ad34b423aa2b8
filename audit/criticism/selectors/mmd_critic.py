"""MMD-critic (Kim et al. 2016) on the class's penultimate-layer embeddings.

Prototypes maximise ``J_b``, solved greedily or by the streaming sieve; they are ranked in
greedy order (the sieve's set is reordered so) and scored by ``J_b`` of the first ``rank`` of
them. Criticisms maximise the regularised witness and are ranked by ``|witness|``, largest first.
Rows whose embedding is not finite cannot be ranked: they are left out (with a warning).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from audit.config import NON_NEGATIVE, CriticismConfig, FieldRules, Interval, Options
from audit.criticism import mmd
from audit.criticism.frame import ClassFrame, Column
from audit.criticism.selectors.base import Selector
from audit.criticism.selectors.registry import register_selector

log = logging.getLogger(__name__)


@register_selector
@dataclass
class MMDCriticSelector(Selector):
    """MMD-critic on embeddings: prototypes maximise J_b, criticisms the regularised witness.

    Args:
        gamma: RBF kernel width; None means the median heuristic on this class's embeddings.
        lam: Weight of the log-determinant diversity term of the criticisms.
        solver: ``greedy`` or ``sieve`` (one streaming pass; its best set is completed greedily
            when it holds fewer than ``n_prototypes``).
        eps: The sieve's threshold grid ratio.
        seed: Seeds the sieve's pass order (a permutation of the id-sorted rows) and the
            median-heuristic subsample.

    Learned attributes, besides the selections: ``gamma_``, the kernel width used.

    Example:
        >>> emb = np.array([[0.0, 0.0], [0.2, 0.0], [0.0, 0.2], [0.2, 0.2], [3.0, 3.0]])
        >>> sel = MMDCriticSelector(1, 1, gamma=1.0).fit(
        ...     ClassFrame(0, ["a", "b", "c", "d", "e"], {"predictions.embedding": emb}))
        >>> sel.prototypes_, sel.criticisms_
        (['d'], ['e'])
    """

    gamma: float | None = None
    lam: float = 1e-5
    solver: str = "greedy"
    eps: float = 0.1
    seed: int = 0

    name: ClassVar[str] = "mmd_critic"
    requires: ClassVar[tuple[Column, ...]] = (Column("predictions", "embedding"),)
    PARAMETERS: ClassVar[Mapping[str, FieldRules]] = {
        **Selector.PARAMETERS,
        "gamma": (Interval(float, 0, None, closed="neither"), None),
        "lam": Interval(float, 0, None),
        "solver": Options(("greedy", "sieve")),
        "eps": Interval(float, 0, 1, closed="neither"),
        "seed": NON_NEGATIVE,
    }

    @classmethod
    def from_config(cls, cfg: CriticismConfig, label: int) -> MMDCriticSelector:
        return cls(
            cfg.n_prototypes,
            cfg.n_criticisms,
            gamma=cfg.mmd_gamma,
            lam=cfg.mmd_lambda,
            solver=cfg.mmd_solver.value,
            eps=cfg.sieve_eps,
            seed=cfg.seed,
        )

    def fit(self, frame: ClassFrame) -> MMDCriticSelector:
        frame = frame.sorted_by_id()
        if not len(frame):
            return self._nothing()
        emb = np.asarray(frame["predictions.embedding"], dtype=np.float64)
        emb = emb.reshape(len(frame), -1)
        finite = np.isfinite(emb).all(axis=1)  # a NaN row cannot be ranked
        if not finite.all():
            log.warning(
                "class %d: %d of %d embeddings are not finite; MMD-critic ranks the rest",
                frame.label,
                int((~finite).sum()),
                len(frame),
            )
        ids, x = frame.image_ids[finite], emb[finite]
        if not len(ids):
            return self._nothing()
        self.gamma_ = self.gamma if self.gamma is not None else mmd.median_gamma(x, seed=self.seed)
        protos = self._prototypes(x)
        crits, w = self._criticisms(x, protos)
        return self._set_result(
            (
                [str(ids[i]) for i in protos],
                [
                    float(mmd.prototype_objective(x, protos[: r + 1], self.gamma_))
                    for r in range(len(protos))
                ],
            ),
            ([str(ids[i]) for i in crits], [float(v) for v in w]),
        )

    def _nothing(self) -> MMDCriticSelector:
        """No image to rank: empty selections (``gamma_`` NaN unless ``gamma`` is set)."""
        self.gamma_ = float("nan") if self.gamma is None else self.gamma
        return self._set_result(([], []), ([], []))

    def _prototypes(self, x: np.ndarray) -> list[int]:
        """Row indices of ``x`` ``(n, d)``, best first."""
        n = x.shape[0]
        m = min(self.n_prototypes, n)
        if self.solver == "greedy":
            protos = mmd.greedy_prototypes(x, m, self.gamma_) if m else []
        else:
            order = np.random.default_rng(self.seed).permutation(n)
            protos = mmd.sieve_prototypes(x, m, self.gamma_, eps=self.eps, order=order) if m else []
        if len(protos) < m:  # the sieve's best set can be smaller: extend it greedily
            protos = mmd.greedy_prototypes(x, m, self.gamma_, start=protos)
        if self.solver != "greedy":  # the sieve keeps stream order: rank its set greedily
            protos = _greedy_order(x, list(protos), self.gamma_)
        return protos

    def _criticisms(self, x: np.ndarray, protos: list[int]) -> tuple[list[int], np.ndarray]:
        """Row indices of ``x``, largest ``|witness|`` first, and those ``|witness|`` values."""
        n = x.shape[0]
        c = min(self.n_criticisms, n - len(protos))
        if c <= 0:
            return [], np.zeros(0)
        if self.solver == "greedy":
            crits = mmd.greedy_criticisms(x, protos, c, self.gamma_, lam=self.lam)
        else:
            order = np.random.default_rng(self.seed + 1).permutation(n)
            crits = mmd.sieve_criticisms(
                x, protos, c, self.gamma_, lam=self.lam, eps=self.eps, order=order
            )
        if not crits:
            return [], np.zeros(0)
        w = np.abs(mmd.witness(x, protos, self.gamma_, points=x[crits]))
        if self.solver != "greedy":  # stream order -> largest |witness| first
            order_w = np.argsort(-w, kind="stable")
            crits, w = [crits[i] for i in order_w], w[order_w]
        return crits, w


def _greedy_order(x: np.ndarray, members: list[int], gamma: float) -> list[int]:
    """``members`` reordered as greedy would pick them among themselves: each next one the
    largest gain in J_b (ties: the earlier position)."""
    order: list[int] = []
    left = list(members)
    while left:
        gains = [mmd.prototype_objective(x, [*order, j], gamma) for j in left]
        order.append(left.pop(int(np.argmax(gains))))
    return order
