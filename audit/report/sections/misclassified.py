"""``misclassified``: the misclassified images the model was most sure of (the paper's
Figure 3 is about confident mistakes), each with its true class, its top-5 with their
probabilities, the true class's probability, and what each public source loaded with
``audit-cli human public`` accepts for the image (``RunData.judged``)."""

from __future__ import annotations

from typing import Any

from audit.human.judgments.common import image_stem
from audit.report import html as h
from audit.report.data import RunData
from audit.report.sections.context import SectionContext
from audit.report.sections.registry import register_section
from audit.report.sections.tables import pred_line


@register_section(
    "misclassified",
    title="Misclassified images (Figure 3)",
    order=20,
    why="no misclassified labeled image",
)
def render(ctx: SectionContext) -> list[str] | None:
    body: list[str] = []
    missing: list[str] = []  # runs without any, named when another run has some
    for run in ctx.runs:
        preds = ctx.preds(run)
        wrong = sorted(k for k, p in preds.items() if p["correct_top1"] is False)
        if not wrong:
            missing.append(h.para(f"{run.title}: no misclassified labeled image."))
            continue
        # most confident mistakes first (ties by image_id)
        shown = sorted(wrong, key=lambda k: (-_confidence(preds[k]), k))[: ctx.cfg.examples]
        tiles = []
        for image_id in shown:
            p = preds[image_id]
            pic = ctx.pictures.of_array(ctx.crop(run, p))
            lines = [image_id, f"true: {run.classes.label(p['label'])}", pred_line(run, p)]
            if p.get("label_prob") is not None:
                lines.append(f"p(true class): {p['label_prob']:.3f}")
            lines.append("top-5: " + ", ".join(_top5(run, p)))
            lines.extend(judged_lines(run, image_id, p["top5_classes"][0]))
            tiles.append(h.figure(pic, image_id, lines))
        labeled = sum(1 for p in preds.values() if p["label"] is not None)
        body.append(h.heading(3, run.title))
        body.append(
            h.para(
                f"{len(wrong)} of {labeled} labeled images are misclassified (top-1); "
                f"the {len(shown)} the model was most sure of are shown, most confident first."
            )
        )
        body.append(h.grid(tiles))
    if not body:
        return None
    return [*missing, *body]


def judged_lines(run: RunData, image_id: str, top1: int) -> list[str]:
    """``"real accepts: four, nine - top-1 right"`` for each public source that judged the
    image (matched by its stem, as the sources are)."""
    stem = image_stem(image_id)
    out = []
    for name, valid in sorted(run.judged.items()):
        accepted = valid.get(stem)
        if accepted is None:
            continue
        names = ", ".join(run.classes.short(c) for c in sorted(accepted))
        verdict = "top-1 right" if top1 in accepted else "top-1 still wrong"
        out.append(f"{name} accepts: {names} - {verdict}")
    return out


def _confidence(p: dict[str, Any]) -> float:
    """The probability of the (wrong) top-1 class."""
    probs = p.get("top5_probs") or [0.0]
    return float(probs[0])


def _top5(run: Any, p: dict[str, Any]) -> list[str]:
    return [
        f"{run.classes.short(c)} {q:.2f}"
        for c, q in zip(p.get("top5_classes") or [], p.get("top5_probs") or [], strict=False)
    ]
