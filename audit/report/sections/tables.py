"""Reading rows of a run's tables, and showing tables and predictions in HTML."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from audit.report import html as h
from audit.report.data import RunData


def rows(table: pa.Table, columns: Sequence[str]) -> list[dict[str, Any]]:
    """``columns`` of every row of ``table``, as dicts."""
    return table.select(list(columns)).to_pylist()


def by_id(run: RunData) -> dict[str, dict[str, Any]]:
    """image_id -> prediction row (uri, label, top-5, correct_top1, label_prob) of ``run``."""
    table = run.tables["predictions"]
    cols = ["image_id", "uri", "label", "top5_classes", "top5_probs", "correct_top1"]
    cols += [c for c in ("label_prob",) if c in table.column_names]
    return {r["image_id"]: r for r in rows(table, cols)}


def metric(run: RunData, name: str, scope: str = "all") -> tuple[float, int] | None:
    """``(value, count)`` of metric ``name`` in ``scope``, or None when the run lacks it."""
    for r in rows(run.tables["metrics"], ["name", "scope", "value", "count"]):
        if r["name"] == name and r["scope"] == scope:
            return float(r["value"]), int(r["count"])
    return None


def pred_line(run: RunData, pred: Mapping[str, Any]) -> str:
    """``predicted: <label> (<probability>)`` of a prediction row's top-1 class."""
    top, prob = pred["top5_classes"][0], pred["top5_probs"][0]
    return f"predicted: {run.classes.label(top)} ({prob:.2f})"


def _cell(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=str)
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return value


def generic_table(table: pa.Table, caption: str, limit: int = 1000) -> h.Raw:
    """Any table, its first ``limit`` rows shown (lists and dicts as JSON, bytes as a size)."""
    shown = [[_cell(v) for v in row.values()] for row in table.slice(0, limit).to_pylist()]
    out = h.table(table.column_names, shown, caption=caption)
    if table.num_rows > limit:
        out = h.Raw(out + h.note(f"{table.num_rows - limit} more rows not shown."))
    return out
