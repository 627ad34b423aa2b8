"""Public judgments in the report: ``audit-cli human public`` writes each source's per-image
judgments beside its totals (``human/judged/<source>.parquet``), the misclassified cards say
what the source accepts, and the per-class table gains the source's top-1 error; checked
against plain loops over a MadryLab file written here for the demo run's own images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_report import dom, table_rows
from typer.testing import CliRunner

from audit.cli import app
from audit.report.build import build_report
from audit.report.config import ReportConfig
from audit.report.data import load_run


@pytest.fixture(scope="module")
def judged_run(demo_run: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    """A copy of the demo run judged by a MadryLab-format file: every other misclassified
    image gets its top-1 accepted by 2 of 3 workers, the others only their label; one
    correct image is judged too."""
    dst = tmp_path_factory.mktemp("judged") / "demo"
    shutil.copytree(demo_run, dst)
    preds = pq.read_table(dst / "predictions").to_pylist()
    wrong = sorted(
        (p for p in preds if p["label"] is not None and p["top5_classes"][0] != p["label"]),
        key=lambda p: p["image_id"],
    )
    right = next(p for p in preds if p["label"] is not None and p["top5_classes"][0] == p["label"])
    lines, valid = [], {}
    for k, p in enumerate(wrong):
        top1, label = p["top5_classes"][0], p["label"]
        workers = [[label, top1], [top1], [label]] if k % 2 == 0 else [[label], [label], [top1]]
        lines.append({"filename": f"val/{p['image_id']}.png", "selected": workers})
        valid[p["image_id"]] = {label, top1} if k % 2 == 0 else {label}
    lines.append({"filename": f"{right['image_id']}.png", "selected": [[right["label"]]]})
    valid[right["image_id"]] = {right["label"]}
    path = dst.parent / "madrylab.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    result = CliRunner().invoke(app, ["human", "public", str(dst), "--madrylab", str(path)])
    assert result.exit_code == 0, result.output
    assert "per-image judgments" in result.output
    return str(dst), valid


def test_public_writes_per_image_judgments(judged_run: tuple[str, dict]) -> None:
    run, valid = judged_run
    rows = pq.read_table(Path(run) / "human" / "judged" / "madrylab.parquet").to_pylist()
    assert {r["image_id"]: set(r["valid_labels"]) for r in rows} == valid
    assert [r["image_id"] for r in rows] == sorted(valid)


def test_cards_and_per_class_show_the_judgments(judged_run: tuple[str, dict]) -> None:
    run, valid = judged_run
    data = load_run(run)
    names = data.classes.names
    report = build_report([data], ReportConfig(examples=1000, max_classes=0))
    root = dom(report.html)
    preds = {p["image_id"]: p for p in pq.read_table(Path(run) / "predictions").to_pylist()}

    cards = root.one("section", id="misclassified").all("figure", cls="tile")
    assert cards
    seen = 0
    for card in cards:
        lines = [d.text() for d in card.one("figcaption").all("div")]
        image_id, top1 = lines[0], preds[lines[0]]["top5_classes"][0]
        judged = [t for t in lines if t.startswith("madrylab accepts: ")]
        if image_id not in valid:
            assert judged == []
            continue
        seen += 1
        accepted = ", ".join(names[c] for c in sorted(valid[image_id]))
        verdict = "top-1 right" if top1 in valid[image_id] else "top-1 still wrong"
        assert judged == [f"madrylab accepts: {accepted} - {verdict}"]
    assert seen == len(valid) - 1  # every judged mistake is on a card

    table = root.one("section", id="per_class").all("table")[0]
    heads = [th.text() for th in table.one("thead").all("th")]
    assert heads[-1] == "top-1 error by madrylab"
    for row in table_rows(table):
        cls = next(c for c in range(10) if row[1].startswith(f"{names[c]} "))
        mine = [
            i for i, p in preds.items() if i in valid and p["label"] == cls and p["top5_classes"]
        ]
        if not mine:
            assert row[-1] == "-"
            continue
        err = sum(preds[i]["top5_classes"][0] not in valid[i] for i in mine) / len(mine)
        assert row[-1] == f"{100 * err:.2f} %"
