"""The paper's tables from ingested answers: rectified errors (Table 1), positive answers per
misclassified image (Figure 2), whole image vs explanation (Table 2), assignment success (Table 3).

Only ``kept`` answers count (see :mod:`audit.human.ingest`), and per item only the first ``n``
of them in file order (:class:`~audit.human.config.AgreementRule`). Errors are fractions in
[0, 1] of the run's labeled, predicted images, as in the ``metrics`` table.

Rectified error (Table 1): an image of a misclassified batch whose shown class(es) at least ``k``
raters called relevant counts as correct, so
``rectified_error = (errors - rectified_images) / images``. Errors nobody rated stay errors.
"""

from __future__ import annotations

import io
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from audit.human.config import ASSIGNMENT_CONDITIONS, AgreementRule
from audit.human.ingest import load_batch
from audit.human.storage import ANSWERS, BATCHES, FIGURES, TABLES, HumanStore

TABLE1 = "table1_rectified"
FIG2 = "fig2_positive_answers"
TABLE2 = "table2_adversarial"
TABLE3 = "table3_assignment"


def first_answers(answers: pa.Table, n: int) -> dict[str, list[str]]:
    """item_id -> the first ``n`` kept answers in file order."""
    out: dict[str, list[str]] = defaultdict(list)
    for item, status, answer in zip(
        answers.column("item_id").to_pylist(),
        answers.column("status").to_pylist(),
        answers.column("answer").to_pylist(),
        strict=True,
    ):
        if status == "kept" and len(out[item]) < n:
            out[item].append(answer)
    return dict(out)


def prediction_counts(predictions: pa.Table) -> dict[str, int]:
    """Labeled predicted images and their top-1 / top-5 errors."""
    c1 = [v for v in predictions.column("correct_top1").to_pylist() if v is not None]
    c5 = [v for v in predictions.column("correct_top5").to_pylist() if v is not None]
    return {"images": len(c1), "top1_errors": c1.count(False), "top5_errors": c5.count(False)}


def _rule_text(rule: AgreementRule) -> str:
    return f"at least {rule.k} of {rule.n} raters"


def table1(
    batches: Sequence[tuple[Mapping[str, Any], Sequence[Mapping[str, Any]], pa.Table]],
    counts: Mapping[str, int],
    rule: AgreementRule,
) -> pa.Table:
    """Table 1: standard and rectified top-1 / top-5 error, one row per misclassified batch.

    Args:
        batches: ``(batch.json, key.json, answers)`` of each ingested misclassified batch.
        counts: :func:`prediction_counts` of the run.
        rule: The k-of-n rule.
    """
    rows = []
    for meta, key, answers in batches:
        cfg = meta["config"]
        top = "top1" if cfg["subset"] == "top1_errors" else "top5"
        errors = counts[f"{top}_errors"]
        images = counts["images"]
        given = first_answers(answers, rule.n)
        rated = [k["item_id"] for k in key if given.get(k["item_id"])]
        rectified = sum(1 for i in rated if rule.positive(given[i].count("yes")))
        rows.append(
            {
                "batch": meta["name"],
                "metric": "top-1 error" if top == "top1" else "top-5 error",
                "classes_shown": "top-1 prediction"
                if cfg["shown"] == "top1"
                else "top-5 predictions",
                "images": images,
                "errors": errors,
                "standard_error": errors / images if images else None,
                "rated_errors": len(rated),
                "rectified_images": rectified,
                "rectified_error": (errors - rectified) / images if images else None,
                "rule": _rule_text(rule),
            }
        )
    return pa.Table.from_pylist(rows, schema=TABLE1_SCHEMA)


