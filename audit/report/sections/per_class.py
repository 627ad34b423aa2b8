"""``per_class``: one row per class and run (images, top-1 / top-5 error, mean true-class
probability, adversarial accuracy, mean steps to flip, never flipped), a table to sort by any
column: the classes an error analyst looks at first. The figures are :mod:`audit.notebook`'s
per-class frame, so a notebook and the report agree."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from audit.notebook import classes_table, per_class_table
from audit.report import html as h
from audit.report.data import RunData
from audit.report.sections.context import SectionContext
from audit.report.sections.registry import register_section

HEADER = [
    "run",
    "class",
    "images",
    "top-1 error",
    "top-5 error",
    "mean p(true class)",
    "adversarial accuracy",
    "mean steps to flip",
    "never flipped",
]


def per_class(run: RunData) -> pa.Table:
    """The run's per-class frame (:func:`audit.notebook.per_class_table`) from the tables the
    report read (each cast to its declared schema, so an empty one has its columns too)."""

    def read(name: str, columns: list[str]) -> pa.Table:
        return run.tables[name].select(columns)

    return per_class_table(read, classes_table(run.classes.ids, run.classes.names))


def _num(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


@register_section(
    "per_class",
    title="Errors by class",
    order=12,
    why="no labeled predictions",
)
def render(ctx: SectionContext) -> list[str] | None:
    rows: list[list[Any]] = []
    for run in ctx.runs:
        for r in per_class(run).to_pylist():
            rows.append(
                [
                    run.title,
                    run.classes.label(r["index"]),
                    r["images"],
                    h.pct(r["top1_error"]),
                    h.pct(r["top5_error"]),
                    _num(r["mean_label_prob"], 3),
                    h.pct(r["adv_top1_accuracy"]),
                    _num(r["mean_steps_to_flip"]),
                    h.pct(r["never_flipped"]),
                ]
            )
    if not rows:
        return None
    return [
        h.para(
            "Every class with labeled, predicted images. Click a column's heading to sort by it "
            "(again to reverse). Mean steps to flip counts the images the attack flipped (0: "
            "already misclassified); never flipped is the share it did not flip within "
            "attack.max_steps. The same figures in a notebook: audit.open_run(run).per_class()."
        ),
        h.table(HEADER, rows, caption="Errors by class", sortable=True),
    ]
