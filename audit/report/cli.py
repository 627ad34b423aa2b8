"""``audit-cli report RUN [RUN ...]``: write the HTML report of one or more runs.

The lead registers :func:`report` on the main app (``app.command()(report)``); :data:`app` holds
it alone for tests.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from audit.cli_boundary import StorageOpt, one_line_errors, parse_storage
from audit.report.config import ReportConfig

if TYPE_CHECKING:
    from audit.report.build import Report

_D = ReportConfig()

app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)


@one_line_errors
def report(
    runs: Annotated[
        list[str],
        typer.Argument(help="Run folders (paths or URLs); several are shown side by side."),
    ],
    output: Annotated[
        str | None,
        typer.Option(
            "--output", "-o", help="HTML file to write (default: <first run>/report/index.html)."
        ),
    ] = None,
    attributes: Annotated[
        str | None,
        typer.Option(help="CSV image_id,attribute,value for the bias probe."),
    ] = None,
    pairs: Annotated[
        str | None,
        typer.Option(help="CSV image_a, image_b [, attribute] [, pair_id] for the paired probe."),
    ] = None,
    examples: Annotated[
        int, typer.Option(help="Misclassified images shown per run.")
    ] = _D.examples,
    adversarial_examples: Annotated[
        int, typer.Option(help="Adversarial images shown per run.")
    ] = _D.adversarial_examples,
    paths: Annotated[int, typer.Option(help="Explanation paths shown per run.")] = _D.paths,
    max_classes: Annotated[
        int, typer.Option(help="Classes shown with prototypes and criticisms.")
    ] = _D.max_classes,
    classes_per_page: Annotated[int, typer.Option(help="Classes per page.")] = _D.classes_per_page,
    max_images: Annotated[int, typer.Option(help="Most embedded images.")] = _D.max_images,
    max_image_mb: Annotated[
        float, typer.Option(help="Most megabytes of embedded images (before base64).")
    ] = _D.max_image_bytes / 1e6,
    thumb_size: Annotated[
        int, typer.Option(help="Longest side of thumbnails, pixels.")
    ] = _D.thumb_size,
    seed: Annotated[int, typer.Option(help="Seed of every sample.")] = _D.seed,
    storage_options: StorageOpt = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print one JSON object: url, sections, missing ones and why, images, size.",
        ),
    ] = False,
) -> None:
    """Write a self-contained HTML report (tables, plots, image grids) of audit runs.

    A run with a missing or altered file is refused first (as `audit-cli verify` does)."""
    from audit.report.bias import read_attributes, read_pairs
    from audit.report.build import make_report
    from audit.run.verify import verify_run

    options = parse_storage(storage_options)
    for run in runs:  # a run with a missing or altered committed file is refused, first
        verify_run(run, options).raise_if_bad()
    cfg = ReportConfig(
        examples=examples,
        adversarial_examples=adversarial_examples,
        paths=paths,
        max_classes=max_classes,
        classes_per_page=classes_per_page,
        max_images=max_images,
        max_image_bytes=int(max_image_mb * 1_000_000),
        thumb_size=thumb_size,
        seed=seed,
    )
    attrs = read_attributes(attributes, options) if attributes else None
    pair_list = read_pairs(pairs, options) if pairs else None
    url, built = make_report(runs, output, cfg, attrs, pair_list, options)
    size = len(built.html.encode("utf-8"))
    if as_json:
        typer.echo(json.dumps(report_summary(runs, url, built, size), indent=2, default=str))
        return
    typer.echo(
        f"report: {url} ({size / 1e6:.1f} MB, {built.images} images, "
        f"sections: {', '.join(built.sections)})"
    )
    if built.refused_images:
        typer.echo(f"  {built.refused_images} images left out: the image budget was spent")


def report_summary(runs: list[str], url: str, built: Report, size: int) -> dict[str, Any]:
    """What ``audit-cli report --json`` prints: the URL written, the runs, the sections
    rendered (in page order) and those left out with why (a section is left out when no run has
    its data), the embedded images, those the image budget refused, and the file's size."""
    from audit.report.sections import registered_sections

    return {
        "url": url,
        "runs": list(runs),
        "sections": list(built.sections),
        "missing": [
            {"name": s.name, "title": s.title, "why": s.why}
            for s in registered_sections()
            if s.name not in built.sections
        ],
        "images": built.images,
        "image_bytes": built.image_bytes,
        "refused_images": built.refused_images,
        "size_bytes": size,
    }


app.command()(report)
