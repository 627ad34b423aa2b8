"""``adversarial``: adversarial accuracy, the histogram of ``steps_to_flip``, and adversarial
images beside their LIME explanations for the clean and the adversarial class (the paper's
Figures 5 and 6)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from audit.report import html as h
from audit.report import plots
from audit.report.data import RunData, adversarial_pngs
from audit.report.images import attention, decode_png
from audit.report.sections.context import SectionContext, sample
from audit.report.sections.registry import register_section
from audit.report.sections.tables import pred_line, rows

NOT_STORED = (
    "Adversarial pixels were not stored (attack.keep_images is false): the clean image is shown "
    "with the adversarial class and step count, and LIME's adversarial explanation is drawn on "
    "the clean pixels."
)


def _summary_row(run: RunData) -> list[Any]:
    adv = rows(run.tables["adversarial"], ["label", "steps_to_flip", "adv_class", "linf"])
    labeled = [a for a in adv if a["label"] is not None]
    survived = sum(1 for a in labeled if a["adv_class"] == a["label"])
    flipped = [a for a in adv if a["steps_to_flip"] not in (None, 0)]
    one = sum(1 for a in adv if a["steps_to_flip"] == 1)
    never = sum(1 for a in adv if a["steps_to_flip"] is None)
    mean_linf = float(np.mean([a["linf"] for a in flipped])) if flipped else None
    return [
        run.title,
        len(adv),
        h.pct(survived / len(labeled)) if labeled else "-",
        f"{one} ({h.pct(one / len(adv))})",
        f"{never} ({h.pct(never / len(adv))})",
        mean_linf,
    ]


def _steps_bins(run: RunData) -> tuple[list[str], list[int]]:
    steps = run.tables["adversarial"].column("steps_to_flip").to_pylist()
    top = max([run.max_steps or 0, *[s for s in steps if s is not None]])
    counts = Counter(steps)
    bins = [str(k) for k in range(top + 1)] + ["never"]
    return bins, [counts.get(k, 0) for k in range(top + 1)] + [counts.get(None, 0)]


def _histogram(runs: list[RunData]) -> bytes:
    series = []
    bins: list[str] = []
    for r in runs:
        b, counts = _steps_bins(r)
        if len(b) > len(bins):
            bins = b
        series.append((r.title, counts))
    # align runs with different max_steps on the longest axis ("never" last)
    aligned = [(t, c[:-1] + [0] * (len(bins) - len(c)) + c[-1:]) for t, c in series]
    return plots.steps_histogram(bins, aligned)


@register_section(
    "adversarial",
    title="Adversarial images (Figures 5, 6)",
    order=30,
    why="no adversarial table rows (attack disabled?)",
)
def render(ctx: SectionContext) -> list[str] | None:
    runs = [(i, r) for i, r in enumerate(ctx.runs) if r.tables["adversarial"].num_rows]
    if not runs:
        return None
    body: list[str] = [
        h.para(f"{r.title}: no adversarial rows (attack disabled?).")
        for r in ctx.runs
        if not r.tables["adversarial"].num_rows
    ]
    header = [
        "run",
        "attacked images",
        "adversarial top-1 accuracy",
        "flipped by 1 step (criticism candidates)",
        "never flipped (prototype candidates)",
        "mean L-inf of flipped",
    ]
    body.append(h.table(header, [_summary_row(r) for _, r in runs]))
    png = _histogram([r for _, r in runs])
    body.append(h.picture(ctx.pictures.of_png(png), "histogram of steps_to_flip"))
    for i, run in runs:
        body.append(h.heading(3, run.title))
        body.extend(_examples(ctx, i, run))
    return body


def _examples(ctx: SectionContext, i: int, run: RunData) -> list[str]:
    adv = {
        a["image_id"]: a
        for a in rows(
            run.tables["adversarial"],
            ["image_id", "label", "target", "steps_to_flip", "adv_class", "adv_prob", "linf"],
        )
    }
    explained: dict[str, dict[str, dict[str, Any]]] = {}
    for e in rows(
        run.tables["explanations"],
        ["image_id", "variant", "explained_class", "segments", "top_features", "score"],
    ):
        explained.setdefault(e["image_id"], {})[e["variant"]] = e
    both = sorted(
        k for k, v in explained.items() if {"clean", "adversarial"} <= set(v) and k in adv
    )
    flipped = sorted(
        k for k, a in adv.items() if a["steps_to_flip"] not in (None, 0) and k not in set(both)
    )
    rng = ctx.rng("adversarial", i)
    chosen = sample(both, ctx.cfg.adversarial_examples, rng)
    chosen += sample(flipped, ctx.cfg.adversarial_examples - len(chosen), rng)
    out: list[str] = []
    stored = adversarial_pngs(run, chosen) if run.keep_images else {}
    if not run.keep_images:
        out.append(h.note(NOT_STORED))
    out.append(
        h.para(
            f"{len(both)} images have LIME explanations of both the clean and the adversarial "
            f"image and {len(flipped)} other images were flipped; {len(chosen)} shown. Attention "
            "images show the top super-pixels of the explanation, the rest grey."
        )
    )
    k = int(run.manifest.config_value("explain", "num_features") or 8)
    for image_id in chosen:
        lime = explained.get(image_id, {})
        out.append(_example(ctx, run, image_id, adv[image_id], lime, stored.get(image_id), k))
    return out


def _example(
    ctx: SectionContext,
    run: RunData,
    image_id: str,
    a: Mapping[str, Any],
    lime: Mapping[str, Mapping[str, Any]],
    png: bytes | None,
    k: int,
) -> h.Raw:
    """One row: the clean image, its explanation, the adversarial image, its explanation."""
    p = ctx.preds(run).get(image_id)
    clean = ctx.crop(run, p)
    adv_img: np.ndarray | str = decode_png(png) if png is not None else clean
    adv_note = "adversarial" if png is not None else "clean pixels (adversarial not stored)"
    steps = a["steps_to_flip"]
    tiles = [
        h.figure(
            ctx.pictures.of_array(clean),
            f"{image_id} clean",
            [
                f"{image_id} clean",
                f"true: {run.classes.label(a['label'])}",
                pred_line(run, p) if p else "no prediction",
            ],
        )
    ]
    if "clean" in lime:
        tiles.append(_explanation_tile(ctx, run, image_id, lime["clean"], clean, k))
    tiles.append(
        h.figure(
            ctx.pictures.of_array(adv_img),
            f"{image_id} adversarial",
            [
                adv_note,
                f"adversarial class: {run.classes.label(a['adv_class'])} ({a['adv_prob']:.2f})",
                f"steps to flip: {steps if steps is not None else 'never'}",
                f"L-inf {a['linf']:.4f}",
            ],
        )
    )
    if "adversarial" in lime:
        tiles.append(_explanation_tile(ctx, run, image_id, lime["adversarial"], adv_img, k))
    return h.Raw('<div class="row adv-example">' + "".join(tiles) + "</div>")


def _explanation_tile(
    ctx: SectionContext, run: RunData, image_id: str, e: Mapping[str, Any], image: Any, k: int
) -> h.Raw:
    """An image with only its top-``k`` super-pixels of explanation ``e`` shown, captioned."""
    return h.figure(
        ctx.pictures.of_array(attention(image, e["segments"], e["top_features"], k)),
        f"{image_id} {e['variant']} explanation",
        [f"LIME for {run.classes.label(e['explained_class'])}", f"R2 {e['score']:.2f}"],
    )
