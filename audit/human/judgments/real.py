"""**ReaL** (Beyer et al. 2020, ``real.json``): multi-label "reassessed" validation labels.

A JSON list of 50,000 lists of valid class indices, in **file-name order** (position i is
``ILSVRC2012_val_{i+1:08d}``). Empty lists mean no label fits; those images are skipped. A
prediction is right at top-1 when its top class is in the set, at top-5 when any of its top 5
is (timm's ``RealLabelsImagenet``).

This is the smallest source; copy it to add one (docs/architecture.md, "Adding a judgment
source").
"""

from __future__ import annotations

from collections.abc import Mapping
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
    val_image_id,
)
from audit.human.judgments.registry import JudgmentSource, ReadText, register_source


def read_real(text: str, source: str = "real.json") -> dict[str, list[int]]:
    """``real.json`` -> image_id -> valid class indices (empty list: no label fits).

    Raises:
        PublicDataError: Not a JSON list of lists of non-negative integers.
    """
    data = _load_json(text, source)
    if not isinstance(data, list):
        raise PublicDataError(f"{source}: expected a JSON list (one entry per validation image)")
    return {val_image_id(i + 1): _label_list(v, f"{source}: entry {i}") for i, v in enumerate(data)}


def real_table(predictions: pa.Table, real: Mapping[str, list[int]]) -> pa.Table:
    """ReaL top-1/top-5 accuracy next to the original accuracy, with the counts behind them."""
    preds = _predictions(predictions)
    valid = real_valid(real)
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


def real_valid(real: Mapping[str, list[int]]) -> dict[str, set[int]]:
    """image_id -> the ReaL label set, for the images that have one."""
    return {i: set(v) for i, v in real.items() if v}


def _read(text: str, source: str, params: Mapping[str, Any], read_text: ReadText) -> Any:
    return read_real(text, source)


def _table(predictions: pa.Table, judgments: Any, params: Mapping[str, Any]) -> pa.Table:
    return real_table(predictions, judgments)


register_source(
    JudgmentSource(
        name="real",
        flag="--real",
        help="ReaL labels, real.json.",
        order=10,
        read=_read,
        table=_table,
        labels=lambda predictions, judgments, params: real_valid(judgments),
    )
)
