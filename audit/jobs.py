"""The audit as Ray jobs: submission, lookup, and a job's state merged with its run manifest.

``audit-cli submit/status/logs/stop/list`` are thin layers over this module, which talks to a
cluster's Jobs API (Ray's ``JobSubmissionClient``, served by the dashboard on port 8265).

Authentication: a cluster started with ``RAY_AUTH_MODE=token`` refuses every dashboard request
without ``Authorization: Bearer <token>``. The token is looked up as Ray itself does, highest
precedence first: ``$RAY_AUTH_TOKEN``, the file named by ``$RAY_AUTH_TOKEN_PATH``, then
``~/.ray/auth_token`` (what ``ray get-auth-token --generate`` writes and prints). The token is
sent as a header and never printed.

A job is tied to its run by its submission id, ``audit-<run_id>`` (``audit-<run_id>.2``,
``.3``... for later attempts at the same run, e.g. a resume), and by its metadata:
``audit_run_id`` and ``audit_run_url`` (the run folder, where ``manifest.json`` lives).
"""

from __future__ import annotations

import calendar
import contextlib
import json
import os
import shlex
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

if TYPE_CHECKING:
    from ray.job_submission import JobDetails, JobSubmissionClient

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
SUBMISSION_PREFIX = "audit-"
META_RUN_ID = "audit_run_id"
META_RUN_URL = "audit_run_url"
META_CONFIG = "audit_config"
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})

# Never shipped to the cluster: environments, outputs, caches, VCS data.
DEFAULT_EXCLUDES: tuple[str, ...] = (
    ".venv/",
    "venv/",
    ".git/",
    "audit-output/",
    "__pycache__/",
    ".mypy_cache/",
    ".ruff_cache/",
    ".pytest_cache/",
    "*.egg-info/",
    "build/",
    "dist/",
)


class JobsError(RuntimeError):
    """A Jobs API call failed; the message is one line meant for the user."""


@dataclass(frozen=True)
class AuthToken:
    """Where the dashboard token came from, and the token (never printed).

    Attributes:
        value: The token; ``None`` when no source has one.
        source: Human-readable source, e.g. ``$RAY_AUTH_TOKEN`` or ``~/.ray/auth_token``.
    """

    value: str | None = field(repr=False)
    source: str


def find_token(env: Mapping[str, str] | None = None) -> AuthToken:
    """Find the dashboard token the way Ray does (see the module docstring).

    Raises:
        JobsError: ``$RAY_AUTH_TOKEN_PATH`` names a file that is missing or empty (Ray treats
            this as a fatal misconfiguration too).
    """
    env = os.environ if env is None else env
    if env.get("RAY_AUTH_TOKEN", "").strip():
        return AuthToken(env["RAY_AUTH_TOKEN"].strip(), "$RAY_AUTH_TOKEN")
    if env.get("RAY_AUTH_TOKEN_PATH"):
        path = Path(env["RAY_AUTH_TOKEN_PATH"]).expanduser()
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise JobsError(
                f"$RAY_AUTH_TOKEN_PATH names {str(path)!r}, which cannot be read "
                f"({exc.strerror or exc})."
            ) from None
        if not text:
            raise JobsError(f"$RAY_AUTH_TOKEN_PATH names {str(path)!r}, which is empty.")
        return AuthToken(text, f"$RAY_AUTH_TOKEN_PATH ({path})")
    home = env.get("HOME") or str(Path.home())
    default = Path(home) / ".ray" / "auth_token"
    if default.is_file():
        text = default.read_text(encoding="utf-8").strip()
        if text:
            return AuthToken(text, str(default))
    return AuthToken(None, "none")


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


def auth_message(address: str, token: AuthToken, status: int) -> str:
    """The one-line reason for a 401/403 from the dashboard."""
    if status == 401 or token.value is None:
        return (
            f"the Ray cluster at {address} requires an authentication token and none was sent: "
            "set $RAY_AUTH_TOKEN, or $RAY_AUTH_TOKEN_PATH to a token file, or put the token in "
            "~/.ray/auth_token (`ray get-auth-token` prints it on the head node)."
        )
    return (
        f"the Ray cluster at {address} refused the authentication token from {token.source}: "
        "it is not this cluster's token (`ray get-auth-token` on the head node prints the "
        "right one)."
    )


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


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def call(fn: Any, *args: Any) -> Any:
    """Call a client method, turning Ray's multi-line errors into :class:`JobsError`."""
    from ray.exceptions import AuthenticationError

    try:
        return fn(*args)
    except AuthenticationError as exc:
        raise JobsError(f"authentication failed: {one_line(exc)}") from None
    except (RuntimeError, ValueError, OSError) as exc:  # OSError: requests' network errors
        raise JobsError(one_line(exc)) from None


