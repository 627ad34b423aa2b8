"""Output batches of the model actors -> Arrow tables: per-shard split and the ``errors`` rows.

A batch is a dict of numpy columns as :class:`audit.model_actor.ModelActor` returns it
(``image_id``, ``uri``, ``label``, ``shard``, ``error``, ``stage``, ``top5_classes`` of shape
``(n, 5)``, ...). The rows of predicted images go to the per-image tables of the stages, which
build them themselves (``Stage.table_rows``: column by column as the declarations in
``audit/stages/*_table.py`` say, :meth:`audit.columns.Table.from_batch`); the failed ones become
``errors`` rows here. Nothing here holds state or writes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from audit.columns import MODEL, RUN_ID
from audit.stages.registry import STAGES
from audit.store import ERRORS

Batch = dict[str, np.ndarray]


def per_image_tables() -> tuple[str, ...]:
    """Tables whose rows belong to one image, and so to one shard, in the order a shard's files
    are written: every registered stage's table, then ``errors``."""
    return (*(c.table.name for c in STAGES.classes() if c.table is not None), "errors")


def shard_file(shard: int) -> str:
    """The file name (without ``.parquet``) of a shard's file in every per-image table."""
    return f"shard-{shard:05d}"


def shard_files(shards: set[int]) -> set[str]:
    """The run-relative paths the per-image tables' files of ``shards`` have."""
    return {f"{t}/{shard_file(k)}.parquet" for t in per_image_tables() for k in shards}


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
    """The run's constant columns and its ``errors`` rows.

    Args:
        run_id: The run's id (a column of every table).
        model: The model's name (a column of most tables).
    """

    run_id: str
    model: str

    @property
    def constants(self) -> dict[str, object]:
        """The columns every row of the run shares, for ``Stage.table_rows``."""
        return {RUN_ID.name: self.run_id, MODEL.name: self.model}

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
