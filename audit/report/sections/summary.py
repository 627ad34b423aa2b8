"""``summary``: the runs side by side (state, model, data, row counts, stage timings), the
sections left out and why, errors by stage and reason, each run's configuration."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

from audit.report import html as h
from audit.report.data import RunData
from audit.report.sections.context import SectionContext
from audit.report.sections.registry import register_section
from audit.report.sections.tables import rows
from audit.run.manifest_types import DataInfo

MAX_ERROR_ROWS = 50
"""Distinct (stage, reason) rows of the errors table shown per run; the rest are summed."""


def _runs_table(runs: list[RunData]) -> h.Raw:
    header = ["", *[r.title for r in runs]]

    def row(label: str, fn: Callable[[RunData], Any]) -> list[Any]:
        return [label, *[fn(r) for r in runs]]

    table = [
        row("run folder", lambda r: r.url),
        row("state", lambda r: r.manifest.state),
        *(
            [row("error", lambda r: r.manifest.error)]
            if any(r.manifest.error for r in runs)
            else []
        ),
        row("created / updated", lambda r: f"{r.manifest.created} / {r.manifest.updated}"),
        row("model", lambda r: r.model),
        row("weights", lambda r: r.manifest.model.weights),
        row("classes", lambda r: f"{r.manifest.model.classes} ({len(r.classes.ids)})"),
        row("data source", lambda r: _data(r).source),
        row("layout", lambda r: _data(r).layout),
        row("inputs", lambda r: _data(r).inputs),
        row("device", lambda r: r.manifest.execution.device if r.manifest.execution else None),
    ]
    for name in ("predictions", "errors", "adversarial", "explanations", "selections"):
        table.append([f"{name} rows", *[r.tables[name].num_rows for r in runs]])
    stages = sorted({s for r in runs for s in r.manifest.stages})
    for stage in stages:
        table.append([f"stage {stage} (s)", *[_stage_seconds(r, stage) for r in runs]])
    return h.table(header, table)


def _data(run: RunData) -> DataInfo:
    return run.manifest.data or DataInfo()


def _stage_seconds(run: RunData, stage: str) -> Any:
    found = run.manifest.stages.get(stage)
    return found.fields.get("seconds") if found is not None else None


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
                f"configuration of {r.title}", h.pre(json.dumps(dict(r.manifest.config), indent=2))
            )
        )
    return body
