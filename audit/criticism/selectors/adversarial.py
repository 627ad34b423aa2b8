"""Adversarial selection (Stock & Cisse 2018, section 3.3): how an image resists IFGSM.

Among the class's correctly classified images (top-1 prediction is the label; with
``attack.target`` 'prediction' a misclassified image that "never flips" only kept its wrong
prediction):

- prototypes are images still correct after the attack's M steps (``steps_to_flip`` null),
  ranked by the clean margin p(label) - p(runner-up), largest first;
- criticisms are images flipped by the first step (``steps_to_flip == 1``), ranked by the
  adversarial class's probability, largest first (the most confidently fooled).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from audit.config import CriticismConfig
from audit.criticism.frame import ClassFrame, Column
from audit.criticism.selectors.base import Selector, rank
from audit.criticism.selectors.registry import register_selector


@register_selector
@dataclass
class AdversarialSelector(Selector):
    """Prototypes survive the attack; criticisms flip after one step.

    Example:
        >>> f = ClassFrame(0, ["a", "b", "c"], {
        ...     "predictions.label_prob": np.array([0.9, 0.6, 0.2]),
        ...     "predictions.top5_classes": np.array([[0, 1], [0, 2], [4, 0]]),
        ...     "predictions.top5_probs": np.array([[0.9, 0.1], [0.6, 0.3], [0.7, 0.2]]),
        ...     "adversarial.steps_to_flip": np.array([np.nan, 1, np.nan]),
        ...     "adversarial.adv_prob": np.array([0.5, 0.8, 0.5])})
        >>> sel = AdversarialSelector(2, 2).fit(f)
        >>> sel.prototypes_, sel.criticisms_
        (['a'], ['b'])
    """

    name: ClassVar[str] = "adversarial"
    requires: ClassVar[tuple[Column, ...]] = (
        Column("predictions", "label_prob"),
        Column("predictions", "top5_classes"),
        Column("predictions", "top5_probs"),
        Column("adversarial", "steps_to_flip"),
        Column("adversarial", "adv_prob"),
    )

    @classmethod
    def from_config(cls, cfg: CriticismConfig, label: int) -> AdversarialSelector:
        return cls(cfg.n_prototypes, cfg.n_criticisms)

    def fit(self, frame: ClassFrame) -> AdversarialSelector:
        frame = frame.sorted_by_id()
        if not len(frame):  # list columns of no rows have no second axis
            return self._set_result(([], []), ([], []))
        top_c, top_p = frame["predictions.top5_classes"], frame["predictions.top5_probs"]
        correct = top_c[:, 0] == frame.label
        runner_up = np.where(correct, top_p[:, 1] if top_p.shape[1] > 1 else 0.0, top_p[:, 0])
        margin = frame["predictions.label_prob"].astype(np.float64) - runner_up
        steps = np.array(
            [-1 if np.isnan(s) else int(s) for s in frame["adversarial.steps_to_flip"].tolist()],
            dtype=np.int64,
        )
        adv_prob = frame["adversarial.adv_prob"].astype(np.float64)
        ids = frame.image_ids
        never = correct & (steps < 0)
        once = correct & (steps == 1)
        return self._set_result(
            rank(ids[never], margin[never].astype(float), self.n_prototypes, descending=True),
            rank(ids[once], adv_prob[once].astype(float), self.n_criticisms, descending=True),
        )
