"""What the command modules share: the one-line error exit, the config loading, the
``--address``/``--storage-options`` options and the Jobs API lookups."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from audit.config import AuditConfig, ConfigError, load_config


def fail(message: str) -> typer.Exit:
    """Print ``error: <message>`` on stderr; the exit (code 1) to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=1)


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
StorageOpt = Annotated[
    str | None,
    typer.Option(
        "--storage-options",
        help="fsspec options for reading the run, as JSON (e.g. '{\"anon\": true}').",
    ),
]


def read_storage_options(text: str | None) -> dict[str, Any]:
    """``--storage-options`` parsed; exits 1 on bad JSON."""
    from audit.config import parse_storage_options

    try:
        return parse_storage_options(text)
    except ConfigError as exc:
        raise fail(str(exc)) from None


def connect(address: str | None) -> tuple[Any, str]:
    """The Jobs API client and its URL; exits 1 when no cluster answers."""
    from audit.jobs import JobsError
    from audit.jobs import connect as connect_jobs

    try:
        return connect_jobs(address)
    except JobsError as exc:
        raise fail(str(exc)) from None


def find(client: Any, url: str, ref: str) -> Any:
    """The job ``ref`` names (submission id, job id or run id); exits 1 when there is none."""
    from audit.jobs import JobsError, find_job

    try:
        job = find_job(client, ref)
    except JobsError as exc:
        raise fail(str(exc)) from None
    if job is None:
        raise fail(f"no job {ref!r} at {url} (neither a submission id, a job id nor a run id)")
    return job
