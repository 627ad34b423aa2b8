"""The driver's collector on hand-made output batches: shards commit whole, once, in any order.

No Ray: the batches are what the model actors would return, written by hand.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from audit.config import build_config
from audit.data.classes import ClassIndex
from audit.data.layouts import InputRecord, Layout, Listing
from audit.run.collect import ShardCollector
from audit.run.counters import RunCounters
from audit.run.ledger import ShardLedger
from audit.run.manifest import RunManifest
from audit.run.plan import RunPlan, fingerprint, shard_sizes
from audit.store import RunStore, read_manifest, read_table

CLASSES = ClassIndex("toy", ("c0", "c1", "c2"), ("zero", "one", "two"))


def make_plan(records: list[InputRecord], errors: list[InputRecord], attack: bool) -> RunPlan:
    cfg = build_config(
        {"attack": {"enabled": attack}, "explain": {"enabled": False}, "output": {"shard_size": 2}}
    )
    inputs = tuple(sorted([*records, *errors], key=lambda r: (r.image_id, r.uri)))
    return RunPlan(
        run_id="r",
        cfg=cfg,
        model=SimpleNamespace(name="toy", classes=CLASSES),  # type: ignore[arg-type]
        listing=Listing(Layout.IMAGEFOLDER, tuple(records), tuple(errors)),
        seconds_listing=0.0,
        inputs=inputs,
        shard_of={(r.image_id, r.uri): i // 2 for i, r in enumerate(inputs)},
        shard_sizes=shard_sizes(len(inputs), 2),
        fingerprint=fingerprint(inputs),
        explain=(False,) * len(records),
        driver_only=("memory://",),
        cluster_gpus=0.0,
        device="cpu",
        num_actors=1,
    )


def rec(image_id: str, label: int | None = 0, error: str | None = None) -> InputRecord:
    return InputRecord(image_id, f"file:///{image_id}.png", label, error)


def batch(plan: RunPlan, rows: list[tuple[str, str]]) -> dict[str, np.ndarray]:
    """Actor output for ``(image_id, error)`` rows: top-1 is class 1, labels as listed."""
    by_id = {r.image_id: r for r in plan.inputs}
    recs = [by_id[i] for i, _ in rows]
    n = len(rows)
    labels = np.array([-1 if r.label is None else r.label for r in recs])
    return {
        "image_id": np.array([r.image_id for r in recs], dtype=object),
        "uri": np.array([r.uri for r in recs], dtype=object),
        "label": labels,
        "shard": np.array([plan.shard_of[(r.image_id, r.uri)] for r in recs]),
        "error": np.array([e for _, e in rows], dtype=object),
        "stage": np.array(["decode" if e else "" for _, e in rows], dtype=object),
        "top5_classes": np.tile(np.array([1, 0, 2, 2, 2], dtype=np.int32), (n, 1)),
        "top5_probs": np.tile(np.array([0.6, 0.3, 0.1, 0, 0], dtype=np.float32), (n, 1)),
        "correct_top1": labels == 1,
        "correct_top5": labels >= 0,
        "loss": np.where(labels >= 0, 0.5, np.nan).astype(np.float32),
        "label_prob": np.where(labels >= 0, 0.3, np.nan).astype(np.float32),
        "target": np.ones(n, dtype=np.int32),
        "steps_to_flip": np.array([2] * n, dtype=np.int16),
        "adv_class": np.zeros(n, dtype=np.int32),
        "adv_prob": np.full(n, 0.9, dtype=np.float32),
        "linf": np.full(n, 0.01, dtype=np.float32),
        "l2": np.full(n, 0.5, dtype=np.float32),
    }


def start(
    tmp_path: Path, plan: RunPlan, fresh: bool = True
) -> tuple[ShardCollector, RunStore, ShardLedger]:
    store = RunStore(str(tmp_path), plan.run_id)
    if fresh:
        store.prepare(False)
    ledger = ShardLedger(plan.shard_sizes, on_commit=lambda shard, n: None)
    manifest = RunManifest(plan, store, ledger)
    manifest.data = {"stages": {"predict": {}}}
    counters = RunCounters(plan.cfg, len(CLASSES))
    return ShardCollector(plan, store, ledger, manifest, counters), store, ledger


def shard_ids(run: Path, table: str, shard: int) -> list[str]:
    import pyarrow.parquet as pq

    path = run / table / f"shard-{shard:05d}.parquet"
    return sorted(pq.read_table(path).column("image_id").to_pylist())


def test_a_shard_of_listing_errors_only_commits_before_any_batch(tmp_path: Path) -> None:
    plan = make_plan(
        [rec("b0"), rec("b1")], [rec("a0", None, "outside"), rec("a1", 1, "duplicate")], False
    )
    collector, store, ledger = start(tmp_path, plan)
    collector.add_listing_errors()
    assert ledger.committed == {0} and ledger.done == 2
    m = read_manifest(store.url)
    assert m["shards"]["committed"] == [0]
    assert m["tables"]["errors"]["files"] == ["errors/shard-00000.parquet"]
    assert m["tables"]["predictions"]["files"] == []
    errors = read_table(store.url, "errors").to_pylist()
    assert [(e["image_id"], e["stage"], e["reason"]) for e in errors] == [
        ("a0", "list", "outside"),
        ("a1", "list", "duplicate"),
    ]
    collector.add_listing_errors()  # again: nothing new, nothing rewritten
    assert read_table(store.url, "errors").num_rows == 2


def test_out_of_order_and_duplicate_deliveries_commit_each_shard_once(tmp_path: Path) -> None:
    plan = make_plan([rec("r0"), rec("r1", 1), rec("r2", None), rec("r3", 2)], [], True)
    collector, store, ledger = start(tmp_path, plan)
    collector.add(batch(plan, [("r3", ""), ("r0", "")]))
    assert ledger.committed == set()
    collector.add(batch(plan, [("r2", ""), ("r3", "")]))  # r3 again: a retried task
    assert ledger.committed == {1}
    collector.add(batch(plan, [("r3", ""), ("r1", "")]))
    assert ledger.committed == {0, 1} and ledger.done == 4
    run = tmp_path / "r"
    assert shard_ids(run, "predictions", 0) == ["r0", "r1"]
    assert shard_ids(run, "predictions", 1) == ["r2", "r3"]
    assert shard_ids(run, "adversarial", 1) == ["r2", "r3"]
    m = read_manifest(store.url)
    assert m["shards"]["committed"] == [0, 1]
    assert m["tables"]["predictions"]["files"] == [
        "predictions/shard-00001.parquet",
        "predictions/shard-00000.parquet",
    ]
    preds = {p["image_id"]: p for p in read_table(store.url, "predictions").to_pylist()}
    assert preds["r2"]["label"] is None and preds["r2"]["loss"] is None  # unlabeled
    assert preds["r1"]["correct_top1"] is True and preds["r0"]["correct_top1"] is False
    assert preds["r0"]["top5_classes"] == [1, 0, 2, 2, 2]
    # the counters saw each labeled image once: r0, r1, r3
    assert collector.counters.errors.n.tolist() == [1, 1, 1]
    assert collector.counters.attack is not None
    assert collector.counters.attack.n.tolist() == [1, 1, 1]


def test_failed_images_become_errors_rows_of_their_shard(tmp_path: Path) -> None:
    plan = make_plan([rec("r0"), rec("r1", 1)], [], False)
    collector, store, ledger = start(tmp_path, plan)
    collector.add(batch(plan, [("r0", "cannot identify image"), ("r1", "")]))
    assert ledger.committed == {0}
    errors = read_table(store.url, "errors").to_pylist()
    assert [(e["image_id"], e["stage"], e["reason"]) for e in errors] == [
        ("r0", "decode", "cannot identify image")
    ]
    assert read_table(store.url, "predictions").column("image_id").to_pylist() == ["r1"]
    assert read_manifest(store.url)["tables"]["adversarial"]["files"] == []  # attack off
    assert collector.counters.errors.n.tolist() == [0, 1, 0]


def test_adopt_takes_over_committed_shards_and_refills_the_counters(tmp_path: Path) -> None:
    plan = make_plan([rec("r0"), rec("r1", 1), rec("r2", 2), rec("r3", 2)], [], True)
    first, store, _ = start(tmp_path, plan)
    first.add(batch(plan, [("r0", ""), ("r1", ""), ("r2", "")]))  # shard 1 lacks r3
    previous = read_manifest(store.url)
    assert previous["shards"]["committed"] == [0]

    again, store2, ledger = start(tmp_path, plan, fresh=False)
    again.adopt({0}, previous["tables"])
    assert ledger.committed == {0} and ledger.done == ledger.done_at_start == 2
    assert store2.files["predictions"] == ["predictions/shard-00000.parquet"]
    assert store2.rows["predictions"] == 2
    assert again.counters.errors.n.tolist() == [1, 1, 0]
    assert again.counters.attack is not None and again.counters.attack.n.tolist() == [1, 1, 0]
    again.add(batch(plan, [("r1", ""), ("r2", ""), ("r3", "")]))  # r1 is an adopted image
    assert ledger.committed == {0, 1} and ledger.done == 4
    assert again.counters.errors.n.tolist() == [1, 1, 2]
    assert shard_ids(tmp_path / "r", "predictions", 0) == ["r0", "r1"]  # not rewritten
