"""The run's ``manifest.json``: started, kept up to date while the run goes, resumed.

The manifest is what ``audit-cli status`` follows and what readers go by: a shard's files count
only once the manifest lists the shard as committed.
"""

from __future__ import annotations

import platform
import time
from importlib import metadata
from typing import Any

from audit.config import DataConfig
from audit.run.ledger import ShardLedger
from audit.run.plan import RunPlan
from audit.store import RunStore, utc_now

FORMAT_VERSION = 2
"""2: the model section records its source, transform and weights sha256; a ``classes`` table."""

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


class RunManifest:
    """The manifest of one run, written through its one :class:`RunStore`.

    Args:
        plan: The run plan.
        store: The run's store (its files and row counts go into ``tables``).
        ledger: The run's shard ledger (``shards`` and the predict stage's progress).

    Attributes:
        data: The manifest as a dict; :meth:`write` updates and writes it.
        started: When this attempt started (for the images-per-second rate).
        predict_finished: When the last shard came back; None until then.
    """

    def __init__(self, plan: RunPlan, store: RunStore, ledger: ShardLedger):
        self.plan = plan
        self.store = store
        self.ledger = ledger
        self.data: dict[str, Any] = {}
        self.started = time.time()
        self.predict_finished: float | None = None

    def start(self) -> None:
        """The first manifest of a new run (kept in memory until :meth:`write`)."""
        p = self.plan
        self.data = {
            "format_version": FORMAT_VERSION,
            "run_id": p.run_id,
            "state": "running",
            "created": utc_now(),
            "config": p.cfg.to_dict(),
            "model": p.model.manifest(),
            "data": {
                "source": safe_source(p.cfg.data),
                "layout": p.listing.layout.value,
                "inputs": len(p.listing.records) + len(p.listing.errors),
                "fingerprint": p.fingerprint,
            },
            "execution": {"device": p.device, "num_actors": p.num_actors},
            "versions": package_versions(),
            "stages": {
                "list": {
                    "state": "done",
                    "seconds": round(p.seconds_listing, 3),
                    "records": len(p.listing.records),
                    "errors": len(p.listing.errors),
                },
                "predict": {"state": "pending"},
            },
        }

    def resume(self, previous: dict[str, Any], committed_at_start: int) -> None:
        """Continue an earlier attempt's manifest: a new ``attempts`` entry, this execution."""
        self.data = previous
        attempts = previous.setdefault("attempts", [])
        attempts.append({"started": utc_now(), "committed_shards_at_start": committed_at_start})
        self.data["execution"] = {"device": self.plan.device, "num_actors": self.plan.num_actors}

    @property
    def stages(self) -> dict[str, Any]:
        stages: dict[str, Any] = self.data["stages"]
        return stages

    def write(self, state: str, error: str | None = None) -> None:
        """Update the state, progress, shards and tables, and replace ``manifest.json``."""
        ledger = self.ledger
        elapsed = (self.predict_finished or time.time()) - self.started
        predict_state = {"running": "running", "succeeded": "done", "failed": "failed"}[state]
        if self.predict_finished is not None and state == "running":
            predict_state = "done"
        rate = (ledger.done - ledger.done_at_start) / elapsed if elapsed > 0 else 0.0
        m = self.data
        m.update(
            {
                "format_version": FORMAT_VERSION,
                "run_id": self.plan.run_id,
                "state": state,
                "updated": utc_now(),
                "error": error,
            }
        )
        m["stages"]["predict"].update(
            {
                "state": predict_state,
                "done": ledger.done,
                "total": ledger.total,
                "shards_done": len(ledger.committed),
                "shards_total": ledger.shards_total,
                "seconds": round(elapsed, 3),
                "images_per_second": round(rate, 3) if rate > 0 else None,
                "eta_seconds": round((ledger.total - ledger.done) / rate, 1)
                if rate > 0 and predict_state == "running"
                else None,
            }
        )
        m["shards"] = {
            "size": self.plan.cfg.output.shard_size,
            "total": ledger.shards_total,
            "committed": sorted(ledger.committed),
        }
        m["tables"] = {
            name: {"rows": self.store.rows[name], "files": list(self.store.files[name])}
            for name in self.store.files
        }
        self.store.write_manifest(m)
