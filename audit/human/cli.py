"""``audit-cli human``: export studies, ingest answers, compute the paper's tables.

Typical use::

    audit-cli human export RUN misclassified --batch b1 --image-base-url https://.../human/images
    # upload batches/misclassified-b1/{template.html,mturk_input.csv} to Mechanical Turk
    audit-cli human ingest RUN misclassified-b1 Batch_123_batch_results.csv
    audit-cli human analyze RUN
    audit-cli human public RUN --real real.json --cleanlab imagenet_mturk.json
"""

from __future__ import annotations

import json
from enum import Enum
from typing import Annotated, Any

import fsspec
import pyarrow as pa
import typer

from audit.cli_boundary import StorageOpt, fail, one_line_errors, parse_storage
from audit.human.analysis import FIG2, format_table
from audit.human.analysis import analyze as run_analysis
from audit.human.config import (
    ASSIGNMENT_CONDITIONS,
    AgreementRule,
    ExportConfig,
    Shown,
    Study,
    Subset,
    TimeFilter,
)
from audit.human.ingest import ingest_files
from audit.human.judgments import get_source, judge, registered_sources
from audit.human.storage import FIGURES, JUDGED, TABLES, HumanStore, human_root, read_columns

app = typer.Typer(
    help="Human studies: export Mechanical Turk batches, ingest answers, compute Tables 1-3.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # a traceback's locals could hold storage credentials
)

RunArg = Annotated[str, typer.Argument(help="The run folder (local path or fsspec URL).")]
OutputOpt = Annotated[
    str | None,
    typer.Option("--output", "-o", help="Human-study folder (default: <run>/human)."),
]


class AnswerFormat(str, Enum):
    MTURK = "mturk"
    PLAIN = "plain"


def _read_text(url: str, storage_options: dict[str, Any]) -> str:
    try:
        with fsspec.open(url, "rb", **storage_options) as f:
            data: bytes = f.read()
    except (FileNotFoundError, IsADirectoryError):
        raise fail(f"{url}: no such file") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise fail(f"{url}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _run_predictions(run: str, storage_options: dict[str, Any]) -> pa.Table:
    """The predictions columns the analyses need. A folder without a manifest raises
    ``NoRunError`` ("<run>: no manifest.json, not a run folder"), which
    :func:`one_line_errors` prints as one line."""
    return read_columns(
        run,
        "predictions",
        ["image_id", "label", "top5_classes", "correct_top1", "correct_top5"],
        storage_options,
    )


@app.command()
@one_line_errors
def export(
    run: RunArg,
    study: Annotated[Study, typer.Argument(help="Which study.")],
    batch: Annotated[
        str, typer.Option(help="Batch name (its folder: <study>-<batch>).")
    ] = "batch1",
    raters: Annotated[int, typer.Option(help="Raters per item.")] = 5,
    question: Annotated[
        str | None, typer.Option(help="Question text; {classes} is replaced by the class names.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of every shuffle and draw.")] = 0,
    max_items: Annotated[
        int | None, typer.Option(help="Ask about a seeded sample of at most this many items.")
    ] = None,
    subset: Annotated[
        Subset, typer.Option(help="Misclassified: which errors.")
    ] = Subset.TOP1_ERRORS,
    shown: Annotated[Shown, typer.Option(help="Misclassified: classes shown.")] = Shown.TOP1,
    features: Annotated[
        int, typer.Option(help="Adversarial: super-pixels shown in the explanation.")
    ] = 8,
    conditions: Annotated[
        list[str] | None,
        typer.Option(
            "--condition",
            help="Assignment: a condition (repeatable; default: all of "
            + ", ".join(sorted(ASSIGNMENT_CONDITIONS))
            + ").",
        ),
    ] = None,
    questions: Annotated[int, typer.Option(help="Assignment: questions per condition.")] = 20,
    classes_per_question: Annotated[int, typer.Option(help="Assignment: groups per question.")] = 6,
    class_names: Annotated[
        bool, typer.Option("--class-names", help="Assignment: show class names above the groups.")
    ] = False,
    image_base_url: Annotated[
        str | None,
        typer.Option(help="Public https URL of the images folder (<human>/images) for raters."),
    ] = None,
    output: OutputOpt = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a batch of the same name.")
    ] = False,
    storage_options: StorageOpt = None,
) -> None:
    """Render the images raters see and write an uploadable batch (MTurk CSV + HTML, JSON/CSV)."""
    options = parse_storage(storage_options)
    cfg = ExportConfig(
        study=study,
        batch=batch,
        raters_per_item=raters,
        question=question,
        seed=seed,
        max_items=max_items,
        subset=subset,
        shown=shown,
        explanation_features=features,
        conditions=tuple(conditions) if conditions else tuple(ASSIGNMENT_CONDITIONS),
        questions_per_condition=questions,
        classes_per_question=classes_per_question,
        show_class_names=class_names,
        image_base_url=image_base_url,
    )
    from audit.human.export import export_study  # imports torch: only when exporting

    batches = export_study(run, cfg, output=output, overwrite=overwrite, storage_options=options)
    for b in batches:
        typer.echo(f"batch {b.name}: {b.items} items, {b.images_written} new images -> {b.url}")
    if study is Study.ADVERSARIAL:
        typer.echo(
            "note: run the '-whole' and '-explanation' batches days apart with different raters."
        )
    if image_base_url is None:
        typer.echo(
            "note: image URLs are storage URLs; pass --image-base-url with the public https "
            "address of the images folder before uploading to Mechanical Turk."
        )


