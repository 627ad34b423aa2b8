"""``candidates``: the automatic bias candidates of runs with object boxes (``bias_candidates``,
docs/bias.md): what each statistic means, the top candidates of each kind in a sortable table,
and for the top context candidates their exemplars (the crop with the object's boxes drawn,
and the LIME attention, the top super-pixels, with the same boxes), the classes co-activated
in the class's images, and a link to its prototypes and criticisms."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from audit.report import html as h
from audit.report.data import RunData
from audit.report.images import attention
from audit.report.sections.classes import class_anchor, shown_classes
from audit.report.sections.context import SectionContext
from audit.report.sections.registry import register_section

TOP_PER_KIND = 10
"""Rows of each kind in the table."""

SHOWN_CONTEXT = 3
"""Context candidates shown with their exemplars."""

HEADER = ["run", "kind", "rank", "class", "statistic", "adjusted p", "effect size", "evidence"]


@register_section(
    "candidates",
    title="Bias candidates (automatic)",
    order=75,
    why="no bias_candidates table (a run with data.boxes writes one)",
)
def render(ctx: SectionContext) -> list[str] | None:
    from audit.bias.candidates import EFFECT_SIZE_MEANING, P_VALUE_MEANING, STATISTIC_MEANING

    runs = [r for r in ctx.runs if r.tables.get("bias_candidates") is not None]
    runs = [r for r in runs if r.tables["bias_candidates"].num_rows]
    if not runs:
        return None
    legend = "".join(
        f"<li><b>{h.esc(kind)}</b>: {h.esc(STATISTIC_MEANING[kind])} Effect size: "
        f"{h.esc(EFFECT_SIZE_MEANING[kind])} Adjusted p: {h.esc(P_VALUE_MEANING[kind])}</li>"
        for kind in STATISTIC_MEANING
    )
    body: list[str] = [
        h.para(
            "Candidates ranked within their kind from the run's own tables and object boxes "
            "(docs/bias.md). A candidate says where to look; its exemplars say whether it is "
            "a bias."
        ),
        h.Raw(f'<ul class="legend">{legend}</ul>'),
    ]
    rows: list[list[Any]] = []
    for run in runs:
        for r in sorted(
            run.tables["bias_candidates"].to_pylist(), key=lambda r: (r["kind"], r["rank"])
        ):
            if r["rank"] > TOP_PER_KIND:
                continue
            rows.append(
                [
                    run.title,
                    r["kind"],
                    r["rank"],
                    run.classes.label(r["class"]),
                    f"{r['statistic']:.3g}",
                    "-" if r["p_value"] is None else f"{r['p_value']:.3g}",
                    "-" if r["effect_size"] is None else f"{r['effect_size']:.3g}",
                    r["evidence"],
                ]
            )
    body.append(
        h.table(
            HEADER,
            rows,
            caption=f"The top {TOP_PER_KIND} candidates of each kind",
            sortable=True,
            filterable=True,
        )
    )
    for run in runs:
        body.extend(_context_exemplars(ctx, run))
    return body


def _context_exemplars(ctx: SectionContext, run: RunData) -> list[str]:
    """The top context candidates' exemplars: crop with boxes, attention with boxes."""
    top = sorted(
        (r for r in run.tables["bias_candidates"].to_pylist() if r["kind"] == "context"),
        key=lambda r: r["rank"],
    )[:SHOWN_CONTEXT]
    if not top:
        return []
    explanations = {
        e["image_id"]: e for e in run.tables["explanations"].to_pylist() if e["variant"] == "clean"
    }
    boxes, why = _boxes(run)
    preds = ctx.preds(run)
    _, shown_list = shown_classes(ctx)
    shown = set(shown_list) if run is ctx.runs[0] else set()  # the classes section's indices
    coactivated = [
        r for r in run.tables["bias_candidates"].to_pylist() if r["kind"] == "coactivation"
    ]
    out: list[str] = [h.heading(3, f"{run.title}: where the top context candidates look")]
    if why:
        out.append(h.note(why))
    for cand in top:
        tiles = []
        for image_id in cand["exemplar_ids"]:
            p, e = preds.get(image_id), explanations.get(image_id)
            if p is None or e is None:
                continue
            crop = ctx.crop(run, p)
            drawn = _with_boxes(crop, boxes, run, image_id, p)
            lines = [image_id, f"true: {run.classes.label(p['label'])}"]
            lines.append(f"explains {run.classes.short(e['explained_class'])}")
            tiles.append(h.figure(ctx.pictures.of_array(drawn), f"{image_id} with boxes", lines))
            seen = attention(crop, e["segments"], e["top_features"], 8)
            tiles.append(
                h.figure(
                    ctx.pictures.of_array(_with_boxes(seen, boxes, run, image_id, p)),
                    f"{image_id} attention",
                    [f"top 8 super-pixels of LIME for {run.classes.short(e['explained_class'])}"],
                )
            )
        out.append(h.para(f"#{cand['rank']} {cand['evidence']}"))
        links = []
        if cand["class"] in shown:
            anchor = class_anchor(cand["class"])
            links.append(f'<a href="#{anchor}">its prototypes and criticisms</a>')
        co = [
            r["evidence"]
            for r in coactivated
            if r["class"] == cand["class"] and r["rank"] <= TOP_PER_KIND * 5
        ][:3]
        if links:
            out.append(h.Raw(f"<p>See {''.join(links)}.</p>"))
        if co:
            out.append(h.para("Co-activated: " + " ".join(co)))
        out.append(h.grid(tiles))
    return out


def _boxes(run: RunData) -> tuple[Any, str]:
    """The run's boxes (``data.boxes`` of its config), or None and why not."""
    from audit.data.boxes import BoxesError, read_boxes

    source = run.manifest.config_value("data", "boxes")
    if not source:
        return None, "The run's configuration names no boxes: drawn without them."
    try:
        return read_boxes(str(source), run.storage_options), ""
    except (BoxesError, OSError) as exc:
        return None, f"The boxes ({source}) could not be read: {exc}; drawn without them."


def _with_boxes(
    image: np.ndarray | str, boxes: Any, run: RunData, image_id: str, pred: Mapping[str, Any]
) -> np.ndarray | str:
    """``image`` (the crop) with the image's boxes, mapped into it as the run decoded it,
    outlined in green."""
    if isinstance(image, str) or boxes is None or image_id not in boxes:
        return image
    from PIL import Image, ImageDraw

    from audit.bias.discover import image_header
    from audit.data.boxes import crop_geometry, jpeg_draft_scale

    try:
        size, is_jpeg = image_header(pred["uri"], run.storage_options)
    except OSError:
        return image
    scale = jpeg_draft_scale(size, run.transform) if run.jpeg_draft and is_jpeg else 1
    geometry = crop_geometry(size, run.transform, draft_scale=scale)
    picture = Image.fromarray(image)
    draw = ImageDraw.Draw(picture)
    for b in geometry.map_all(boxes.get(image_id)):
        corners = (
            int(b.x0),
            int(b.y0),
            max(int(b.x0), int(np.ceil(b.x1)) - 1),
            max(int(b.y0), int(np.ceil(b.y1)) - 1),
        )
        draw.rectangle(corners, outline=(0, 220, 0), width=2)
    return np.asarray(picture)
