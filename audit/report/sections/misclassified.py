"""``misclassified``: a seeded sample of misclassified images with their true and predicted
class (the paper's Figure 3)."""

from __future__ import annotations

from audit.report import html as h
from audit.report.sections.context import SectionContext, sample
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
    for i, run in enumerate(ctx.runs):
        preds = ctx.preds(run)
        wrong = sorted(k for k, p in preds.items() if p["correct_top1"] is False)
        if not wrong:
            missing.append(h.para(f"{run.title}: no misclassified labeled image."))
            continue
        shown = sample(wrong, ctx.cfg.examples, ctx.rng("misclassified", i))
        tiles = []
        for image_id in shown:
            p = preds[image_id]
            pic = ctx.pictures.of_array(ctx.crop(run, p))
            tiles.append(
                h.figure(
                    pic,
                    image_id,
                    [image_id, f"true: {run.classes.label(p['label'])}", pred_line(run, p)],
                )
            )
        labeled = sum(1 for p in preds.values() if p["label"] is not None)
        body.append(h.heading(3, run.title))
        body.append(
            h.para(
                f"{len(wrong)} of {labeled} labeled images are misclassified (top-1); "
                f"{len(shown)} shown, a sample drawn with seed {ctx.cfg.seed}."
            )
        )
        body.append(h.grid(tiles))
    if not body:
        return None
    return [*missing, *body]
