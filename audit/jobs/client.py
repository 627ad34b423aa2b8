"""Talking to a cluster's Jobs API (Ray's ``JobSubmissionClient``, served by the dashboard on
port 8265): connecting with the token, submitting a job, finding a run's jobs, waiting for one.

Ray's errors are multi-line; every helper here raises :class:`~audit.jobs.errors.JobsError`
with one line instead.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from audit.jobs.errors import JobsError, one_line
from audit.jobs.packaging import META_RUN_ID, JobSpec, submission_id
from audit.jobs.tokens import auth_message, find_token

if TYPE_CHECKING:
    from ray.job_submission import JobDetails, JobSubmissionClient

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})


def resolve_address(address: str | None, env: Mapping[str, str] | None = None) -> str:
    """The Jobs API URL: ``address``, else ``$RAY_API_SERVER_ADDRESS``, else ``$RAY_ADDRESS``
    when it is an http(s) URL, else :data:`DEFAULT_ADDRESS`. A bare ``host:port`` gets
    ``http://``."""
    env = os.environ if env is None else env
    chosen = address or env.get("RAY_API_SERVER_ADDRESS") or ""
    if not chosen:
        ray_address = env.get("RAY_ADDRESS", "")
        if ray_address.startswith(("http://", "https://")):
            chosen = ray_address
    chosen = chosen or DEFAULT_ADDRESS
    if "://" not in chosen:
        chosen = "http://" + chosen
    return chosen.rstrip("/")


@contextlib.contextmanager
def _without_address_env() -> Iterator[None]:
    """Ray's client lets ``$RAY_ADDRESS``/``$RAY_API_SERVER_ADDRESS`` override the address it
    is given; hide them while it is built so that the resolved address wins."""
    saved = {
        k: os.environ.pop(k) for k in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS") if k in os.environ
    }
    try:
        yield
    finally:
        os.environ.update(saved)


def connect(address: str | None = None) -> tuple[JobSubmissionClient, str]:
    """A Jobs API client for ``address`` (see :func:`resolve_address`), sending the token.

    Returns:
        The client and the resolved address.

    Raises:
        JobsError: the cluster cannot be reached, or refuses the token (or its absence).
    """
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    url = resolve_address(address)
    token = find_token()
    headers = {"Authorization": f"Bearer {token.value}"} if token.value else {}
    try:
        with _without_address_env():
            client = JobSubmissionClient(url, headers=headers)
    except AuthenticationError as exc:
        status = 401 if "required" in str(exc).split(":", 1)[0].lower() else 403
        raise JobsError(auth_message(url, token, status)) from None
    except ConnectionError:
        raise JobsError(
            f"no Ray dashboard answers at {url}; start a cluster or give its address with "
            "--address or $RAY_API_SERVER_ADDRESS."
        ) from None
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        # requests' errors (bad URL, HTTP 404/502 from a proxy) are OSErrors; Ray raises
        # RuntimeError for an unknown scheme or a failed version check, KeyError for a reply
        # that is not a Ray dashboard's
        raise JobsError(
            f"the Ray Jobs API at {url} did not answer as a Ray dashboard: {one_line(exc)}"
        ) from None
    return client, url


def call(fn: Any, *args: Any) -> Any:
    """Call a client method, turning Ray's multi-line errors into :class:`JobsError`."""
    from ray.exceptions import AuthenticationError

    try:
        return fn(*args)
    except AuthenticationError as exc:
        raise JobsError(f"authentication failed: {one_line(exc)}") from None
    except (RuntimeError, ValueError, OSError) as exc:  # OSError: requests' network errors
        raise JobsError(one_line(exc)) from None


def submit(client: JobSubmissionClient, spec: JobSpec) -> str:
    """Submit ``spec`` under ``audit-<run_id>`` (or the next free attempt number).

    Returns:
        The submission id.

    Raises:
        JobsError: a job of the same run is still pending or running.
    """
    jobs = jobs_of_run(client, spec.run_id)
    active = [j for j in jobs if str(j.status) not in TERMINAL]
    if active:
        j = active[-1]
        raise JobsError(
            f"job {j.submission_id} of run {spec.run_id!r} is still {j.status}; stop it with "
            f"'audit-cli stop {j.submission_id}' or choose another --run-id."
        )
    used = {j.submission_id for j in call(client.list_jobs)}
    attempt = 1
    while submission_id(spec.run_id, attempt) in used:
        attempt += 1
    sid = submission_id(spec.run_id, attempt)
    runtime_env = {"working_dir": spec.working_dir, "excludes": list(spec.excludes)}
    result = call(
        lambda: client.submit_job(
            entrypoint=spec.entrypoint,
            submission_id=sid,
            runtime_env=runtime_env,
            metadata=spec.metadata,
            entrypoint_num_cpus=spec.num_cpus,
            entrypoint_num_gpus=spec.num_gpus,
        )
    )
    return str(result)


def _attempt(sid: str | None) -> int:
    tail = (sid or "").rsplit(".", 1)
    return int(tail[1]) if len(tail) == 2 and tail[1].isdigit() else 1


def jobs_of_run(client: JobSubmissionClient, run_id: str) -> list[JobDetails]:
    """The run's jobs, oldest attempt first (by metadata, so renamed ids still match)."""
    jobs = [j for j in call(client.list_jobs) if (j.metadata or {}).get(META_RUN_ID) == run_id]
    return sorted(jobs, key=lambda j: (j.start_time or 0, _attempt(j.submission_id)))


def audit_jobs(client: JobSubmissionClient) -> list[JobDetails]:
    """Every job submitted by ``audit-cli submit``, oldest first."""
    jobs = [j for j in call(client.list_jobs) if (j.metadata or {}).get(META_RUN_ID)]
    return sorted(jobs, key=lambda j: (j.start_time or 0, j.submission_id or ""))


def find_job(client: JobSubmissionClient, ref: str) -> JobDetails | None:
    """The job named by ``ref``: a submission id, a Ray job id (``02000000``), or a run id
    (its newest attempt). ``None`` when nothing matches."""
    jobs = call(client.list_jobs)
    for j in jobs:
        if ref in (j.submission_id, j.job_id):
            return j
    mine = [j for j in jobs if (j.metadata or {}).get(META_RUN_ID) == ref]
    if mine:
        return max(mine, key=lambda j: (j.start_time or 0, _attempt(j.submission_id)))
    return None


def wait_terminal(client: JobSubmissionClient, sid: str, timeout: float, poll: float = 1.0) -> str:
    """Poll until the job is SUCCEEDED, FAILED or STOPPED; returns that status.

    Raises:
        JobsError: still not terminal after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        status = str(call(client.get_job_status, sid))
        if status in TERMINAL:
            return status
        if time.monotonic() > deadline:
            raise JobsError(f"job {sid} is still {status} after {timeout:.0f} s.")
        time.sleep(poll)
