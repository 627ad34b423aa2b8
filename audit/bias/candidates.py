"""The ``bias_candidates`` table: one row per bias the analyses of :mod:`audit.bias` point at.

| column | type | meaning |
|---|---|---|
| class | int32 | the class index the candidate is about |
| class_id | string | its class id (WordNet id) |
| kind | string | ``context``, ``coactivation`` or ``slice`` |
| evidence | string | one sentence saying what was found |
| statistic | float64 | the kind's ranking statistic (:data:`STATISTIC_MEANING`) |
| p_value | float64, null | Benjamini-Hochberg adjusted p-value (:data:`P_VALUE_MEANING`) |
| effect_size | float64, null | the kind's effect size (:data:`EFFECT_SIZE_MEANING`) |
| exemplar_ids | list<string> | image ids that show it, most telling first |
| rank | int32 | 1 = the strongest candidate of its kind |

The builders (:func:`context_rows`, :func:`coactivation_rows`, :func:`slice_rows`) turn the
analyses' outputs into :class:`Candidate` rows ranked within their kind; :func:`candidates_table`
writes any mix of them with the schema :data:`BIAS_CANDIDATES`. NaN becomes null in the
nullable columns.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import pyarrow as pa

from audit.bias.coactivation import CoactivationResult
from audit.bias.context import ContextRank
from audit.bias.slices import Slice
from audit.report.bias import benjamini_hochberg
from audit.store import BIAS_CANDIDATES_TABLE

KINDS = ("context", "coactivation", "slice")

CONTEXT_STATISTIC = (
    "Context score: the mean share of the positive LIME weight that lies outside the object's "
    "boxes, over the explanations of the class (the images the model put in it)."
)
COACTIVATION_STATISTIC = (
    "Rank-biserial correlation P(a > b) - P(a < b) of the co-activated class's score between "
    "the first group (e.g. criticisms) and the second (e.g. prototypes) of the class's images."
)
SLICE_STATISTIC = (
    "Error rate (share of images with a wrong top-1) of the slice, a k-means cluster of the "
    "class's embeddings."
)
STATISTIC_MEANING: Mapping[str, str] = {
    "context": CONTEXT_STATISTIC,
    "coactivation": COACTIVATION_STATISTIC,
    "slice": SLICE_STATISTIC,
}
"""One sentence per kind on what ``statistic`` holds."""

CONTEXT_EFFECT = "The context score minus the same mean over the other classes' images."
COACTIVATION_EFFECT = (
    "Cohen's d of the co-activated class's score, first group minus second (pooled SD)."
)
SLICE_EFFECT = "The slice's error rate minus the error rate of the class's other images."
EFFECT_SIZE_MEANING: Mapping[str, str] = {
    "context": CONTEXT_EFFECT,
    "coactivation": COACTIVATION_EFFECT,
    "slice": SLICE_EFFECT,
}
"""One sentence per kind on what ``effect_size`` holds."""

CONTEXT_P = (
    "One-sided permutation test of the class's context reliance exceeding the other classes', "
    "Benjamini-Hochberg adjusted across the ranked classes."
)
COACTIVATION_P = (
    "Two-sided Mann-Whitney U test, Benjamini-Hochberg adjusted across the classes tested "
    "for this class and pair of groups."
)
SLICE_P = (
    "Fisher's exact test of the slice's errors vs the rest of the class's, "
    "Benjamini-Hochberg adjusted across all the slices in the table."
)
P_VALUE_MEANING: Mapping[str, str] = {
    "context": CONTEXT_P,
    "coactivation": COACTIVATION_P,
    "slice": SLICE_P,
}
"""One sentence per kind on what ``p_value`` holds."""

BIAS_CANDIDATES = BIAS_CANDIDATES_TABLE.schema()


@dataclass(frozen=True)
class Candidate:
    """One row of ``bias_candidates`` (columns in the module docstring); ``label`` is the
    ``class`` column. NaN ``p_value`` / ``effect_size`` are written as null."""

    label: int
    class_id: str
    kind: str
    evidence: str
    statistic: float
    p_value: float
    effect_size: float
    exemplar_ids: tuple[str, ...]
    rank: int = 0


def _class_id(class_ids: Mapping[int, str] | Sequence[str], label: int) -> str:
    """The id of ``label``; its index as text when the mapping lacks it."""
    if isinstance(class_ids, Mapping):
        return str(class_ids.get(label, label))
    return str(class_ids[label]) if 0 <= label < len(class_ids) else str(label)


def _pct(x: float) -> str:
    return f"{x:.0%}" if math.isfinite(x) else "n/a"


def _g(x: float) -> str:
    return f"{x:.2g}" if math.isfinite(x) else "n/a"


def _numbered(rows: list[Candidate]) -> list[Candidate]:
    """``rows`` (already in rank order) with ``rank`` 1, 2, ..."""
    return [replace(r, rank=i) for i, r in enumerate(rows, start=1)]


def context_rows(
    ranks: Iterable[ContextRank],
    class_ids: Mapping[int, str] | Sequence[str],
    *,
    alpha: float | None = None,
    top: int | None = None,
) -> list[Candidate]:
    """Rows of kind ``context`` from :func:`audit.bias.context.rank_classes_by_context`.

    Args:
        ranks: The ranking (any order; rows keep its ``rank`` order, renumbered 1..).
        class_ids: Class index -> id (the ``classes`` table, as a mapping or a list).
        alpha: Keep only classes with ``q_value <= alpha``; None keeps every ranked class.
        top: Keep at most this many (after ``alpha``).
    """
    rows = []
    for r in sorted(ranks, key=lambda r: r.rank):
        if alpha is not None and not (math.isfinite(r.q_value) and r.q_value <= alpha):
            continue
        cid = _class_id(class_ids, r.label)
        evidence = (
            f"{cid}: {_pct(r.score)} of the positive LIME weight of its {r.n} explanations "
            f"(images the model called {cid}) lies outside the object, vs "
            f"{_pct(r.rest_mean)} for the other classes (q = {_g(r.q_value)})."
        )
        rows.append(
            Candidate(
                r.label, cid, "context", evidence, r.score, r.q_value, r.effect, r.exemplar_ids
            )
        )
    return _numbered(rows[:top] if top is not None else rows)


def coactivation_rows(
    results: Iterable[CoactivationResult],
    class_ids: Mapping[int, str] | Sequence[str],
    *,
    top: int | None = None,
) -> list[Candidate]:
    """Rows of kind ``coactivation``: one per co-activated class in each result's ``top``.

    Ranked by effect (largest first), then ``q_value``, class, co-activated class.

    Args:
        results: :func:`audit.bias.coactivation.coactivation` outputs with a ``label``.
        class_ids: Class index -> id.
        top: Keep at most this many rows overall (after ranking).

    Raises:
        ValueError: a result without a ``label``.
    """
    rows: list[tuple[tuple[float, float, int, int], Candidate]] = []
    for res in results:
        if res.label is None:
            raise ValueError("A coactivation result needs its class (label) for the table.")
        cid = _class_id(class_ids, res.label)
        name_a, name_b = res.names
        for c in res.top:
            other = _class_id(class_ids, c.other)
            evidence = (
                f"{cid}: the model's score of {other} is higher in {name_a} ({res.n_a} images) "
                f"than in {name_b} ({res.n_b}): mean {c.mean_a:.3g} vs {c.mean_b:.3g}, "
                f"rank-biserial {c.effect:+.2f}, q = {_g(c.q_value)}."
            )
            rows.append(
                (
                    (-c.effect, c.q_value, res.label, c.other),
                    Candidate(
                        res.label,
                        cid,
                        "coactivation",
                        evidence,
                        c.effect,
                        c.q_value,
                        c.cohens_d,
                        c.exemplar_ids,
                    ),
                )
            )
    rows.sort(key=lambda kr: kr[0])
    out = [c for _, c in rows]
    return _numbered(out[:top] if top is not None else out)


def slice_rows(
    slices: Iterable[Slice],
    class_ids: Mapping[int, str] | Sequence[str],
    *,
    alpha: float | None = None,
    top: int | None = None,
) -> list[Candidate]:
    """Rows of kind ``slice`` from :func:`audit.bias.slices.class_slices` of any classes.

    Fisher p-values are Benjamini-Hochberg adjusted across all the slices given, then rows are
    ranked by error rate (highest first), then mean steps to flip (fewest first), adjusted
    p-value, size (largest first), class and cluster.

    Args:
        slices: The slices (of one or more classes).
        class_ids: Class index -> id.
        alpha: Keep only slices with adjusted p-value ``<= alpha``; None keeps all.
        top: Keep at most this many rows overall (after ranking).
    """
    given = list(slices)
    q = benjamini_hochberg([s.p_value for s in given])
    keyed = []
    for s, qv in zip(given, q, strict=True):
        if alpha is not None and qv > alpha:
            continue
        cid = _class_id(class_ids, s.label)
        evidence = (
            f"{cid}: a slice of {s.size} of its {s.size + s.rest_size} images (cluster "
            f"{s.cluster} of {s.k}) has error rate {_pct(s.error_rate)} vs "
            f"{_pct(s.rest_error_rate)} for the rest, and flips in {s.mean_steps:.1f} IFGSM "
            f"steps on average vs {s.rest_mean_steps:.1f} (q = {_g(qv)})."
        )
        keyed.append(
            (
                (-s.error_rate, s.mean_steps, qv, -s.size, s.label, s.cluster),
                Candidate(
                    s.label, cid, "slice", evidence, s.error_rate, qv, s.effect, s.exemplar_ids
                ),
            )
        )
    keyed.sort(key=lambda kr: kr[0])
    out = [c for _, c in keyed]
    return _numbered(out[:top] if top is not None else out)


def _nullable(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def candidates_table(rows: Iterable[Candidate]) -> pa.Table:
    """The ``bias_candidates`` table of ``rows`` (in the given order), with its schema.

    Raises:
        ValueError: a row of an unknown kind.
    """
    rows = list(rows)
    for r in rows:
        if r.kind not in KINDS:
            raise ValueError(f"Unknown candidate kind {r.kind!r}; expected one of {KINDS}.")
    return pa.table(
        {
            "class": pa.array([r.label for r in rows], pa.int32()),
            "class_id": pa.array([r.class_id for r in rows], pa.string()),
            "kind": pa.array([r.kind for r in rows], pa.string()),
            "evidence": pa.array([r.evidence for r in rows], pa.string()),
            "statistic": pa.array([float(r.statistic) for r in rows], pa.float64()),
            "p_value": pa.array([_nullable(r.p_value) for r in rows], pa.float64()),
            "effect_size": pa.array([_nullable(r.effect_size) for r in rows], pa.float64()),
            "exemplar_ids": pa.array([list(r.exemplar_ids) for r in rows], pa.list_(pa.string())),
            "rank": pa.array([r.rank for r in rows], pa.int32()),
        },
        schema=BIAS_CANDIDATES,
    )
