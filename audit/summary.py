"""A run's results as text lines: the summary printed at the end of a run (``audit-cli run``,
the job entry point) and the metric lines ``audit-cli status`` shows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from audit.run.manifest_types import Manifest, StageInfo


def format_summary(result_manifest: Manifest | Mapping[str, Any], url: str) -> str:
    """The few lines printed at the end of a run: where, how many, and the error rates.

    ``result_manifest`` is the run's manifest, typed or as JSON (``RunResult.manifest``)."""
    m = Manifest.of(result_manifest)
    model = m.model
    pred = m.stages.get("predict", StageInfo())
    lines = [
        f"run {m.run_id}: {m.state} -> {url}",
        f"  model {model.name} ({model.weights})"
        + (f", {model.transform_text}" if model.transform_text else ""),
        f"  inputs {m.inputs}: predictions {m.rows('predictions')}, errors {m.rows('errors')}",
        pass_line(m, pred),
        f"  tables: adversarial {m.rows('adversarial')} rows, "
        f"explanations {m.rows('explanations')} rows, "
        f"selections {m.rows('selections')} rows"
        + (
            f", bias_candidates {m.rows('bias_candidates')} rows"
            if "bias_candidates" in m.tables
            else ""
        ),
    ]
    lines += format_metrics(m.metrics or {})
    lines += next_steps(url, m.rows("errors"))
    return "\n".join(lines)


def pass_line(m: Manifest, pred: StageInfo) -> str:
    """``pass: 18.9 s, 6.3 images/s; actor time: predict 0.3 s, attack 0.9 s, explain 0.8 s``:
    the pass's wall time (start-up included) and what each stage of the model actors spent."""
    seconds = float(pred.seconds or 0)
    line = f"  pass: {seconds:.1f} s"
    if seconds > 0 and m.inputs:
        line += f", {m.inputs / seconds:.1f} images/s"
    work = [
        f"{name} {float(st.fields['work_seconds']):.1f} s"
        for name, st in m.stages.items()
        if st.fields.get("work_seconds") and name != "decode"
    ]
    return line + ("; actor time: " + ", ".join(work) if work else "")


def next_steps(url: str, errors: int) -> list[str]:
    """What to do with a finished run: the commands that show it, and where its errors are (a
    local run by its path, which is what a user types)."""
    import shlex

    where = url.removeprefix("file://")
    run = shlex.quote(where)
    lines = [
        "next:",
        f"  audit-cli report {run}   # the HTML report, written to {where}/report/index.html",
        f"  audit-cli status {run}   # state, stages, rows, metrics",
    ]
    if errors:
        lines.append(
            f"  {errors} input(s) could not be audited: {where}/errors (image_id, stage, reason)"
        )
    return lines


def format_metrics(metrics: Mapping[str, float]) -> list[str]:
    """Overall metrics as lines: error rates and accuracies in %, the step histogram on one line."""
    lines, hist = [], []
    for name, value in metrics.items():
        if name.startswith("steps_to_flip_"):
            hist.append(f"{name.removeprefix('steps_to_flip_')}: {100 * value:.1f}%")
        elif name.endswith(("_error", "_accuracy")):
            lines.append(f"  {name}: {100 * value:.2f} %")
        else:
            lines.append(f"  {name}: {value:.4f}")
    if hist:
        lines.append("  steps_to_flip: " + ", ".join(hist))
    return lines