@app.command()
@one_line_errors
def ingest(
    run: RunArg,
    batch: Annotated[str, typer.Argument(help="Batch folder name, e.g. misclassified-batch1.")],
    results: Annotated[list[str], typer.Argument(help="Results CSV file(s), in order.")],
    min_seconds: Annotated[float, typer.Option(help="Keep answers given in at least this.")] = 20.0,
    max_seconds: Annotated[float, typer.Option(help="Keep answers given in at most this.")] = 180.0,
    fmt: Annotated[
        AnswerFormat,
        typer.Option(
            "--format",
            help="mturk: batch results CSV; plain: CSV item_id, worker_id, answer, "
            "work_time_seconds.",
        ),
    ] = AnswerFormat.MTURK,
    output: OutputOpt = None,
    storage_options: StorageOpt = None,
) -> None:
    """Read raters' answers, apply the time filter, count duplicates and missing answers."""
    options = parse_storage(storage_options)
    time_filter = TimeFilter(min_seconds, max_seconds)
    store = HumanStore(human_root(run, output), options)
    files = [(url, _read_text(url, options)) for url in results]
    report = ingest_files(store, batch, files, time_filter, plain=fmt is AnswerFormat.PLAIN)
    for line in report.lines():
        typer.echo(line)


@app.command()
@one_line_errors
def analyze(
    run: RunArg,
    k: Annotated[int, typer.Option("--k", help="Positive when at least k raters say yes...")] = 4,
    n: Annotated[int, typer.Option("--n", help="...of the first n kept answers.")] = 5,
    plot: Annotated[bool, typer.Option(help="Also write the Figure 2 PNG.")] = True,
    output: OutputOpt = None,
    storage_options: StorageOpt = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print one JSON object: tables (rows), files, notes."),
    ] = False,
) -> None:
    """Compute Tables 1-3 and Figure 2 from every ingested batch; write and print them."""
    options = parse_storage(storage_options)
    rule = AgreementRule(k, n)
    predictions = _run_predictions(run, options)
    store = HumanStore(human_root(run, output), options)
    tables, notes = run_analysis(store, predictions, rule, plot=plot)
    if not tables:
        if not as_json:
            for note in notes:
                typer.echo(f"note: {note}")
        raise fail(f"no ingested answers under {store.url()}; run 'ingest' first")
    fig2 = f"{FIGURES}/{FIG2}.png"
    figures = {FIG2: store.url(fig2)} if plot and store.exists(fig2) else {}
    if as_json:
        summary = {
            "output": store.url(),
            "tables": {
                name: {"url": store.url(f"{TABLES}/{name}.parquet"), "rows": table.to_pylist()}
                for name, table in tables.items()
            },
            "figures": figures,
            "notes": notes,
        }
        typer.echo(json.dumps(summary, indent=2, default=str))
        return
    for note in notes:
        typer.echo(f"note: {note}")
    for name, table in tables.items():
        typer.echo(f"\n{name} -> {store.url(f'{TABLES}/{name}.parquet')}")
        typer.echo(format_table(table))
    for url in figures.values():
        typer.echo(f"\nfigure -> {url}")