# --- submission ---------------------------------------------------------------------------


def submission_id(run_id: str, attempt: int = 1) -> str:
    """``audit-<run_id>`` for the first attempt, ``audit-<run_id>.<n>`` for later ones."""
    base = SUBMISSION_PREFIX + run_id
    return base if attempt <= 1 else f"{base}.{attempt}"


def build_entrypoint(config: str | None, overrides: Sequence[str]) -> str:
    """The job's shell command: ``python -m ray_jobs.audit --config ... --set ...``."""
    parts = ["python", "-m", "ray_jobs.audit"]
    if config is not None:
        parts += ["--config", config]
    for text in overrides:
        parts += ["--set", text]
    return shlex.join(parts)


def is_local_path(url: str) -> bool:
    """True for a plain path or ``file://`` URL (not s3://, gs://, memory://...)."""
    scheme = urlparse(url).scheme
    return scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt")


@dataclass(frozen=True)
class JobSpec:
    """One audit job, ready to submit.

    Attributes:
        run_id: The run folder's name.
        run_url: Where the run folder will be (``<output.root>/<run_id>``).
        entrypoint: The shell command the cluster runs.
        working_dir: Local folder shipped to the cluster (holds the code and the config).
        excludes: gitignore-style patterns left out of the shipped folder.
        config: The config file's path inside ``working_dir`` (``None``: the demo defaults).
        num_cpus: CPUs reserved for the entrypoint (the driver); ``None`` means Ray's 0.
        num_gpus: GPUs reserved for the entrypoint; the model actors ask for their own.
    """

    run_id: str
    run_url: str
    entrypoint: str
    working_dir: str
    excludes: tuple[str, ...] = DEFAULT_EXCLUDES
    config: str | None = None
    num_cpus: float | None = None
    num_gpus: float | None = None

    @property
    def metadata(self) -> dict[str, str]:
        return {
            META_RUN_ID: self.run_id,
            META_RUN_URL: self.run_url,
            META_CONFIG: self.config or "(defaults: the demo)",
        }


def job_spec(
    config: str | None,
    overrides: Sequence[str],
    run_id: str,
    output_root: str,
    working_dir: str,
    *,
    excludes: Sequence[str] = (),
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    cwd: str | None = None,
) -> JobSpec:
    """Build the job for ``config`` + ``overrides`` as the cluster will see it.

    The config path is made relative to ``working_dir`` (it travels with it); a relative local
    ``output_root`` is made absolute against ``cwd`` so the job does not write inside its
    unpacked working dir; the run id and output root are pinned with ``--set`` so that the job
    and ``audit-cli status`` agree on where the manifest is. A local output root inside
    ``working_dir`` is added to the excludes, so that earlier runs are not shipped with the job.

    Raises:
        JobsError: the config file is outside ``working_dir``, or an override sets storage
            options (the entrypoint is visible to anyone who can list the cluster's jobs).
    """
    cwd = cwd or os.getcwd()
    wd = Path(working_dir).expanduser()
    wd = wd if wd.is_absolute() else Path(cwd) / wd
    wd = wd.resolve()
    if not wd.is_dir():
        raise JobsError(f"the working dir {str(wd)!r} is not a folder.")
    rel = None
    if config is not None:
        path = Path(config).expanduser()
        path = (path if path.is_absolute() else Path(cwd) / path).resolve()
        try:
            rel = path.relative_to(wd).as_posix()
        except ValueError:
            raise JobsError(
                f"the config file {str(path)!r} is outside the working dir {str(wd)!r}, "
                "which is all that is shipped to the cluster; move it there or pass "
                "--working-dir."
            ) from None
    for text in overrides:
        key = text.partition("=")[0].strip()
        if key.endswith(".storage_options"):
            raise JobsError(
                f"refusing --set {key}=...: storage options may hold credentials and a job's "
                "entrypoint is visible to anyone who can list the cluster's jobs; put them in "
                "the config file, or give the cluster's nodes credentials of their own."
            )
    root = output_root
    excluded = list(excludes)
    if is_local_path(root):
        local = Path(urlparse(root).path if root.startswith("file://") else root).expanduser()
        root = str(local if local.is_absolute() else (Path(cwd) / local).resolve())
        try:  # earlier runs written inside the working dir must not travel with the next job
            inside = Path(root).resolve().relative_to(wd).as_posix()
        except ValueError:
            inside = None
        if inside and inside != ".":
            excluded.append(f"/{inside}/")
    # JSON strings are YAML strings: a root or run id that looks like a number stays a string
    pinned = [*overrides, f"output.root={json.dumps(root)}", f"output.run_id={json.dumps(run_id)}"]
    return JobSpec(
        run_id=run_id,
        run_url=root.rstrip("/") + "/" + run_id,
        entrypoint=build_entrypoint(rel, pinned),
        working_dir=str(wd),
        excludes=tuple(DEFAULT_EXCLUDES) + tuple(excluded),
        config=rel,
        num_cpus=num_cpus,
        num_gpus=num_gpus,
    )


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


