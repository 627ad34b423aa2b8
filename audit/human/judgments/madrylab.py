"""**MadryLab** (Tsipras et al. 2020, ``madrylab_classify_task.jsonl``): per-worker selections.

Per image, the classes each of 6-9 workers judged present (``selected``). A class is valid when
at least ``min_fraction`` of the workers selected it. Records carry ``filename``; records that
carry only an **ImageFolder-order** index (``image_number`` / ``imagefolder_index``) need the
index -> file path list (cleanlab's ``imagenet_val_set_index_to_filepath.json``), given as the
``index_to_filepath`` parameter.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from audit.human.judgments.common import (
    PUBLIC_SCHEMA,
    PublicDataError,
    _all_rows,
    _count,
    _label_list,
    _load_json,
    _predictions,
    _set_rows,
    image_stem,
)
from audit.human.judgments.registry import JudgmentSource, ReadText, register_source


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


def madrylab_table(
    predictions: pa.Table, selections: Mapping[str, list[list[int]]], min_fraction: float = 0.5
) -> pa.Table:
    """Accuracy against the classes at least ``min_fraction`` of MadryLab's workers selected."""
    if not 0 < min_fraction <= 1:
        raise ValueError(f"min_fraction must be in (0, 1]. Got {min_fraction} instead.")
    preds = _predictions(predictions)
    valid = madrylab_valid(selections, min_fraction)
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


def madrylab_valid(
    selections: Mapping[str, list[list[int]]], min_fraction: float
) -> dict[str, set[int]]:
    """image_id -> the classes at least ``min_fraction`` of its workers selected (images
    without any such class are left out)."""
    valid: dict[str, set[int]] = {}
    for image_id, workers in selections.items():
        counts: dict[int, int] = {}
        for chosen in workers:
            for c in set(chosen):
                counts[c] = counts.get(c, 0) + 1
        keep = {c for c, n in counts.items() if workers and n >= min_fraction * len(workers)}
        if keep:
            valid[image_id] = keep
    return valid


def _read(text: str, source: str, params: Mapping[str, Any], read_text: ReadText) -> Any:
    path = params["index_to_filepath"]
    order = read_index_to_filepath(read_text(path), path) if path else None
    return read_madrylab(text, source, order)


def _table(predictions: pa.Table, judgments: Any, params: Mapping[str, Any]) -> pa.Table:
    return madrylab_table(predictions, judgments, params["min_fraction"])


register_source(
    JudgmentSource(
        name="madrylab",
        flag="--madrylab",
        help="MadryLab per-worker selections (JSON lines).",
        order=30,
        read=_read,
        table=_table,
        params={"index_to_filepath": None, "min_fraction": 0.5},
        labels=lambda predictions, judgments, params: madrylab_valid(
            judgments, params["min_fraction"]
        ),
    )
)
