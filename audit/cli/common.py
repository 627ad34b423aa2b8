"""What the command modules share: the one-line error exit (:func:`one_line_errors`, under
every command), the config loading, the ``--address``/``--storage-options`` options and the
Jobs API lookups.

The error exit and ``--storage-options`` are declared once, in :mod:`audit.cli_boundary`, for
these modules and for the ``human`` and ``report`` groups alike.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from audit.cli_boundary import StorageOpt, fail, one_line_errors, parse_storage
from audit.config import AuditConfig, load_config

__all__ = [
    "AddressOpt",
    "StorageOpt",
    "connect",
    "fail",
    "find",
    "load",
    "one_line_errors",
    "parse_storage",
]


def load(
    config: Path | None, overrides: list[str] | None, output: str | None, run_id: str | None
) -> AuditConfig:
    """The validated config: the file, then ``--set`` overrides, then ``--output``/``--run-id``.

    Raises:
        ConfigError: with a one-line reason.
    """
    sets = list(overrides or [])
    if output is not None:
        sets.append(f"output.root={json.dumps(output)}")
    if run_id is not None:
        sets.append(f"output.run_id={json.dumps(run_id)}")
    return load_config(config, sets)


AddressOpt = Annotated[
    str | None,
    typer.Option(
        "--address",
        help="Jobs API (dashboard) URL; default $RAY_API_SERVER_ADDRESS, $RAY_ADDRESS, "
        "http://127.0.0.1:8265.",
    ),
]


def connect(address: str | None) -> tuple[Any, str]:
    """The Jobs API client and its URL.

    Raises:
        JobsError: no cluster answers, or it refuses the token.
    """
    from audit.jobs.client import connect as connect_jobs

    return connect_jobs(address)


def find(client: Any, url: str, ref: str) -> Any:
    """The job ``ref`` names (submission id, job id or run id); exits 1 when there is none.

    Raises:
        JobsError: the Jobs API call failed.
    """
    from audit.jobs.client import find_job

    job = find_job(client, ref)
    if job is None:
        raise fail(f"no job {ref!r} at {url} (neither a submission id, a job id nor a run id)")
    return job
