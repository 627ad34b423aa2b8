"""The random baseline: a seeded draw without replacement, prototypes and criticisms disjoint."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from audit.config import NON_NEGATIVE, CriticismConfig, FieldRules
from audit.criticism.frame import ClassFrame, Column
from audit.criticism.selectors.base import Selector
from audit.criticism.selectors.registry import register_selector


@register_selector
@dataclass
class RandomSelector(Selector):
    """A seeded draw; scores are the ranks (1.0, 2.0, ...).

    The draw depends on ``seed`` and ``stream`` (the stage passes the class index, so that
    classes differ) and on the set of image ids, not on their order.

    Example:
        >>> sel = RandomSelector(1, 1, seed=0).fit(ClassFrame(0, ["a", "b", "c"]))
        >>> len(sel.prototypes_), len(sel.criticisms_), sel.prototype_scores_
        (1, 1, [1.0])
    """

    seed: int = 0
    stream: int = 0

    name: ClassVar[str] = "random"
    requires: ClassVar[tuple[Column, ...]] = ()
    PARAMETERS: ClassVar[Mapping[str, FieldRules]] = {
        **Selector.PARAMETERS,
        "seed": NON_NEGATIVE,
        "stream": NON_NEGATIVE,
    }

    @classmethod
    def from_config(cls, cfg: CriticismConfig, label: int) -> RandomSelector:
        return cls(cfg.n_prototypes, cfg.n_criticisms, seed=cfg.seed, stream=label)

    def fit(self, frame: ClassFrame) -> RandomSelector:
        ids = frame.sorted_by_id().image_ids
        perm = np.random.default_rng([self.seed, self.stream]).permutation(len(ids))
        p, c = self.n_prototypes, self.n_criticisms
        protos = [str(ids[i]) for i in perm[:p]]
        crits = [str(ids[i]) for i in perm[p : p + c]]
        return self._set_result(
            (protos, [float(r) for r in range(1, len(protos) + 1)]),
            (crits, [float(r) for r in range(1, len(crits) + 1)]),
        )
