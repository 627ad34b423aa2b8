"""``accuracy``: top-1/top-5 error and adversarial accuracy side by side (the paper's Table 1),
with the rectified and ReaL figures of the human-study tables when they exist."""

from __future__ import annotations

from typing import Any

from audit.report import html as h
from audit.report.data import RunData
from audit.report.sections.context import SectionContext
from audit.report.sections.registry import register_section
from audit.report.sections.tables import generic_table, metric


def _human_rows(run: RunData) -> list[tuple[str, float | None]]:
    """Rectified and ReaL figures from the human-study tables, when their columns are there."""
    out: list[tuple[str, float | None]] = []
    t1 = run.human.get("table1_rectified")
    if t1 is not None and {"metric", "rectified_error"} <= set(t1.column_names):
        for r in t1.to_pylist():
            label = f"rectified {r['metric']}"
            if r.get("batch"):
                label += f" ({r['batch']})"
            out.append((label, r["rectified_error"]))
    for name in sorted(run.human):
        t = run.human[name]
        if name.startswith("public_") and {"measure", "accuracy"} <= set(t.column_names):
            for r in t.to_pylist():
                out.append((f"{name.removeprefix('public_')}: {r['measure']}", r["accuracy"]))
    return out


@register_section("accuracy", title="Accuracy (Table 1)", order=10)
def render(ctx: SectionContext) -> list[str]:
    runs = ctx.runs
    header = ["", *[r.title for r in runs]]
    rows: list[list[Any]] = []
    for label, name in (
        ("top-1 error", "top1_error"),
        ("top-5 error", "top5_error"),
        ("adversarial top-1 accuracy", "adv_top1_accuracy"),
    ):
        values = [metric(r, name) for r in runs]
        rows.append([label, *[h.pct(v[0]) if v else "-" for v in values]])
    loss = [metric(r, "mean_loss") for r in runs]
    rows.append(["mean loss", *[f"{v[0]:.4f}" if v else "-" for v in loss]])
    counted = [metric(r, "top1_error") for r in runs]
    rows.append(["labeled images", *[v[1] if v else 0 for v in counted]])
    extra: dict[str, list[Any]] = {}
    for i, r in enumerate(runs):
        for label, value in _human_rows(r):
            extra.setdefault(label, ["-"] * len(runs))[i] = (
                h.pct(value) if value is not None else "-"
            )
    for label, values in extra.items():
        rows.append([label, *values])
    body: list[str] = [
        h.table(header, rows, caption="Standard errors (and rectified / ReaL where computed)")
    ]
    if not extra:
        body.append(
            h.note(
                "No rectified or ReaL figures: no human/tables/table1_rectified.parquet or "
                "public_*.parquet in these runs."
            )
        )
    for r in runs:
        t1 = r.human.get("table1_rectified")
        if t1 is not None:
            body.append(generic_table(t1, f"Table 1 (human study) of {r.title}"))
    return body
