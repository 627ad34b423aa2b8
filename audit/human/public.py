"""Rectified accuracy from public human judgments, for any predictions table, without a study.

Three sources, each passed as a file by the user (nothing is downloaded or bundled):

* **ReaL** (Beyer et al. 2020, ``real.json``): a JSON list of 50,000 lists of valid class
  indices, in **file-name order** (position i is ``ILSVRC2012_val_{i+1:08d}``). Empty lists mean
  no label fits; those images are skipped. A prediction is right at top-1 when its top class is
  in the set, at top-5 when any of its top 5 is (timm's ``RealLabelsImagenet``).
* **cleanlab** (Northcutt et al. 2021, ``imagenet_mturk.json``): 5,440 candidate label errors,
  5 MTurk votes each among ``given`` (the original label), ``guessed`` (cleanlab's guess),
  ``both`` and ``neither``. ``id`` is the 1-based validation **file number**. With a majority of
  ``majority`` votes (3 of 5): ``given`` confirms the label; ``guessed`` replaces it; ``both``
  accepts either; ``neither`` and no majority drop the image. ``given < majority`` is a
  validated label error (2,916 in the file). Images not in the file keep their label.
* **MadryLab** (Tsipras et al. 2020, ``madrylab_classify_task.jsonl``): per image, the classes
  each of 6-9 workers judged present (``selected``). A class is valid when at least
  ``min_fraction`` of the workers selected it. Records carry ``filename``; records that carry
  only an **ImageFolder-order** index (``image_number`` / ``imagefolder_index``) need the
  index -> file path list (cleanlab's ``imagenet_val_set_index_to_filepath.json``).

Predictions are matched by ``image_id``, the file name without folder or extension.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from audit.errors import AuditError

PUBLIC_SCHEMA = pa.schema(
    [
        ("measure", pa.string()),
        ("accuracy", pa.float64()),  # null for rows that only count images
        ("images", pa.int64()),
    ]
)


class PublicDataError(AuditError, ValueError):
    """A public judgments file is not in the expected format (message names file and entry)."""


def val_image_id(number: int) -> str:
    """1-based validation file number -> ``ILSVRC2012_val_00000001``."""
    return f"ILSVRC2012_val_{number:08d}"


def image_stem(name: str) -> str:
    """``val/n01440764/ILSVRC2012_val_00000293.JPEG`` -> ``ILSVRC2012_val_00000293``."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[0] if "." in base else base


def _load_json(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PublicDataError(f"{source}: not JSON: {exc}") from None


def _label_list(value: Any, where: str) -> list[int]:
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        raise PublicDataError(f"{where}: expected a list of class indices, got {value!r}")
    return list(value)


def read_real(text: str, source: str = "real.json") -> dict[str, list[int]]:
    """``real.json`` -> image_id -> valid class indices (empty list: no label fits).

    Raises:
        PublicDataError: Not a JSON list of lists of non-negative integers.
    """
    data = _load_json(text, source)
    if not isinstance(data, list):
        raise PublicDataError(f"{source}: expected a JSON list (one entry per validation image)")
    return {val_image_id(i + 1): _label_list(v, f"{source}: entry {i}") for i, v in enumerate(data)}


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


def read_index_to_filepath(text: str, source: str = "index_to_filepath.json") -> list[str]:
    """A JSON list of file paths in ImageFolder order -> the list (position = index).

    Raises:
        PublicDataError: Not a list of strings.
    """
    data = _load_json(text, source)
    if not isinstance(data, list) or not all(isinstance(p, str) for p in data):
        raise PublicDataError(f"{source}: expected a JSON list of file paths")
    return data


def read_madrylab(
    text: str, source: str = "madrylab.jsonl", index_to_filepath: Sequence[str] | None = None
) -> dict[str, list[list[int]]]:
    """MadryLab's per-worker selections (JSON lines) -> image_id -> one class list per worker.

    Raises:
        PublicDataError: A line that is not JSON, has no ``selected``, or identifies its image
            only by an ImageFolder index while no ``index_to_filepath`` list was given.
    """
    out: dict[str, list[list[int]]] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{source}: line {n}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PublicDataError(f"{where}: not JSON: {exc}") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("selected"), list):
            raise PublicDataError(f"{where}: no 'selected' list")
        if isinstance(rec.get("filename"), str):
            image_id = image_stem(rec["filename"])
        else:
            index = rec.get("image_number", rec.get("imagefolder_index"))
            if not isinstance(index, int):
                raise PublicDataError(f"{where}: neither 'filename' nor 'image_number'")
            if index_to_filepath is None:
                raise PublicDataError(
                    f"{where}: images are given by ImageFolder index; pass the index-to-filepath "
                    "list (cleanlab's imagenet_val_set_index_to_filepath.json)"
                )
            if not 0 <= index < len(index_to_filepath):
                raise PublicDataError(f"{where}: image_number {index} is outside the file list")
            image_id = image_stem(index_to_filepath[index])
        out[image_id] = [_label_list(s, where) for s in rec["selected"]]
    return out


