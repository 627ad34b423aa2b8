"""Bias discovery on a finished run's tables: the ``bias_candidates`` table (docs/bias.md).

:func:`discover` reads what the run stored (the clean LIME explanations, the predictions with
their embeddings, the attack's steps, the selections) and the object boxes of ``data.boxes``,
and ranks:

- **context**: classes by how much of the model's explanation lies outside the labelled
  object. Each clean explanation explains the class the model predicted, so its context
  reliance (:func:`audit.bias.context.context_reliance`, the share of the positive LIME weight
  outside the object's boxes, the boxes mapped into the model's crop by
  :func:`audit.data.boxes.crop_geometry`) counts for that class: a cue the model learned for a
  class shows in that class's explanations, whichever class the image really is;
- **coactivation**: per class, the other classes whose probability (the stored top-5, others
  0) separates the class's criticisms from its prototypes (MMD-critic's selection, else the
  first selection method the run has);
- **slice**: per class, k-means clusters of the embeddings with the highest error rate.

Nothing is recomputed with the model: the analyses read the tables as stored.
"""

from __future__ import annotations

import io
import logging
import math
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
from PIL import Image

from audit.bias.candidates import (
    Candidate,
    candidates_table,
    coactivation_rows,
    context_rows,
    slice_rows,
)
from audit.bias.coactivation import coactivation, scores_from_top5
from audit.bias.context import context_reliance, rank_classes_by_context
from audit.bias.slices import class_slices
from audit.data.boxes import BoxSet, box_mask, crop_geometry, jpeg_draft_scale
from audit.data.segments import decode_segments
from audit.models.transform import EvalTransform

log = logging.getLogger(__name__)

SELECTION_METHODS = ("mmd_critic", "adversarial", "probability")
"""Whose prototypes and criticisms the co-activation compares, first present first."""


