"""One audit run's lifecycle on Ray, one step per module, in the order a run takes them:

- :mod:`~audit.run.plan`: the frozen :class:`RunPlan` (model, listing, shards, fingerprint,
  explain flags, device), built once;
- :mod:`~audit.run.resume`: whether an earlier attempt may be resumed (reasons, not raises);
- :mod:`~audit.run.ledger`: which images of which shard arrived, which shards are committed;
- :mod:`~audit.run.tables`: output batches -> Arrow rows of the per-image tables;
- :mod:`~audit.run.counters`: the metric counters;
- :mod:`~audit.run.manifest_types`: the typed manifest (:class:`Manifest`), to and from JSON;
- :mod:`~audit.run.manifest`: ``manifest.json``, started, updated, resumed;
- :mod:`~audit.run.collect`: the driver's consumer: dedup, buffer, commit shards;
- :mod:`~audit.run.graph`: the Ray Data graph (decode tasks, model actors, streaming);
- :mod:`~audit.run.finalize`: invariants, criticism, metrics, the final manifest;
- :mod:`~audit.run.previous`: the output folder's checks (lease, finished run) before Ray;
- :mod:`~audit.run.lifecycle`: :func:`run_audit`, those steps in order;
- :mod:`~audit.run.reader`: :class:`RunReader`, what every reader of a finished or running run
  goes through (typed manifest, committed tables, classes).

Nothing here calls ``ray.init()``: the entry points (``ray_jobs.audit``, ``audit-cli``) do.
The names below are imported on first use, so that reading a run (:mod:`audit.run.reader`,
which ``audit-cli status`` does) does not import torch and Ray.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from audit.run.lifecycle import ProgressFn, RunResult, run_audit
    from audit.run.plan import RunPlan, check_weights, default_run_id, explain_flags, preflight
    from audit.run.previous import check_output

_WHERE = {
    "ProgressFn": "audit.run.lifecycle",
    "RunResult": "audit.run.lifecycle",
    "run_audit": "audit.run.lifecycle",
    "check_output": "audit.run.previous",
    "RunPlan": "audit.run.plan",
    "check_weights": "audit.run.plan",
    "default_run_id": "audit.run.plan",
    "explain_flags": "audit.run.plan",
    "preflight": "audit.run.plan",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ProgressFn",
    "RunPlan",
    "RunResult",
    "check_output",
    "check_weights",
    "default_run_id",
    "explain_flags",
    "preflight",
    "run_audit",
]
