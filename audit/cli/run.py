"""``audit-cli run`` (the audit on a local Ray, or a cluster's) and ``audit-cli submit`` (the
audit as a Ray job through the Jobs API).

``audit-cli run`` with no arguments audits the embedded demo set (handwritten digits, a small
ConvNet) end to end on a local Ray and writes ``./audit-output/<run_id>/``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from audit.cli.common import AddressOpt, connect, load, one_line_errors
from audit.cli_boundary import OutputOpt, RunIdOpt, SetOpt

app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)


@app.command()
@one_line_errors
def run(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML config (default: the demo).")
    ] = None,
    overrides: SetOpt = None,
    output: OutputOpt = None,
    run_id: RunIdOpt = None,
    address: Annotated[
        str | None, typer.Option("--address", help="Ray cluster (default: local Ray).")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar per stage.")] = True,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result as one JSON object (as status --json).")
    ] = False,
) -> None:
    """Run the audit pass with a progress bar and print the error rates.

    Ctrl-C or SIGTERM stops the run within seconds, records it as interrupted and prints the command that resumes it (exit status 130).
    """
    from audit.run import check_output, check_weights, default_run_id, preflight

    cfg = load(config, overrides, output, run_id)
    if cfg.output.run_id is None:  # fixed now, so that an interrupted run can name its resume
        cfg = with_run_id(cfg, default_run_id(cfg.model.name))
    preflight(cfg)
    check_output(cfg)  # a finished run id, a busy run, unreachable storage: before Ray starts
    check_weights(cfg)  # weights missing from the cache: before Ray starts too
    if cfg.model.factory:  # this process builds the model: an unimportable one stops here
        from audit.models.factory import import_factory

        import_factory(cfg.model.factory)

    from tqdm import tqdm

    from audit.runtime import start_ray
    from audit.summary import format_summary

    start_ray(address, probe=True)
    from audit.run import run_audit  # the pipeline: seconds of imports, after the checks

    bars = StageBars(tqdm)
    from audit.run.interrupts import signal_name, stop_on_signals
    from audit.run.quiet import drop_known_lines

    try:
        with stop_on_signals(), drop_known_lines() as terminal:
            bars.file = terminal  # the bars' last frame is drawn before that stream closes
            try:
                result = run_audit(cfg, on_stages=bars.update if progress else None)
            finally:
                bars.close()
    except KeyboardInterrupt as exc:  # SIGINT or SIGTERM (audit.run.interrupts.Interrupted)
        resume = resume_command(config, overrides, output, str(cfg.output.run_id), address)
        print(
            f"{signal_name(exc)}: run {cfg.output.run_id} stopped, recorded as interrupted; "
            f"resume it with:\n  {resume}",
            file=sys.stderr,
        )
        raise typer.Exit(130) from None
    if as_json:
        import json

        from audit.jobs.presentation import run_summary

        typer.echo(json.dumps({"url": result.url, **run_summary(result.manifest)}, indent=2))
        return
    typer.echo(format_summary(result.manifest, result.url))


class StageBars:
    """One progress bar per stage of the pass (decode, predict, attack, explain...), each
    counting that stage's own images as results arrive (:mod:`audit.run.progress`); a stage
    whose total is not known up front (``explain``) counts without one."""

    def __init__(self, tqdm: Any) -> None:
        self.tqdm = tqdm
        self.bars: dict[str, Any] = {}
        self.file: Any = None  # where the bars draw; None: sys.stderr

    def update(self, states: list[Any]) -> None:
        for st in states:
            bar = self.bars.get(st.name)
            if bar is None:
                bar = self.tqdm(
                    total=st.total,
                    unit="img",
                    desc=f"{st.name:<8}",
                    file=self.file or sys.stderr,
                    position=len(self.bars),
                    leave=True,
                    dynamic_ncols=True,  # tqdm sizes only sys.stderr's bars otherwise
                )
                self.bars[st.name] = bar
            if st.total is not None and bar.total != st.total:  # images that failed before it
                bar.total = st.total
                bar.refresh()
            bar.update(st.done - bar.n)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


def with_run_id(cfg: Any, run_id: str) -> Any:
    """``cfg`` (an :class:`audit.config.AuditConfig`) with ``output.run_id`` set."""
    import dataclasses

    return dataclasses.replace(cfg, output=dataclasses.replace(cfg.output, run_id=run_id))


def resume_command(
    config: Path | None,
    overrides: list[str] | None,
    output: str | None,
    run_id: str,
    address: str | None,
) -> str:
    """The ``audit-cli run`` command line that resumes the run: the same config, overrides,
    output and address, and its run id. Storage options are secrets: an override that sets
    them is shown as ``--set section.storage_options=...`` (give it again as before)."""
    import shlex

    args = ["audit-cli", "run"]
    if config is not None:
        args += ["-c", str(config)]
    for o in overrides or []:
        key = o.partition("=")[0].strip()
        args += ["--set", f"{key}=..." if key.endswith("storage_options") else o]
    if output is not None:
        args += ["-o", output]
    args += ["--run-id", run_id]
    if address is not None:
        args += ["--address", address]
    return shlex.join(args)


@app.command()
@one_line_errors
def submit(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="YAML config inside --working-dir (default: demo)."),
    ] = None,
    overrides: SetOpt = None,
    output: OutputOpt = None,
    run_id: RunIdOpt = None,
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
    from audit.jobs.client import submit as submit_job
    from audit.jobs.client import wait_terminal
    from audit.jobs.packaging import job_spec
    from audit.run import default_run_id, preflight

    cfg = load(config, overrides, output, run_id)
    preflight(cfg)  # a typo in the model name stops here, not on the cluster
    rid = cfg.output.run_id or default_run_id(cfg.model.name)
    spec = job_spec(
        str(config) if config is not None else None,
        list(overrides or []),
        rid,
        cfg.output.root,
        str(working_dir),
        excludes=tuple(excludes or ()),
        num_cpus=num_cpus,
        num_gpus=num_gpus,
    )
    client, api = connect(address)
    sid = submit_job(client, spec)
    typer.echo(f"submitted job {sid} to {api}")
    typer.echo(f"  run {rid} -> {spec.run_url}")
    typer.echo(f"  follow: audit-cli logs {sid} --follow    status: audit-cli status {sid}")
    if wait:
        final = wait_terminal(client, sid, timeout)
        typer.echo(f"job {sid}: {final}")
        if final != "SUCCEEDED":
            raise typer.Exit(code=1)