def fig2(
    batches: Sequence[tuple[Mapping[str, Any], Sequence[Mapping[str, Any]], pa.Table]],
    rule: AgreementRule,
) -> pa.Table:
    """Figure 2's data: how many rated images got 0, 1, ..., n positive answers, per batch."""
    rows = []
    for meta, key, answers in batches:
        given = first_answers(answers, rule.n)
        hist = Counter(given[k["item_id"]].count("yes") for k in key if given.get(k["item_id"]))
        total = sum(hist.values())
        for yes in range(rule.n + 1):
            rows.append(
                {
                    "batch": meta["name"],
                    "positive_answers": yes,
                    "images": hist.get(yes, 0),
                    "fraction": hist.get(yes, 0) / total if total else None,
                }
            )
    return pa.Table.from_pylist(rows, schema=FIG2_SCHEMA)


def table2(
    batches: Sequence[tuple[Mapping[str, Any], Sequence[Mapping[str, Any]], pa.Table]],
    rule: AgreementRule,
) -> pa.Table:
    """Table 2: per adversarial batch (condition), how often raters found the adversarial class
    relevant, per answer and per image by the k-of-n rule."""
    rows = []
    for meta, key, answers in batches:
        given = first_answers(answers, rule.n)
        rated = [given[k["item_id"]] for k in key if given.get(k["item_id"])]
        n_answers = sum(len(a) for a in rated)
        yes = sum(a.count("yes") for a in rated)
        relevant = sum(1 for a in rated if rule.positive(a.count("yes")))
        rows.append(
            {
                "study": meta["group"],
                "batch": meta["name"],
                "condition": "whole image" if meta["condition"] == "whole" else "explanation",
                "images": len(key),
                "rated_images": len(rated),
                "answers": n_answers,
                "yes_fraction": yes / n_answers if n_answers else None,
                "relevant_images": relevant,
                "relevant_fraction": relevant / len(rated) if rated else None,
                "rule": _rule_text(rule),
            }
        )
    return pa.Table.from_pylist(rows, schema=TABLE2_SCHEMA)


def table3(
    batches: Sequence[tuple[Mapping[str, Any], Sequence[Mapping[str, Any]], pa.Table]],
    rule: AgreementRule,
) -> pa.Table:
    """Table 3: assignment success per condition: the mean over answers of "chose the target's
    group", and the (population) standard deviation over questions of each question's success
    rate."""
    rows = []
    for meta, key, answers in batches:
        given = first_answers(answers, rule.n)
        per_condition: dict[str, list[list[bool]]] = defaultdict(list)
        for k in key:
            got = given.get(k["item_id"])
            if got:
                per_condition[k["condition"]].append([a == str(k["correct_slot"]) for a in got])
        for condition in meta["config"]["conditions"]:
            questions = per_condition.get(condition, [])
            flat = [s for q in questions for s in q]
            rates = [float(np.mean(q)) for q in questions]
            method, n_proto, n_crit = ASSIGNMENT_CONDITIONS[condition]
            rows.append(
                {
                    "batch": meta["name"],
                    "condition": condition,
                    "method": method,
                    "prototypes": n_proto,
                    "criticisms": n_crit,
                    "questions": sum(1 for k in key if k["condition"] == condition),
                    "rated_questions": len(questions),
                    "answers": len(flat),
                    "mean_success": float(np.mean(flat)) if flat else None,
                    "std_success": float(np.std(rates)) if rates else None,
                }
            )
    return pa.Table.from_pylist(rows, schema=TABLE3_SCHEMA)


TABLE1_SCHEMA = pa.schema(
    [
        ("batch", pa.string()),
        ("metric", pa.string()),
        ("classes_shown", pa.string()),
        ("images", pa.int64()),
        ("errors", pa.int64()),
        ("standard_error", pa.float64()),
        ("rated_errors", pa.int64()),
        ("rectified_images", pa.int64()),
        ("rectified_error", pa.float64()),
        ("rule", pa.string()),
    ]
)
FIG2_SCHEMA = pa.schema(
    [
        ("batch", pa.string()),
        ("positive_answers", pa.int64()),
        ("images", pa.int64()),
        ("fraction", pa.float64()),
    ]
)
TABLE2_SCHEMA = pa.schema(
    [
        ("study", pa.string()),
        ("batch", pa.string()),
        ("condition", pa.string()),
        ("images", pa.int64()),
        ("rated_images", pa.int64()),
        ("answers", pa.int64()),
        ("yes_fraction", pa.float64()),
        ("relevant_images", pa.int64()),
        ("relevant_fraction", pa.float64()),
        ("rule", pa.string()),
    ]
)
TABLE3_SCHEMA = pa.schema(
    [
        ("batch", pa.string()),
        ("condition", pa.string()),
        ("method", pa.string()),
        ("prototypes", pa.int64()),
        ("criticisms", pa.int64()),
        ("questions", pa.int64()),
        ("rated_questions", pa.int64()),
        ("answers", pa.int64()),
        ("mean_success", pa.float64()),
        ("std_success", pa.float64()),
    ]
)