# --- lookup -------------------------------------------------------------------------------


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


# --- status -------------------------------------------------------------------------------


def job_info(job: JobDetails) -> dict[str, Any]:
    """The JSON-ready fields of a job that ``status``/``list`` show (no runtime env: it can
    carry environment variables)."""
    meta = job.metadata or {}
    return {
        "submission_id": job.submission_id,
        "job_id": job.job_id,
        "status": str(job.status),
        "message": job.message,
        "entrypoint": job.entrypoint,
        "start_time": job.start_time,
        "end_time": job.end_time,
        "run_id": meta.get(META_RUN_ID),
        "run_url": meta.get(META_RUN_URL),
        "config": meta.get(META_CONFIG),
    }


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


def manifest_predates(manifest: Mapping[str, Any], job: JobDetails | None) -> bool:
    """Whether the manifest was last written before ``job`` started, i.e. by an earlier
    attempt of the run: a rerun's driver writes its own only after loading the model and
    listing the inputs. (``updated`` has whole seconds, truncated, so a manifest of this job
    is never judged older.)"""
    updated, start = manifest.get("updated"), getattr(job, "start_time", None)
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


def stage_progress(manifest: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per-stage progress from a manifest, with rates and time left filled in when the
    manifest does not carry them (older manifests)."""
    out: dict[str, dict[str, Any]] = {}
    for name, st in (manifest.get("stages") or {}).items():
        st = dict(st)
        done, total = st.get("done"), st.get("total")
        ips = st.get("images_per_second")
        running = st.get("eta_seconds") is None and st.get("state") == "running"
        if running and isinstance(done, int) and isinstance(total, int) and ips:
            st["eta_seconds"] = round(max(total - done, 0) / float(ips), 1)
        out[name] = st
    return out


def run_summary(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """What ``status --json`` shows of a manifest: state, progress, rows, errors, metrics."""
    tables = manifest.get("tables") or {}
    return {
        "run_id": manifest.get("run_id"),
        "state": manifest.get("state"),
        "updated": manifest.get("updated"),
        "error": manifest.get("error"),
        "inputs": (manifest.get("data") or {}).get("inputs"),
        "stages": stage_progress(manifest),
        "rows": {name: t.get("rows", 0) for name, t in tables.items()},
        "errors": (tables.get("errors") or {}).get("rows"),
        "metrics": manifest.get("metrics") or {},
    }


def _seconds(s: float) -> str:
    s = float(s)
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def stage_line(name: str, st: Mapping[str, Any]) -> str:
    """One line per stage: ``predict: running  120/300 images, shards 1/3, 12.3 images/s,
    10 s, about 15 s left``."""
    parts = []
    unit = "classes" if name == "criticism" else "images"
    total = st.get("total", st.get("classes"))
    if total is not None:
        parts.append(f"{st.get('done', 0)}/{total} {unit}")
    if st.get("shards_total") is not None:
        parts.append(f"shards {st.get('shards_done', 0)}/{st['shards_total']}")
    if st.get("records") is not None:
        parts.append(f"{st['records']} records, {st.get('errors', 0)} errors")
    if st.get("images_per_second"):
        parts.append(f"{float(st['images_per_second']):.1f} images/s")
    if st.get("seconds") is not None:
        parts.append(_seconds(st["seconds"]))
    if st.get("eta_seconds") is not None and st.get("state") == "running":
        parts.append(f"about {_seconds(st['eta_seconds'])} left")
    return f"  stage {name}: {st.get('state')}" + ("  " + ", ".join(parts) if parts else "")
