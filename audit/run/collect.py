"""The driver's side of the stream: results in, committed shards out.

Rows are buffered per shard; when the last image of a shard arrives, the shard's file of every
per-image table is written under its final name (``<table>/shard-NNNNN.parquet``) and only then
is the shard recorded as committed in the manifest. A file of a shard that is not in the
manifest does not count, so a crash at any point loses at most the shards in flight, and a rerun
redoes exactly those.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa

from audit.run.counters import RunCounters
from audit.run.ledger import ShardLedger
from audit.run.manifest import RunManifest
from audit.run.plan import RunPlan
from audit.run.tables import (
    Batch,
    TableBuilder,
    per_image_tables,
    shard_file,
    shard_files,
    split_by_shard,
)
from audit.store import RunStore

NODE_ID = "node_id"
"""The batch column of the Ray node id the model actor ran on (:class:`audit.model_actor.ModelActor`)."""


class ShardCollector:
    """Takes the model actors' output batches: drops duplicates, builds the tables' rows,
    feeds the counters, and commits every shard a batch completes.

    Args:
        plan: The run plan.
        store: The run's one store.
        ledger: The run's shard ledger.
        manifest: The run's manifest (rewritten after each commit).
        counters: The run's metric counters.
    """

    def __init__(
        self,
        plan: RunPlan,
        store: RunStore,
        ledger: ShardLedger,
        manifest: RunManifest,
        counters: RunCounters,
    ):
        self.plan = plan
        self.store = store
        self.ledger = ledger
        self.manifest = manifest
        self.counters = counters
        self.tables = TableBuilder(plan.run_id, plan.model.name)
        self.sections = plan.sections
        self.stages = [s for s in plan.stages if s.table is not None]
        self.per_image = per_image_tables()
        for stage in self.stages:
            store.add_table(stage.table.name)  # type: ignore[union-attr]
        self._parts: dict[int, dict[str, list[pa.Table]]] = {}

    def adopt(self, committed: set[int], tables: dict[str, Any]) -> None:
        """Take over the shards an earlier attempt committed (``tables``: the previous
        manifest's ``tables``), and refill the counters from their rows.

        The files are only recorded here; the caller deletes the others once the manifest lists
        just these (``store.remove_unlisted``), so the manifest never names a deleted file.
        Every file is verified first (:meth:`RunStore.adopt`): a committed shard with a file
        that is missing, not of its recorded size or sha256, or with an unreadable footer is
        not adopted (a warning names the file): its files are deleted with the others and the
        shard is computed again.
        """
        from audit.run.verify import shard_of

        kept = set(committed)
        while True:  # ends: every rejected file is one of a kept shard's, which is dropped
            names = shard_files(kept)
            rejected = self.store.adopt(tables, keep=names.__contains__)
            redo = {k for rel in rejected if (k := shard_of(rel)) is not None and k in kept}
            for rel, why in sorted(rejected.items()):
                logging.getLogger(__name__).warning(
                    "run %s: committed file %s is not adopted (%s): shard %s is redone",
                    self.plan.run_id,
                    rel,
                    why,
                    shard_of(rel),
                )
            if not redo:
                break
            kept -= redo
        self.ledger.adopt(kept)
        self.counters.refill(self.store.url, self.store.files, self.plan.cfg.output.storage_options)

    def add(self, batch: Batch) -> np.ndarray:
        """Take one output batch of the model actors; commit every shard it completes; return
        which of its rows were new (a bool mask: a retried task may deliver a row twice).

        Its ``node_id`` column (the Ray node of the actor that made it) goes to the manifest's
        ``execution.nodes``, not into a table."""
        if NODE_ID in batch:
            self.manifest.add_nodes({str(n) for n in batch[NODE_ID] if n})
        fresh = np.array(
            [
                self.ledger.take(int(k), str(i), str(u))
                for k, i, u in zip(batch["shard"], batch["image_id"], batch["uri"], strict=True)
            ],
            dtype=bool,
        )
        for part in split_by_shard(batch, fresh):
            if part.errors is not None:
                self._buffer(part.shard, "errors", self.tables.batch_errors(part.errors))
            if part.predicted is not None:
                self._add_predicted(part.shard, part.predicted)
        self._commit_ready(np.asarray(batch["shard"], dtype=np.int64)[fresh])
        return fresh

    def add_listing_errors(self) -> None:
        """The inputs that failed at listing become errors rows of their (pending) shards."""
        errors = self.plan.listing.errors
        for rec in errors:
            shard = self.plan.shard_of[(rec.image_id, rec.uri)]
            if self.ledger.is_committed(shard) or not self.ledger.take(
                shard, rec.image_id, rec.uri
            ):
                continue
            rows = self.tables.errors(
                [rec.image_id], [rec.uri], ["list"], [rec.error or "listing failed"]
            )
            self._buffer(shard, "errors", rows)
        self._commit_ready(self.plan.shard_of[(r.image_id, r.uri)] for r in errors)

    def _add_predicted(self, shard: int, b: Batch) -> None:
        """Count the predicted rows and buffer every enabled stage's table rows of them."""
        self.counters.add_predictions(b)
        if self.counters.attack is not None:
            self.counters.add_attacks(b)
        for stage in self.stages:
            rows = stage.table_rows(b, self.tables.constants, self.sections[stage.section])
            if rows is not None and rows.num_rows:
                self._buffer(shard, stage.table.name, rows)  # type: ignore[union-attr]

    def _buffer(self, shard: int, table: str, rows: pa.Table) -> None:
        parts = self._parts.setdefault(shard, {name: [] for name in self.per_image})
        parts[table].append(rows)

    def _commit_ready(self, touched: Iterable[int]) -> None:
        """Commit those of the ``touched`` shards whose every image has arrived."""
        for shard in self.ledger.ready(touched):
            parts = self._parts.get(shard, {})
            written = []
            for table in self.per_image:
                if parts.get(table):
                    rows = pa.concat_tables(parts[table])
                    rel = self.store.write(table, rows, name=shard_file(shard), record=False)
                    written.append((table, rel, rows.num_rows))
            # every file of the shard is complete: only now does it count
            for table, rel, n in written:
                self.store.record(table, rel, n)
            self._parts.pop(shard, None)
            self.ledger.commit(shard, persist=lambda: self.manifest.write("running"))
