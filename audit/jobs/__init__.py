"""The audit as Ray jobs: submission, lookup, and a job's state merged with its run manifest.

``audit-cli submit/status/logs/stop/list`` are thin layers over this package, which talks to a
cluster's Jobs API (Ray's ``JobSubmissionClient``, served by the dashboard on port 8265). The
token is sent as a header and never printed.

The modules, in the order a job goes:

- :mod:`~audit.jobs.errors`: :class:`JobsError` (one line for the user) and :func:`one_line`;
- :mod:`~audit.jobs.tokens`: the dashboard token, found the way Ray finds it;
- :mod:`~audit.jobs.packaging`: the job's submission id, entrypoint, working dir and metadata
  (:func:`job_spec` -> :class:`JobSpec`);
- :mod:`~audit.jobs.client`: the Jobs API: :func:`connect`, :func:`submit`, the lookups,
  :func:`wait_terminal`;
- :mod:`~audit.jobs.state`: a job's state merged with its run's manifest;
- :mod:`~audit.jobs.presentation`: what ``status`` and ``list`` show.
"""

from audit.jobs.client import (
    DEFAULT_ADDRESS,
    TERMINAL,
    audit_jobs,
    call,
    connect,
    find_job,
    jobs_of_run,
    resolve_address,
    submit,
    wait_terminal,
)
from audit.jobs.errors import JobsError, one_line
from audit.jobs.packaging import (
    DEFAULT_EXCLUDES,
    META_CONFIG,
    META_RUN_ID,
    META_RUN_URL,
    SUBMISSION_PREFIX,
    JobSpec,
    build_entrypoint,
    is_local_path,
    job_spec,
    submission_id,
)
from audit.jobs.presentation import job_info, run_summary, stage_line, stage_progress
from audit.jobs.state import error_line, job_of_run, manifest_predates, merged_state, same_run_url
from audit.jobs.tokens import AuthToken, auth_message, find_token

__all__ = [
    "DEFAULT_ADDRESS",
    "DEFAULT_EXCLUDES",
    "META_CONFIG",
    "META_RUN_ID",
    "META_RUN_URL",
    "SUBMISSION_PREFIX",
    "TERMINAL",
    "AuthToken",
    "JobSpec",
    "JobsError",
    "audit_jobs",
    "auth_message",
    "build_entrypoint",
    "call",
    "connect",
    "error_line",
    "find_job",
    "find_token",
    "is_local_path",
    "job_info",
    "job_of_run",
    "job_spec",
    "jobs_of_run",
    "manifest_predates",
    "merged_state",
    "one_line",
    "resolve_address",
    "run_summary",
    "same_run_url",
    "stage_line",
    "stage_progress",
    "submission_id",
    "submit",
    "wait_terminal",
]
