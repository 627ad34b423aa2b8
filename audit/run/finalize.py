"""The end of a pass: invariants, criticism, bias discovery, metrics, the final manifest.

Criticism and metrics are recomputed at the end of every attempt from the committed tables, so
a resumed run's tables equal an uninterrupted run's.
"""

from __future__ import annotations

import time
from typing import Any

import pyarrow as pa
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem

from audit.criticism.selectors import runnable_methods
from audit.run.counters import RunCounters
from audit.run.ledger import ShardLedger
from audit.run.manifest import RunManifest
from audit.run.plan import RunPlan
from audit.store import ADVERSARIAL, PREDICTIONS, SELECTIONS, RunStore

Metric = tuple[str, str, float, int]
"""``(name, scope, value, count)``, a row of the ``metrics`` table."""


def finalize(
    plan: RunPlan,
    store: RunStore,
    ledger: ShardLedger,
    manifest: RunManifest,
    counters: RunCounters,
) -> list[Metric]:
    """Check that every shard is committed, select prototypes and criticisms, write the
    metrics, check that every input is accounted for, and write the ``succeeded`` manifest.

    Returns:
        The metric rows, as in the ``metrics`` table.

    Raises:
        RuntimeError: an invariant is broken (a bug, never a silent loss).
    """
    check_all_committed(ledger)
    manifest.predict_finished = time.time()
    run_criticism(plan, store, manifest, counters)
    run_bias_discovery(plan, store, manifest)
    metrics = counters.rows(plan.model.classes)
    write_metrics(plan, store, metrics)
    store.ensure_tables()
    check_accounted(store, plan.total)
    manifest.update(metrics={m[0]: m[2] for m in metrics if m[1] == "all"})
    manifest.write("succeeded")
    return metrics


def check_all_committed(ledger: ShardLedger) -> None:
    """Raises: RuntimeError: a shard is incomplete after the pass."""
    shards, images = ledger.missing()
    if shards:
        raise RuntimeError(
            f"{shards} shards incomplete after the pass: {images} images "
            "never came back from the model actors"
        )


def check_accounted(store: RunStore, total: int) -> None:
    """Raises: RuntimeError: predictions and errors rows do not add up to the inputs."""
    accounted = store.rows["predictions"] + store.rows["errors"]
    if accounted != total:
        raise RuntimeError(
            f"{total} inputs but {store.rows['predictions']} predictions + "
            f"{store.rows['errors']} errors"
        )


def write_metrics(plan: RunPlan, store: RunStore, metrics: list[Metric]) -> None:
    """The ``metrics`` table (nothing is written when there are no rows)."""
    if not metrics:
        return
    store.write(
        "metrics",
        {
            "run_id": [plan.run_id] * len(metrics),
            "model": [plan.model.name] * len(metrics),
            "name": [m[0] for m in metrics],
            "scope": [m[1] for m in metrics],
            "value": [float(m[2]) for m in metrics],
            "count": [int(m[3]) for m in metrics],
        },
        name="all",
    )


def criticism_methods(plan: RunPlan, skipped: dict[str, str]) -> list[str]:
    """The selection methods that can run; the others go into ``skipped`` with the reason.

    What a method needs is what its selector declares (``requires``); a column this run does not
    write skips the method with the config field that turned it off.
    """
    cfg = plan.cfg
    predictions = set(PREDICTIONS.names)
    reasons: dict[str, str] = {}
    if not cfg.predict.embeddings:
        predictions.discard("embedding")
        reasons["predictions.embedding"] = "predict.embeddings is false"
    available: dict[str, set[str]] = {"predictions": predictions}
    if cfg.attack.enabled:
        available["adversarial"] = set(ADVERSARIAL.names)
    else:
        reasons["adversarial"] = "attack.enabled is false"
    methods, why = runnable_methods(cfg.criticism.methods, available, reasons)
    skipped.update(why)
    return list(methods)


def criticism_placement(fs: Any) -> tuple[str, dict[str, Any] | None]:
    """Where the per-class criticism tasks can read the run's tables: a description for the
    manifest (``stages.criticism.where``) and the tasks' extra remote args, or None when the
    driver runs them itself.

    - memory:// lives in the driver process only: the driver.
    - A local disk is the driver node's own (another node of a cluster, one an autoscaler adds
      above all, has its own disk): the tasks are pinned to the driver's node (Ray's
      ``NodeAffinitySchedulingStrategy``, not soft), or run on the driver when that node has no
      CPU for them (a head started with ``--num-cpus=0``).
    - Object storage (s3://, gs://, ...), which every node reads: anywhere on the cluster.
    """
    import ray

    if isinstance(fs, MemoryFileSystem):
        return "driver (memory:// output is not visible to Ray workers)", None
    if isinstance(fs, LocalFileSystem):
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        node = ray.get_runtime_context().get_node_id()
        cpus = next(
            (n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n["NodeID"] == node), 0.0
        )
        if cpus < 1:
            return "driver (local output; the driver's node has no CPU for tasks)", None
        pin = NodeAffinitySchedulingStrategy(node_id=node, soft=False)
        return "the driver's node (local output)", {"scheduling_strategy": pin}
    return "cluster", {}


