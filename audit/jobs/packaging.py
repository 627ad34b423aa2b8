"""What a job is made of: its submission id, its entrypoint, the working dir shipped with it
(and what is left out), and the metadata that ties it to its run.

A job is tied to its run by its submission id, ``audit-<run_id>`` (``audit-<run_id>.2``,
``.3``... for later attempts at the same run, e.g. a resume), and by its metadata:
``audit_run_id`` and ``audit_run_url`` (the run folder, where ``manifest.json`` lives).
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from audit.jobs.errors import JobsError

SUBMISSION_PREFIX = "audit-"
META_RUN_ID = "audit_run_id"
META_RUN_URL = "audit_run_url"
META_CONFIG = "audit_config"

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


def _config_in_working_dir(config: str | None, wd: Path, cwd: str) -> str | None:
    """The config file's path relative to ``wd`` (it travels with it).

    Raises:
        JobsError: the file is outside ``wd``.
    """
    if config is None:
        return None
    path = Path(config).expanduser()
    path = (path if path.is_absolute() else Path(cwd) / path).resolve()
    try:
        return path.relative_to(wd).as_posix()
    except ValueError:
        raise JobsError(
            f"the config file {str(path)!r} is outside the working dir {str(wd)!r}, "
            "which is all that is shipped to the cluster; move it there or pass "
            "--working-dir."
        ) from None


def _refuse_storage_overrides(overrides: Sequence[str]) -> None:
    """Raises JobsError when an override sets storage options (they could be credentials)."""
    for text in overrides:
        key = text.partition("=")[0].strip()
        if key.endswith(".storage_options"):
            raise JobsError(
                f"refusing --set {key}=...: storage options may hold credentials and a job's "
                "entrypoint is visible to anyone who can list the cluster's jobs; put them in "
                "the config file, or give the cluster's nodes credentials of their own."
            )


def _pin_output_root(output_root: str, wd: Path, cwd: str) -> tuple[str, list[str]]:
    """The output root as the job will see it (a relative local one made absolute against
    ``cwd``), and the exclude pattern keeping earlier runs written inside ``wd`` from
    travelling with the job (none when the root is elsewhere)."""
    if not is_local_path(output_root):
        return output_root, []
    local = Path(
        urlparse(output_root).path if output_root.startswith("file://") else output_root
    ).expanduser()
    root = str(local if local.is_absolute() else (Path(cwd) / local).resolve())
    try:
        inside = Path(root).resolve().relative_to(wd).as_posix()
    except ValueError:
        inside = None
    return root, [f"/{inside}/"] if inside and inside != "." else []


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
    rel = _config_in_working_dir(config, wd, cwd)
    _refuse_storage_overrides(overrides)
    root, runs_inside = _pin_output_root(output_root, wd, cwd)
    # JSON strings are YAML strings: a root or run id that looks like a number stays a string
    pinned = [*overrides, f"output.root={json.dumps(root)}", f"output.run_id={json.dumps(run_id)}"]
    return JobSpec(
        run_id=run_id,
        run_url=root.rstrip("/") + "/" + run_id,
        entrypoint=build_entrypoint(rel, pinned),
        working_dir=str(wd),
        excludes=tuple(DEFAULT_EXCLUDES) + tuple(excludes) + tuple(runs_inside),
        config=rel,
        num_cpus=num_cpus,
        num_gpus=num_gpus,
    )