def explanation_context(
    explanations: pa.Table,
    predictions: pa.Table,
    boxes: BoxSet,
    transform: EvalTransform,
    *,
    jpeg_draft: bool = False,
    class_ids: tuple[str, ...] = (),
    storage_options: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Context reliance of every clean explanation of an image with boxes: one dict per
    explanation with ``image_id``, ``explained`` (the class explained, the top-1), ``label``,
    ``correct``, ``positive_outside`` and ``topk_area_outside``.

    The boxes used are those of the image's true class when it has some (``class_ids`` maps an
    index to the boxes' WordNet id), else all of its boxes. Each image's size is read from its
    file header (the decode path's geometry needs it).
    """
    preds = {
        r["image_id"]: r
        for r in predictions.select(["image_id", "uri", "label", "top5_classes"]).to_pylist()
    }
    opts = dict(storage_options or {})
    out = []
    for e in explanations.to_pylist():
        if e["variant"] != "clean":
            continue
        p = preds.get(e["image_id"])
        own = boxes.get(e["image_id"])
        if p is None or not own or not p["top5_classes"]:
            continue
        label = p["label"]
        wnid = class_ids[label] if label is not None and 0 <= label < len(class_ids) else None
        chosen = tuple(b for b in own if b.wnid == wnid) or own
        size, is_jpeg = image_header(p["uri"], opts)
        scale = jpeg_draft_scale(size, transform) if jpeg_draft and is_jpeg else 1
        geometry = crop_geometry(size, transform, draft_scale=scale)
        seg = decode_segments(e["segments"])
        mask = box_mask(geometry.map_all(chosen), seg.shape)
        cr = context_reliance(seg, e["weights"], e["top_features"], mask)
        out.append(
            {
                "image_id": e["image_id"],
                "explained": int(p["top5_classes"][0]),
                "label": label,
                "correct": label is not None and int(p["top5_classes"][0]) == label,
                "positive_outside": cr.positive_outside,
                "topk_area_outside": cr.topk_area_outside,
            }
        )
    return out


def image_header(uri: str, options: Mapping[str, Any]) -> tuple[tuple[int, int], bool]:
    """``(width, height)`` of the image at ``uri`` from its header, and whether it is a JPEG
    (whose decode may have used draft mode)."""
    with fsspec.open(uri, "rb", **options) as f:
        head = f.read()
    with Image.open(io.BytesIO(head)) as img:
        return img.size, img.format == "JPEG"


def discover(
    tables: Mapping[str, pa.Table],
    boxes: BoxSet,
    transform: EvalTransform,
    class_ids: tuple[str, ...],
    *,
    max_steps: int,
    jpeg_draft: bool = False,
    seed: int = 0,
    n_permutations: int = 999,
    storage_options: Mapping[str, Any] | None = None,
) -> pa.Table:
    """The ``bias_candidates`` table of a run's ``tables`` (``predictions``, ``explanations``,
    ``adversarial``, ``selections``); see the module docstring for what each kind ranks."""
    rows: list[Candidate] = []
    ctx = explanation_context(
        tables["explanations"],
        tables["predictions"],
        boxes,
        transform,
        jpeg_draft=jpeg_draft,
        class_ids=class_ids,
        storage_options=storage_options,
    )
    values = [r["positive_outside"] for r in ctx]
    if any(math.isfinite(v) for v in values):
        ranks = rank_classes_by_context(
            values,
            [r["explained"] for r in ctx],
            [True] * len(ctx),  # every explanation counts for the class it explains
            [r["image_id"] for r in ctx],
            n_permutations=n_permutations,
            seed=seed,
        )
        rows += context_rows(ranks, class_ids)
    rows += _coactivation(tables, class_ids)
    rows += _slices(tables, class_ids, max_steps, seed)
    return candidates_table(rows)


def _coactivation(tables: Mapping[str, pa.Table], class_ids: tuple[str, ...]) -> list[Candidate]:
    """Per class, two comparisons: its criticisms against its prototypes (of the first of
    :data:`SELECTION_METHODS` the run has), and its misclassified against its correctly
    classified images (at least two mistakes)."""
    cols = ["image_id", "label", "correct_top1", "top5_classes", "top5_probs"]
    preds = tables["predictions"].select(cols).to_pylist()
    if not preds:
        return []
    row_of = {p["image_id"]: i for i, p in enumerate(preds)}
    scores = scores_from_top5(
        [p["top5_classes"] or [] for p in preds],
        [p["top5_probs"] or [] for p in preds],
        len(class_ids),
    )
    # (class, group) -> rows of ``preds``, every group filled in one pass
    groups: dict[tuple[int, str], list[int]] = defaultdict(list)
    for i, p in enumerate(preds):
        if p["label"] is not None and p["correct_top1"] is not None:
            groups[(p["label"], "right" if p["correct_top1"] else "wrong")].append(i)
    sel = tables["selections"]
    present = set(sel.column("method").to_pylist())
    method = next((m for m in SELECTION_METHODS if m in present), min(present, default=None))
    for r in sel.to_pylist():
        if r["method"] == method and r["image_id"] in row_of:
            groups[(r["class"], r["role"])].append(row_of[r["image_id"]])
    comparisons = (
        ("criticism", "prototype", f"{method} criticisms", f"{method} prototypes", 1),
        ("wrong", "right", "misclassified images", "correctly classified images", 2),
    )
    ids = [p["image_id"] for p in preds]
    results = []
    for a, b, name_a, name_b, least in comparisons:
        for c in sorted({c for c, g in groups if g == a}):
            rows_a, rows_b = groups[(c, a)], groups.get((c, b), [])
            if len(rows_a) < least or not rows_b or set(rows_a) & set(rows_b):
                continue
            results.append(
                coactivation(scores, rows_a, rows_b, label=c, names=(name_a, name_b), image_ids=ids)
            )
    return coactivation_rows(results, class_ids, top=50)


def _slices(
    tables: Mapping[str, pa.Table], class_ids: tuple[str, ...], max_steps: int, seed: int
) -> list[Candidate]:
    preds = tables["predictions"]
    if "embedding" not in preds.column_names or not preds.num_rows:
        return []
    rows = preds.select(["image_id", "label", "correct_top1", "embedding"]).to_pylist()
    steps = {
        r["image_id"]: r["steps_to_flip"]
        for r in tables["adversarial"].select(["image_id", "steps_to_flip"]).to_pylist()
    }
    out = []
    for c in sorted({r["label"] for r in rows if r["label"] is not None}):
        mine = [r for r in rows if r["label"] == c and r["embedding"] is not None]
        if len(mine) < 10:
            continue
        out += class_slices(
            np.asarray([r["embedding"] for r in mine], dtype=np.float64),
            [r["image_id"] for r in mine],
            [bool(r["correct_top1"]) for r in mine],
            [steps.get(r["image_id"]) for r in mine],
            label=c,
            max_steps=max_steps,
            seed=seed,
        )
    return slice_rows(out, class_ids, top=50)
