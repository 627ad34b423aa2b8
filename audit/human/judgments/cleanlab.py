"""**cleanlab** (Northcutt et al. 2021, ``imagenet_mturk.json``): MTurk-validated label errors.

5,440 candidate label errors, 5 MTurk votes each among ``given`` (the original label),
``guessed`` (cleanlab's guess), ``both`` and ``neither``. ``id`` is the 1-based validation
**file number**. Images not in the file keep their label. Two readings:

- **k-of-n** (the headline ``cleanlab-rectified`` rows, over every labeled prediction of the
  run, as the paper's rectified errors are over the whole set): a prediction is right if it is
  the given label, or cleanlab's guessed label with at least ``k`` of the 5 votes for
  ``guessed`` or ``both``. Every image is judged.
- **majority** (cleanlab's own reading): with a majority of ``majority`` votes (3 of 5),
  ``given`` confirms the label; ``guessed`` replaces it; ``both`` accepts either; ``neither``
  and no majority leave the image unjudged, so its rows are over fewer images, and the table
  says how many it could not judge.

``given < majority`` is a validated label error (2,916 in the file).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from audit.human.judgments.common import (
    PUBLIC_SCHEMA,
    PublicDataError,
    _all_rows,
    _count,
    _load_json,
    _predictions,
    _set_rows,
    val_image_id,
)
from audit.human.judgments.registry import JudgmentSource, ReadText, register_source


@dataclass(frozen=True)
class CleanlabVote:
    """One ``imagenet_mturk.json`` entry."""

    image_id: str
    given: int
    guessed: int
    votes: dict[str, int]

    def category(self, majority: int) -> str:
        """``confirmed``, ``guessed``, ``both``, ``neither`` or ``no_majority``."""
        if self.votes["given"] >= majority:
            return "confirmed"
        for name in ("guessed", "both", "neither"):
            if self.votes[name] >= majority:
                return name
        return "no_majority"


def read_cleanlab(text: str, source: str = "imagenet_mturk.json") -> list[CleanlabVote]:
    """cleanlab's ``imagenet_mturk.json`` -> one :class:`CleanlabVote` per entry.

    Raises:
        PublicDataError: A missing or mistyped field (names the entry), or a repeated id.
    """
    data = _load_json(text, source)
    if not isinstance(data, list):
        raise PublicDataError(f"{source}: expected a JSON list of candidates")
    out = []
    seen: set[int] = set()
    for i, rec in enumerate(data):
        where = f"{source}: entry {i}"
        try:
            number = rec["id"]
            given = rec["given_original_label"]
            guessed = rec["our_guessed_label"]
            votes = {k: rec["mturk"][k] for k in ("given", "guessed", "neither", "both")}
        except (KeyError, TypeError) as exc:
            raise PublicDataError(f"{where}: missing field {exc}") from None
        values = [number, given, guessed, *votes.values()]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            raise PublicDataError(f"{where}: id, labels and votes must be non-negative integers")
        if number < 1 or number in seen:
            raise PublicDataError(f"{where}: id {number} is not a new 1-based file number")
        seen.add(number)
        out.append(CleanlabVote(val_image_id(number), given, guessed, votes))
    return out


def cleanlab_table(
    predictions: pa.Table, votes: Sequence[CleanlabVote], majority: int = 3, k: int = 3
) -> pa.Table:
    """Accuracy with cleanlab's MTurk-validated corrections, read both ways (module docstring),
    with counts of what each reading could not judge.

    Raises:
        PublicDataError: ``k`` or ``majority`` is not between 1 and 5.
    """
    for name, value in (("k", k), ("majority", majority)):
        if not 1 <= value <= 5:
            raise PublicDataError(f"cleanlab: {name} must be between 1 and 5 votes, got {value}")
    preds = _predictions(predictions)
    by_id = {v.image_id: v for v in votes}
    k_of_n: dict[str, set[int]] = {}
    by_majority: dict[str, set[int]] = {}
    categories: dict[str, int] = dict.fromkeys(
        ("confirmed", "guessed", "both", "neither", "no_majority"), 0
    )
    mismatched = 0
    for image_id, p in preds.items():
        if p.label is None:
            continue
        vote = by_id.get(image_id)
        if vote is None:
            k_of_n[image_id] = by_majority[image_id] = {p.label}
            continue
        mismatched += vote.given != p.label
        backed = vote.votes["guessed"] + vote.votes["both"] >= k
        k_of_n[image_id] = {p.label, vote.guessed} if backed else {p.label}
        cat = vote.category(majority)
        categories[cat] += 1
        if cat == "confirmed":
            by_majority[image_id] = {p.label}
        elif cat == "guessed":
            by_majority[image_id] = {vote.guessed}
        elif cat == "both":
            by_majority[image_id] = {p.label, vote.guessed}
    rows = _all_rows(preds) + _set_rows(f"cleanlab-rectified ({k} of 5)", preds, k_of_n)
    rows += _set_rows(
        f"cleanlab majority-rule ({majority} of 5)",
        preds,
        by_majority,
        same="images the majority rule judges",
    )
    checked = sum(categories.values())
    labeled = sum(p.label is not None for p in preds.values())
    rows += [
        _count("predictions among cleanlab's MTurk-checked candidates", checked),
        _count(
            "validated label errors among them (given < majority)",
            checked - categories["confirmed"],
        ),
        _count(f"guessed label also right: {k}+ votes for guessed or both", _backed(votes, k)),
        _count("images the k-of-n reading could not judge", labeled - len(k_of_n)),
        _count("majority rule: label replaced by cleanlab's guess", categories["guessed"]),
        _count("majority rule: both labels accepted", categories["both"]),
        _count("majority rule could not judge: neither label fits", categories["neither"]),
        _count("majority rule could not judge: no majority", categories["no_majority"]),
        _count("candidates whose given label differs from the prediction table's", mismatched),
    ]
    return pa.Table.from_pylist(rows, schema=PUBLIC_SCHEMA)


def cleanlab_valid(
    predictions: pa.Table, votes: Sequence[CleanlabVote], k: int = 3
) -> dict[str, set[int]]:
    """The k-of-n reading on cleanlab's candidates only: image_id -> the prediction table's
    label, with cleanlab's guess too when at least ``k`` votes back it (labeled images)."""
    preds = _predictions(predictions)
    out: dict[str, set[int]] = {}
    for vote in votes:
        p = preds.get(vote.image_id)
        if p is None or p.label is None:
            continue
        backed = vote.votes["guessed"] + vote.votes["both"] >= k
        out[vote.image_id] = {p.label, vote.guessed} if backed else {p.label}
    return out


def _backed(votes: Sequence[CleanlabVote], k: int) -> int:
    """Candidates whose guessed label has at least ``k`` votes for ``guessed`` or ``both``."""
    return sum(v.votes["guessed"] + v.votes["both"] >= k for v in votes)


def _read(text: str, source: str, params: Mapping[str, Any], read_text: ReadText) -> Any:
    return read_cleanlab(text, source)


def _table(predictions: pa.Table, judgments: Any, params: Mapping[str, Any]) -> pa.Table:
    return cleanlab_table(predictions, judgments, params["majority"], params["k"])


register_source(
    JudgmentSource(
        name="cleanlab",
        flag="--cleanlab",
        help="cleanlab's imagenet_mturk.json.",
        order=20,
        read=_read,
        table=_table,
        params={"majority": 3, "k": 3},
        labels=lambda predictions, judgments, params: cleanlab_valid(
            predictions, judgments, params["k"]
        ),
    )
)
