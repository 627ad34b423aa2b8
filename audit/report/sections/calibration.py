"""``calibration``: whether the model's probabilities can be trusted. Per run, over the labeled
images, the top-1 confidence (``top5_probs[0]``) in :data:`BINS` equal-width bins over [0, 1]
with each bin's images, mean confidence and accuracy; the expected and maximum calibration
errors (ECE, MCE); the mean confidence against the accuracy (over- or under-confidence); and a
reliability diagram of all runs.

The bin rule and the figures are :mod:`audit.calibration`'s.

In a notebook: ``cal = audit.open_run(url).calibration()``, then ``cal.ece``, ``cal.mce``,
``cal.counts``.
"""

from __future__ import annotations

from typing import Any

from audit.calibration import BINS, Calibration, predictions_calibration
from audit.report import html as h
from audit.report import plots
from audit.report.data import RunData
from audit.report.sections.context import SectionContext
from audit.report.sections.registry import register_section

ECE_LEGEND = (
    "ECE (expected calibration error) is the average gap between how sure the model is and how "
    "often it is right, weighted by images; 0 is perfectly calibrated."
)


def run_calibration(run: RunData, bins: int = BINS) -> Calibration | None:
    """The calibration of ``run``'s labeled predictions (:func:`predictions_calibration`)."""
    return predictions_calibration(run.tables["predictions"], bins)


def _signed_pp(value: float) -> str:
    return f"{value * 100:+.2f} pp"


def _bin_rows(cal: Calibration) -> list[list[Any]]:
    rows: list[list[Any]] = []
    last = len(cal.counts) - 1
    for b, n in enumerate(cal.counts):
        lo, hi = cal.edges[b], cal.edges[b + 1]
        conf, acc = cal.confidence[b], cal.accuracy[b]
        gap = None if conf is None or acc is None else acc - conf
        rows.append(
            [
                b + 1,
                f"[{lo:.3f}, {hi:.3f}{']' if b == last else ')'}",
                n,
                h.pct(n / cal.images),
                h.pct(conf),
                h.pct(acc),
                "-" if gap is None else _signed_pp(gap),
                h.pct(n / cal.images * abs(gap)) if gap is not None else "-",
            ]
        )
    return rows


@register_section(
    "calibration",
    title="Calibration",
    order=16,
    why="no labeled predictions",
)
def render(ctx: SectionContext) -> list[str] | None:
    found = [(run, run_calibration(run)) for run in ctx.runs]
    runs = [(run, cal) for run, cal in found if cal is not None]
    if not runs:
        return None
    body: list[str] = [
        h.para(
            f"Over the labeled images of each run, the top-1 confidence (the top-5 list's first "
            f"probability) in {BINS} equal-width bins over [0, 1]: bin b holds confidences from "
            f"(b-1)/{BINS} inclusive to b/{BINS} exclusive, the last one 1.0 too. A calibrated "
            "model is right in a bin as often as it is sure there: in the reliability diagram "
            "its bars (the bins' accuracies) reach the black ticks (their mean confidences), "
            "near the diagonal."
        ),
        h.para(ECE_LEGEND),
        h.para(
            "MCE is the largest such gap of a non-empty bin. Confidence - accuracy is positive "
            "when the model is over-confident on the whole, negative when under-confident."
        ),
    ]
    body.extend(
        h.para(f"{run.title}: no labeled predictions.") for run, cal in found if cal is None
    )
    header = [
        "run",
        "labeled images",
        "ECE",
        "MCE",
        "mean confidence",
        "accuracy",
        "confidence - accuracy",
    ]
    summary = [
        [
            run.title,
            cal.images,
            h.pct(cal.ece),
            h.pct(cal.mce),
            h.pct(cal.mean_confidence),
            h.pct(cal.mean_accuracy),
            _signed_pp(cal.overconfidence),
        ]
        for run, cal in runs
    ]
    body.append(h.table(header, summary, caption="Calibration", sortable=True))
    png = plots.reliability_diagram(
        runs[0][1].edges,
        [(run.title, cal.counts, cal.confidence, cal.accuracy, cal.ece) for run, cal in runs],
    )
    body.append(h.picture(ctx.pictures.of_png(png), "reliability diagram"))
    bin_header = [
        "bin",
        "confidence",
        "images",
        "share of images",
        "mean confidence",
        "accuracy",
        "accuracy - confidence",
        "ECE contribution",
    ]
    for run, cal in runs:
        body.append(h.heading(3, run.title))
        body.append(
            h.table(bin_header, _bin_rows(cal), caption=f"Bins of {run.title}", sortable=True)
        )
    return body