@dataclass(frozen=True)
class _Pred:
    label: int | None
    top5: list[int]


def _predictions(predictions: pa.Table) -> dict[str, _Pred]:
    ids = [image_stem(str(i)) for i in predictions.column("image_id").to_pylist()]
    labels = predictions.column("label").to_pylist()
    top5 = predictions.column("top5_classes").to_pylist()
    return {
        i: _Pred(lab, [int(c) for c in t or []])
        for i, lab, t in zip(ids, labels, top5, strict=True)
    }


def _accuracy(hits: Iterable[bool]) -> tuple[float | None, int]:
    values = list(hits)
    return (sum(values) / len(values) if values else None), len(values)


def _row(measure: str, hits: Iterable[bool]) -> dict[str, Any]:
    acc, n = _accuracy(hits)
    return {"measure": measure, "accuracy": acc, "images": n}


def _count(measure: str, n: int) -> dict[str, Any]:
    return {"measure": measure, "accuracy": None, "images": n}


def _set_rows(
    name: str, preds: Mapping[str, _Pred], valid: Mapping[str, set[int]]
) -> list[dict[str, Any]]:
    """Original and multi-label top-1/top-5 accuracy on the images ``valid`` covers."""
    both = [i for i in sorted(valid) if i in preds]
    labeled = [i for i in both if preds[i].label is not None]
    rows = []
    for k in (1, 5):
        rows.append(
            _row(
                f"original top-{k} accuracy, same images",
                (preds[i].label in preds[i].top5[:k] for i in labeled),
            )
        )
        rows.append(
            _row(
                f"{name} top-{k} accuracy", (bool(valid[i] & set(preds[i].top5[:k])) for i in both)
            )
        )
    return rows


def _all_rows(preds: Mapping[str, _Pred]) -> list[dict[str, Any]]:
    labeled = [p for p in preds.values() if p.label is not None]
    return [
        _row(
            f"original top-{k} accuracy, all labeled predictions",
            (p.label in p.top5[:k] for p in labeled),
        )
        for k in (1, 5)
    ]


def real_table(predictions: pa.Table, real: Mapping[str, list[int]]) -> pa.Table:
    """ReaL top-1/top-5 accuracy next to the original accuracy, with the counts behind them."""
    preds = _predictions(predictions)
    valid = {i: set(v) for i, v in real.items() if v}
    rows = _all_rows(preds)
    rows += _set_rows("ReaL", preds, valid)
    rows.append(_count("predictions without a ReaL entry", sum(1 for i in preds if i not in real)))
    rows.append(
        _count(
            "predictions with an empty ReaL label set (skipped)",
            sum(1 for i in preds if i in real and not real[i]),
        )
    )
    return pa.Table.from_pylist(rows, schema=PUBLIC_SCHEMA)


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


def madrylab_table(
    predictions: pa.Table, selections: Mapping[str, list[list[int]]], min_fraction: float = 0.5
) -> pa.Table:
    """Accuracy against the classes at least ``min_fraction`` of MadryLab's workers selected."""
    if not 0 < min_fraction <= 1:
        raise ValueError(f"min_fraction must be in (0, 1]. Got {min_fraction} instead.")
    preds = _predictions(predictions)
    valid: dict[str, set[int]] = {}
    for image_id, workers in selections.items():
        counts: dict[int, int] = {}
        for chosen in workers:
            for c in set(chosen):
                counts[c] = counts.get(c, 0) + 1
        keep = {c for c, n in counts.items() if workers and n >= min_fraction * len(workers)}
        if keep:
            valid[image_id] = keep
    rows = _all_rows(preds) + _set_rows("MadryLab multi-label", preds, valid)
    rows.append(
        _count("predictions among MadryLab's images", sum(1 for i in selections if i in preds))
    )
    rows.append(
        _count(
            "of those without a class selected by enough workers (skipped)",
            sum(1 for i in selections if i in preds and i not in valid),
        )
    )
    return pa.Table.from_pylist(rows, schema=PUBLIC_SCHEMA)
