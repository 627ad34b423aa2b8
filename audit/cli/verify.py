"""``audit-cli verify RUN``: check a run's committed files against its manifest.

Every file the manifest lists must exist, have the size and sha256 recorded when it was
committed, and have a readable Parquet footer (a run written before checksums were recorded:
existence and footer only; :mod:`audit.run.verify`).
"""

from __future__ import annotations

from typing import Annotated

import typer

from audit.cli.common import StorageOpt, one_line_errors, parse_storage

app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)


@app.command()
@one_line_errors
def verify(
    run: Annotated[str, typer.Argument(help="Run folder (path or URL).")],
    storage_options: StorageOpt = None,
) -> None:
    """Check that a run's committed files are as committed: print 'ok: N files verified', or
    one line per missing or altered file and exit 1."""
    from audit.run.verify import verify_run

    report = verify_run(run, parse_storage(storage_options))
    for line in report.lines():
        typer.echo(line)
    if not report.ok:
        raise typer.Exit(1)
