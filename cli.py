"""``audit-cli``: run an audit locally, look at a run, list the models.

``audit-cli run`` with no arguments audits the embedded demo set (handwritten digits, a small
ConvNet) end to end on a local Ray and writes ``./audit-output/<run_id>/``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from audit.config import AuditConfig, ConfigError, load_config

app = typer.Typer(
    help="Audit ImageNet classifiers at scale on Ray (Stock & Cisse, ECCV 2018).",
    no_args_is_help=True,
    add_completion=False,
)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=1)


def _load(
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


@app.command()
def run(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML config (default: the demo).")
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="Override a field: section.field=value (repeatable)."),
    ] = None,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Output root (output.root).")
    ] = None,
    run_id: Annotated[str | None, typer.Option("--run-id", help="Run folder name.")] = None,
    address: Annotated[
        str | None, typer.Option("--address", help="Ray cluster (default: local Ray).")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Run the audit pass with a progress bar and print the error rates."""
    from audit.pipeline import preflight, run_audit

    try:
        cfg = _load(config, overrides, output, run_id)
        preflight(cfg)
        if cfg.model.factory:  # this process builds the model: an unimportable one stops here
            from audit.models.factory import import_factory

            import_factory(cfg.model.factory)
    except ConfigError as exc:
        raise _fail(str(exc)) from None

    from tqdm import tqdm

    from ray_jobs.audit import RayUnreachable, format_summary, start_ray

    try:
        start_ray(address, probe=True)
    except RayUnreachable as exc:
        raise _fail(str(exc)) from None
    bar: Any = None

    def on_progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, unit="img", desc="predict", file=sys.stderr)
        bar.update(done - bar.n)

    try:
        result = run_audit(cfg, progress=on_progress if progress else None)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    finally:
        if bar is not None:
            bar.close()
    typer.echo(format_summary(result.manifest, result.url))


# --- runs and jobs ----------------------------------------------------------------------------

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


def _storage_options(text: str | None) -> dict[str, Any]:
    from audit.config import parse_storage_options

    try:
        return parse_storage_options(text)
    except ConfigError as exc:
        raise _fail(str(exc)) from None


def _has_manifest(url: str, so: dict[str, Any]) -> bool:
    import fsspec

    from audit.store import MANIFEST

    try:
        fs, path = fsspec.core.url_to_fs(url, **so)
        return bool(fs.exists(path.rstrip("/") + "/" + MANIFEST))
    except (OSError, ValueError):
        return False


def _local_run(run: str | None, output: str, so: dict[str, Any]) -> str | None:
    """A run folder from a path/URL, a run id under ``output``, or the newest run there;
    ``None`` when there is none."""
    import fsspec

    from audit.store import MANIFEST

    if run is not None:
        for candidate in (run, output.rstrip("/") + "/" + run):
            if _has_manifest(candidate, so):
                return candidate
        return None
    try:
        fs, root = fsspec.core.url_to_fs(output, **so)
        manifests = fs.glob(root.rstrip("/") + "/*/" + MANIFEST) if fs.exists(root) else []
    except (OSError, ValueError):
        return None
    if not manifests:
        return None
    newest = max(manifests, key=lambda p: (fs.info(p).get("mtime") or 0, p))
    return str(fs.unstrip_protocol(newest.rsplit("/", 1)[0]))


def _read_manifest(url: str, so: dict[str, Any]) -> dict[str, Any] | None:
    from audit.store import read_manifest

    try:
        return read_manifest(url, so)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise _fail(f"cannot read the manifest of {url!r}: {exc}") from None


def _connect(address: str | None) -> tuple[Any, str]:
    from audit.jobs import JobsError, connect

    try:
        return connect(address)
    except JobsError as exc:
        raise _fail(str(exc)) from None


def _job(client: Any, url: str, ref: str) -> Any:
    from audit.jobs import JobsError, find_job

    try:
        job = find_job(client, ref)
    except JobsError as exc:
        raise _fail(str(exc)) from None
    if job is None:
        raise _fail(f"no job {ref!r} at {url} (neither a submission id, a job id nor a run id)")
    return job


