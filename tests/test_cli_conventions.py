"""Conventions every ``audit-cli`` command keeps: ``--help`` fits an 80-column terminal (every
command of the tree, found by walking it), and ``--json`` prints one JSON object on stdout and
nothing else (``report``, ``human analyze``; ``status``, ``list``, ``run`` and ``models`` are in
tests/test_cli.py and tests/test_jobs.py)."""

from __future__ import annotations

import html
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import typer
import typer.rich_utils
from test_human_analysis import simulate
from test_human_export import make_run
from typer.testing import CliRunner

from audit.cli import app
from audit.human.storage import HumanStore
from audit.report.sections import registered_sections

runner = CliRunner()
WIDTH = 80


def command_paths(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The argument paths of ``command`` and of every command under it (groups included)."""
    yield path
    for name, sub in sorted((getattr(command, "commands", None) or {}).items()):
        yield from command_paths(sub, (*path, name))


COMMANDS = list(command_paths(typer.main.get_command(app)))


def test_the_walk_finds_every_command() -> None:
    names = {" ".join(p) for p in COMMANDS}
    assert {"", "run", "status", "report", "human", "human export", "human analyze"} <= names
    assert len(COMMANDS) >= 15


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "audit-cli")
def test_help_fits_80_columns(path: tuple[str, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    # Typer reads $TERMINAL_WIDTH once, at import: the width must come from COLUMNS alone
    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", None, raising=False)
    result = runner.invoke(
        app, [*path, "--help"], env={"COLUMNS": str(WIDTH), "TERM": "dumb", "NO_COLOR": "1"}
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any(line.startswith("╭─") for line in lines), result.stdout  # Rich's panels
    too_long = [line for line in lines if len(line) > WIDTH]
    assert not too_long, "\n".join(too_long)
    cut = [line for line in lines if "…" in line]  # Rich ellipsizes what does not fit
    assert not cut, "\n".join(cut)


# ---------------------------------------------------------------- report --json


def test_report_json(demo_run: str, tmp_path: Path) -> None:
    out = tmp_path / "nested" / "r.html"
    args = ["report", demo_run, "-o", str(out), "--max-classes", "2", "--max-images", "5"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)  # the whole of stdout is the one object
    assert isinstance(got, dict)
    assert got["url"] == f"file://{out}" and got["runs"] == [demo_run]
    written = out.read_bytes()
    assert got["size_bytes"] == len(written) == out.stat().st_size
    text = written.decode("utf-8")
    assert got["images"] == text.count("<img ") == 5
    assert got["refused_images"] > 0 and got["image_bytes"] > 0
    names = [s.name for s in registered_sections()]
    assert got["sections"] == [n for n in names if f'<section id="{n}"' in text]
    assert {"summary", "accuracy", "misclassified"} <= set(got["sections"])
    missing = {m["name"]: m for m in got["missing"]}
    assert sorted(missing) == sorted(set(names) - set(got["sections"]))
    assert "human" in missing  # the demo run has no human-study tables
    for s in registered_sections():
        if s.name in missing:
            assert missing[s.name] == {"name": s.name, "title": s.title, "why": s.why}
            assert html.escape(f"{s.title}: {s.why}") in text  # as the summary lists it
    # the plain output says the same in words
    plain = runner.invoke(app, args)
    assert plain.exit_code == 0, plain.output
    assert plain.stdout.startswith(f"report: {got['url']} (") and "5 images" in plain.stdout


def test_report_json_errors_stay_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["report", str(tmp_path / "no-such-run"), "--json"])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "no-such-run: no manifest.json, not a run folder" in result.stderr


# ---------------------------------------------------------------- human analyze --json


def test_human_analyze_json(tmp_path: Path) -> None:
    run = make_run(tmp_path / "out")
    assert runner.invoke(app, ["human", "export", run, "misclassified"]).exit_code == 0
    store = HumanStore(run + "/human")
    key = store.read_json("batches/misclassified-batch1/key.json")
    plan = {k["item_id"]: ["yes", "yes", "yes", "yes", "no"] for k in key}
    path = tmp_path / "r.csv"
    path.write_text(simulate(store, "misclassified-batch1", plan))
    ingested = runner.invoke(app, ["human", "ingest", run, "misclassified-batch1", str(path)])
    assert ingested.exit_code == 0, ingested.output
    # a second batch exported but not ingested: its note is part of the object
    assert (
        runner.invoke(app, ["human", "export", run, "misclassified", "--batch", "b2"]).exit_code
        == 0
    )

    result = runner.invoke(app, ["human", "analyze", run, "--json"])
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    assert isinstance(got, dict)
    assert got["notes"] == ["batch misclassified-b2: no answers ingested yet"]
    assert set(got["tables"]) == {"table1_rectified", "fig2_positive_answers"}
    for name, table in got["tables"].items():
        assert table["url"] == store.url(f"tables/{name}.parquet")
        written = pq.read_table(table["url"].removeprefix("file://")).to_pylist()
        assert table["rows"] == written, name
    t1 = got["tables"]["table1_rectified"]["rows"][0]
    assert t1["rated_errors"] == len(key) and t1["rectified_images"] == len(key)
    (figure,) = got["figures"].values()
    assert figure == store.url("figures/fig2_positive_answers.png")
    assert store.read_bytes("figures/fig2_positive_answers.png")[:4] == b"\x89PNG"
    assert got["output"] == store.url()

    no_plot = json.loads(
        runner.invoke(app, ["human", "analyze", run, "--json", "--no-plot"]).stdout
    )
    assert no_plot["figures"] == {} and no_plot["tables"] == got["tables"]


def test_human_analyze_json_errors_stay_one_line(tmp_path: Path) -> None:
    run = make_run(tmp_path / "out")
    result = runner.invoke(app, ["human", "analyze", run, "--json"])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "no ingested answers" in result.stderr