def plot_fig2(table: pa.Table) -> bytes:
    """Figure 2 as a PNG: grouped bars of images per number of positive answers, per batch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = sorted(set(table.column("batch").to_pylist()))
    rows = table.to_pylist()
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    width = 0.8 / max(len(batches), 1)
    for b, name in enumerate(batches):
        mine = [r for r in rows if r["batch"] == name]
        x = np.array([r["positive_answers"] for r in mine], dtype=float) + b * width
        ax.bar(x, [r["images"] for r in mine], width=width, label=name)
    ax.set_xlabel("raters saying the predicted class is relevant")
    ax.set_ylabel("misclassified images")
    ax.set_title("Positive answers per misclassified image")
    if batches:
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def analyze(
    store: HumanStore, predictions: pa.Table, rule: AgreementRule, plot: bool = True
) -> tuple[dict[str, pa.Table], list[str]]:
    """Compute Tables 1-3 and Figure 2 from every ingested batch and write them under
    ``tables/`` (and ``figures/fig2_positive_answers.png``).

    Args:
        store: The human folder.
        predictions: The run's predictions (``correct_top1``, ``correct_top5``).
        rule: The k-of-n rule.
        plot: Also write the Figure 2 PNG (needs matplotlib).

    Returns:
        The tables written, by name, and notes (batches not ingested yet).
    """
    by_study: dict[str, list[tuple[dict[str, Any], list[dict[str, Any]], pa.Table]]] = defaultdict(
        list
    )
    notes = []
    for name in store.list_names(BATCHES):
        if not store.exists(f"{BATCHES}/{name}/batch.json"):
            continue
        answers_rel = f"{ANSWERS}/{name}/answers.parquet"
        if not store.exists(answers_rel):
            notes.append(f"batch {name}: no answers ingested yet")
            continue
        meta, key = load_batch(store, name)
        if int(meta["raters_per_item"]) < rule.k:
            notes.append(
                f"batch {name}: asked {meta['raters_per_item']} raters per item, fewer than "
                f"the rule's k={rule.k}, so no item of it can count as rectified"
            )
        by_study[meta["study"]].append((meta, key, store.read_parquet(answers_rel)))
    tables: dict[str, pa.Table] = {}
    if by_study.get("misclassified"):
        tables[TABLE1] = table1(by_study["misclassified"], prediction_counts(predictions), rule)
        tables[FIG2] = fig2(by_study["misclassified"], rule)
    if by_study.get("adversarial"):
        tables[TABLE2] = table2(by_study["adversarial"], rule)
    if by_study.get("assignment"):
        tables[TABLE3] = table3(by_study["assignment"], rule)
    for name, table in tables.items():
        store.write_parquet(f"{TABLES}/{name}.parquet", table)
    if plot and FIG2 in tables:
        store.write_bytes(f"{FIGURES}/{FIG2}.png", plot_fig2(tables[FIG2]))
    return tables, notes


def format_table(table: pa.Table, digits: int = 4) -> str:
    """A plain-text rendering of a small table for the terminal."""

    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.{digits}f}"
        return str(v)

    header = list(table.column_names)
    body = [[cell(v) for v in row.values()] for row in table.to_pylist()]
    widths = [
        max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    return "\n".join(lines)
