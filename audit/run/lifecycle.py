"""One audit run, start to end: plan, resume or start, stream, finalize.

This module never calls ``ray.init()``: the entry points (``ray_jobs.audit``, ``audit-cli``) do.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from audit.config import AuditConfig
from audit.run import devices, graph, resume
from audit.run.collect import ShardCollector
from audit.run.counters import RunCounters
from audit.run.finalize import Metric, finalize
from audit.run.interrupts import signal_after_commits_from_env, signal_name
from audit.run.lease import LeaseLostError, RunLease
from audit.run.ledger import ShardLedger, exit_after_commits_from_env
from audit.run.manifest import RunManifest
from audit.run.manifest_types import Manifest
from audit.run.plan import RunPlan, build_plan, default_run_id
from audit.run.previous import previous_attempt, refuse
from audit.run.progress import StageProgress, StageState
from audit.stages.registry import STAGES
from audit.store import RunStore

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]
"""Called with (images done, images total) as results arrive."""

StagesFn = Callable[[list[StageState]], None]
"""Called with every stage's progress (:class:`audit.run.progress.StageState`) as results
arrive."""

PROGRESS_WRITE_S = 5.0
"""Between shard commits, the manifest is rewritten at most this often with the stages'
progress (what ``audit-cli status`` reads)."""


@dataclass(frozen=True)
class RunResult:
    """What a finished pass produced.

    Attributes:
        run_id: The run's folder name.
        url: The run folder (fsspec URL).
        manifest: The final manifest as written, as JSON (``Manifest.from_json`` types it).
        metrics: ``(name, scope, value, count)`` rows, as in the ``metrics`` table.
        data_stats: Ray Data's execution statistics of the pass (``Dataset.stats()``: per
            operator wall and CPU time, rows, blocks); empty when nothing was streamed.
    """

    run_id: str
    url: str
    manifest: dict[str, Any]
    metrics: list[Metric]
    data_stats: str = ""


def run_audit(
    cfg: AuditConfig,
    progress: ProgressFn | None = None,
    *,
    lease_timeout_s: float | None = None,
    on_stages: StagesFn | None = None,
) -> RunResult:
    """Run the audit pass end to end on the connected Ray cluster, or resume it.

    A run id whose earlier attempt did not finish is resumed: the shards that attempt committed
    are kept, and only the others are computed. The configuration must be the same (but for
    fields that only decide how the work runs, :data:`audit.run.resume.RESUME_IGNORED`), and so
    must the inputs, the weights and the device.

    Args:
        cfg: A validated configuration.
        progress: Called with (done, total) after each batch of results.
        on_stages: Called with every stage's progress after each batch of results (the CLI's
            bars; :mod:`audit.run.progress`).
        lease_timeout_s: Seconds without a heartbeat after which another driver's lease on
            the run is stale and taken over (``0``: always); None: ``$AUDIT_LEASE_TIMEOUT_S``,
            else :data:`audit.run.lease.DEFAULT_TIMEOUT_S`.

    Returns:
        The run's id, folder, final manifest and metrics.

    Raises:
        ConfigError: bad configuration, or a run that cannot be resumed; found before any work
            starts.
        RunInUseError: another driver holds the run's lease (:mod:`audit.run.lease`); nothing
            was touched.
    """
    run_id = cfg.output.run_id or default_run_id(cfg.model.name)
    store = RunStore(cfg.output.root, run_id, cfg.output.storage_options)
    lease = RunLease(store.fs, store.path, run_id, store.url, lease_timeout_s)
    lease.check()  # before anything is read, deleted or written
    try:
        return _run(cfg, run_id, store, lease, progress, on_stages)
    finally:
        lease.release()


def _run(
    cfg: AuditConfig,
    run_id: str,
    store: RunStore,
    lease: RunLease,
    progress: ProgressFn | None,
    on_stages: StagesFn | None = None,
) -> RunResult:
    """:func:`run_audit` once the lease is checked: takes it before the first write."""
    previous = previous_attempt(store, cfg.output.overwrite)  # before the model and listing
    if previous is not None:
        lease.take()  # the folder holds a run: the lease file does not make it "not a run"
    cluster = devices.ray_cluster()
    plan = build_plan(cfg, run_id, cluster)  # may wait for the autoscaler's nodes
    try:
        return _execute(plan, store, lease, progress, previous, on_stages)
    finally:
        if plan.requested:  # the actors ran or failed: the autoscaler may scale down again
            cluster.request([])


def _execute(
    plan: RunPlan,
    store: RunStore,
    lease: RunLease,
    progress: ProgressFn | None,
    previous: Manifest | None,
    on_stages: StagesFn | None = None,
) -> RunResult:
    """:func:`run_audit` once the run is planned: its folder, manifest, pass and metrics."""
    cfg, run_id = plan.cfg, plan.run_id
    hooks = [h for h in (exit_after_commits_from_env(), signal_after_commits_from_env()) if h]

    def on_commit(shard: int, commits: int) -> None:
        lease.refresh()  # a heartbeat with every commit
        for hook in hooks:  # test-only fault injection (audit.run.ledger, audit.run.interrupts)
            hook(shard, commits)

    ledger = ShardLedger(plan.shard_sizes, on_commit=on_commit)
    manifest = RunManifest(plan, store, ledger)
    counters = RunCounters(plan.cfg, len(plan.model.classes))
    collector = ShardCollector(plan, store, ledger, manifest, counters)
    if previous is not None:
        refuse(resume.refusals(previous, plan, store.url))
        collector.adopt(
            resume.committed_shards(previous),
            {name: t.to_json() for name, t in previous.tables.items()},
        )
        manifest.resume(previous, len(ledger.committed))
    else:
        lease.check()  # again: planning took a while, and overwrite deletes the folder
        store.prepare(cfg.output.overwrite)
        lease.take()  # after prepare: a folder holding only a lease would not be a run
        manifest.start()
    write_classes(plan, store)
    manifest.write("running")  # first, so that a failure from here on is recorded
    store.remove_unlisted()
    log_start(plan, ledger)
    if progress is not None:
        progress(ledger.done, ledger.total)
    try:
        collector.add_listing_errors()

        tracker = stage_progress(plan, ledger)
        manifest.progress = tracker

        def on_batch(batch: dict[str, Any]) -> None:
            tracker.add(batch, collector.add(batch))
            if time.monotonic() - manifest.written_at >= PROGRESS_WRITE_S:
                manifest.write("running")  # status's per-stage progress between commits
            if on_stages is not None:
                on_stages(tracker.states())
            if progress is not None:
                progress(ledger.done, ledger.total)

        own_bars = progress is not None or on_stages is not None  # the caller draws its own
        data_stats = graph.stream(plan, ledger.committed, on_batch, not own_bars)
        metrics = finalize(plan, store, ledger, manifest, counters)
    except BaseException as exc:
        if not isinstance(exc, LeaseLostError):  # the manifest is the other driver's now
            record_failure(manifest, ledger, exc)
        raise
    return RunResult(run_id, store.url, manifest.data, metrics, data_stats)


def stage_progress(plan: RunPlan, ledger: ShardLedger) -> StageProgress:
    """The pass's per-stage counters: the actor's enabled stages, in its column order, over
    the images of the shards not committed yet."""
    enabled = STAGES.enabled(plan.sections, plan.stages)
    pending = sum(
        1
        for r in plan.listing.records
        if not ledger.is_committed(plan.shard_of[(r.image_id, r.uri)])
    )
    heavy = {c.name for c in enabled if c.unit_rows is not None}
    return StageProgress([c.name for c in enabled], pending, heavy)


def write_classes(plan: RunPlan, store: RunStore) -> None:
    """The ``classes`` table: the model's output index -> class id and name."""
    classes = plan.model.classes
    store.write(
        "classes",
        {
            "index": list(range(len(classes))),
            "class_id": list(classes.ids),
            "name": list(classes.names),
        },
        name="all",
    )


