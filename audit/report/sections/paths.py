"""``paths``: explanation paths, the super-pixels of a clean LIME explanation uncovered in order
of importance (the paper's Figure 12)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from audit.report import html as h
from audit.report.data import RunData
from audit.report.images import path_frames
from audit.report.sections.context import SectionContext, sample
from audit.report.sections.registry import register_section
from audit.report.sections.tables import rows


@register_section(
    "paths", title="Explanation paths (Figure 12)", order=50, why="no clean LIME explanations"
)
def render(ctx: SectionContext) -> list[str] | None:
    body: list[str] = []
    missing: list[str] = []  # runs without any, named when another run has some
    for i, run in enumerate(ctx.runs):
        clean = [
            e
            for e in rows(
                run.tables["explanations"],
                ["image_id", "variant", "explained_class", "segments", "top_features"],
            )
            if e["variant"] == "clean"
        ]
        if not clean:
            missing.append(h.para(f"{run.title}: no clean explanation."))
            continue
        clean.sort(key=lambda e: e["image_id"])
        shown = sample(clean, ctx.cfg.paths, ctx.rng("paths", i))
        body.append(h.heading(3, run.title))
        body.append(
            h.para(
                f"{len(shown)} of {len(clean)} clean explanations; frame k shows the k most "
                "important super-pixels."
            )
        )
        body.extend(_path(ctx, run, e) for e in shown)
    if not body:
        return None
    return [*missing, *body]


def _path(ctx: SectionContext, run: RunData, e: Mapping[str, Any]) -> h.Raw:
    """The image, then one frame per super-pixel uncovered."""
    crop = ctx.crop(run, ctx.preds(run).get(e["image_id"]))
    frames = path_frames(crop, e["segments"], e["top_features"])
    tiles = [
        h.figure(
            ctx.pictures.of_array(crop),
            e["image_id"],
            [e["image_id"], f"explains {run.classes.label(e['explained_class'])}"],
        )
    ]
    if isinstance(frames, str):
        tiles.append(h.note(frames))
    else:
        tiles += [
            h.figure(ctx.pictures.of_array(f), f"{e['image_id']} step {k + 1}", [f"{k + 1}"])
            for k, f in enumerate(frames)
        ]
    return h.Raw('<div class="row path">' + "".join(tiles) + "</div>")
