"""One audit run's lifecycle on Ray, one step per module, in the order a run takes them:

- :mod:`~audit.run.plan`: the frozen :class:`RunPlan` (model, listing, shards, fingerprint,
  explain flags, device), built once;
- :mod:`~audit.run.resume`: whether an earlier attempt may be resumed (reasons, not raises);
- :mod:`~audit.run.ledger`: which images of which shard arrived, which shards are committed;
- :mod:`~audit.run.tables`: output batches -> Arrow rows of the per-image tables;
- :mod:`~audit.run.counters`: the metric counters;
- :mod:`~audit.run.manifest`: ``manifest.json``, started, updated, resumed;
- :mod:`~audit.run.collect`: the driver's consumer: dedup, buffer, commit shards;
- :mod:`~audit.run.graph`: the Ray Data graph (decode tasks, model actors, streaming);
- :mod:`~audit.run.finalize`: invariants, criticism, metrics, the final manifest;
- :mod:`~audit.run.lifecycle`: :func:`run_audit`, those steps in order.

Nothing here calls ``ray.init()``: the entry points (``ray_jobs.audit``, ``audit-cli``) do.
"""

from audit.run.lifecycle import ProgressFn, RunResult, run_audit
from audit.run.plan import RunPlan, default_run_id, explain_flags, preflight

__all__ = [
    "ProgressFn",
    "RunPlan",
    "RunResult",
    "default_run_id",
    "explain_flags",
    "preflight",
    "run_audit",
]
