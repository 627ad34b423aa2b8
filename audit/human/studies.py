"""Which items each study asks about, from a run's tables (no rendering, no I/O here).

An :class:`Item` holds what raters see (``fields``: the text columns; ``images``: the columns
holding image URLs and which image each shows) and, apart from it, the private ``key`` that
ingest and analysis need (ground truth, condition, correct answer). The key never reaches the
rater-facing files.

Every draw and shuffle comes from ``numpy.random.default_rng`` seeded by the export's seed, after
sorting the candidates by image id, so the same tables and seed give the same batch.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from audit.data.classes import ClassIndex
from audit.errors import AuditError
from audit.human.config import ASSIGNMENT_CONDITIONS, ExportConfig, Shown, Subset


class StudyError(AuditError, ValueError):
    """A study cannot be exported from this run; the message says why in one line."""


@dataclass(frozen=True)
class ImageRef:
    """An image raters see: ``kind`` is ``crop`` (the evaluation crop of the input),
    ``adversarial`` (the stored adversarial image) or ``explanation`` (its LIME attention image)."""

    kind: str
    image_id: str


@dataclass
class Item:
    """One question of a batch.

    Attributes:
        item_id: Opaque id, the ``item_id`` column raters' answers come back with.
        fields: Rater-facing text columns (question, class names).
        images: Rater-facing image columns -> the image each shows.
        key: Private: ground truth and whatever the analysis needs.
    """

    item_id: str
    fields: dict[str, str]
    images: dict[str, ImageRef]
    key: dict[str, Any] = field(default_factory=dict)


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    return sorted(table.to_pylist(), key=lambda r: str(r["image_id"]))


def _name_list(classes: ClassIndex, indices: list[int]) -> str:
    return ", ".join(classes.names[i] for i in indices)


def _sample(rows: list[Any], max_items: int | None, rng: np.random.Generator) -> list[Any]:
    """A seeded shuffle of ``rows``, cut to ``max_items``."""
    order = rng.permutation(len(rows))
    if max_items is not None:
        order = order[:max_items]
    return [rows[i] for i in order]


def misclassified_items(
    predictions: pa.Table, classes: ClassIndex, cfg: ExportConfig
) -> list[Item]:
    """Study 1: misclassified images shown with their predicted class(es), yes/no.

    Top-1 errors (``correct_top1`` false) or top-5 errors (``correct_top5`` false) among labeled
    predictions, each shown with the top-1 class or the top-5 classes (in a seeded random order).

    Raises:
        StudyError: No image qualifies.
    """
    column = "correct_top1" if cfg.subset is Subset.TOP1_ERRORS else "correct_top5"
    rows = [r for r in _rows(predictions) if r["label"] is not None and r[column] is False]
    if not rows:
        raise StudyError(f"no labeled image of this run has {column} false: nothing to ask")
    rng = np.random.default_rng(cfg.seed)
    items = []
    for n, row in enumerate(_sample(rows, cfg.max_items, rng), start=1):
        top5 = [int(c) for c in row["top5_classes"]]
        shown = (
            top5[:1] if cfg.shown is Shown.TOP1 else [top5[i] for i in rng.permutation(len(top5))]
        )
        names = _name_list(classes, shown)
        items.append(
            Item(
                item_id=f"q{n:05d}",
                fields={"question": cfg.question_text().format(classes=names), "classes": names},
                images={"image_url": ImageRef("crop", row["image_id"])},
                key={
                    "image_id": row["image_id"],
                    "label": int(row["label"]),
                    "predicted": top5[0],
                    "shown_classes": shown,
                    "correct_top1": bool(row["correct_top1"]),
                    "correct_top5": bool(row["correct_top5"]),
                },
            )
        )
    return items


def adversarial_candidates(adversarial: pa.Table, explanations: pa.Table) -> list[dict[str, Any]]:
    """Adversarial images that can be shown whole and as an explanation.

    An image qualifies when the attack flipped it (``steps_to_flip >= 1``), its adversarial image
    was stored (``image_png``, ``attack.keep_images``) and still flips after rounding
    (``stored_flips`` not false), its adversarial class is not its ground-truth label (an
    attack on a misclassified image can flip it to the label, and raters must never be asked
    about the label), and the run explained the adversarial image for its adversarial class
    (``variant == 'adversarial'``).

    Returns:
        Adversarial rows (dicts) with the explanation row under ``"explanation"``, by image id.
    """
    expl = {
        (r["image_id"], int(r["explained_class"])): r
        for r in explanations.to_pylist()
        if r["variant"] == "adversarial"
    }
    out = []
    for row in _rows(adversarial):
        steps = row["steps_to_flip"]
        if steps is None or steps < 1 or row["image_png"] is None or row["stored_flips"] is False:
            continue
        if row["label"] is not None and int(row["adv_class"]) == int(row["label"]):
            continue
        e = expl.get((row["image_id"], int(row["adv_class"])))
        if e is not None:
            out.append({**row, "explanation": e})
    return out


def adversarial_items(
    candidates: list[dict[str, Any]], classes: ClassIndex, cfg: ExportConfig, condition: str
) -> list[Item]:
    """Study 2, one condition: ``whole`` (the adversarial image) or ``explanation`` (its top
    super-pixels), each asked about its adversarial class. Both conditions ask about the same
    images (the same seeded sample), in independently shuffled orders.

    Raises:
        StudyError: No candidate (see :func:`adversarial_candidates`).
    """
    if not candidates:
        raise StudyError(
            "no adversarial image to ask about: the study needs images flipped by the attack, "
            "stored (attack.keep_images=true) and explained (explain.variants with 'adversarial')"
        )
    chosen = _sample(candidates, cfg.max_items, np.random.default_rng(cfg.seed))
    offset = 1 if condition == "whole" else 2
    order = np.random.default_rng([cfg.seed, offset]).permutation(len(chosen))
    kind = "adversarial" if condition == "whole" else "explanation"
    items = []
    for n, i in enumerate(order, start=1):
        row = chosen[i]
        names = _name_list(classes, [int(row["adv_class"])])
        items.append(
            Item(
                item_id=f"q{n:05d}",
                fields={"question": cfg.question_text().format(classes=names), "classes": names},
                images={"image_url": ImageRef(kind, row["image_id"])},
                key={
                    "image_id": row["image_id"],
                    "label": row["label"],
                    "adv_class": int(row["adv_class"]),
                    "steps_to_flip": int(row["steps_to_flip"]),
                    "condition": condition,
                },
            )
        )
    return items


def condition_sets(selections: pa.Table, condition: str) -> dict[int, list[str]]:
    """The images each class shows in an assignment condition: the best ``p`` prototypes then the
    best ``c`` criticisms of the condition's method, for classes that have that many."""
    method, n_proto, n_crit = ASSIGNMENT_CONDITIONS[condition]
    ranked: dict[tuple[int, str], list[tuple[int, str]]] = defaultdict(list)
    for r in selections.to_pylist():
        if r["method"] == method:
            ranked[(int(r["class"]), r["role"])].append((int(r["rank"]), r["image_id"]))
    out = {}
    for cls in sorted({c for c, _ in ranked}):
        protos = [i for _, i in sorted(ranked[(cls, "prototype")])]
        crits = [i for _, i in sorted(ranked[(cls, "criticism")])]
        if len(protos) >= n_proto and len(crits) >= n_crit:
            out[cls] = protos[:n_proto] + crits[:n_crit]
    return out


