"""**cleanlab** (Northcutt et al. 2021, ``imagenet_mturk.json``): MTurk-validated label errors.

5,440 candidate label errors, 5 MTurk votes each among ``given`` (the original label),
``guessed`` (cleanlab's guess), ``both`` and ``neither``. ``id`` is the 1-based validation
**file number**. With a majority of ``majority`` votes (3 of 5): ``given`` confirms the label;
``guessed`` replaces it; ``both`` accepts either; ``neither`` and no majority drop the image.
``given < majority`` is a validated label error (2,916 in the file). Images not in the file
keep their label.
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
    predictions: pa.Table, votes: Sequence[CleanlabVote], majority: int = 3
) -> pa.Table:
    """Accuracy with cleanlab's MTurk-validated corrections (module docstring), with counts."""
    preds = _predictions(predictions)
    by_id = {v.image_id: v for v in votes}
    valid: dict[str, set[int]] = {}
    categories: dict[str, int] = dict.fromkeys(
        ("confirmed", "guessed", "both", "neither", "no_majority"), 0
    )
    mismatched = 0
    for image_id, p in preds.items():
        if p.label is None:
            continue
        vote = by_id.get(image_id)
        if vote is None:
            valid[image_id] = {p.label}
            continue
        mismatched += vote.given != p.label
        cat = vote.category(majority)
        categories[cat] += 1
        if cat == "confirmed":
            valid[image_id] = {p.label}
        elif cat == "guessed":
            valid[image_id] = {vote.guessed}
        elif cat == "both":
            valid[image_id] = {p.label, vote.guessed}
    rows = _all_rows(preds) + _set_rows("cleanlab-rectified", preds, valid)
    checked = sum(categories.values())
    rows += [
        _count("predictions among cleanlab's MTurk-checked candidates", checked),
        _count(
            "validated label errors among them (given < majority)",
            checked - categories["confirmed"],
        ),
        _count("label replaced by cleanlab's guess", categories["guessed"]),
        _count("both labels accepted", categories["both"]),
        _count("dropped: neither label fits", categories["neither"]),
        _count("dropped: no majority", categories["no_majority"]),
        _count("candidates whose given label differs from the prediction table's", mismatched),
    ]
    return pa.Table.from_pylist(rows, schema=PUBLIC_SCHEMA)


def _read(text: str, source: str, params: Mapping[str, Any], read_text: ReadText) -> Any:
    return read_cleanlab(text, source)


def _table(predictions: pa.Table, judgments: Any, params: Mapping[str, Any]) -> pa.Table:
    return cleanlab_table(predictions, judgments, params["majority"])


register_source(
    JudgmentSource(
        name="cleanlab",
        flag="--cleanlab",
        help="cleanlab's imagenet_mturk.json.",
        order=20,
        read=_read,
        table=_table,
        params={"majority": 3},
    )
)