def log_start(plan: RunPlan, ledger: ShardLedger) -> None:
    log.info(
        "run %s: %d inputs (%d listing errors), %d of %d shards to do, model %s on %s x%d",
        plan.run_id,
        plan.total,
        len(plan.listing.errors),
        ledger.shards_total - len(ledger.committed),
        ledger.shards_total,
        plan.model.name,
        plan.device,
        plan.num_actors,
    )


def record_failure(manifest: RunManifest, ledger: ShardLedger, exc: BaseException) -> None:
    """Write the ``failed`` manifest naming ``exc``, or for SIGINT or SIGTERM (a
    ``KeyboardInterrupt``) the ``interrupted`` one naming the signal, the stage and the shards
    committed; a storage that fails too is only logged, so that the original error is the one
    raised."""
    try:
        if isinstance(exc, KeyboardInterrupt):
            manifest.write("interrupted", error=interruption(manifest, ledger, exc))
        else:
            manifest.write("failed", error=f"{type(exc).__name__}: {exc}")
    except Exception:
        log.exception("could not record the failure in the manifest")


def interruption(manifest: RunManifest, ledger: ShardLedger, exc: BaseException) -> str:
    """``"SIGINT during predict: 3 of 16 shards committed; rerun the same run id to resume"``
    (the stage is the one the manifest records as running: ``predict`` is the whole pass)."""
    running = [n for n, s in manifest.stages.items() if s.state == "running"]
    # the pass's own stages (decode, attack, explain...) run inside predict's entry
    stage = "predict" if "predict" in running else next(iter(running), "finalize")
    return (
        f"{signal_name(exc)} during {stage}: {len(ledger.committed)} of {ledger.shards_total} "
        "shards committed; rerun the same run id to resume"
    )
