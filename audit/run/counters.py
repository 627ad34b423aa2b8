"""The metric counters of one run, fed as rows arrive and refilled from committed shards."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from audit.config import AuditConfig
from audit.data.classes import ClassIndex
from audit.metrics import AttackCounter, ErrorCounter
from audit.store import table_dataset

Batch = dict[str, np.ndarray]


class RunCounters:
    """Top-1/top-5 error counts and, with the attack on, the attack's counts.

    Args:
        cfg: The run's configuration (``attack.enabled``, ``attack.max_steps``).
        num_classes: Outputs of the model.
    """

    def __init__(self, cfg: AuditConfig, num_classes: int):
        self.errors = ErrorCounter(num_classes)
        self.attack = (
            AttackCounter(num_classes, cfg.attack.max_steps) if cfg.attack.enabled else None
        )

    def add_predictions(self, b: Batch) -> None:
        """Count predicted images (``label``, ``correct_top1``, ``correct_top5``, ``loss``)."""
        self.errors.update(
            np.asarray(b["label"], dtype=np.int64),
            b["correct_top1"],
            b["correct_top5"],
            np.asarray(b["loss"], dtype=np.float32),
        )

    def add_attacks(self, b: Batch) -> None:
        """Count attacked images (``label``, ``adv_class``, ``steps_to_flip``)."""
        if self.attack is not None:
            self.attack.update(
                np.asarray(b["label"], dtype=np.int64),
                b["adv_class"],
                np.asarray(b["steps_to_flip"], dtype=np.int16),
            )

    def refill(
        self, url: str, files: Mapping[str, Sequence[str]], storage_options: Mapping[str, Any]
    ) -> None:
        """Count the rows of committed files (``files``: table -> run-relative paths)."""
        if files["predictions"]:
            t = table_dataset(url, files["predictions"], storage_options).to_table(
                columns=["label", "correct_top1", "correct_top5", "loss"]
            )
            self.errors.update(
                t["label"].fill_null(-1).to_numpy(),
                t["correct_top1"].fill_null(False).to_numpy(zero_copy_only=False),
                t["correct_top5"].fill_null(False).to_numpy(zero_copy_only=False),
                t["loss"].fill_null(np.nan).to_numpy(),
            )
        if self.attack is not None and files["adversarial"]:
            t = table_dataset(url, files["adversarial"], storage_options).to_table(
                columns=["label", "adv_class", "steps_to_flip"]
            )
            self.attack.update(
                t["label"].fill_null(-1).to_numpy(),
                t["adv_class"].to_numpy(),
                t["steps_to_flip"].fill_null(-1).to_numpy(),
            )

    def rows(self, classes: ClassIndex) -> list[tuple[str, str, float, int]]:
        """Metric rows ``(name, scope, value, count)``, as in the ``metrics`` table."""
        out = self.errors.rows(classes)
        if self.attack is not None:
            out += self.attack.rows(classes)
        return out

    def labeled_classes(self) -> list[int]:
        """Classes with at least one labeled prediction."""
        return [int(c) for c in np.flatnonzero(self.errors.n)]
