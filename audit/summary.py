"""A run's results as text lines: the summary printed at the end of a run (``audit-cli run``,
the job entry point) and the metric lines ``audit-cli status`` shows."""

from __future__ import annotations


def format_summary(result_manifest: dict, url: str) -> str:
    """The few lines printed at the end of a run: where, how many, and the error rates."""
    tables = result_manifest.get("tables", {})
    pred = result_manifest.get("stages", {}).get("predict", {})
    lines = [
        f"run {result_manifest['run_id']}: {result_manifest['state']} -> {url}",
        f"  model {result_manifest['model']['name']} ({result_manifest['model']['weights']})"
        + (
            f", {result_manifest['model']['transform_text']}"
            if result_manifest["model"].get("transform_text")
            else ""
        ),
        f"  inputs {result_manifest['data']['inputs']}: predictions "
        f"{tables.get('predictions', {}).get('rows', 0)}, errors {tables.get('errors', {}).get('rows', 0)}",
        f"  predict: {pred.get('seconds', 0):.1f} s, {pred.get('images_per_second') or 0:.1f} images/s",
        f"  tables: adversarial {tables.get('adversarial', {}).get('rows', 0)} rows, "
        f"explanations {tables.get('explanations', {}).get('rows', 0)} rows, "
        f"selections {tables.get('selections', {}).get('rows', 0)} rows",
    ]
    lines += format_metrics(result_manifest.get("metrics", {}))
    return "\n".join(lines)


def format_metrics(metrics: dict[str, float]) -> list[str]:
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
