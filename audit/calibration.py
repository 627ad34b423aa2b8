"""Calibration of a classifier's top-1 confidence: equal-width bins over [0, 1], each bin's
mean confidence against its accuracy, the expected and maximum calibration errors (ECE, MCE).

Bin rule: with edges ``e_k = k / M`` (the float64 value of ``k / M``, ``k = 0..M``), bin ``b``
holds the confidences ``e_b <= c < e_(b+1)``; the last bin is closed, ``e_(M-1) <= c <= 1``, so a
confidence of exactly 1.0 is in it. A confidence on an inner edge is in the bin above it.

The report's ``calibration`` section and ``audit.open_run(url).calibration()`` both use
:func:`predictions_calibration`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

BINS = 15
"""Equal-width confidence bins over [0, 1] (M)."""


@dataclass(frozen=True)
class Calibration:
    """The calibration of a set of predictions (:func:`calibration`).

    Attributes:
        edges: The ``M + 1`` bin edges ``k / M``.
        counts: Images per bin.
        confidence: Mean top-1 confidence per bin; None for an empty bin.
        accuracy: Share of correct top-1 predictions per bin; None for an empty bin.
        images: All images (``sum(counts)``).
        ece: Expected calibration error, ``sum_b (n_b / N) |accuracy_b - confidence_b|``.
        mce: Maximum calibration error, ``max_b |accuracy_b - confidence_b|`` over the non-empty
            bins.
        mean_confidence: Mean top-1 confidence of all images.
        mean_accuracy: Share of correct top-1 predictions of all images.
    """

    edges: tuple[float, ...]
    counts: tuple[int, ...]
    confidence: tuple[float | None, ...]
    accuracy: tuple[float | None, ...]
    images: int
    ece: float
    mce: float
    mean_confidence: float
    mean_accuracy: float

    @property
    def overconfidence(self) -> float:
        """Mean confidence minus accuracy: positive when over-confident, negative when under."""
        return self.mean_confidence - self.mean_accuracy


def bin_index(confidence: np.ndarray, bins: int) -> np.ndarray:
    """The bin of each confidence in [0, 1] (the module's bin rule): ``b`` with
    ``b / M <= c < (b + 1) / M``, and ``M - 1`` for ``c == 1``."""
    edges = np.arange(bins + 1, dtype=np.float64) / bins
    index = np.searchsorted(edges, np.asarray(confidence, dtype=np.float64), side="right") - 1
    return np.minimum(index, bins - 1)


def calibration(confidence: Any, correct: Any, bins: int = BINS) -> Calibration:
    """Bin the top-1 ``confidence`` of images in ``bins`` equal-width bins over [0, 1] and
    compare each bin's mean confidence with its accuracy.

    Args:
        confidence: Top-1 probability per image, in [0, 1].
        correct: Whether each image's top-1 prediction is its label.
        bins: The number of bins M (at least 1).

    Returns:
        The :class:`Calibration`.

    Raises:
        ValueError: no images, arrays of different lengths, a confidence outside [0, 1] or NaN,
            or fewer than 1 bin.
    """
    if not isinstance(bins, (int, np.integer)) or isinstance(bins, bool) or bins < 1:
        raise ValueError(f"calibration needs at least 1 bin. Got bins={bins!r} instead.")
    conf = np.asarray(confidence, dtype=np.float64).ravel()
    hit = np.asarray(correct, dtype=bool).ravel()
    if conf.shape != hit.shape:
        raise ValueError(
            f"calibration needs one 'correct' per confidence. Got {conf.size} confidences and "
            f"{hit.size} 'correct' values instead."
        )
    if not conf.size:
        raise ValueError("calibration needs at least one image. Got none.")
    bad = ~((conf >= 0.0) & (conf <= 1.0))  # NaN too
    if bad.any():
        raise ValueError(
            "calibration needs confidences in [0, 1]. Got "
            f"{float(conf[bad][0])!r} (and {int(bad.sum()) - 1} more outside) instead."
        )
    index = bin_index(conf, bins)
    counts = np.bincount(index, minlength=bins)
    conf_sum = np.bincount(index, weights=conf, minlength=bins)
    hit_sum = np.bincount(index, weights=hit.astype(np.float64), minlength=bins)
    full = counts > 0
    mean_conf = np.divide(conf_sum, counts, out=np.zeros(bins), where=full)
    mean_acc = np.divide(hit_sum, counts, out=np.zeros(bins), where=full)
    gap = np.abs(mean_acc - mean_conf)
    n = int(conf.size)
    return Calibration(
        edges=tuple(float(k) / bins for k in range(bins + 1)),
        counts=tuple(int(c) for c in counts),
        confidence=tuple(float(v) if f else None for v, f in zip(mean_conf, full, strict=True)),
        accuracy=tuple(float(v) if f else None for v, f in zip(mean_acc, full, strict=True)),
        images=n,
        ece=float(np.sum(counts * gap) / n),
        mce=float(gap[full].max()),
        mean_confidence=float(conf.mean()),
        mean_accuracy=float(hit.mean()),
    )


def predictions_calibration(preds: pa.Table, bins: int = BINS) -> Calibration | None:
    """The calibration of a predictions table's labeled rows (``top5_probs[0]`` against
    ``correct_top1``), or None when it has none. A confidence a float rounding put a hair
    outside [0, 1] is clipped; a row without a finite top-1 probability is left out."""
    if not preds.num_rows or not {"label", "top5_probs", "correct_top1"} <= set(preds.column_names):
        return None
    conf: list[float] = []
    hit: list[bool] = []
    for label, probs, correct in zip(
        preds.column("label").to_pylist(),
        preds.column("top5_probs").to_pylist(),
        preds.column("correct_top1").to_pylist(),
        strict=True,
    ):
        if label is None or correct is None or not probs or probs[0] is None:
            continue
        if not np.isfinite(probs[0]):
            continue
        conf.append(float(probs[0]))
        hit.append(bool(correct))
    if not conf:
        return None
    return calibration(np.clip(np.asarray(conf), 0.0, 1.0), np.asarray(hit), bins)
