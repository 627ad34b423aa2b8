"""``agreement``: where several runs (models) agree and disagree, per image and per class.

Runs are compared on the labeled images every run predicted, by class id (not by output
index, so models with their own class lists compare on the classes they share): each image's
outcome across the runs, each pair of runs' agreement with McNemar's exact test of their
difference in error, a per-class table of every run's top-1 error and how often the runs'
answers differ, and the images on which some runs are right and others wrong.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from audit.report import html as h
from audit.report.data import RunData
from audit.report.sections.context import SectionContext, sample
from audit.report.sections.registry import register_section

OUTCOMES = (
    "every run right",
    "split: some right, some wrong",
    "all wrong, same answer",
    "all wrong, different answers",
)
"""The outcomes of one image across the runs, in the order the table lists them."""

PAIR_HEADER = ["run A", "run B", "images", "same top-1", "both right", "only A right"]
PAIR_HEADER += ["only B right", "both wrong", "McNemar p"]


@dataclass(frozen=True)
class Answer:
    """One run's answer on one image: its true class id and its top-1 class id."""

    label: str
    top1: str

    @property
    def right(self) -> bool:
        return self.label == self.top1


def answers(run: RunData, preds: Mapping[str, Mapping[str, Any]]) -> dict[str, Answer]:
    """image_id -> :class:`Answer` for the run's labeled, predicted images."""
    out: dict[str, Answer] = {}
    for image_id, p in preds.items():
        if p["label"] is None or not p["top5_classes"]:
            continue
        out[image_id] = Answer(_cid(run, p["label"]), _cid(run, p["top5_classes"][0]))
    return out


def _cid(run: RunData, index: int) -> str:
    ids = run.classes.ids
    return ids[index] if 0 <= index < len(ids) else f"class {index}"


def outcome(row: Sequence[Answer]) -> str:
    """Which of :data:`OUTCOMES` the answers of every run on one image are."""
    rights = [a.right for a in row]
    if all(rights):
        return OUTCOMES[0]
    if any(rights):
        return OUTCOMES[1]
    return OUTCOMES[2] if len({a.top1 for a in row}) == 1 else OUTCOMES[3]


@dataclass(frozen=True)
class PairCounts:
    """Two runs on their common images: how often they agree, and who is right when."""

    images: int
    same_top1: int
    both_right: int
    only_first: int
    only_second: int
    both_wrong: int

    @property
    def mcnemar_p(self) -> float | None:
        """McNemar's exact (binomial) two-sided p-value of "the two runs err equally often",
        from the discordant images; None when there is none."""
        n = self.only_first + self.only_second
        if n == 0:
            return None
        from scipy.stats import binomtest  # scipy.stats takes a second to import

        return float(binomtest(self.only_first, n, 0.5).pvalue)


def pair_counts(a: Mapping[str, Answer], b: Mapping[str, Answer], ids: Sequence[str]) -> PairCounts:
    """:class:`PairCounts` of runs ``a`` and ``b`` over ``ids``."""
    same = both = first = second = neither = 0
    for i in ids:
        x, y = a[i], b[i]
        same += x.top1 == y.top1
        both += x.right and y.right
        first += x.right and not y.right
        second += y.right and not x.right
        neither += not x.right and not y.right
    return PairCounts(len(ids), same, both, first, second, neither)


