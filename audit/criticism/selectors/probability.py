"""The probability baseline: prototypes are confidently right, criticisms confidently wrong.

Prototypes have p(label) above ``proto_threshold`` (largest first), criticisms below
``crit_threshold`` (smallest first). With ``crit_threshold > proto_threshold`` an image can be
both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from audit.config import CriticismConfig, FieldRules, Interval
from audit.criticism.frame import ClassFrame, Column
from audit.criticism.selectors.base import Selector, rank
from audit.criticism.selectors.registry import register_selector


@register_selector
@dataclass
class ProbabilitySelector(Selector):
    """Prototypes: p(label) > ``proto_threshold``; criticisms: p(label) < ``crit_threshold``.

    Example:
        >>> f = ClassFrame(0, ["a", "b", "c"], {"predictions.label_prob": [0.95, 0.5, 0.02]})
        >>> sel = ProbabilitySelector(2, 2).fit(f)
        >>> sel.prototypes_, sel.criticisms_
        (['a'], ['c'])
    """

    proto_threshold: float = 0.9
    crit_threshold: float = 0.1

    name: ClassVar[str] = "probability"
    requires: ClassVar[tuple[Column, ...]] = (Column("predictions", "label_prob"),)
    PARAMETERS: ClassVar[Mapping[str, FieldRules]] = {
        **Selector.PARAMETERS,
        "proto_threshold": Interval(float, 0, 1),
        "crit_threshold": Interval(float, 0, 1),
    }

    @classmethod
    def from_config(cls, cfg: CriticismConfig, label: int) -> ProbabilitySelector:
        return cls(cfg.n_prototypes, cfg.n_criticisms, cfg.proto_threshold, cfg.crit_threshold)

    def fit(self, frame: ClassFrame) -> ProbabilitySelector:
        frame = frame.sorted_by_id()
        ids, p = frame.image_ids, frame["predictions.label_prob"].astype(float)
        hi, lo = p > self.proto_threshold, p < self.crit_threshold
        return self._set_result(
            rank(ids[hi], p[hi], self.n_prototypes, True),
            rank(ids[lo], p[lo], self.n_criticisms, False),
        )

    def disjoint_roles(self) -> bool:
        return self.crit_threshold <= self.proto_threshold