@app.command()
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
) -> None:
    """Print a run's state: the job's status, stages with progress, rows, errors, metrics.

    A run found under --output is read directly (a local `audit-cli run`); otherwise, or when
    its manifest does not say 'succeeded', the cluster's Jobs API is asked for the job writing
    that folder. A FAILED or STOPPED job wins over a manifest its driver could not update any
    more, and a manifest written before the job started is an earlier attempt's.
    """
    from audit.jobs import META_RUN_URL as RUN_URL
    from audit.jobs import (
        JobsError,
        error_line,
        find_job,
        job_info,
        job_of_run,
        manifest_predates,
        merged_state,
        run_summary,
        stage_progress,
    )
    from ray_jobs.audit import format_metrics

    so = _storage_options(storage_options)
    folder = _local_run(run, output, so)
    manifest: dict[str, Any] | None = None
    job: Any = None
    client: Any = None
    api = None
    if folder is not None:
        manifest = _read_manifest(folder, so)
        if manifest is not None and manifest.get("state") != "succeeded":
            try:  # is a job (re)running it? quietly skip when no cluster answers
                from audit.jobs import connect

                client, api = connect(address)
                job = job_of_run(find_job(client, str(manifest.get("run_id"))), folder)
            except JobsError:
                job = None
    else:
        asked = address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
        if run is None and not asked:
            raise _fail(f"no runs under {output!r}; start one with 'audit-cli run'")
        try:
            from audit.jobs import audit_jobs, connect

            client, api = connect(address)
            if run is None:
                found = audit_jobs(client)
                if not found:
                    raise _fail(f"no audit jobs at {api}; start one with 'audit-cli submit'")
                job = found[-1]
            else:
                job = find_job(client, run)
        except JobsError as exc:
            reason = str(exc).rstrip(".")
            raise _fail(
                f"no run {run!r}: neither a run folder nor a run id under {output!r}, "
                f"and asking the cluster failed: {reason}"
            ) from None
        if job is None:
            raise _fail(
                f"no run {run!r}: neither a run folder nor a run id under {output!r}, "
                f"nor a job at {api}"
            )
        folder = (job.metadata or {}).get(RUN_URL)
        if folder:
            manifest = _read_manifest(folder, so)
    job_status = str(job.status) if job is not None else None
    earlier = manifest is not None and manifest_predates(manifest, job)
    current = None if earlier or manifest is None else manifest
    state, stale = merged_state(job_status, current.get("state") if current else None)
    error = current.get("error") if current else None
    if job is not None and job_status == "FAILED" and not error:
        try:
            logs = client.get_job_logs(job.submission_id or job.job_id)
            error = error_line(logs) or (job.message or "")
        except Exception:  # logs are a courtesy; the job's message is enough
            error = job.message or ""
        error = error.strip().splitlines()[0] if error.strip() else None
    run_id = (manifest or {}).get("run_id") or (
        (job.metadata or {}).get("audit_run_id") if job else run
    )
    if as_json:
        out = {
            "run_id": run_id,
            "state": state,
            "stale": stale,
            "manifest_of_earlier_attempt": earlier,
            "error": error,
            "url": folder,
            "address": api,
            "job": job_info(job) if job is not None else None,
            "progress": run_summary(manifest) if manifest else None,
            "manifest": manifest,
        }
        typer.echo(json.dumps(out, indent=2, default=str))
        return
    if job is not None:
        typer.echo(f"job {job.submission_id}: {job_status}  ({api})")
    typer.echo(f"run {run_id}  state: {state}  ({folder})")
    if manifest is None:
        typer.echo("  no manifest yet: the job has not started writing the run")
    else:
        m = manifest
        model, data = m.get("model") or {}, m.get("data") or {}
        if model:
            typer.echo(f"  model {model.get('name')}  weights: {model.get('weights')}")
        if data:
            typer.echo(
                f"  data {data.get('source')}  layout: {data.get('layout')}  "
                f"inputs: {data.get('inputs')}"
            )
        from audit.jobs import stage_line

        for name, st in stage_progress(m).items():
            typer.echo(stage_line(name, st))
        for name, t in (m.get("tables") or {}).items():
            typer.echo(f"  table {name}: {t['rows']} rows in {len(t['files'])} files")
        for line in format_metrics(m.get("metrics") or {}):
            typer.echo(line)
        if m.get("updated"):
            typer.echo(f"  updated {m['updated']}")
        if earlier:
            typer.echo(
                "  note: this manifest is from an earlier attempt (written before job "
                f"{job.submission_id} started); the job has not written its own yet"
            )
    if error:
        typer.echo(f"  error: {error}")
    if stale:
        typer.echo(
            f"  note: the manifest still says 'running' but the job is {job_status}: "
            "the manifest is stale (its driver stopped before it could update it)"
        )


