"""``audit-cli status``, ``logs``, ``stop`` and ``list``: a run's state and the cluster's audit
jobs. The state itself is computed by :func:`audit.status.run_status`; this module prints it."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from audit.cli.common import (
    AddressOpt,
    StorageOpt,
    connect,
    fail,
    find,
    one_line_errors,
    parse_storage,
)

if TYPE_CHECKING:
    from audit.status import RunStatus

app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)


def status_lines(st: RunStatus) -> list[str]:
    """What ``audit-cli status`` prints of a run's state, line by line."""
    from audit.jobs.presentation import stage_line, stage_progress
    from audit.summary import format_metrics

    job = st.job
    job_status = job["status"] if job is not None else None
    lines = []
    if job is not None:
        lines.append(f"job {job['submission_id']}: {job_status}  ({st.address})")
    lines.append(f"run {st.run_id}  state: {st.shown_state}  ({st.url})")
    lines += [f"  {line}" for line in st.verify or ()]
    if st.manifest is None:
        lines.append("  no manifest yet: the job has not started writing the run")
    else:
        m = st.manifest
        model, data = m.get("model") or {}, m.get("data") or {}
        if model:
            lines.append(f"  model {model.get('name')}  weights: {model.get('weights')}")
        if data:
            lines.append(
                f"  data {data.get('source')}  layout: {data.get('layout')}  "
                f"inputs: {data.get('inputs')}"
            )
        for name, stage in stage_progress(m).items():
            lines.append(stage_line(name, stage))
        for name, t in (m.get("tables") or {}).items():
            lines.append(f"  table {name}: {t['rows']} rows in {len(t['files'])} files")
        lines += format_metrics(m.get("metrics") or {})
        if m.get("updated"):
            lines.append(f"  updated {m['updated']}")
        if st.manifest_of_earlier_attempt:
            sid = job["submission_id"] if job is not None else None
            lines.append(
                "  note: this manifest is from an earlier attempt (written before job "
                f"{sid} started); the job has not written its own yet"
            )
    if st.error:
        lines.append(f"  error: {st.error}")
    if st.stale:
        lines.append(
            f"  note: the manifest still says 'running' but the job is {job_status}: "
            "the manifest is stale (its driver stopped before it could update it)"
        )
    return lines


@app.command()
@one_line_errors
def status(
    run: Annotated[
        str | None,
        typer.Argument(
            help="Run folder, run id under --output, submission id or job id "
            "(default: the newest run under --output)."
        ),
    ] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="Output root.")] = "./audit-output",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object: job, progress, manifest.")
    ] = False,
    address: AddressOpt = None,
    storage_options: StorageOpt = None,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Also check the committed files against the manifest (size, sha256, "
            "Parquet footer); exit 1 when one is missing or altered.",
        ),
    ] = False,
) -> None:
    """Print a run's state: the job's status, stages with progress, rows, errors, metrics.

    A run found under --output is read directly (a local `audit-cli run`); otherwise, or when
    its manifest does not say 'succeeded', the cluster's Jobs API is asked for the job writing
    that folder. A FAILED or STOPPED job wins over a manifest its driver could not update any
    more, and a manifest written before the job started is an earlier attempt's. With
    --verify the committed files are checked too: 'succeeded, but N files are missing or
    altered', one line per such file, and exit code 1.
    """
    from audit.status import run_status

    st = run_status(
        run, output, address=address, storage_options=parse_storage(storage_options), verify=verify
    )
    if as_json:
        typer.echo(st.to_json())
    else:
        for line in status_lines(st):
            typer.echo(line)
    if st.verify:
        raise typer.Exit(1)


@app.command()
@one_line_errors
def logs(
    job: Annotated[str, typer.Argument(help="Submission id, job id or run id.")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until the job ends.")
    ] = False,
    address: AddressOpt = None,
) -> None:
    """Print a job's driver logs (stdout and stderr of the entrypoint)."""
    from audit.jobs.client import call
    from audit.jobs.errors import JobsError, one_line

    client, api = connect(address)
    found = find(client, api, job)
    sid = found.submission_id or found.job_id
    if not follow:
        try:
            typer.echo(call(client.get_job_logs, sid), nl=False)
        except JobsError as exc:
            raise fail(f"cannot read the logs of {sid}: {exc}") from None
        return
    import asyncio

    import aiohttp

    async def tail() -> None:
        async for chunk in client.tail_job_logs(sid):
            typer.echo(chunk, nl=False)

    try:
        asyncio.run(tail())
    except (RuntimeError, OSError, aiohttp.ClientError) as exc:
        raise fail(f"lost the log stream of {sid}: {one_line(exc)}") from None


@app.command()
@one_line_errors
def stop(
    job: Annotated[str, typer.Argument(help="Submission id, job id or run id.")],
    wait: Annotated[bool, typer.Option(help="Wait until the job has stopped.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 120.0,
    address: AddressOpt = None,
) -> None:
    """Stop a pending or running job."""
    from audit.jobs.client import TERMINAL, call, wait_terminal

    client, api = connect(address)
    found = find(client, api, job)
    sid = found.submission_id or found.job_id
    if str(found.status) in TERMINAL:
        typer.echo(f"job {sid} already ended: {found.status}")
        return
    call(client.stop_job, sid)
    final = wait_terminal(client, sid, timeout) if wait else "stop requested"
    typer.echo(f"job {sid}: {final}")


@app.command(name="list")
@one_line_errors
def list_jobs(
    every: Annotated[
        bool, typer.Option("--all", help="Also jobs not submitted by audit-cli.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
    address: AddressOpt = None,
) -> None:
    """List the cluster's audit jobs, oldest first."""
    from audit.jobs.client import audit_jobs, call
    from audit.jobs.presentation import job_info

    client, api = connect(address)
    jobs = (
        sorted(call(client.list_jobs), key=lambda j: (j.start_time or 0, j.submission_id or ""))
        if every
        else audit_jobs(client)
    )
    rows = [job_info(j) for j in jobs]
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        typer.echo(f"no audit jobs at {api}")
        return
    import time as _time

    for r in rows:
        started = (
            _time.strftime("%Y-%m-%dT%H:%M:%SZ", _time.gmtime(r["start_time"] / 1000))
            if r["start_time"]
            else "-"
        )
        typer.echo(
            f"{r['submission_id'] or r['job_id']}  {r['status']:<9}  {started}  "
            f"run {r['run_id'] or '-'}  {r['run_url'] or ''}".rstrip()
        )