def run_criticism(
    plan: RunPlan, store: RunStore, manifest: RunManifest, counters: RunCounters
) -> None:
    """One Ray task per class with labeled predictions, where the tables can be read
    (:func:`criticism_placement`); writes the ``selections`` table.

    The stage's progress is kept in a local dict and recorded with
    :meth:`RunManifest.set_stage` before each manifest write (the manifest is immutable)."""
    import ray

    from audit.criticism.tasks import select_class

    cfg = plan.cfg.criticism
    stage: dict[str, Any] = {"state": "skipped", "skipped_methods": {}}
    manifest.set_stage("criticism", stage)
    if not cfg.enabled:
        return
    methods = criticism_methods(plan, stage["skipped_methods"])
    classes = counters.labeled_classes()
    t0 = time.time()
    stage.update({"state": "running", "classes": len(classes), "done": 0})
    manifest.set_stage("criticism", stage)
    manifest.write("running")
    tables = {name: list(store.files[name]) for name in ("predictions", "adversarial")}
    args = (store.url, tables)
    opts = dict(plan.cfg.output.storage_options)
    rows: list[dict[str, Any]] = []

    def collect(c: int, found: list[tuple[str, str, int, str, float]]) -> None:
        rows.extend(
            {
                "run_id": plan.run_id,
                "model": plan.model.name,
                "class": c,
                "class_id": plan.model.classes.ids[c],
                "method": method,
                "role": role,
                "rank": rank,
                "image_id": image_id,
                "score": score,
            }
            for method, role, rank, image_id, score in found
        )
        stage["done"] = int(stage["done"]) + 1

    stage["where"], remote_args = criticism_placement(store.fs)
    if remote_args is None:
        for c in classes:
            collect(c, select_class(*args, c, cfg, methods, opts))
    else:
        task = ray.remote(num_cpus=1, **remote_args)(select_class)
        pending = {task.remote(*args, c, cfg, methods, opts): c for c in classes}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=min(len(pending), 16), timeout=5.0)
            for ref in ready:
                c = pending.pop(ref)
                collect(c, ray.get(ref))
            if ready:
                manifest.set_stage("criticism", stage)
                manifest.write("running")
    if rows:
        rows.sort(key=lambda r: (r["class"], r["method"], r["role"], r["rank"]))
        store.write("selections", pa.Table.from_pylist(rows, schema=SELECTIONS), name="all")
    stage.update({"state": "done", "seconds": round(time.time() - t0, 3), "methods": methods})
    manifest.set_stage("criticism", stage)


def read_stored(store: RunStore, name: str) -> pa.Table:
    """Table ``name`` as this attempt has written and adopted it (``store.files``), cast to
    its declared schema."""
    import pyarrow.parquet as pq

    from audit.store import SCHEMAS

    parts = []
    for rel in store.files.get(name, []):
        with store.fs.open(store.path + "/" + rel, "rb") as f:
            parts.append(pq.read_table(f).cast(SCHEMAS[name]))
    return pa.concat_tables(parts) if parts else SCHEMAS[name].empty_table()


def run_bias_discovery(plan: RunPlan, store: RunStore, manifest: RunManifest) -> None:
    """The ``bias_candidates`` table (:func:`audit.bias.discover.discover`) when the run has
    object boxes (``data.boxes``) and clean LIME explanations; the manifest's
    ``stages.bias`` says what was read and found, or why it was skipped (a run without boxes
    has no such stage). Bad boxes are counted
    there, never fatal; a boxes source that cannot be read at all fails the run (before, at
    planning, it was only checked to be set)."""
    from audit.bias.discover import discover
    from audit.data.boxes import read_boxes
    from audit.store import BIAS_CANDIDATES_TABLE

    cfg = plan.cfg
    if not cfg.data.boxes:  # no stage at all: most runs have no boxes
        return
    if not cfg.explain.enabled or "clean" not in {v.value for v in cfg.explain.variants}:
        why = "no clean LIME explanations (explain.enabled, explain.variants)"
        manifest.set_stage("bias", {"state": "skipped", "why": why})
        return
    t0 = time.time()
    boxes = read_boxes(str(cfg.data.boxes), cfg.data.storage_options)
    tables = {
        name: read_stored(store, name)
        for name in ("predictions", "explanations", "adversarial", "selections")
    }
    found = discover(
        tables,
        boxes,
        plan.model.transform,
        tuple(plan.model.classes.ids),
        max_steps=cfg.attack.max_steps,
        jpeg_draft=cfg.data.jpeg_draft,
        seed=cfg.explain.seed,
        storage_options=cfg.data.storage_options,
    )
    store.add_table(BIAS_CANDIDATES_TABLE.name)
    if found.num_rows:
        store.write(BIAS_CANDIDATES_TABLE.name, found, name="all")
    kinds = found.column("kind").to_pylist()
    stage = {
        "state": "done",
        "seconds": round(time.time() - t0, 3),
        "boxes": boxes.counts,
        "boxes_source": boxes.source,
        "box_problems": [str(p) for p in boxes.problems[:5]],
        "candidates": {k: kinds.count(k) for k in sorted(set(kinds))},
    }
    manifest.set_stage("bias", stage)
