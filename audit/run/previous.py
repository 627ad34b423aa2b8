"""The checks of a run's output folder that need neither Ray nor the pipeline's imports: an
entry point makes them before it starts or joins Ray, and :func:`audit.run.run_audit` makes
them again once it holds the run's lease."""

from __future__ import annotations

import logging

from audit.config import AuditConfig, ConfigError
from audit.run import resume
from audit.run.lease import RunLease
from audit.run.manifest_types import Manifest
from audit.store import RunStore

log = logging.getLogger(__name__)


def check_output(cfg: AuditConfig, *, lease_timeout_s: float | None = None) -> None:
    """The checks of :func:`run_audit` that need no Ray, for an entry point to make before it
    starts or joins Ray (seconds, not the half minute Ray takes): the output storage answers,
    another driver's fresh lease is refused and a finished run id is refused (without
    ``output.overwrite``). Reads only; :func:`run_audit` makes the same checks again. A run
    with no ``output.run_id`` gets a new id, so there is nothing to check.

    Raises:
        ConfigError: the run already finished, or its folder holds something else.
        RunInUseError: another driver holds the run's lease.
        OSError: the output storage fails (after the retries of transient errors).
    """
    if cfg.output.run_id is None:
        return
    store = RunStore(cfg.output.root, cfg.output.run_id, cfg.output.storage_options)
    RunLease(store.fs, store.path, cfg.output.run_id, store.url, lease_timeout_s).check()
    previous_attempt(store, cfg.output.overwrite)


def previous_attempt(store: RunStore, overwrite: bool) -> Manifest | None:
    """The manifest of an unfinished earlier attempt of this run, to resume; None for a new run.

    Raises:
        ConfigError: the run already finished (and ``overwrite`` is false), or its folder holds
            something that is not a run of this version.
    """
    if overwrite:
        return None
    previous = store.read_manifest()
    if previous is None:
        store.refuse_existing(overwrite)  # a non-empty folder with no manifest
        return None
    refuse(resume.refusals_before_plan(previous, store.url))  # before typing: any version
    return Manifest.from_json(previous, where=repr(store.url))


def refuse(reasons: list[str]) -> None:
    """Raises: ConfigError: with the first of ``reasons`` (the others are logged)."""
    if reasons:
        for reason in reasons[1:]:
            log.error("also: %s", reason)
        raise ConfigError(reasons[0])
