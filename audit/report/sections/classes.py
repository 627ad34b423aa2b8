"""``classes``: per class, the prototypes and criticisms of every method (the paper's Figures 7,
8 and 10), a seeded sample of classes, searchable and paged."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from audit.report import html as h
from audit.report.data import RunData
from audit.report.sections.context import SectionContext, sample
from audit.report.sections.registry import register_section
from audit.report.sections.tables import rows

METHOD_ORDER = ("adversarial", "mmd_critic", "probability", "random")
"""Methods in this order, any other after them by name."""
ROLES = ("prototype", "criticism")

Selections = dict[int, list[dict[str, Any]]]
"""class -> its selection rows."""
Metrics = dict[str, dict[str, tuple[float, int]]]
"""scope -> metric name -> (value, count)."""


def _metrics_by_scope(run: RunData) -> Metrics:
    out: Metrics = {}
    for r in rows(run.tables["metrics"], ["name", "scope", "value", "count"]):
        out.setdefault(r["scope"], {})[r["name"]] = (float(r["value"]), int(r["count"]))
    return out


def _selections(run: RunData) -> Selections:
    sel: Selections = {}
    for s in rows(
        run.tables["selections"], ["class", "method", "role", "rank", "image_id", "score"]
    ):
        sel.setdefault(s["class"], []).append(s)
    return sel


@register_section(
    "classes",
    title="Prototypes and criticisms (Figures 7, 8, 10)",
    order=40,
    why="no selections (criticism stage disabled or not run)",
)
def render(ctx: SectionContext) -> list[str] | None:
    present, shown = shown_classes(ctx)
    if not present:
        return None
    per_run = [(r, _selections(r), ctx.preds(r), _metrics_by_scope(r)) for r in ctx.runs]
    names = ctx.runs[0].classes
    blocks = []
    for cls in shown:
        label = names.label(cls)
        parts = [f"<h3>{h.esc(label)}</h3>"]
        for r, sel, preds, metrics in per_run:
            parts.extend(_run_part(ctx, cls, r, sel.get(cls, []), preds, metrics))
        search = f"{label} {names.ids[cls] if cls < len(names.ids) else cls}".lower()
        blocks.append(
            f'<div class="cls" id="{class_anchor(cls)}" data-class="{cls}" '
            f'data-search="{h.esc(search)}">' + "".join(parts) + "</div>"
        )
    intro = h.para(
        f"{len(shown)} of {len(present)} classes with selections"
        + (f" (a sample drawn with seed {ctx.cfg.seed})" if len(shown) < len(present) else "")
        + f", {ctx.cfg.classes_per_page} per page. Prototypes are typical images of their "
        "class and criticisms atypical ones, each method by its own score (docs/tables.md)."
    )
    return [intro, h.note(SCORE_LEGEND), h.pager(ctx.cfg.classes_per_page, blocks)]


def shown_classes(ctx: SectionContext) -> tuple[list[int], list[int]]:
    """The classes (indices of the first run's model) with selections in some run, and those
    the section shows: all of them, or a sample of ``cfg.max_classes`` drawn with the report's
    seed. Other sections link to the shown ones (:func:`class_anchor`)."""
    present = sorted(
        {c for r in ctx.runs for c in r.tables["selections"].column("class").to_pylist()}
    )
    return present, sample(present, ctx.cfg.max_classes, ctx.rng("classes", 0))


def class_anchor(index: int) -> str:
    """The id of class ``index``'s block (``class-3``); a link to ``#class-3`` opens its page."""
    return f"class-{int(index)}"


SCORE_LEGEND = (
    "What each score under an image is: adversarial prototypes, the clean margin p(label) - "
    "p(runner-up); adversarial criticisms, p(adversarial class) after one attack step; "
    "mmd_critic prototypes, J_b (the MMD-critic objective) of the first k prototypes, which "
    "grows with k as each prototype is chosen for its gain and can be negative for the first "
    "few; mmd_critic criticisms, the absolute witness (how far the class's density and the "
    "prototypes' differ there); probability, p(label); random, the draw's position."
)
"""The legend of the selections' scores (docs/tables.md, ``selections.score``)."""


def _run_part(
    ctx: SectionContext,
    cls: int,
    r: RunData,
    chosen: Sequence[Mapping[str, Any]],
    preds: Mapping[str, Mapping[str, Any]],
    metrics: Metrics,
) -> list[str]:
    """One run's part of class ``cls``: its statistics, then a row per method."""
    parts: list[str] = []
    if len(ctx.runs) > 1:
        parts.append(h.heading(4, r.title))
    cid = r.classes.ids[cls] if cls < len(r.classes.ids) else str(cls)
    m = metrics.get(cid, {})
    stats = []
    if "top1_error" in m:
        stats.append(f"{m['top1_error'][1]} images, top-1 error {h.pct(m['top1_error'][0])}")
    if "adv_top1_accuracy" in m:
        stats.append(f"adversarial accuracy {h.pct(m['adv_top1_accuracy'][0])}")
    if stats:
        parts.append(h.para("; ".join(stats)))
    if not chosen:
        parts.append(h.para("No selections for this class."))
        return parts
    methods = sorted(
        {s["method"] for s in chosen},
        key=lambda m_: (METHOD_ORDER.index(m_) if m_ in METHOD_ORDER else 99, m_),
    )
    for method in methods:
        groups = [_group(ctx, r, method, role, chosen, preds) for role in ROLES]
        parts.append(
            h.Raw(
                f'<div class="row"><div class="rowlabel">{h.esc(method)}</div>'
                + "".join(groups)
                + "</div>"
            )
        )
    return parts


def _group(
    ctx: SectionContext,
    r: RunData,
    method: str,
    role: str,
    selections: Sequence[Mapping[str, Any]],
    preds: Mapping[str, Mapping[str, Any]],
) -> str:
    """The images ``method`` chose as ``role``, by rank."""
    chosen = sorted(
        (s for s in selections if s["method"] == method and s["role"] == role),
        key=lambda s: s["rank"],
    )
    tiles = []
    for s in chosen:
        p = preds.get(s["image_id"])
        lines = [f"#{s['rank']} {s['image_id']}", f"score {s['score']:.3g}"]
        if p is not None and p["top5_classes"]:
            lines.append(f"pred: {r.classes.short(p['top5_classes'][0])}")
        tiles.append(
            h.figure(
                ctx.pictures.of_array(ctx.crop(r, p)),
                f"{method} {role} {s['rank']}",
                lines,
            )
        )
    text = f"{role}s" + ("" if tiles else ": none qualified")
    return (
        f'<div class="group sel" data-method="{h.esc(method)}" '
        f'data-role="{h.esc(role)}"><div class="grouplabel">{h.esc(text)}</div>'
        f'<div class="grid">{"".join(tiles)}</div></div>'
    )
