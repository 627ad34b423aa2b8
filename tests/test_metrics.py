from __future__ import annotations

import numpy as np
import pytest

from audit.data.classes import ClassIndex
from audit.metrics import ErrorCounter


def test_counter_matches_plain_loop(rng: np.random.Generator) -> None:
    n_classes = 7
    classes = ClassIndex("t", tuple(f"c{i}" for i in range(n_classes)), tuple("x" * n_classes))
    labels = rng.integers(-1, n_classes, size=500)
    c1 = rng.random(500) < 0.6
    c5 = c1 | (rng.random(500) < 0.5)
    loss = rng.random(500).astype(np.float32)
    counter = ErrorCounter(n_classes)
    for start in range(0, 500, 37):  # batches of odd sizes
        s = slice(start, start + 37)
        counter.update(labels[s], c1[s], c5[s], loss[s])
    rows = {(name, scope): (value, count) for name, scope, value, count in counter.rows(classes)}

    known = [i for i in range(500) if labels[i] >= 0]
    assert counter.unlabeled == 500 - len(known)
    top1_err = sum(1 for i in known if not c1[i]) / len(known)
    assert rows[("top1_error", "all")][0] == pytest.approx(top1_err)
    assert rows[("top1_error", "all")][1] == len(known)
    assert rows[("mean_loss", "all")][0] == pytest.approx(
        sum(float(loss[i]) for i in known) / len(known), rel=1e-6
    )
    for c in range(n_classes):
        members = [i for i in known if labels[i] == c]
        if not members:
            assert ("top1_error", f"c{c}") not in rows
            continue
        e5 = sum(1 for i in members if not c5[i]) / len(members)
        assert rows[("top5_error", f"c{c}")] == (pytest.approx(e5), len(members))


def test_no_labeled_images_gives_no_rows() -> None:
    counter = ErrorCounter(3)
    counter.update(
        np.array([-1, -1]),
        np.array([False, False]),
        np.array([False, False]),
        np.array([np.nan, np.nan]),
    )
    assert counter.rows(ClassIndex("t", ("a", "b", "c"), ("a", "b", "c"))) == []
