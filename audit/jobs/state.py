"""A job's state merged with its run's manifest: which job writes a run folder, whether the
manifest is an earlier attempt's or left stale by a dead driver, and the failed job's error.

:func:`audit.status.run_status` puts these together for ``audit-cli status``.
"""

from __future__ import annotations

import calendar
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from audit.jobs.packaging import META_RUN_URL

if TYPE_CHECKING:
    from ray.job_submission import JobDetails

    from audit.run.manifest_types import Manifest


def error_line(logs: str) -> str | None:
    """The last ``error: ...`` line of a job's logs, else the last line of a traceback."""
    lines = [ln.strip() for ln in logs.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith("error: "):
            return ln.removeprefix("error: ")
    if any(ln.startswith("Traceback (most recent call last)") for ln in lines):
        return lines[-1]
    return None


def same_run_url(a: str, b: str) -> bool:
    """Whether two spellings of a run folder name the same place (``file://`` and relative
    local paths are made absolute; other URLs are compared without a trailing ``/``)."""

    def canonical(url: str) -> str:
        if url.startswith("file://"):
            url = urlparse(url).path
        if "://" in url:
            return url.rstrip("/")
        return os.path.abspath(os.path.expanduser(url))

    return canonical(a) == canonical(b)


def job_of_run(job: JobDetails | None, folder: str) -> JobDetails | None:
    """``job`` when it writes the run at ``folder`` (its metadata says so), else None: a run id
    can be reused under another output root, and that job is not this run's."""
    if job is None:
        return None
    url = (job.metadata or {}).get(META_RUN_URL)
    return job if url and same_run_url(str(url), folder) else None


def manifest_predates(manifest: Manifest | Mapping[str, Any], job: JobDetails | None) -> bool:
    """Whether the manifest (typed, or as JSON gives it) was last written before ``job``
    started, i.e. by an earlier attempt of the run: a rerun's driver writes its own only after
    loading the model and listing the inputs. (``updated`` has whole seconds, truncated, so a
    manifest of this job is never judged older.)"""
    from audit.run.manifest_types import Manifest

    updated, start = Manifest.of(manifest).updated, getattr(job, "start_time", None)
    if not updated or not start:
        return False
    try:
        written = calendar.timegm(time.strptime(str(updated), "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return False
    return written < int(start) // 1000


def merged_state(job_status: str | None, manifest_state: str | None) -> tuple[str, bool]:
    """The state to show, and whether the manifest is stale.

    The job's state wins once it is terminal: a manifest that still says ``running`` under a
    FAILED or STOPPED job was left behind by a driver that died before it could say so.
    """
    if job_status is None:
        return manifest_state or "unknown", False
    if job_status == "PENDING":
        return "pending", False
    if job_status == "RUNNING":
        return manifest_state or "starting", False
    if job_status == "SUCCEEDED":
        state = manifest_state or "succeeded"
        return state, manifest_state == "running"
    terminal = job_status.lower()  # failed, stopped
    return terminal, manifest_state == "running"
