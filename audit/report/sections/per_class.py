"""``per_class``: one row per class and run (images, top-1 / top-5 error, mean true-class
probability, adversarial accuracy, mean steps to flip, never flipped, and the top-1 error by
the labels of each public source loaded with ``audit-cli human public``), a table to sort by
any column: the classes an error analyst looks at first. The figures are :mod:`audit.notebook`'s
per-class frame, so a notebook and the report agree."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from audit.human.judgments.common import image_stem
from audit.notebook import classes_table, per_class_table
from audit.report import html as h
from audit.report.data import RunData
from audit.report.sections.classes import class_anchor, shown_classes
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


def judged_errors(run: RunData, source: str) -> dict[int, float]:
    """class index -> top-1 error by public source ``source``'s labels, over the class's
    labeled images it judged (an image is wrong when its top-1 is not among them)."""
    valid = run.judged.get(source, {})
    wrong: dict[int, list[bool]] = {}
    preds = run.tables["predictions"].select(["image_id", "label", "top5_classes"]).to_pylist()
    for p in preds:
        accepted = valid.get(image_stem(p["image_id"]))
        if accepted is None or p["label"] is None or not p["top5_classes"]:
            continue
        wrong.setdefault(p["label"], []).append(p["top5_classes"][0] not in accepted)
    return {c: sum(v) / len(v) for c, v in wrong.items()}


@register_section(
    "per_class",
    title="Errors by class",
    order=12,
    why="no labeled predictions",
)
def render(ctx: SectionContext) -> list[str] | None:
    rows: list[list[Any]] = []
    sources = sorted({name for run in ctx.runs for name in run.judged})
    _, shown = shown_classes(ctx)
    linked = set(shown)
    first = ctx.runs[0].classes.ids
    for run in ctx.runs:
        judged = [judged_errors(run, name) for name in sources]
        for r in per_class(run).to_pylist():
            index, label = r["index"], run.classes.label(r["index"])
            same_class = index < len(first) and r["class_id"] == first[index]
            cell: Any = label
            if index in linked and same_class:  # its prototypes and criticisms are shown
                cell = h.Raw(f'<a href="#{class_anchor(index)}">{h.esc(label)}</a>')
            rows.append(
                [
                    run.title,
                    cell,
                    r["images"],
                    h.pct(r["top1_error"]),
                    h.pct(r["top5_error"]),
                    _num(r["mean_label_prob"], 3),
                    h.pct(r["adv_top1_accuracy"]),
                    _num(r["mean_steps_to_flip"]),
                    h.pct(r["never_flipped"]),
                    *[h.pct(j.get(r["index"])) for j in judged],
                ]
            )
    if not rows:
        return None
    header = [*HEADER, *[f"top-1 error by {name}" for name in sources]]
    return [
        h.para(
            "Every class with labeled, predicted images. Click a column's heading to sort by it "
            "(again to reverse); type in the box to keep the rows that contain the text; a "
            "linked class opens its prototypes and criticisms. Mean steps to flip counts the images the attack flipped (0: "
            "already misclassified); never flipped is the share it did not flip within "
            "attack.max_steps. The same figures in a notebook: audit.open_run(run).per_class()."
            + (
                " Top-1 error by a public source counts the class's images that source judged "
                "(audit-cli human public): wrong when the top-1 is not among its labels."
                if sources
                else ""
            )
        ),
        h.table(header, rows, caption="Errors by class", sortable=True, filterable=True),
    ]
