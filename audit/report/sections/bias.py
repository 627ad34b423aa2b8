"""``bias``: the bias probe (:func:`audit.report.bias.bias_probe`), per run, from the
attributes CSV given to the report (``ctx.attributes``)."""

from __future__ import annotations

from typing import Any

from audit.report import html as h
from audit.report.bias import Attributes, BiasResult, BiasRow, bias_probe
from audit.report.data import RunData
from audit.report.sections.context import SectionContext
from audit.report.sections.registry import register_section

HEADER = [
    "class",
    "feature",
    "method",
    "role",
    "class rate",
    "selected rate",
    "effect",
    "odds ratio",
    "p",
    "q (BH)",
]


def _intro(attributes: Attributes) -> h.Raw:
    return h.para(
        f"Attributes from {attributes.source}: {len(attributes.values)} attribute(s), "
        f"{len(attributes.image_ids)} annotated images. Rate = share of the annotated "
        "images with the feature; effect = rate among the selected images minus the rate "
        "in the class; p: Fisher's exact test (two-sided) of the selected images against "
        "the class's other images; q: Benjamini-Hochberg over all rows of the run."
    )


def _notes(result: BiasResult) -> list[str]:
    out: list[str] = []
    if result.unknown_images:
        out.append(
            h.note(
                f"{len(result.unknown_images)} annotated image(s) are not labeled "
                f"predictions of this run and were not counted, e.g. "
                + ", ".join(result.unknown_images[:5])
            )
        )
    if result.unannotated_selections:
        out.append(
            h.note(
                f"{result.unannotated_selections} (feature, class, method, role) sets have "
                "no annotated image and give no row."
            )
        )
    return out


@register_section(
    "bias", title="Bias probe", order=70, why="no attributes CSV given (--attributes)"
)
def render(ctx: SectionContext) -> list[str] | None:
    if ctx.attributes is None:
        return None
    body: list[str] = [_intro(ctx.attributes)]
    for run in ctx.runs:
        result = bias_probe(
            ctx.attributes, run.tables["predictions"], run.tables["selections"], run.title
        )
        body.append(h.heading(3, run.title))
        body.extend(_notes(result))
        shown = result.rows[: ctx.cfg.bias_rows]
        body.append(h.table(HEADER, [_row(run, r) for r in shown], cls="data bias"))
        if len(result.rows) > len(shown):
            body.append(
                h.note(f"{len(result.rows) - len(shown)} more rows with smaller effects not shown.")
            )
    return body


def _row(run: RunData, r: BiasRow) -> list[Any]:
    return [
        run.classes.label(r.class_index),
        r.feature,
        r.method,
        r.role,
        f"{r.class_with}/{r.class_images} ({h.pct(r.rate_class, 1)})",
        f"{r.selected_with}/{r.selected} ({h.pct(r.rate_selected, 1)})",
        f"{r.effect * 100:+.1f} pts",
        r.odds_ratio,
        r.p_value,
        r.q_value,
    ]
