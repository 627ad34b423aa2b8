"""``audit.open_run``: a run for a notebook (audit/notebook.py, docs/notebook.md).

The per-class frame is checked against a plain loop over rows read with pyarrow.dataset alone
(hand-made tables with nulls, unlabeled rows and a class with no adversarial row; then the
shared demo run) and against the run's own ``metrics`` table; the nullable pandas dtypes
against the Arrow nulls; and DuckDB reads the frames as the docs show.
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pytest

import audit
from audit.notebook import PER_CLASS_COLUMNS, per_class_table, to_pandas
from audit.run.manifest_types import NoRunError

CLASSES = pa.table(
    {
        "index": pa.array([0, 1, 2, 3], pa.int32()),
        "class_id": ["c0", "c1", "c2", "c3"],
        "name": ["zero", "one", "two", "three"],
    }
)


def plain_per_class(preds: list[dict[str, Any]], adv: list[dict[str, Any]]) -> dict[int, dict]:
    """The per-class figures by a loop over rows, the way docs/notebook.md defines them."""
    by: dict[int, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for r in preds:
        if r["label"] is None:
            continue
        b = by[r["label"]]
        b["top1"].append(r["correct_top1"])
        b["top5"].append(r["correct_top5"])
        b["loss"].append(r["loss"])
        b["prob"].append(r["label_prob"])
    for r in adv:
        if r["label"] is not None and r["label"] in by:
            b = by[r["label"]]
            b["same"].append(r["adv_class"] == r["label"])
            b["steps"].append(r["steps_to_flip"])
    out = {}
    for c, b in by.items():
        n, steps = len(b["top1"]), b["steps"]
        flipped = [s for s in steps if s is not None]
        out[c] = {
            "images": n,
            "top1_error": 1 - sum(b["top1"]) / n,
            "top5_error": 1 - sum(b["top5"]) / n,
            "mean_loss": sum(b["loss"]) / n,
            "mean_label_prob": sum(b["prob"]) / n,
            "attacked": len(steps),
            "adv_top1_accuracy": sum(b["same"]) / len(steps) if steps else None,
            "mean_steps_to_flip": sum(flipped) / len(flipped) if flipped else None,
            "never_flipped": (len(steps) - len(flipped)) / len(steps) if steps else None,
        }
    return out


def assert_frame_matches(frame: pd.DataFrame, expected: dict[int, dict], names: pa.Table) -> None:
    assert tuple(frame.columns) == PER_CLASS_COLUMNS
    assert frame["index"].tolist() == sorted(expected)
    ids = names.column("class_id").to_pylist()
    for row in frame.to_dict("records"):
        want = expected[row["index"]]
        assert row["class_id"] == ids[row["index"]]
        for key, value in want.items():
            got = row[key]
            if value is None:  # a nullable column's <NA> (to_dict gives it as None)
                assert pd.isna(got), (row["index"], key, got)
            else:
                assert math.isclose(float(got), value, rel_tol=1e-6, abs_tol=1e-9), (key, got)


def test_per_class_equals_a_plain_loop_on_hand_made_tables() -> None:
    preds = [  # label, correct_top1, correct_top5, loss, label_prob
        (0, True, True, 0.1, 0.9),
        (0, False, True, 2.0, 0.2),
        (0, False, False, 3.0, 0.05),
        (1, True, True, 0.3, 0.7),
        (2, False, True, 1.5, 0.3),  # class 2: no adversarial row
        (None, None, None, None, None),  # unlabeled: not counted
    ]
    adv = [  # label, adv_class, steps_to_flip
        (0, 0, None),  # never flipped
        (0, 3, 0),  # already wrong
        (0, 1, 4),
        (1, 2, 1),
        (None, 1, 2),  # unlabeled
    ]
    pcols = ["label", "correct_top1", "correct_top5", "loss", "label_prob"]
    p_rows = [dict(zip(pcols, r, strict=True)) for r in preds]
    a_rows = [dict(zip(["label", "adv_class", "steps_to_flip"], r, strict=True)) for r in adv]
    ptable = pa.Table.from_pylist(
        p_rows,
        pa.schema(
            [
                ("label", pa.int32()),
                ("correct_top1", pa.bool_()),
                ("correct_top5", pa.bool_()),
                ("loss", pa.float32()),
                ("label_prob", pa.float32()),
            ]
        ),
    )
    atable = pa.Table.from_pylist(
        a_rows,
        pa.schema(
            [("label", pa.int32()), ("adv_class", pa.int32()), ("steps_to_flip", pa.int16())]
        ),
    )
    tables = {"predictions": ptable, "adversarial": atable}

    def read(name: str, columns: list[str]) -> pa.Table:
        return tables[name].select(columns)

    frame = to_pandas(per_class_table(read, CLASSES))
    assert_frame_matches(frame, plain_per_class(p_rows, a_rows), CLASSES)
    two = frame.set_index("index").loc[2]
    assert two["attacked"] == 0 and pd.isna(two["adv_top1_accuracy"])
    assert str(frame["adv_top1_accuracy"].dtype) == "Float64"  # <NA>, not NaN


def test_nullable_dtypes() -> None:
    t = pa.table(
        {
            "steps_to_flip": pa.array([1, None, 0], pa.int16()),
            "ok": pa.array([True, None, False]),
            "p": pa.array([0.5, None, 1.0], pa.float32()),
            "s": pa.array(["a", None, "c"]),
            "top5": pa.array([[1, 2], [3], []], pa.list_(pa.int32())),
        }
    )
    df = to_pandas(t)
    assert [str(d) for d in df.dtypes] == ["Int16", "boolean", "Float32", "string", "object"]
    assert df["steps_to_flip"].isna().tolist() == [False, True, False]
    assert df["steps_to_flip"].sum() == 1  # integers stay integers; a NaN would be a float
    assert df["ok"].isna().tolist() == [False, True, False]


def test_a_folder_without_a_run_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NoRunError, match="not a run folder"):
        audit.open_run(str(tmp_path))


def test_import_audit_does_not_import_the_notebook_module() -> None:
    """Every Ray worker imports ``audit``: ``open_run`` (pandas, the reader) loads on use."""
    code = (
        "import sys, audit; assert 'audit.notebook' not in sys.modules; "
        "audit.open_run; assert 'audit.notebook' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _dataset_rows(run: str, table: str, columns: list[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = (
        pads.dataset(f"{run}/{table}", format="parquet").to_table(columns=columns).to_pylist()
    )
    return rows


def test_open_run_on_the_demo_run(demo_run: str) -> None:
    import duckdb

    run = audit.open_run(demo_run)
    assert run.state == "succeeded" and run.manifest.model.name == "demo_digits"
    assert {"predictions", "errors", "adversarial", "classes", "metrics"} <= set(run.tables)
    classes = run.classes()
    assert classes["class_id"].tolist() == [f"digit_{i}" for i in range(10)]

    pcols = ["label", "correct_top1", "correct_top5", "loss", "label_prob"]
    preds = _dataset_rows(demo_run, "predictions", pcols)
    adv = _dataset_rows(demo_run, "adversarial", ["label", "adv_class", "steps_to_flip"])
    frame = run.per_class()
    assert_frame_matches(frame, plain_per_class(preds, adv), run._classes)

    # the run's own metrics rows agree (computed on the fly by the driver, not from the tables)
    metrics = run.df("metrics")
    by_class = frame.set_index("class_id")
    for name in ("top1_error", "top5_error", "adv_top1_accuracy"):
        rows = metrics[(metrics["name"] == name) & (metrics["scope"] != "all")]
        assert len(rows) == len(frame)
        for scope, value, count in zip(rows["scope"], rows["value"], rows["count"], strict=True):
            assert math.isclose(by_class.loc[scope, name], value, abs_tol=1e-9), (name, scope)
            assert count == by_class.loc[scope, "images"]

    # calibration: a plain loop over the labeled rows with its own 15 bins
    rows = _dataset_rows(demo_run, "predictions", ["label", "top5_probs", "correct_top1"])
    labeled = [r for r in rows if r["label"] is not None]
    cal = run.calibration()
    assert cal is not None and cal.images == len(labeled)
    bins: dict[int, list[tuple[float, bool]]] = {}
    for r in labeled:
        c = r["top5_probs"][0]
        b = min(14, max(k for k in range(15) if c >= k / 15))
        bins.setdefault(b, []).append((c, r["correct_top1"]))
    ece = sum(
        len(v) / len(labeled) * abs(sum(h for _, h in v) / len(v) - sum(c for c, _ in v) / len(v))
        for v in bins.values()
    )
    assert cal.counts == tuple(len(bins.get(b, [])) for b in range(15))
    assert math.isclose(cal.ece, ece, abs_tol=1e-12)

    # never flipped is <NA> in an Int16 column, as many as Arrow's nulls
    steps = run.df("adversarial", columns=["image_id", "steps_to_flip"])
    assert str(steps["steps_to_flip"].dtype) == "Int16"
    assert int(steps["steps_to_flip"].isna().sum()) == sum(r["steps_to_flip"] is None for r in adv)

    # DuckDB reads the frames as docs/notebook.md shows
    worst = duckdb.sql(
        "select class_id, top1_error from frame order by top1_error desc, class_id limit 3"
    ).fetchall()
    expected = frame.sort_values(["top1_error", "class_id"], ascending=[False, True]).head(3)
    assert [c for c, _ in worst] == expected["class_id"].tolist()