def assignment_items(
    selections: pa.Table, predictions: pa.Table, classes: ClassIndex, cfg: ExportConfig
) -> list[Item]:
    """Study 3: each question shows ``classes_per_question`` rows of 6 images (one class each,
    chosen by the condition) and a target image of one of those classes; the rater picks the row.

    Per condition and question: the classes are a seeded draw among the classes the condition can
    fill, the target class one of them, the target image a seeded draw among that class's
    labeled images not shown in its row. Questions of all conditions are shuffled together; the
    images within a row are shuffled too.

    Raises:
        StudyError: A condition fills fewer classes than a question needs, or a target class has
            no other image.
    """
    members: dict[int, list[str]] = defaultdict(list)
    for r in _rows(predictions):
        if r["label"] is not None:
            members[int(r["label"])].append(r["image_id"])
    questions: list[tuple[dict[str, str], dict[str, ImageRef], dict[str, Any]]] = []
    size = cfg.classes_per_question
    all_sets = {c: condition_sets(selections, c) for c in ASSIGNMENT_CONDITIONS}
    short = [c for c in cfg.conditions if len(all_sets[c]) < size]
    if short:
        detail = "; ".join(
            f"{c} ({ASSIGNMENT_CONDITIONS[c][1]} prototypes + {ASSIGNMENT_CONDITIONS[c][2]} "
            f"criticisms of {ASSIGNMENT_CONDITIONS[c][0]!r}): {len(all_sets[c])} classes"
            for c in short
        )
        feasible = [c for c in ASSIGNMENT_CONDITIONS if len(all_sets[c]) >= size]
        raise StudyError(
            f"a question needs {size} classes that a condition can fill; too few for {detail}. "
            f"Conditions this run can fill: {feasible} (more need criticism.n_prototypes / "
            "n_criticisms in the audit, or fewer --classes-per-question)"
        )
    for c_index, condition in enumerate(cfg.conditions):
        sets = all_sets[condition]
        eligible = sorted(sets)
        rng = np.random.default_rng([cfg.seed, c_index])
        for _ in range(cfg.questions_per_condition):
            shown = [eligible[i] for i in rng.choice(len(eligible), size=size, replace=False)]
            slot = int(rng.integers(size))
            target_class = shown[slot]
            pool = [i for i in members.get(target_class, []) if i not in sets[target_class]]
            if not pool:
                raise StudyError(
                    f"class {classes.ids[target_class]} has no labeled image outside the "
                    f"{len(sets[target_class])} that condition {condition!r} shows: no target"
                )
            target = pool[int(rng.integers(len(pool)))]
            fields: dict[str, str] = {"question": cfg.question_text()}
            images: dict[str, ImageRef] = {"target_url": ImageRef("crop", target)}
            rows: list[list[str]] = []
            for s, cls in enumerate(shown, start=1):
                row = [sets[cls][i] for i in rng.permutation(len(sets[cls]))]
                rows.append(row)
                fields[f"slot{s}_name"] = classes.names[cls] if cfg.show_class_names else ""
                for j, image_id in enumerate(row, start=1):
                    images[f"slot{s}_img{j}_url"] = ImageRef("crop", image_id)
            key = {
                "condition": condition,
                "classes": shown,
                "slot_images": rows,
                "target_image_id": target,
                "target_class": target_class,
                "correct_slot": slot + 1,
            }
            questions.append((fields, images, key))
    order = np.random.default_rng([cfg.seed, len(cfg.conditions)]).permutation(len(questions))
    return [Item(f"q{n:05d}", *questions[i]) for n, i in enumerate(order, start=1)]


def images_per_row(cfg: ExportConfig) -> int:
    """Images in each row of an assignment question (6 for every paper condition)."""
    sizes = {p + c for _, p, c in (ASSIGNMENT_CONDITIONS[x] for x in cfg.conditions)}
    if len(sizes) != 1:
        raise StudyError(f"conditions {list(cfg.conditions)} show different numbers of images")
    return sizes.pop()
