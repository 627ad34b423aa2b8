"""``audit-cli human`` through its Typer app: a real demo run -> MTurk batches -> simulated
answers -> Tables 1-3; the public-judgments command on any predictions table; clean errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SHARED_DATA
from fixtures_demo import copy_run
from test_human_analysis import simulate
from test_human_export import make_run
from typer.testing import CliRunner

from audit.human.cli import app
from audit.human.storage import HumanStore
from audit.store import read_table

runner = CliRunner()


def invoke(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_demo_run_to_tables(tmp_path: Path, demo_run: str) -> None:
    # the session's demo run (3 prototypes and 3 criticisms per class and method), copied: the
    # studies write into it. The conditions its classes can fill (few of its digits flip after
    # one step, so few have adversarial criticisms); all of them: tests/test_human_export.py.
    run = copy_run(demo_run, tmp_path / "demo")
    out = invoke("export", run, "misclassified", "--batch", "m", "--raters", "3")
    assert "batch misclassified-m:" in out and "--image-base-url" in out
    out = invoke("export", run, "adversarial", "--batch", "a")
    assert "days apart" in out
    out = invoke(
        "export", run, "assignment", "--batch", "s", "--questions", "2",
        "--condition", "random", "--condition", "mmd_critic_3p3c",
    )  # fmt: skip
    store = HumanStore(run + "/human")
    preds = read_table(run, "predictions").to_pandas()
    errors = preds[~preds.correct_top1]
    key = store.read_json("batches/misclassified-m/key.json")
    assert sorted(k["image_id"] for k in key) == sorted(errors.image_id)
    # every image a rater sees exists and is a 224x224 PNG
    for batch in (
        "misclassified-m",
        "adversarial-a-whole",
        "adversarial-a-explanation",
        "assignment-s",
    ):
        rows = list(
            csv.DictReader(
                io.StringIO(store.read_bytes(f"batches/{batch}/mturk_input.csv").decode())
            )
        )
        assert rows
        for col in [c for c in rows[0] if c.endswith("_url")]:
            for r in rows:
                rel = r[col].split("/human/", 1)[1]
                assert store.read_bytes(rel)[:4] == b"\x89PNG"
    # simulated raters: everybody says yes / picks the right group
    files = {}
    for batch in (
        "misclassified-m",
        "adversarial-a-whole",
        "adversarial-a-explanation",
        "assignment-s",
    ):
        plan = {
            k["item_id"]: [str(k["correct_slot"]) if "correct_slot" in k else "yes"] * 3
            for k in store.read_json(f"batches/{batch}/key.json")
        }
        path = tmp_path / f"{batch}.csv"
        path.write_text(simulate(store, batch, plan))
        files[batch] = str(path)
        out = invoke("ingest", run, batch, str(path))
        assert f"batch {batch}:" in out and "too_fast" in out
    out = invoke("analyze", run, "--k", "3", "--n", "3")
    for name in (
        "table1_rectified",
        "fig2_positive_answers",
        "table2_adversarial",
        "table3_assignment",
    ):
        assert name in out
        assert store.exists(f"tables/{name}.parquet")
    t1 = store.read_parquet("tables/table1_rectified.parquet").to_pylist()[0]
    assert t1["errors"] == len(errors) and t1["rectified_error"] == 0.0
    t3 = store.read_parquet("tables/table3_assignment.parquet").to_pylist()
    assert [r["mean_success"] for r in t3] == [1.0, 1.0]
    assert store.exists("figures/fig2_positive_answers.png")


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    run = make_run(tmp_path / "out")
    cases = [
        (["export", run, "assignment", "--condition", "bogus"], "'conditions' parameter"),
        (["export", run, "misclassified", "--raters", "0"], "'raters_per_item'"),
        (["export", str(tmp_path / "nothing"), "misclassified"], "not a run folder"),
        (["ingest", run, "misclassified-none", str(tmp_path / "x.csv")], "no such file"),
        (["analyze", run], "no ingested answers"),
        (["analyze", run, "--k", "6"], "'k' parameter of AgreementRule"),
        (["public", run], "at least one of --real"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1
    (tmp_path / "x.csv").write_text("HITId\n1\n")
    invoke("export", run, "misclassified")
    result = runner.invoke(app, ["ingest", run, "misclassified-batch1", str(tmp_path / "x.csv")])
    assert result.exit_code == 1 and "missing column(s)" in result.output


def test_full_cli_loop_on_handmade_run_with_output_override(tmp_path: Path) -> None:
    run = make_run(tmp_path / "out")
    elsewhere = str(tmp_path / "studies")
    invoke("export", run, "misclassified", "--output", elsewhere, "--max-items", "5")
    store = HumanStore(elsewhere)
    key = store.read_json("batches/misclassified-batch1/key.json")
    plan = {k["item_id"]: ["no", "yes", "yes", "yes", "no"] for k in key}
    path = tmp_path / "r.csv"
    path.write_text(simulate(store, "misclassified-batch1", plan))
    # Default filter: the first 5 kept answers are the plan: 3 yes < 4, nothing rectified.
    invoke("ingest", run, "misclassified-batch1", str(path), "--output", elsewhere)
    invoke("analyze", run, "--output", elsewhere, "--no-plot")
    t1 = store.read_parquet("tables/table1_rectified.parquet").to_pylist()[0]
    assert t1["rectified_images"] == 0 and t1["rated_errors"] == 5
    # --min-seconds 21 also drops the first answer (20 s, a no); the sixth kept answer (the
    # noise rows answer yes) moves into the first 5: 4 yes, every item rectified.
    out = invoke(
        "ingest",
        run,
        "misclassified-batch1",
        str(path),
        "--output",
        elsewhere,
        "--min-seconds",
        "21",
    )
    assert "too_fast 10" in out  # the 19 s noise rows and the 20 s first answers
    out = invoke("analyze", run, "--output", elsewhere, "--no-plot")
    t1 = store.read_parquet("tables/table1_rectified.parquet").to_pylist()[0]
    assert t1["rectified_images"] == 5 and t1["rated_errors"] == 5
    assert not store.exists("figures/fig2_positive_answers.png")
    assert not (Path(run.removeprefix("file://")) / "human").exists()


def test_public_command_on_a_predictions_table(tmp_path: Path) -> None:
    real = json.loads((SHARED_DATA / "reassessed-imagenet" / "real.json").read_text())
    ids = [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, 201)]  # names with an extension
    labels = [(real[i] or [0])[0] for i in range(200)]
    top5 = [[(lab + 1) % 1000, lab, 2, 3, 4] for lab in labels]  # top-1 wrong, top-5 right
    pred_dir = tmp_path / "preds"
    pred_dir.mkdir()
    pq.write_table(
        pa.table({"image_id": ids, "label": labels, "top5_classes": top5}), pred_dir / "p.parquet"
    )
    out_dir = tmp_path / "tables-out"
    out = invoke(
        "public",
        "--predictions", str(pred_dir),
        "--real", str(SHARED_DATA / "reassessed-imagenet" / "real.json"),
        "--cleanlab", str(SHARED_DATA / "cleanlab-label-errors" / "imagenet_mturk.json"),
        "--madrylab", str(SHARED_DATA / "derived" / "madrylab_classify_task.jsonl"),
        "--output", str(out_dir),
    )  # fmt: skip
    assert "public_real" in out and "public_cleanlab" in out and "public_madrylab" in out
    m = {
        r["measure"]: r
        for r in pq.read_table(out_dir / "tables" / "public_real.parquet").to_pylist()
    }
    nonempty = sum(1 for i in range(200) if real[i])
    expected1 = sum((labels[i] + 1) % 1000 in real[i] for i in range(200) if real[i]) / nonempty
    assert m["ReaL top-1 accuracy"]["images"] == nonempty
    assert m["ReaL top-1 accuracy"]["accuracy"] == pytest.approx(expected1)
    assert m["ReaL top-5 accuracy"]["accuracy"] == 1.0
    assert m["original top-1 accuracy, all labeled predictions"]["accuracy"] == 0.0


def test_public_cleanlab_takes_k(tmp_path: Path) -> None:
    ids = [f"ILSVRC2012_val_{i:08d}" for i in range(1, 301)]
    pred_dir = tmp_path / "preds"
    pred_dir.mkdir()
    table = pa.table({"image_id": ids, "label": [0] * 300, "top5_classes": [[1, 0, 2, 3, 4]] * 300})
    pq.write_table(table, pred_dir / "p.parquet")
    mturk = SHARED_DATA / "cleanlab-label-errors" / "imagenet_mturk.json"
    for k in (1, 5):
        out_dir = tmp_path / f"k{k}"
        invoke(
            "public", "--predictions", str(pred_dir), "--cleanlab", str(mturk),
            "--k", str(k), "--output", str(out_dir),
        )  # fmt: skip
        rows = pq.read_table(out_dir / "tables" / "public_cleanlab.parquet").to_pylist()
        m = {r["measure"]: r for r in rows}
        assert m[f"cleanlab-rectified ({k} of 5) top-1 accuracy"]["images"] == 300
