"""A run's state, from its manifest and the Ray job writing it: what ``audit-cli status`` shows.

A run found under the output root is read directly (a local ``audit-cli run``); otherwise, or
when its manifest does not say 'succeeded', the cluster's Jobs API is asked for the job writing
that folder. A FAILED or STOPPED job wins over a manifest its driver could not update any more
(:func:`audit.jobs.state.merged_state`), and a manifest written before the job started is an earlier
attempt's (:func:`audit.jobs.state.manifest_predates`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from audit.errors import AuditError
from audit.store import MANIFEST

if TYPE_CHECKING:
    from audit.run.manifest_types import Manifest
    from audit.run.reader import RunReader


class StatusError(AuditError):
    """No run or job to show, or its manifest cannot be read (one line, for the CLI)."""


@dataclass(frozen=True)
class RunStatus:
    """A run's merged state; the fields, in order, are the keys of ``status --json``.

    Attributes:
        run_id: The run id (the manifest's, else the job's metadata, else what was asked for).
        state: The merged state (a FAILED or STOPPED job wins over a manifest's 'running').
        stale: The manifest says 'running' but the job has ended.
        manifest_of_earlier_attempt: The manifest was written before the job started.
        error: The run's error, or the failed job's error line.
        url: The run folder (path or URL), None when the job names none.
        address: The Jobs API asked, None when no cluster was asked.
        job: The job's fields (:func:`audit.jobs.presentation.job_info`), None when there is no job.
        progress: The manifest's progress (:func:`audit.jobs.presentation.run_summary`).
        manifest: The manifest as JSON gave it (``status --json`` prints it as it is), None
            when there is none yet; :class:`audit.run.reader.RunReader` gives it typed.
        verify: With ``--verify``: one line per committed file that is missing or altered
            (:func:`audit.run.verify.verify_run`; empty: all are sound); None when not
            verified (and then not in ``status --json``).
    """

    run_id: str | None
    state: str
    stale: bool
    manifest_of_earlier_attempt: bool
    error: str | None
    url: str | None
    address: str | None
    job: dict[str, Any] | None
    progress: dict[str, Any] | None
    manifest: dict[str, Any] | None
    verify: tuple[str, ...] | None = None

    @property
    def shown_state(self) -> str:
        """The state as ``status`` prints it: ``succeeded, but 1 file is missing or altered``
        when verified files are bad, else :attr:`state`."""
        if not self.verify:
            return self.state
        n = len(self.verify)
        bad = f"{n} file is" if n == 1 else f"{n} files are"
        return f"{self.state}, but {bad} missing or altered"

    def as_dict(self) -> dict[str, Any]:
        """The fields as one mapping, in ``status --json`` order."""
        out: dict[str, Any] = {
            "run_id": self.run_id,
            "state": self.state,
            "stale": self.stale,
            "manifest_of_earlier_attempt": self.manifest_of_earlier_attempt,
            "error": self.error,
            "url": self.url,
            "address": self.address,
            "job": self.job,
            "progress": self.progress,
            "manifest": self.manifest,
        }
        if self.verify is not None:
            out["verify"] = list(self.verify)
        return out

    def to_json(self) -> str:
        """What ``audit-cli status --json`` prints."""
        return json.dumps(self.as_dict(), indent=2, default=str)


def has_manifest(url: str, storage_options: Mapping[str, Any]) -> bool:
    """Whether ``url`` is a run folder (holds a manifest); False when it cannot be read."""
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(url, **storage_options)
        return bool(fs.exists(path.rstrip("/") + "/" + MANIFEST))
    except (OSError, ValueError):
        return False


def find_run(run: str | None, output: str, storage_options: Mapping[str, Any]) -> str | None:
    """A run folder from a path/URL, a run id under ``output``, or the newest run there;
    ``None`` when there is none."""
    import fsspec

    if run is not None:
        for candidate in (run, output.rstrip("/") + "/" + run):
            if has_manifest(candidate, storage_options):
                return candidate
        return None
    try:
        fs, root = fsspec.core.url_to_fs(output, **storage_options)
        manifests = fs.glob(root.rstrip("/") + "/*/" + MANIFEST) if fs.exists(root) else []
    except (OSError, ValueError):
        return None
    if not manifests:
        return None
    newest = max(manifests, key=lambda p: (fs.info(p).get("mtime") or 0, p))
    return str(fs.unstrip_protocol(newest.rsplit("/", 1)[0]))


def _read_manifest(url: str, storage_options: Mapping[str, Any]) -> RunReader | None:
    """A reader of the run, its manifest read; None when there is no manifest yet.

    Raises:
        ManifestError: it is not JSON, or of a newer format version (an :class:`AuditError`).
        OSError: the storage refused the read (``audit-cli`` reports it in one line).
    """
    from audit.run.reader import RunReader

    reader = RunReader(url, storage_options)
    try:
        reader.manifest  # noqa: B018  (read it here: a missing one is no error)
    except FileNotFoundError:
        return None
    return reader


def run_status(
    run: str | None,
    output: str,
    *,
    address: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    verify: bool = False,
) -> RunStatus:
    """The state of a run or job, merged from its manifest and the job writing it.

    Args:
        run: A run folder, a run id under ``output``, a submission id or a job id; None: the
            newest run under ``output``, else the cluster's newest audit job.
        output: The output root local runs are looked for under.
        address: The Jobs API (default ``$RAY_API_SERVER_ADDRESS``, ``$RAY_ADDRESS``, the local
            dashboard). A run found under ``output`` only asks it when its manifest does not
            say 'succeeded', and quietly does without it when no cluster answers.
        storage_options: fsspec options for reading the run.
        verify: Also check the committed files against the manifest
            (:func:`audit.run.verify.verify_run`): :attr:`RunStatus.verify`.

    Raises:
        StatusError: with a one-line reason: no such run or job.
        ManifestError: a manifest that is not JSON or of a newer format (one line).
        OSError: the storage refused to read the manifest (``audit-cli`` prints one line).
    """
    from audit.jobs.presentation import job_info, run_summary
    from audit.jobs.state import manifest_predates, merged_state

    so = dict(storage_options or {})
    folder = find_run(run, output, so)
    if folder is not None:
        reader = _read_manifest(folder, so)
        manifest = reader.manifest if reader else None
        job, client, api = _job_writing(manifest, folder, address)
    else:
        from audit.jobs.packaging import META_RUN_URL

        job, client, api = _job_named(run, output, address)
        folder = (job.metadata or {}).get(META_RUN_URL)
        reader = _read_manifest(folder, so) if folder else None
        manifest = reader.manifest if reader else None
    job_status = str(job.status) if job is not None else None
    earlier = manifest is not None and manifest_predates(manifest, job)
    current = None if earlier or manifest is None else manifest
    state, stale = merged_state(job_status, current.state if current else None)
    error = current.error if current else None
    if job is not None and job_status == "FAILED" and not error:
        error = _failed_job_error(client, job)
    run_id = (manifest.run_id if manifest else None) or (
        (job.metadata or {}).get("audit_run_id") if job else run
    )
    return RunStatus(
        run_id=run_id,
        state=state,
        stale=stale,
        manifest_of_earlier_attempt=earlier,
        error=error,
        url=folder,
        address=api,
        job=job_info(job) if job is not None else None,
        progress=run_summary(manifest) if manifest else None,
        manifest=reader.raw_manifest if reader else None,
        verify=_verify(folder, so) if verify and reader is not None and folder else None,
    )


def _verify(folder: str, storage_options: Mapping[str, Any]) -> tuple[str, ...]:
    """One line per missing or altered committed file of the run in ``folder``."""
    from audit.run.verify import verify_run

    report = verify_run(folder, storage_options)
    return tuple(b.line() for b in report.bad)


def _job_writing(
    manifest: Manifest | None, folder: str, address: str | None
) -> tuple[Any, Any, str | None]:
    """``(job, client, api)`` of the job (re)running the unfinished run in ``folder``, if one
    does; quietly none when no cluster answers."""
    from audit.jobs.client import connect, find_job
    from audit.jobs.errors import JobsError
    from audit.jobs.state import job_of_run

    if manifest is None or manifest.state == "succeeded":
        return None, None, None
    try:
        client, api = connect(address)
        return job_of_run(find_job(client, str(manifest.run_id)), folder), client, api
    except JobsError:
        return None, None, None


def _job_named(run: str | None, output: str, address: str | None) -> tuple[Any, Any, str]:
    """``(job, client, api)`` of the job ``run`` names (the newest audit job for None).

    Raises:
        StatusError: no cluster to ask, or it has no such job.
    """
    from audit.jobs.client import audit_jobs, connect, find_job
    from audit.jobs.errors import JobsError

    asked = address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if run is None and not asked:
        raise StatusError(f"no runs under {output!r}; start one with 'audit-cli run'")
    job: Any = None
    try:
        client, api = connect(address)
        if run is None:
            found = audit_jobs(client)
            if not found:
                raise StatusError(f"no audit jobs at {api}; start one with 'audit-cli submit'")
            job = found[-1]
        else:
            job = find_job(client, run)
    except JobsError as exc:
        reason = str(exc).rstrip(".")
        raise StatusError(
            f"no run {run!r}: neither a run folder nor a run id under {output!r}, "
            f"and asking the cluster failed: {reason}"
        ) from None
    if job is None:
        raise StatusError(
            f"no run {run!r}: neither a run folder nor a run id under {output!r}, "
            f"nor a job at {api}"
        )
    return job, client, api


def _failed_job_error(client: Any, job: Any) -> str | None:
    """The first line of a failed job's error: from its logs, else its message."""
    from audit.jobs.state import error_line

    try:
        logs = client.get_job_logs(job.submission_id or job.job_id)
        error = error_line(logs) or (job.message or "")
    except Exception:  # logs are a courtesy; the job's message is enough
        error = job.message or ""
    return error.strip().splitlines()[0] if error.strip() else None
