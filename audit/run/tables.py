"""Output batches of the model actors -> Arrow tables, one builder per per-image table.

A batch is a dict of numpy columns as :class:`audit.model_actor.ModelActor` returns it
(``image_id``, ``uri``, ``label``, ``shard``, ``error``, ``stage``, ``top5_classes`` of shape
``(n, 5)``, ...). The builders know the run's constant columns (``run_id``, ``model``) and turn
the rows of one shard into tables with the schemas of :mod:`audit.store`; they hold no state and
write nothing. ``predictions`` and ``adversarial`` are converted column by column as the stages
declare them (:func:`arrow_column`, the declarations in ``audit/stages/*_table.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from audit.columns import LABEL, MODEL, RUN_ID, Column, Null, Table
from audit.config import ExplainConfig
from audit.stages.attack_table import ADVERSARIAL_TABLE
from audit.stages.predict_table import PREDICTIONS_TABLE
from audit.store import ERRORS, EXPLANATIONS

TABLES_PER_IMAGE = ("predictions", "errors", "adversarial", "explanations")
"""Tables whose rows belong to one image, and so to one shard, in the order a shard's files are
written."""

Batch = dict[str, np.ndarray]


def shard_file(shard: int) -> str:
    """The file name (without ``.parquet``) of a shard's file in every per-image table."""
    return f"shard-{shard:05d}"


def shard_files(shards: set[int]) -> set[str]:
    """The run-relative paths the per-image tables' files of ``shards`` have."""
    return {f"{t}/{shard_file(k)}.parquet" for t in TABLES_PER_IMAGE for k in shards}


def list_array(a2d: np.ndarray, typ: pa.DataType) -> pa.ListArray:
    """A ``(n, k)`` array as a list column of ``n`` lists of ``k``."""
    n, k = a2d.shape
    offsets = pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(a2d).ravel(), typ))


def arrow_column(
    col: Column, b: Batch, n: int, constants: Mapping[str, object] | None = None
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


@dataclass(frozen=True)
class ShardRows:
    """The fresh rows of one shard in one batch: failed images and predicted ones."""

    shard: int
    errors: Batch | None
    predicted: Batch | None


def split_by_shard(batch: Batch, fresh: np.ndarray) -> Iterator[ShardRows]:
    """The ``fresh`` rows of ``batch`` (a bool mask), grouped by shard in shard order, each
    group split into error rows (``error != ""``) and predicted rows."""
    shards = np.asarray(batch["shard"], dtype=np.int64)
    err = np.asarray(batch["error"], dtype=object)
    bad = (err != "") & fresh
    good = (err == "") & fresh
    for shard in np.unique(shards[fresh]):
        here = shards == shard
        yield ShardRows(
            int(shard),
            {k: v[bad & here] for k, v in batch.items()} if (bad & here).any() else None,
            {k: v[good & here] for k, v in batch.items()} if (good & here).any() else None,
        )


@dataclass(frozen=True)
class TableBuilder:
    """Builds the per-image tables' rows of one run.

    Args:
        run_id: The run's id (a column of every table).
        model: The model's name (a column of most tables).
        explain: The explain section (``n_samples``, ``kernel_width``, ``seed`` are columns of
            ``explanations``).
    """

    run_id: str
    model: str
    explain: ExplainConfig

    def predictions(self, b: Batch) -> pa.Table:
        """``predictions`` rows of predicted images (a label of ``-1`` is unknown: null)."""
        return self.from_batch(PREDICTIONS_TABLE, b)

    def adversarial(self, b: Batch) -> pa.Table:
        """``adversarial`` rows of attacked images (``steps_to_flip`` of ``-1``: never)."""
        return self.from_batch(ADVERSARIAL_TABLE, b)

    def from_batch(self, table: Table, b: Batch) -> pa.Table:
        """One row of ``table`` per row of ``b``, every column as its declaration says
        (:func:`arrow_column`); ``run_id`` and ``model`` are this run's."""
        constants = {RUN_ID.name: self.run_id, MODEL.name: self.model}
        n = len(b["image_id"])
        return pa.table({c.name: arrow_column(c, b, n, constants) for c in table.columns})

    def explanations(self, b: Batch) -> pa.Table | None:
        """``explanations`` rows (one per explained variant), or None when there are none."""
        e = self.explain
        rows = []
        for image_id, found, seg in zip(
            b["image_id"], b["explanations"], b["segments"], strict=True
        ):
            if not found:
                continue
            for ex in json.loads(found):
                rows.append(
                    {
                        "run_id": self.run_id,
                        "model": self.model,
                        "image_id": str(image_id),
                        "n_segments": len(ex["weights"]),
                        "segments": bytes(seg),
                        "n_samples": e.n_samples,
                        "kernel_width": e.kernel_width,
                        "seed": e.seed,
                        **ex,
                    }
                )
        return pa.Table.from_pylist(rows, schema=EXPLANATIONS) if rows else None

    def errors(
        self, ids: list[str], uris: list[str], stages: list[str], reasons: list[str]
    ) -> pa.Table:
        """``errors`` rows: one per failed input, with the stage it failed at."""
        return pa.table(
            {
                "run_id": [self.run_id] * len(ids),
                "image_id": ids,
                "uri": uris,
                "stage": stages,
                "reason": reasons,
            },
            schema=ERRORS,
        )

    def batch_errors(self, b: Batch) -> pa.Table:
        """``errors`` rows of a batch's failed images (``error`` and ``stage`` columns)."""
        return self.errors(
            [str(x) for x in b["image_id"]],
            [str(x) for x in b["uri"]],
            [str(x) for x in b["stage"]],
            [str(x) for x in b["error"]],
        )
