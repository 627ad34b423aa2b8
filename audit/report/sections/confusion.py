"""``confusion``: the most-confused class pairs (true class, predicted class, images, share of
the true class's images), per run, in a sortable table: which mistakes a model makes most;
then, per run, the confusion matrix over the classes most involved in those mistakes."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from audit.report import html as h
from audit.report.sections.context import SectionContext
from audit.report.sections.registry import register_section

TOP_PAIRS = 30
"""Pairs shown per run."""

MATRIX_CLASSES = 12
"""Classes in each run's confusion matrix: those with the most mistakes, made or received."""


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
    matrices: list[str] = []
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
        if pairs:
            matrices.append(_matrix(run, labeled, pairs))
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
        *matrices,
    ]


def matrix_classes(pairs: Counter[tuple[int, int]], k: int = MATRIX_CLASSES) -> list[int]:
    """The ``k`` classes with the most mistakes, as true class and as prediction together
    (ties by index), in index order."""
    involved: Counter[int] = Counter()
    for (true, pred), n in pairs.items():
        involved[true] += n
        involved[pred] += n
    top = sorted(involved, key=lambda c: (-involved[c], c))[:k]
    return sorted(top)


def _matrix(run: Any, labeled: list[tuple[int, int]], pairs: Counter[tuple[int, int]]) -> str:
    """Counts of (true, top-1) over :func:`matrix_classes`, each cell shaded by its share of
    the row's images (all of the true class's images, not only those of the shown columns)."""
    classes = matrix_classes(pairs)
    counts = Counter(labeled)
    totals = Counter(lab for lab, _ in labeled)
    head = "".join(
        f'<th title="{h.esc(run.classes.label(c))}">{h.esc(run.classes.short(c))}</th>'
        for c in classes
    )
    body = []
    for t in classes:
        cells = []
        for p in classes:
            n = counts[(t, p)]
            share = n / totals[t] if totals[t] else 0.0
            hue = "46,125,50" if t == p else "198,40,40"  # green diagonal, red mistakes
            style = f"background:rgba({hue},{share:.3f})" if n else ""
            tip = f"{run.classes.label(t)} predicted as {run.classes.label(p)}: {n}"
            cells.append(f'<td style="{style}" title="{h.esc(tip)}">{n or ""}</td>')
        body.append(
            f"<tr><th>{h.esc(run.classes.short(t))} ({totals[t]})</th>{''.join(cells)}</tr>"
        )
    caption = (
        f"{run.title}: confusion among the {len(classes)} classes with the most mistakes "
        "(rows: true class, with its labeled images; columns: top-1 prediction)"
    )
    return (
        '<div class="tablewrap"><table class="data confusion">'
        f"<caption>{h.esc(caption)}</caption>"
        f"<thead><tr><th>true \\ predicted</th>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )
