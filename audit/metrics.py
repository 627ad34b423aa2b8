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


@dataclass
class AttackCounter:
    """Running counts for the attack: per-class survivors, and the histogram of step counts.

    ``adv_top1_accuracy`` is the fraction of labeled images whose adversarial class (after M
    steps, or at the first flip) still equals the label; with ``attack.target: label`` that is
    the fraction never flipped. The histogram covers every attacked image, labeled or not.
    """

    n_classes: int
    max_steps: int
    n: np.ndarray = field(init=False)
    survived: np.ndarray = field(init=False)
    hist: np.ndarray = field(init=False)  # index 0..M: steps; index M+1: never

    def __post_init__(self) -> None:
        self.n = np.zeros(self.n_classes, dtype=np.int64)
        self.survived = np.zeros(self.n_classes, dtype=np.int64)
        self.hist = np.zeros(self.max_steps + 2, dtype=np.int64)

    def update(self, labels: np.ndarray, adv_class: np.ndarray, steps_to_flip: np.ndarray) -> None:
        """Add a batch; ``steps_to_flip`` uses -1 for never, ``labels`` -1 for unlabeled."""
        labels = np.asarray(labels, dtype=np.int64)
        steps = np.asarray(steps_to_flip, dtype=np.int64)
        known = labels >= 0
        y = labels[known]
        self.n += np.bincount(y, minlength=self.n_classes)
        same = (np.asarray(adv_class)[known] == y).astype(np.int64)
        self.survived += np.bincount(y, weights=same, minlength=self.n_classes).astype(np.int64)
        self.hist += np.bincount(
            np.where(steps < 0, self.max_steps + 1, steps), minlength=self.max_steps + 2
        )

    def rows(self, classes: ClassIndex) -> list[tuple[str, str, float, int]]:
        """``adv_top1_accuracy`` overall and per class, then ``steps_to_flip_<k>`` fractions."""
        out: list[tuple[str, str, float, int]] = []
        total = int(self.n.sum())
        if total:
            out.append(("adv_top1_accuracy", "all", float(self.survived.sum() / total), total))
        attacked = int(self.hist.sum())
        for k, count in enumerate(self.hist):
            name = "steps_to_flip_never" if k == self.max_steps + 1 else f"steps_to_flip_{k}"
            if attacked:
                out.append((name, "all", float(count / attacked), int(count)))
        for c in np.flatnonzero(self.n):
            k = int(self.n[c])
            out.append(("adv_top1_accuracy", classes.ids[c], float(self.survived[c] / k), k))
        return out