@register_section(
    "agreement",
    title="Agreement between runs",
    order=18,
    why="fewer than two runs, or no labeled image every run predicted",
)
def render(ctx: SectionContext) -> list[str] | None:
    if len(ctx.runs) < 2:
        return None
    per_run = [answers(r, ctx.preds(r)) for r in ctx.runs]
    ids = sorted(set.intersection(*(set(a) for a in per_run)))
    # the same image must carry the same true class in every run to be compared
    ids = [i for i in ids if len({a[i].label for a in per_run}) == 1]
    if not ids:
        return None
    titles = [r.title for r in ctx.runs]
    body: list[str] = [
        h.para(
            f"{len(ids)} labeled images predicted by all {len(ctx.runs)} runs, compared by "
            "class id. McNemar's exact test asks whether two runs err equally often, from the "
            "images exactly one of them gets right; a small p-value says the difference in "
            "error is not chance."
        )
    ]
    counts = Counter(outcome([a[i] for a in per_run]) for i in ids)
    body.append(
        h.table(
            ["outcome", "images", "share"],
            [[o, counts[o], h.pct(counts[o] / len(ids))] for o in OUTCOMES],
            caption="Each image's outcome across the runs",
        )
    )
    pair_rows = []
    for (i, a), (j, b) in combinations(enumerate(per_run), 2):
        c = pair_counts(a, b, ids)
        p = c.mcnemar_p
        pair_rows.append(
            [
                titles[i],
                titles[j],
                c.images,
                h.pct(c.same_top1 / c.images),
                c.both_right,
                c.only_first,
                c.only_second,
                c.both_wrong,
                "-" if p is None else f"{p:.3g}",
            ]
        )
    body.append(
        h.table(
            PAIR_HEADER,
            pair_rows,
            caption="Pairs of runs",
            sortable=True,
        )
    )
    body.append(_per_class(ctx, per_run, ids, titles))
    body.extend(_split_cards(ctx, per_run, ids))
    return body


def _per_class(
    ctx: SectionContext,
    per_run: Sequence[Mapping[str, Answer]],
    ids: Sequence[str],
    titles: list[str],
) -> h.Raw:
    """Per class (true class id): images, each run's top-1 error, the spread between the runs'
    errors, and the share of images on which the runs' answers differ."""
    by_class: dict[str, list[str]] = {}
    for i in ids:
        by_class.setdefault(per_run[0][i].label, []).append(i)
    names = dict(zip(ctx.runs[0].classes.ids, ctx.runs[0].classes.names, strict=True))
    rows = []
    for cid in sorted(by_class):
        members = by_class[cid]
        errors = [sum(not a[i].right for i in members) / len(members) for a in per_run]
        differ = sum(len({a[i].top1 for a in per_run}) > 1 for i in members)
        name = names.get(cid, cid)
        rows.append(
            [
                cid if name == cid else f"{name} ({cid})",
                len(members),
                *[h.pct(e) for e in errors],
                h.pct(max(errors) - min(errors)),
                h.pct(differ / len(members)),
            ]
        )
    header = ["class", "images", *[f"top-1 error: {t}" for t in titles]]
    header += ["spread", "answers differ"]
    return h.table(header, rows, caption="Per class, side by side", sortable=True)


def _split_cards(
    ctx: SectionContext, per_run: Sequence[Mapping[str, Answer]], ids: Sequence[str]
) -> list[str]:
    """A seeded sample of the images some runs get right and others wrong, each with every
    run's answer."""
    split = [i for i in ids if outcome([a[i] for a in per_run]) == OUTCOMES[1]]
    if not split or ctx.cfg.examples == 0:
        return []
    shown = sample(split, ctx.cfg.examples, ctx.rng("agreement", 0))
    first = ctx.runs[0]
    tiles = []
    for image_id in shown:
        p = ctx.preds(first)[image_id]
        lines = [image_id, f"true: {first.classes.label(p['label'])}"]
        for run, a in zip(ctx.runs, per_run, strict=True):
            q = ctx.preds(run)[image_id]
            mark = "right" if a[image_id].right else "wrong"
            lines.append(
                f"{run.title}: {run.classes.short(q['top5_classes'][0])} "
                f"({q['top5_probs'][0]:.2f}), {mark}"
            )
        tiles.append(h.figure(ctx.pictures.of_array(ctx.crop(first, p)), image_id, lines))
    return [
        h.heading(3, "Images the runs split on"),
        h.para(
            f"{len(split)} images are right in some runs and wrong in others; a seeded sample "
            f"of {len(shown)} is shown."
        ),
        h.grid(tiles),
    ]
