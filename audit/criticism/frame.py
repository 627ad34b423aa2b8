"""The input of every selector: one class's rows, with the columns the selectors asked for.

A :class:`Column` names one column of one run table (``predictions.label_prob``,
``adversarial.steps_to_flip``); selectors declare the columns they need, and
:func:`audit.criticism.tasks.select_class` reads each table once and joins them by image id
into a :class:`ClassFrame`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, order=True)
class Column:
    """One column of one table; ``str(column)`` is ``"table.column"``."""

    table: str
    name: str

    def __str__(self) -> str:
        return f"{self.table}.{self.name}"


@dataclass(frozen=True)
class ClassFrame:
    """One class's rows: ``image_ids`` and numpy columns in the same row order.

    Attributes:
        label: The class index.
        image_ids: ``(n,)`` object array of ``str``.
        columns: ``"table.column"`` -> ``(n, ...)`` array; row ``i`` belongs to
            ``image_ids[i]``. Nulls are NaN (an integer column with nulls is float64), list
            columns (``top5_probs``, ``embedding``) are ``(n, k)`` float64.

    Example:
        >>> f = ClassFrame(3, ["b", "a"], {"predictions.label_prob": np.array([0.2, 0.9])})
        >>> f.sorted_by_id()["predictions.label_prob"].tolist()
        [0.9, 0.2]
    """

    label: int
    image_ids: np.ndarray
    columns: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ids = np.array([str(i) for i in self.image_ids], dtype=object)
        cols = {str(k): np.asarray(v) for k, v in self.columns.items()}
        for name, col in cols.items():
            if col.ndim == 0 or col.shape[0] != ids.size:
                raise ValueError(
                    f"The column {name!r} must have one row per image ({ids.size}). "
                    f"Got shape {col.shape} instead."
                )
        object.__setattr__(self, "image_ids", ids)
        object.__setattr__(self, "columns", cols)

    def __len__(self) -> int:
        return int(self.image_ids.size)

    def __getitem__(self, column: str | Column) -> np.ndarray:
        key = str(column)
        if key not in self.columns:
            have = ", ".join(sorted(self.columns)) or "none"
            raise KeyError(f"The frame has no column {key!r} (it has: {have}).")
        return self.columns[key]

    def take(self, rows: np.ndarray) -> ClassFrame:
        """The frame of ``rows`` (indices or a boolean mask), in that order."""
        return ClassFrame(
            self.label, self.image_ids[rows], {k: v[rows] for k, v in self.columns.items()}
        )

    def sorted_by_id(self) -> ClassFrame:
        """Rows in image id order (stable), so that nothing downstream depends on input order."""
        return self.take(np.argsort(self.image_ids.astype(str), kind="stable"))
