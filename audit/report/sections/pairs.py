"""``pairs``: the paired probe (:func:`audit.report.bias.paired_probe`): how often the
predicted class changes within a pair, then the first pairs side by side (the paper's
Figure 9), from the pairs CSV given to the report (``ctx.pairs``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from audit.report import html as h
from audit.report.bias import Pair, PairOutcome, change_rates, paired_probe
from audit.report.data import RunData
from audit.report.sections.context import SectionContext
from audit.report.sections.registry import register_section

HEADER = [
    "run",
    "attribute",
    "pairs compared",
    "prediction changed",
    "rate",
    "Wilson 95 % interval",
    "pairs not comparable",
]


def _rates(runs: Sequence[RunData], outcomes: Sequence[Sequence[PairOutcome]]) -> h.Raw:
    rate_rows = []
    for r, outs in zip(runs, outcomes, strict=True):
        for c in change_rates(outs):
            rate_rows.append(
                [
                    r.title,
                    c.attribute,
                    c.pairs,
                    c.changed,
                    h.pct(c.rate) if c.rate is not None else "-",
                    f"{h.pct(c.low, 1)} - {h.pct(c.high, 1)}",
                    c.missing,
                ]
            )
    return h.table(HEADER, rate_rows, caption="How often the predicted class changes within a pair")


@register_section(
    "pairs", title="Paired probe (Figure 9)", order=80, why="no pairs CSV given (--pairs)"
)
def render(ctx: SectionContext) -> list[str] | None:
    pairs = ctx.pairs
    if not pairs:
        return None
    outcomes = [paired_probe(pairs, r.tables["predictions"], r.tables["errors"]) for r in ctx.runs]
    body: list[str] = [_rates(ctx.runs, outcomes)]
    shown = list(range(min(len(pairs), ctx.cfg.pairs)))
    if len(pairs) > len(shown):
        body.append(h.para(f"The first {len(shown)} of {len(pairs)} pairs are shown."))
    for k in shown:
        body.append(_pair(ctx, pairs[k], [outs[k] for outs in outcomes]))
    return body


def _pair(ctx: SectionContext, pair: Pair, outcomes: Sequence[PairOutcome]) -> h.Raw:
    """The pair's two images, then each run's two predictions."""
    preds = [ctx.preds(r) for r in ctx.runs]
    first = ctx.runs[0]
    tiles = []
    for image_id in (pair.image_a, pair.image_b):
        owner = next((j for j, p in enumerate(preds) if image_id in p), None)
        if owner is None:
            pic = ctx.pictures.of_array(f"{image_id}: no prediction in the run(s)")
        else:
            pic = ctx.pictures.of_array(ctx.crop(ctx.runs[owner], preds[owner][image_id]))
        label: Any = preds[owner][image_id]["label"] if owner is not None else None
        tiles.append(h.figure(pic, image_id, [image_id, f"true: {first.classes.label(label)}"]))
    lines = [f"pair {pair.pair_id}" + (f": {pair.attribute}" if pair.attribute else "")]
    for r, o in zip(ctx.runs, outcomes, strict=True):
        if o.changed is None:
            lines.append(f"{r.title}: not comparable ({o.missing})")
        else:
            lines.append(
                f"{r.title}: {r.classes.short(o.pred_a)} ({o.prob_a:.2f}) vs "
                f"{r.classes.short(o.pred_b)} ({o.prob_b:.2f})"
                + (" - changed" if o.changed else " - same")
            )
    text = "".join(f"<div>{h.esc(t)}</div>" for t in lines)
    return h.Raw(f'<div class="row pair">{"".join(tiles)}<div class="pairtext">{text}</div></div>')
