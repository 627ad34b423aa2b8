"""Top-1 / top-5 error, overall and per class, accumulated batch by batch while the pass streams.

Only labeled, successfully predicted images count; the ``count`` of each metric row says how many.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from audit.data.classes import ClassIndex


@dataclass
class ErrorCounter:
    """Running per-class counts of images, top-1 hits, top-5 hits and summed loss."""

    n_classes: int
    n: np.ndarray = field(init=False)
    top1: np.ndarray = field(init=False)
    top5: np.ndarray = field(init=False)
    loss: np.ndarray = field(init=False)
    unlabeled: int = 0

    def __post_init__(self) -> None:
        self.n = np.zeros(self.n_classes, dtype=np.int64)
        self.top1 = np.zeros(self.n_classes, dtype=np.int64)
        self.top5 = np.zeros(self.n_classes, dtype=np.int64)
        self.loss = np.zeros(self.n_classes, dtype=np.float64)

    def update(
        self,
        labels: np.ndarray,
        correct_top1: np.ndarray,
        correct_top5: np.ndarray,
        loss: np.ndarray,
    ) -> None:
        """Add a batch. ``labels`` are class indices, ``-1`` for unlabeled images (not counted)."""
        labels = np.asarray(labels, dtype=np.int64)
        known = labels >= 0
        self.unlabeled += int((~known).sum())
        y = labels[known]
        self.n += np.bincount(y, minlength=self.n_classes)
        self.top1 += np.bincount(
            y, weights=np.asarray(correct_top1)[known], minlength=self.n_classes
        ).astype(np.int64)
        self.top5 += np.bincount(
            y, weights=np.asarray(correct_top5)[known], minlength=self.n_classes
        ).astype(np.int64)
        self.loss += np.bincount(
            y, weights=np.asarray(loss, dtype=np.float64)[known], minlength=self.n_classes
        )

    def rows(self, classes: ClassIndex) -> list[tuple[str, str, float, int]]:
        """Metric rows ``(name, scope, value, count)``: overall (scope ``all``) then per class.

        Classes with no labeled image get no per-class rows (an error rate over zero images is
        undefined, and a 50-image subset should not print 990 empty classes).
        """
        out: list[tuple[str, str, float, int]] = []
        total = int(self.n.sum())
        if total:
            out += [
                ("top1_error", "all", 1.0 - self.top1.sum() / total, total),
                ("top5_error", "all", 1.0 - self.top5.sum() / total, total),
                ("mean_loss", "all", float(self.loss.sum() / total), total),
            ]
        for c in np.flatnonzero(self.n):
            k = int(self.n[c])
            cid = classes.ids[c]
            out += [
                ("top1_error", cid, 1.0 - self.top1[c] / k, k),
                ("top5_error", cid, 1.0 - self.top5[c] / k, k),
            ]
        return out
