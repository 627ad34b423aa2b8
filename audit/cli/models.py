"""``audit-cli models``: the models the registry accepts, with their source and transform."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from audit.cli.common import one_line_errors

app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)


@app.command()
@one_line_errors
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
    """List the models the registry accepts: name, source, whether the default weights are on this machine (local: yes / no) and evaluation transform."""
    from audit.models import find_entry, list_models, sources

    rows: list[dict[str, Any]] = []
    for name in list_models(pattern):
        entry = find_entry(name)
        if entry is None or (source and entry.source != source):
            continue
        rows.append(
            {
                "name": name,
                "source": entry.source,
                "weights_local": weights_local(entry),
                "transform": entry.describe(),
            }
        )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    width = max((len(r["name"]) for r in rows), default=0)
    for r in rows:
        local = "yes" if r["weights_local"] else "no"
        typer.echo(f"{r['name']:<{width}}  {r['source']:<11}  local: {local:<3}  {r['transform']}")
    for s in sources():
        why = s.unavailable()
        if why and (source is None or source == s.name):
            typer.echo(f"({s.name}: {why})", err=True)
    if not rows:
        typer.echo("no model matches", err=True)


def weights_local(entry: Any) -> bool:
    """Whether ``entry``'s default weights can be loaded here without a download: its source's
    own check (a file-existence check, nothing read) passes."""
    from audit.config import ModelConfig

    try:
        entry.check(ModelConfig(name=entry.name))
    except Exception:  # a ConfigError says not here; a listing must not fail on one odd entry
        return False
    return True
