"""``confusion``: the most-confused class pairs (true class, predicted class, images, share of
the true class's images), per run, in a sortable table: which mistakes a model makes most."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from audit.report import html as h
from audit.report.sections.context import SectionContext
from audit.report.sections.registry import register_section

TOP_PAIRS = 30
"""Pairs shown per run."""


def confused_pairs(labels: Any, top1: Any) -> tuple[Counter[tuple[int, int]], Counter[int]]:
    """``(true, predicted) -> images`` over the labeled mistakes, and images per true class."""
    y, p = np.asarray(labels), np.asarray(top1)
    wrong = y != p
    pairs: Counter[tuple[int, int]] = Counter(
        zip(y[wrong].tolist(), p[wrong].tolist(), strict=True)
    )
    return pairs, Counter(y.tolist())


@register_section(
    "confusion",
    title="Most-confused pairs",
    order=14,
    why="no misclassified labeled images",
)
def render(ctx: SectionContext) -> list[str] | None:
    rows: list[list[Any]] = []
    for run in ctx.runs:
        preds = run.tables["predictions"]
        if not preds.num_rows or "top5_classes" not in preds.column_names:
            continue
        labeled = [
            (lab, top[0])
            for lab, top in zip(
                preds.column("label").to_pylist(),
                preds.column("top5_classes").to_pylist(),
                strict=True,
            )
            if lab is not None and top
        ]
        if not labeled:
            continue
        pairs, per_class = confused_pairs([a for a, _ in labeled], [b for _, b in labeled])
        ranked = sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_PAIRS]
        for (true, pred), n in ranked:
            rows.append(
                [
                    run.title,
                    run.classes.label(true),
                    run.classes.label(pred),
                    n,
                    h.pct(n / per_class[true]),
                ]
            )
    if not rows:
        return None
    header = ["run", "true class", "predicted as", "images", "share of the true class"]
    return [
        h.para(
            f"The {TOP_PAIRS} most frequent (true class, top-1 prediction) pairs among labeled "
            "mistakes, per run; click a heading to sort."
        ),
        h.table(header, rows, caption="Most-confused pairs", sortable=True),
    ]
