"""The run's ``manifest.json``: started, kept up to date while the run goes, resumed.

The manifest is what ``audit-cli status`` follows and what readers go by: a shard's files count
only once the manifest lists the shard as committed. Its fields are the frozen dataclasses of
:mod:`audit.run.manifest_types` (:class:`~audit.run.manifest_types.Manifest`); this module
builds them and writes their JSON, :class:`audit.run.reader.RunReader` reads them back.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Mapping
from dataclasses import replace
from importlib import metadata
from typing import Any

from audit.config import DataConfig
from audit.run.ledger import ShardLedger
from audit.run.manifest_types import (
    FORMAT_VERSION,
    Attempt,
    DataInfo,
    ExecutionInfo,
    Manifest,
    ModelInfo,
    ShardsInfo,
    StageInfo,
    TableInfo,
)
from audit.run.plan import RunPlan
from audit.run.progress import DECODE, StageProgress, StageState
from audit.store import RunStore, utc_now

__all__ = ["FORMAT_VERSION", "RunManifest", "package_versions", "safe_source"]

VERSIONED_PACKAGES = (
    "imagenet-audit",
    "ray",
    "torch",
    "torchvision",
    "numpy",
    "pyarrow",
    "fsspec",
    "pillow",
)


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def safe_source(data: DataConfig) -> str | list[str]:
    """``data.source`` for the manifest: a list source shortened to its first 10 entries."""
    if isinstance(data.source, tuple):
        return list(data.source[:10]) + (
            [f"... {len(data.source) - 10} more"] if len(data.source) > 10 else []
        )
    return data.source


def execution_info(plan: RunPlan) -> ExecutionInfo:
    """The ``execution`` section of a new attempt (no node has run an actor yet)."""
    p = plan.cfg.predict
    return ExecutionInfo(
        device=plan.device,
        num_actors=plan.num_actors,
        accelerator_type=p.accelerator_type,
        resources=dict(p.resources),
    )


class RunManifest:
    """The manifest of one run, written through its one :class:`RunStore`.

    Args:
        plan: The run plan.
        store: The run's store (its files and row counts go into ``tables``).
        ledger: The run's shard ledger (``shards`` and the predict stage's progress).

    Attributes:
        manifest: The typed manifest; :meth:`write` updates it and writes its JSON.
        started: When this attempt started (for the images-per-second rate).
        predict_finished: When the last shard came back; None until then.
    """

    def __init__(self, plan: RunPlan, store: RunStore, ledger: ShardLedger):
        self.plan = plan
        self.store = store
        self.ledger = ledger
        self.manifest = Manifest(run_id=plan.run_id)
        self.started = time.time()
        self.predict_finished: float | None = None
        self.progress: StageProgress | None = None
        """The pass's per-stage counts (:mod:`audit.run.progress`), written with the manifest."""
        self.written_at = time.monotonic()
        """When :meth:`write` last replaced ``manifest.json`` (``time.monotonic``)."""

    @property
    def data(self) -> dict[str, Any]:
        """The manifest as JSON (a new dict each time: change it with :meth:`update`)."""
        return self.manifest.to_json()

    @data.setter
    def data(self, value: Mapping[str, Any]) -> None:
        self.manifest = Manifest.from_json(value)

    def start(self) -> None:
        """The first manifest of a new run (kept in memory until :meth:`write`)."""
        p = self.plan
        self.manifest = Manifest(
            format_version=FORMAT_VERSION,
            run_id=p.run_id,
            state="running",
            created=utc_now(),
            config=p.cfg.to_dict(),
            model=ModelInfo.from_json(
                {**p.model.manifest(), "class_ids": list(p.model.classes.ids)}
            ),
            data=DataInfo(
                source=safe_source(p.cfg.data),
                layout=p.listing.layout.value,
                inputs=len(p.listing.records) + len(p.listing.errors),
                fingerprint=p.fingerprint,
            ),
            execution=execution_info(p),
            versions=package_versions(),
            stages={
                "list": StageInfo(
                    "done",
                    {
                        "seconds": round(p.seconds_listing, 3),
                        "records": len(p.listing.records),
                        "errors": len(p.listing.errors),
                    },
                ),
                "predict": StageInfo("pending"),
            },
        )

    def resume(self, previous: Manifest | Mapping[str, Any], committed_at_start: int) -> None:
        """Continue an earlier attempt's manifest: a new ``attempts`` entry, this execution."""
        before = Manifest.of(previous)
        self.manifest = replace(
            before,
            attempts=(*before.attempts, Attempt(utc_now(), committed_at_start)),
            execution=execution_info(self.plan),
        )

    def add_nodes(self, nodes: set[str]) -> None:
        """Record Ray nodes the model actors ran on (``execution.nodes``; written by
        :meth:`write`)."""
        execution = self.manifest.execution or execution_info(self.plan)
        if nodes <= set(execution.nodes):
            return
        merged = tuple(sorted(set(execution.nodes) | nodes))
        self.manifest = replace(self.manifest, execution=replace(execution, nodes=merged))

    @property
    def stages(self) -> Mapping[str, StageInfo]:
        return self.manifest.stages

    def set_stage(self, name: str, stage: Mapping[str, Any]) -> None:
        """Record stage ``name`` as the JSON-ready ``stage`` (its ``state`` and progress), in
        place of the one recorded (a new stage goes last)."""
        stages = dict(self.manifest.stages)
        stages[name] = StageInfo.from_json(stage)
        self.manifest = replace(self.manifest, stages=stages)

    def update(self, **changes: Any) -> None:
        """Replace fields of :attr:`manifest` (e.g. ``metrics=...``); written by :meth:`write`."""
        self.manifest = replace(self.manifest, **changes)

    def write(self, state: str, error: str | None = None) -> None:
        """Update the state, progress, shards and tables (each listed file with the size and
        sha256 the store recorded when it wrote it), and replace ``manifest.json``."""
        ledger = self.ledger
        elapsed = (self.predict_finished or time.time()) - self.started
        predict_state = {
            "running": "running",
            "succeeded": "done",
            "failed": "failed",
            "interrupted": "interrupted",
        }[state]
        if self.predict_finished is not None and state in ("running", "interrupted"):
            predict_state = "done"
        rate = (ledger.done - ledger.done_at_start) / elapsed if elapsed > 0 else 0.0
        stages = dict(self.manifest.stages)
        predict = stages.get("predict", StageInfo())
        stages["predict"] = StageInfo(
            predict_state,
            {
                **predict.fields,
                "done": ledger.done,
                "total": ledger.total,
                "shards_done": len(ledger.committed),
                "shards_total": ledger.shards_total,
                "seconds": round(elapsed, 3),
                "images_per_second": round(rate, 3) if rate > 0 else None,
                "eta_seconds": round((ledger.total - ledger.done) / rate, 1)
                if rate > 0 and predict_state == "running"
                else None,
            },
        )
        if self.progress is not None:
            stages = self._stage_progress(stages, self.progress.states(), predict_state)
        self.manifest = replace(
            self.manifest,
            format_version=FORMAT_VERSION,
            run_id=self.plan.run_id,
            state=state,
            updated=utc_now(),
            error=error,
            stages=stages,
            shards=ShardsInfo(
                size=self.plan.cfg.output.shard_size,
                total=ledger.shards_total,
                committed=tuple(sorted(ledger.committed)),
            ),
            tables={
                name: TableInfo(
                    rows=self.store.rows[name],
                    files=tuple(files),
                    checksums={
                        rel: self.store.checksums[rel]
                        for rel in files
                        if rel in self.store.checksums
                    },
                )
                for name, files in self.store.files.items()
            },
        )
        self.store.write_manifest(self.manifest.to_json())
        self.written_at = time.monotonic()

    @staticmethod
    def _stage_progress(
        stages: dict[str, StageInfo], states: list[StageState], pass_state: str
    ) -> dict[str, StageInfo]:
        """``stages`` with the pass's per-stage counts: ``decode`` before ``predict``, the
        actor's other stages after it; ``predict`` keeps its shard counts and takes the recent
        rate, its actor time and, as its time left, the longest of the stages that know theirs
        (the pass ends when the last of them does). Once the pass is ``done``, so is every
        stage, and a stage that had no total has its count as one."""
        if pass_state == "done":
            states = [replace(st, total=st.done) for st in states]
        by = {st.name: st for st in states}

        def entry(st: StageState) -> StageInfo:
            js = st.to_json()
            if pass_state in ("failed", "interrupted") and js["state"] == "running":
                js["state"], js["eta_seconds"] = pass_state, None
            return StageInfo.from_json(js)

        out: dict[str, StageInfo] = {}
        for name, info in stages.items():
            if name == "predict":
                if DECODE in by:
                    out[DECODE] = entry(by[DECODE])
                mine = by.get("predict")
                fields = dict(info.fields)
                if mine is not None:
                    etas = [
                        round(e, 1)
                        for st in states
                        if not st.finished and (e := st.eta_seconds) is not None
                    ]
                    fields["work_seconds"] = round(mine.work_seconds, 3)
                    if info.state == "running":  # a finished pass keeps its average rate
                        if mine.rate:
                            fields["images_per_second"] = round(mine.rate, 3)
                        fields["eta_seconds"] = max(etas) if etas else None
                out[name] = StageInfo(info.state, fields)
                for st in states:
                    if st.name not in (DECODE, "predict"):
                        out[st.name] = entry(st)
            elif name not in by:
                out[name] = info
        return out
