"""``audit-cli``: run an audit locally, look at a run, list the models.

``audit-cli run`` with no arguments audits the embedded demo set (handwritten digits, a small
ConvNet) end to end on a local Ray and writes ``./audit-output/<run_id>/``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from audit.config import ConfigError, load_config

app = typer.Typer(
    help="Audit ImageNet classifiers at scale on Ray (Stock & Cisse, ECCV 2018).",
    no_args_is_help=True,
    add_completion=False,
)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=1)


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
    sets = list(overrides or [])
    if output is not None:
        sets.append(f"output.root={json.dumps(output)}")
    if run_id is not None:
        sets.append(f"output.run_id={json.dumps(run_id)}")
    try:
        cfg = load_config(config, sets)
    except ConfigError as exc:
        raise _fail(str(exc)) from None

    from tqdm import tqdm

    from audit.pipeline import run_audit
    from ray_jobs.audit import format_summary, start_ray

    start_ray(address)
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


def _find_run(run: str | None, output: str) -> str:
    """A run folder from a path/URL, a run id under ``output``, or the newest run there."""
    import fsspec

    from audit.store import MANIFEST

    if run is not None:
        fs, path = fsspec.core.url_to_fs(run)
        if fs.exists(path.rstrip("/") + "/" + MANIFEST):
            return run
        candidate = output.rstrip("/") + "/" + run
        fs, path = fsspec.core.url_to_fs(candidate)
        if fs.exists(path + "/" + MANIFEST):
            return candidate
        raise _fail(f"no run {run!r}: neither a run folder nor a run id under {output!r}")
    fs, root = fsspec.core.url_to_fs(output)
    manifests = fs.glob(root.rstrip("/") + "/*/" + MANIFEST) if fs.exists(root) else []
    if not manifests:
        raise _fail(f"no runs under {output!r}; start one with 'audit-cli run'")
    newest = max(manifests, key=lambda p: (fs.info(p).get("mtime") or 0, p))
    return str(fs.unstrip_protocol(newest.rsplit("/", 1)[0]))


@app.command()
def status(
    run: Annotated[
        str | None, typer.Argument(help="Run folder, or run id under --output (default: newest).")
    ] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="Output root.")] = "./audit-output",
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Print a run's state: stages, rows per table, errors, metrics."""
    from audit.store import read_manifest
    from ray_jobs.audit import format_metrics

    folder = _find_run(run, output)
    try:
        m = read_manifest(folder)
    except (OSError, ValueError) as exc:
        raise _fail(f"cannot read the manifest of {folder!r}: {exc}") from None
    if as_json:
        typer.echo(json.dumps(m, indent=2))
        return
    typer.echo(f"run {m['run_id']}  state: {m['state']}  ({folder})")
    typer.echo(f"  model {m['model']['name']}  weights: {m['model']['weights']}")
    typer.echo(
        f"  data {m['data']['source']}  layout: {m['data']['layout']}  inputs: {m['data']['inputs']}"
    )
    for name, st in m.get("stages", {}).items():
        extra = ""
        if "total" in st:
            extra = f"  {st.get('done', 0)}/{st['total']} images"
            if st.get("images_per_second"):
                extra += f", {st['images_per_second']:.1f} images/s"
        if "seconds" in st:
            extra += f", {st['seconds']:.1f} s"
        typer.echo(f"  stage {name}: {st.get('state')}{extra}")
    for name, t in m.get("tables", {}).items():
        typer.echo(f"  table {name}: {t['rows']} rows in {len(t['files'])} files")
    for line in format_metrics(m.get("metrics", {})):
        typer.echo(line)
    if m.get("error"):
        typer.echo(f"  error: {m['error']}")


@app.command()
def models() -> None:
    """List the model names the registry accepts."""
    from audit.models import list_models

    for name in list_models():
        typer.echo(name)


if __name__ == "__main__":
    app()
