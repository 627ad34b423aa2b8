"""``audit-cli``: run an audit locally or as a Ray job, look at a run, list the models.

One module per command group, each with its own Typer app:

- :mod:`audit.cli.run`: ``run`` (the audit on a local Ray) and ``submit`` (as a Ray job);
- :mod:`audit.cli.jobs`: ``status``, ``logs``, ``stop``, ``list``;
- :mod:`audit.cli.models`: ``models``;
- :mod:`audit.cli.verify`: ``verify`` (a run's committed files against its manifest);
- :mod:`audit.human.cli`: the ``human`` group (human studies);
- :mod:`audit.report.cli`: ``report`` (the HTML report).

:data:`app` is the root (the ``audit-cli`` console script, ``python -m audit.cli``): it takes
the groups' commands as its own, in the order ``--help`` lists them. Every command sits on
:func:`audit.cli_boundary.one_line_errors`: whatever fails for a reason the user can act on (an
:class:`audit.errors.AuditError`, storage refusing a read or a write) ends in one ``error: ...``
line and exit code 1. Every app is created with ``pretty_exceptions_show_locals=False``: a
traceback's local variables could hold storage credentials.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from audit.cli import jobs, models
from audit.cli import run as run_group
from audit.cli import verify as verify_group
from audit.human.cli import app as human_app
from audit.report.cli import report

app = typer.Typer(
    help="Audit ImageNet classifiers at scale on Ray (Stock & Cisse, ECCV 2018).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def version_text() -> str:
    """``audit-cli 0.1.0 (imagenet-audit; Ray 2.60.0, torch 2.9.1, Python 3.11.7)``: what a
    bug report needs, read from the installed distributions (no heavy import)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    def of(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not installed"

    return (
        f"audit-cli {of('imagenet-audit')} (imagenet-audit; Ray {of('ray')}, "
        f"torch {of('torch')}, Python {platform.python_version()})"
    )


def _show_version(value: bool) -> None:
    if value:
        typer.echo(version_text())
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_show_version,
        is_eager=True,
        help="Print the version (and Ray's, torch's, Python's) and exit.",
    ),
) -> None:
    """Audit ImageNet classifiers at scale on Ray (Stock & Cisse, ECCV 2018)."""


def _adopt(*commands: Callable[..., Any]) -> None:
    """Register the groups' commands on the root app as they are registered on their own app
    (name, help...), in this order."""
    infos = {
        info.callback: info
        for group in (run_group.app, jobs.app, models.app, verify_group.app)
        for info in group.registered_commands
    }
    app.registered_commands.extend(infos[command] for command in commands)


_adopt(
    run_group.run,
    jobs.status,
    verify_group.verify,
    run_group.submit,
    jobs.logs,
    jobs.stop,
    jobs.list_jobs,
    models.models,
)
app.add_typer(
    human_app, name="human", help="Human studies: export batches, ingest answers, tables."
)
app.command(name="report")(report)

__all__ = ["app"]