def _source_option(name: str) -> Any:
    """The dedicated option of a registered judgment source: its flag and help line."""
    source = get_source(name)
    return typer.Option(source.flag, help=source.help)


@app.command()
@one_line_errors
def public(
    run: Annotated[
        str | None, typer.Argument(help="Run folder whose predictions to score.")
    ] = None,
    predictions: Annotated[
        str | None,
        typer.Option(help="Any Parquet predictions table (file or folder) instead of a run."),
    ] = None,
    # One option per source that has a flag (its name = the source's name), and the same name
    # in ``flagged`` below; any registered source also works as --judgment NAME=FILE.
    real: Annotated[str | None, _source_option("real")] = None,
    cleanlab: Annotated[str | None, _source_option("cleanlab")] = None,
    madrylab: Annotated[str | None, _source_option("madrylab")] = None,
    judgment: Annotated[
        list[str] | None,
        typer.Option(
            metavar="<str>",
            help="NAME=FILE: any registered judgment source and its file (repeatable): "
            + ", ".join(s.name for s in registered_sources())
            + ".",
        ),
    ] = None,
    index_to_filepath: Annotated[
        str | None,
        typer.Option(help="ImageFolder index -> file path JSON list, for index-only files."),
    ] = None,
    majority: Annotated[int, typer.Option(help="cleanlab: votes (of 5) making a majority.")] = 3,
    k: Annotated[
        int,
        typer.Option(
            "--k",
            help="cleanlab: votes (of 5) for 'guessed' or 'both' that make the guessed label "
            "right too (the k-of-n reading).",
        ),
    ] = 3,
    min_fraction: Annotated[
        float, typer.Option(help="MadryLab: fraction of workers that must select a class.")
    ] = 0.5,
    output: OutputOpt = None,
    storage_options: StorageOpt = None,
) -> None:
    """ReaL, cleanlab-rectified and MadryLab accuracy of a predictions table (no study needed)."""
    options = parse_storage(storage_options)
    flagged = {"real": real, "cleanlab": cleanlab, "madrylab": madrylab}
    files = {name: path for name, path in flagged.items() if path}
    for item in judgment or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise fail(f"--judgment {item!r}: expected NAME=FILE")
        if name in files:
            raise fail(f"judgment source {name!r} given twice")
        files[name] = path
    if (run is None) == (predictions is None):
        raise fail("give either a run folder or --predictions, not both or neither")
    if not files:
        raise fail("give at least one of " + ", ".join(get_source(n).flag for n in flagged))
    table, root = _public_predictions(run, predictions, output, options)
    store = HumanStore(root, options)
    params = {
        "majority": majority,
        "k": k,
        "min_fraction": min_fraction,
        "index_to_filepath": index_to_filepath,
    }
    try:
        out = judge(table, files, lambda url: _read_text(url, options), params)
    except ValueError as exc:  # PublicDataError, or a malformed file the readers let through
        raise fail(str(exc)) from None
    for j in out:
        name = f"public_{j.name}"
        store.write_parquet(f"{TABLES}/{name}.parquet", j.table)
        typer.echo(f"\n{name} -> {store.url(f'{TABLES}/{name}.parquet')}")
        typer.echo(format_table(j.table))
        if j.labels is not None:
            store.write_parquet(f"{JUDGED}/{j.name}.parquet", j.labels)
            typer.echo(
                f"per-image judgments ({j.labels.num_rows} images) -> "
                f"{store.url(f'{JUDGED}/{j.name}.parquet')}"
            )


def _public_predictions(
    run: str | None, predictions: str | None, output: str | None, options: dict[str, Any]
) -> tuple[pa.Table, str]:
    """The predictions ``public`` judges (a run's, or a Parquet file's) and where its tables go."""
    import pyarrow.dataset as pads

    if run is not None:
        return _run_predictions(run, options), human_root(run, output)
    assert predictions is not None
    fs, path = fsspec.core.url_to_fs(predictions, **options)
    table = pads.dataset(path, format="parquet", filesystem=fs).to_table()
    missing = {"image_id", "label", "top5_classes"} - set(table.column_names)
    if missing:
        raise fail(f"{predictions}: missing column(s) {sorted(missing)}")
    if output is None:
        raise fail("with --predictions, say where the tables go with --output")
    return table, output
