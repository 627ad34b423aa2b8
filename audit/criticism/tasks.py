"""Ray adapter of the criticism stage: one task per class over the finished Parquet tables.

Each task reads only its class's rows (a pyarrow dataset scan with a ``label == class`` filter
on the files the manifest lists), once per table and only the columns the requested selectors
declare, joins them by image id into a :class:`~audit.criticism.frame.ClassFrame`, runs the
selectors of :mod:`audit.criticism.selectors`, and returns that class's ``selections`` rows; the
driver writes them with the one Parquet writer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow.compute as pc

from audit.config import CriticismConfig
from audit.criticism.frame import ClassFrame
from audit.criticism.selectors import Selector, get_selector, required_columns
from audit.store import table_dataset

BASE_TABLE = "predictions"
"""The table whose rows (one per image of the class) the frame has; others join onto it."""

Row = tuple[str, str, int, str, float]
"""``(method, role, rank, image_id, score)``, rank 1 = best."""


def read_class(
    run_url: str,
    files: Sequence[str],
    columns: Sequence[str],
    cls: int,
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """Rows of one class (``label == cls``) from a table's files, as numpy columns."""
    table = table_dataset(run_url, files, storage_options).to_table(
        columns=list(columns), filter=pc.field("label") == cls
    )
    out: dict[str, np.ndarray] = {}
    for name in columns:
        col = table.column(name)
        if name in ("embedding", "top5_probs", "top5_classes"):
            out[name] = np.array(col.to_pylist(), dtype=np.float64)
        else:
            out[name] = col.to_numpy(zero_copy_only=False)
    return out


def read_frame(
    run_url: str,
    tables: Mapping[str, Sequence[str]],
    cls: int,
    needs: Mapping[str, Sequence[str]],
    storage_options: Mapping[str, Any] | None = None,
) -> ClassFrame:
    """Class ``cls``'s rows of the predictions table with the ``needs`` columns of every table.

    Args:
        tables: Table name -> files (relative to the run folder), from the manifest.
        needs: Table name -> columns (from :func:`~audit.criticism.selectors.required_columns`).

    Raises:
        ValueError: An image of the class has no row in a joined table.
    """
    base_cols = [c for c in needs.get(BASE_TABLE, ()) if c != "image_id"]
    base = read_class(run_url, tables[BASE_TABLE], ["image_id", *base_cols], cls, storage_options)
    ids = [str(x) for x in base["image_id"]]
    columns = {f"{BASE_TABLE}.{c}": base[c] for c in base_cols}
    if not ids:
        return ClassFrame(cls, np.array(ids, dtype=object), {})
    for table, cols in needs.items():
        if table == BASE_TABLE:
            continue
        names = [c for c in cols if c != "image_id"]
        got = read_class(run_url, tables[table], ["image_id", *names], cls, storage_options)
        where = {str(i): k for k, i in enumerate(got["image_id"])}
        missing = [i for i in ids if i not in where]
        if missing:
            raise ValueError(
                f"Class {cls}: {len(missing)} of {len(ids)} images have no row in the {table!r} "
                f"table (first: {missing[0]!r})."
            )
        pos = np.array([where[i] for i in ids], dtype=np.int64)
        columns.update({f"{table}.{c}": got[c][pos] for c in names})
    return ClassFrame(cls, np.array(ids, dtype=object), columns)


def selection_rows(selector: Selector) -> list[Row]:
    """A fitted selector's rows: its prototypes, then its criticisms, each ranked from 1."""
    rows: list[Row] = []
    for role, picked, scores in (
        ("prototype", selector.prototypes_, selector.prototype_scores_),
        ("criticism", selector.criticisms_, selector.criticism_scores_),
    ):
        for rank, (image_id, score) in enumerate(zip(picked, scores, strict=True), start=1):
            rows.append((selector.name, role, rank, image_id, float(score)))
    return rows


def select_class(
    run_url: str,
    tables: Mapping[str, Sequence[str]],
    cls: int,
    cfg: CriticismConfig,
    methods: Sequence[str],
    storage_options: Mapping[str, Any] | None = None,
) -> list[Row]:
    """Run every selector in ``methods`` on class ``cls``.

    Args:
        run_url: The run folder.
        tables: Table name -> files (relative to the run folder), from the manifest.
        cls: Class index.
        cfg: The criticism section; each selector takes its parameters from it.
        methods: Registered selector names (``criticism.methods``), all
            runnable on this run's tables (see :func:`~audit.criticism.selectors.runnable_methods`).

    Returns:
        Rows ``(method, role, rank, image_id, score)``, rank 1 = best, method by method in the
        order of ``methods``; none when the class has no predictions.
    """
    kinds = [get_selector(m) for m in methods]
    frame = read_frame(run_url, tables, cls, required_columns(methods), storage_options)
    if not len(frame):
        return []
    rows: list[Row] = []
    for kind in kinds:
        rows.extend(selection_rows(kind.from_config(cfg, cls).fit(frame)))
    return rows
