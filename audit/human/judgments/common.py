"""What every judgment source shares: the table schema, image ids, and the accuracy rows.

A source's table is built from the same rows: the original top-1/top-5 accuracy on all labeled
predictions (:func:`_all_rows`), the original and the source's accuracy on the images it
covers (:func:`_set_rows`), and counts (:func:`_count`). Predictions are matched by
``image_id``, the file name without folder or extension (:func:`image_stem`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
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


JUDGED_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),  # the image stem (:func:`image_stem`)
        ("valid_labels", pa.list_(pa.int64())),  # the classes the source accepts, sorted
    ]
)
"""A source's per-image judgments, ``human/judged/<name>.parquet``: one row per predicted
image the source judges (the report shows them on the image cards)."""


def judged_table(predictions: pa.Table, valid: Mapping[str, set[int]]) -> pa.Table:
    """:data:`JUDGED_SCHEMA` rows of the images of ``predictions`` that ``valid`` judges."""
    preds = _predictions(predictions)
    ids = sorted(i for i in valid if i in preds and valid[i])
    return pa.table(
        {"image_id": ids, "valid_labels": [sorted(valid[i]) for i in ids]}, schema=JUDGED_SCHEMA
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


@dataclass(frozen=True)
class _Pred:
    label: int | None
    top5: list[int]


def _predictions(predictions: pa.Table) -> dict[str, _Pred]:
    """A table with ``image_id``, ``label``, ``top5_classes`` -> image stem -> prediction."""
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
    name: str,
    preds: Mapping[str, _Pred],
    valid: Mapping[str, set[int]],
    same: str = "same images",
) -> list[dict[str, Any]]:
    """Original and multi-label top-1/top-5 accuracy on the images ``valid`` covers (the
    original rows are named ``original top-k accuracy, <same>``)."""
    both = [i for i in sorted(valid) if i in preds]
    labeled = [i for i in both if preds[i].label is not None]
    rows = []
    for k in (1, 5):
        rows.append(
            _row(
                f"original top-{k} accuracy, {same}",
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
