"""``summary``: the runs side by side (state, model, data, row counts, stage timings), the
sections left out and why, errors by stage and reason, each run's configuration."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from audit.report import html as h
from audit.report.data import RunData
from audit.report.sections.context import SectionContext
from audit.report.sections.registry import register_section
from audit.report.sections.tables import rows

MAX_ERROR_ROWS = 50
"""Distinct (stage, reason) rows of the errors table shown per run; the rest are summed."""


def _get(run: RunData, *keys: str) -> Any:
    value: Any = run.manifest
    for k in keys:
        value = value.get(k) if isinstance(value, Mapping) else None
    return value


def _runs_table(runs: list[RunData]) -> h.Raw:
    header = ["", *[r.title for r in runs]]

    def row(label: str, fn: Callable[[RunData], Any]) -> list[Any]:
        return [label, *[fn(r) for r in runs]]

    table = [
        row("run folder", lambda r: r.url),
        row("state", lambda r: _get(r, "state")),
        *(
            [row("error", lambda r: _get(r, "error"))]
            if any(_get(r, "error") for r in runs)
            else []
        ),
        row("created / updated", lambda r: f"{_get(r, 'created')} / {_get(r, 'updated')}"),
        row("model", lambda r: r.model),
        row("weights", lambda r: _get(r, "model", "weights")),
        row("classes", lambda r: f"{_get(r, 'model', 'classes')} ({len(r.classes.ids)})"),
        row("data source", lambda r: _get(r, "data", "source")),
        row("layout", lambda r: _get(r, "data", "layout")),
        row("inputs", lambda r: _get(r, "data", "inputs")),
        row("device", lambda r: _get(r, "execution", "device")),
    ]
    for name in ("predictions", "errors", "adversarial", "explanations", "selections"):
        table.append([f"{name} rows", *[r.tables[name].num_rows for r in runs]])
    stages = sorted({s for r in runs for s in (_get(r, "stages") or {})})
    for stage in stages:
        table.append(
            [f"stage {stage} (s)", *[(_get(r, "stages", stage) or {}).get("seconds") for r in runs]]
        )
    return h.table(header, table)


def _error_rows(run: RunData) -> list[list[Any]]:
    counts = Counter(
        (e["stage"], e["reason"]) for e in rows(run.tables["errors"], ["stage", "reason"])
    )
    examples: dict[tuple[str, str], str] = {}
    for e in rows(run.tables["errors"], ["stage", "reason", "image_id"]):
        examples.setdefault((e["stage"], e["reason"]), e["image_id"])
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    out: list[list[Any]] = [
        [run.title, stage, reason, n, examples[(stage, reason)]]
        for (stage, reason), n in ranked[:MAX_ERROR_ROWS]
    ]
    if len(ranked) > MAX_ERROR_ROWS:
        rest = ranked[MAX_ERROR_ROWS:]
        out.append([run.title, "", f"{len(rest)} other reasons", sum(n for _, n in rest), ""])
    return out


@register_section("summary", title="Runs", order=0, after_others=True)
def render(ctx: SectionContext) -> list[str]:
    body: list[str] = [_runs_table(ctx.runs)]
    if ctx.missing:
        body.append(h.note("Not in this report, for lack of data: " + "; ".join(ctx.missing) + "."))
    body.extend(h.note(n) for n in ctx.notes)
    err_rows = [row for r in ctx.runs for row in _error_rows(r)]
    body.append(h.heading(3, "Errors by stage and reason"))
    if err_rows:
        body.append(h.table(["run", "stage", "reason", "images", "example image_id"], err_rows))
    else:
        body.append(h.para("No input failed."))
    for r in ctx.runs:
        body.append(
            h.details(
                f"configuration of {r.title}", h.pre(json.dumps(r.manifest.get("config"), indent=2))
            )
        )
    return body