@app.command()
def submit(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="YAML config inside --working-dir (default: demo)."),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="Override a field: section.field=value (repeatable)."),
    ] = None,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Output root (output.root).")
    ] = None,
    run_id: Annotated[str | None, typer.Option("--run-id", help="Run folder name.")] = None,
    working_dir: Annotated[
        Path, typer.Option("--working-dir", help="Folder shipped to the cluster (code + config).")
    ] = Path("."),
    excludes: Annotated[
        list[str] | None,
        typer.Option("--exclude", help="Extra gitignore-style pattern left out (repeatable)."),
    ] = None,
    num_cpus: Annotated[
        float | None, typer.Option("--num-cpus", help="CPUs reserved for the driver.")
    ] = None,
    num_gpus: Annotated[
        float | None, typer.Option("--num-gpus", help="GPUs reserved for the driver.")
    ] = None,
    address: AddressOpt = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the job to end; exit 1 unless SUCCEEDED.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits.")] = 24 * 3600.0,
) -> None:
    """Submit the audit as a Ray job (submission id audit-<run_id>) through the Jobs API."""
    from audit.jobs import JobsError, job_spec, wait_terminal
    from audit.jobs import submit as submit_job
    from audit.pipeline import default_run_id, preflight

    try:
        cfg = _load(config, overrides, output, run_id)
        preflight(cfg)  # a typo in the model name stops here, not on the cluster
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    rid = cfg.output.run_id or default_run_id(cfg.model.name)
    user_sets = [s for s in (overrides or [])]
    try:
        spec = job_spec(
            str(config) if config is not None else None,
            user_sets,
            rid,
            cfg.output.root,
            str(working_dir),
            excludes=tuple(excludes or ()),
            num_cpus=num_cpus,
            num_gpus=num_gpus,
        )
        client, api = _connect(address)
        sid = submit_job(client, spec)
    except JobsError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"submitted job {sid} to {api}")
    typer.echo(f"  run {rid} -> {spec.run_url}")
    typer.echo(f"  follow: audit-cli logs {sid} --follow    status: audit-cli status {sid}")
    if wait:
        try:
            final = wait_terminal(client, sid, timeout)
        except JobsError as exc:
            raise _fail(str(exc)) from None
        typer.echo(f"job {sid}: {final}")
        if final != "SUCCEEDED":
            raise typer.Exit(code=1)


@app.command()
def logs(
    job: Annotated[str, typer.Argument(help="Submission id, job id or run id.")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until the job ends.")
    ] = False,
    address: AddressOpt = None,
) -> None:
    """Print a job's driver logs (stdout and stderr of the entrypoint)."""
    from audit.jobs import JobsError, call, one_line

    client, api = _connect(address)
    found = _job(client, api, job)
    sid = found.submission_id or found.job_id
    if not follow:
        try:
            typer.echo(call(client.get_job_logs, sid), nl=False)
        except JobsError as exc:
            raise _fail(f"cannot read the logs of {sid}: {exc}") from None
        return
    import asyncio

    import aiohttp

    async def tail() -> None:
        async for chunk in client.tail_job_logs(sid):
            typer.echo(chunk, nl=False)

    try:
        asyncio.run(tail())
    except (RuntimeError, OSError, aiohttp.ClientError) as exc:
        raise _fail(f"lost the log stream of {sid}: {one_line(exc)}") from None


@app.command()
def stop(
    job: Annotated[str, typer.Argument(help="Submission id, job id or run id.")],
    wait: Annotated[bool, typer.Option(help="Wait until the job has stopped.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 120.0,
    address: AddressOpt = None,
) -> None:
    """Stop a pending or running job."""
    from audit.jobs import TERMINAL, JobsError, call, wait_terminal

    client, api = _connect(address)
    found = _job(client, api, job)
    sid = found.submission_id or found.job_id
    if str(found.status) in TERMINAL:
        typer.echo(f"job {sid} already ended: {found.status}")
        return
    try:
        call(client.stop_job, sid)
        final = wait_terminal(client, sid, timeout) if wait else "stop requested"
    except JobsError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"job {sid}: {final}")


@app.command(name="list")
def list_jobs(
    every: Annotated[
        bool, typer.Option("--all", help="Also jobs not submitted by audit-cli.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
    address: AddressOpt = None,
) -> None:
    """List the cluster's audit jobs, oldest first."""
    from audit.jobs import JobsError, audit_jobs, call, job_info

    client, api = _connect(address)
    try:
        jobs = (
            sorted(call(client.list_jobs), key=lambda j: (j.start_time or 0, j.submission_id or ""))
            if every
            else audit_jobs(client)
        )
    except JobsError as exc:
        raise _fail(str(exc)) from None
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


@app.command()
def models(
    pattern: Annotated[
        str | None,
        typer.Argument(help="Shell-style filter, e.g. 'resnet*' or 'timm/convnext*'."),
    ] = None,
    source: Annotated[
        str | None, typer.Option("--source", help="Only this source (torchvision, timm, ...).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
) -> None:
    """List the models the registry accepts: name, source and evaluation transform."""
    from audit.models import find_entry, list_models, sources

    rows = []
    for name in list_models(pattern):
        entry = find_entry(name)
        if entry is None or (source and entry.source != source):
            continue
        rows.append({"name": name, "source": entry.source, "transform": entry.describe()})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    width = max((len(r["name"]) for r in rows), default=0)
    for r in rows:
        typer.echo(f"{r['name']:<{width}}  {r['source']:<11}  {r['transform']}")
    for s in sources():
        why = s.unavailable()
        if why and (source is None or source == s.name):
            typer.echo(f"({s.name}: {why})", err=True)
    if not rows:
        typer.echo("no model matches", err=True)


def _register_subcommands() -> None:
    """``audit-cli human ...`` (human studies) and ``audit-cli report`` (the HTML report)."""
    from audit.human.cli import app as human_app
    from audit.report.cli import report

    app.add_typer(
        human_app, name="human", help="Human studies: export batches, ingest answers, tables."
    )
    app.command(name="report")(report)


_register_subcommands()


if __name__ == "__main__":
    app()
