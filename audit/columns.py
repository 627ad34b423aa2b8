"""Column declarations: every output column is spelled out once, here or next to its stage.

A :class:`Column` says what one column is in both places it lives: in the numpy batches the
model actors return (``dtype`` and per-row ``shape``) and in the Parquet table the driver writes
(Arrow type, nullability and the rule that turns batch values into nulls). A :class:`Table` is
an ordered tuple of columns; its :meth:`Table.schema` is the table's pyarrow schema, which
:mod:`audit.store` writes with. The stages declare their columns in
``audit/stages/*_table.py``; the columns that are not a stage's output (the run's constant
columns and the inputs' identity) are declared below.

Example:
    >>> t = Table("t", (Column("x", pa.int32(), np.int32), Column("y", pa.list_(pa.float32()))))
    >>> t.schema().names, t["y"].doc_type
    (['x', 'y'], 'list<float32>')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import pyarrow as pa


class Null(str, Enum):
    """Which batch values become nulls in the table."""

    NEGATIVE = "negative"  # a value below 0 (label -1 = unknown, steps_to_flip -1 = never)
    NAN = "nan"  # a NaN value
    UNLABELED = "unlabeled"  # every value of a row whose label is unknown (below 0)


@dataclass(frozen=True)
class Column:
    """One output column.

    Attributes:
        name: The column's name, in the batch and in the table.
        arrow: Its Arrow type in the table.
        dtype: Its numpy dtype in the model actors' batches; None for a column the driver
            fills in (the run's constants ``run_id`` and ``model``).
        shape: Its per-row shape in the batches: ``()`` for one value per row, ``("k",)`` for
            ``k`` values per row, where a name is a size known only when the run starts (see
            :meth:`row_shape`).
        nullable: Whether the table's field is nullable.
        doc: One line on what it holds (docs/tables.md has the full contract).
        null_if: Which batch values are written as null; None writes every value.
        optional: The stage writes it only when its configuration asks for it; a batch without
            it gives an all-null table column.
    """

    name: str
    arrow: pa.DataType
    dtype: Any = None
    shape: tuple[int | str, ...] = ()
    nullable: bool = False
    doc: str = ""
    null_if: Null | None = None
    optional: bool = False

    def field(self) -> pa.Field:
        """The table's pyarrow field."""
        return pa.field(self.name, self.arrow, nullable=self.nullable)

    def row_shape(self, sizes: Mapping[str, int]) -> tuple[int, ...]:
        """The per-row shape with named sizes looked up in ``sizes`` (e.g. ``{"k": 5}``)."""
        return tuple(s if isinstance(s, int) else sizes[s] for s in self.shape)

    @property
    def empty(self) -> Any:
        """The batch value of a row the stage skipped: ``""``, ``b""`` or zero."""
        if pa.types.is_string(self.arrow):
            return ""
        if pa.types.is_binary(self.arrow):
            return b""
        return np.zeros((), dtype=self.dtype)[()]

    @property
    def doc_type(self) -> str:
        """The type as docs/tables.md writes it: ``int32``, ``list<float32>``, ``bool, null``."""
        t = self.arrow
        text = f"list<{_type_name(t.value_type)}>" if pa.types.is_list(t) else _type_name(t)
        return text + (", null" if self.nullable else "")


def _type_name(t: pa.DataType) -> str:
    """``float32``/``float64`` where pyarrow says ``float``/``double``; else pyarrow's name."""
    return {"float": "float32", "double": "float64", "halffloat": "float16"}.get(str(t), str(t))


@dataclass(frozen=True)
class Table:
    """An output table: its name and its columns, in file order."""

    name: str
    columns: tuple[Column, ...]

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for c in self.columns:
            if c.name in seen:
                raise ValueError(f"Table {self.name!r} declares the column {c.name!r} twice.")
            seen.add(c.name)

    def from_batch(
        self, b: Mapping[str, np.ndarray], constants: Mapping[str, object] | None = None
    ) -> pa.Table:
        """One row of this table per row of batch ``b``, every column as its declaration says
        (:func:`arrow_column`); ``constants`` fill the driver's columns (``run_id``, ``model``)."""
        n = len(b[IMAGE_ID.name])
        return pa.table({c.name: arrow_column(c, b, n, constants) for c in self.columns})

    def schema(self) -> pa.Schema:
        """The table's pyarrow schema."""
        return pa.schema([c.field() for c in self.columns])

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def __getitem__(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"Table {self.name!r} has no column {name!r}; it has {self.names}.")


# The run's constants (filled in by the driver) and the inputs' identity, shared by the tables.
RUN_ID = Column("run_id", pa.string(), doc="the run")
MODEL = Column("model", pa.string(), doc="registry name of the model")
IMAGE_ID = Column("image_id", pa.string(), object, doc="file stem")
URI = Column("uri", pa.string(), object, doc="fsspec URI the image was read from")
LABEL = Column(
    "label",
    pa.int32(),
    np.int64,
    nullable=True,
    doc="ground-truth class index; null for unlabeled inputs",
    null_if=Null.NEGATIVE,
)


def list_array(a2d: np.ndarray, typ: pa.DataType) -> pa.ListArray:
    """A ``(n, k)`` array as a list column of ``n`` lists of ``k``."""
    n, k = a2d.shape
    offsets = pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(a2d).ravel(), typ))


def arrow_column(
    col: Column, b: Mapping[str, np.ndarray], n: int, constants: Mapping[str, object] | None = None
) -> pa.Array:
    """The Arrow column ``col`` of the ``n`` rows of batch ``b``.

    A column the driver fills in (``dtype`` None) takes its value from ``constants``; an
    ``optional`` column missing from ``b`` is all null; strings and bytes are converted one by
    one; ``(n, k)`` arrays become list columns; other values are cast to ``col.dtype`` and
    nulled where ``col.null_if`` says (``UNLABELED`` reads ``b["label"]``).
    """
    if col.dtype is None:
        return pa.array([(constants or {})[col.name]] * n, col.arrow)
    if col.optional and col.name not in b:
        return pa.nulls(n, col.arrow)
    values = b[col.name]
    if pa.types.is_string(col.arrow):
        return pa.array([str(x) for x in values], col.arrow)
    if pa.types.is_binary(col.arrow):
        return pa.array(list(values), col.arrow)
    if pa.types.is_list(col.arrow):
        return list_array(values, col.arrow.value_type)
    values = np.asarray(values, dtype=col.dtype)
    mask = None
    if col.null_if is Null.NEGATIVE:
        mask = values < 0
    elif col.null_if is Null.NAN:
        mask = np.isnan(values)
    elif col.null_if is Null.UNLABELED:
        mask = np.asarray(b[LABEL.name], dtype=np.int64) < 0
    return pa.array(values, col.arrow, mask=mask)
