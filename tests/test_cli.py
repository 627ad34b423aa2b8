"""The CLI and the job entry point, driven as a user would."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from conftest import loud_lines
from fixtures_demo import copy_run, demo_run_output
from test_attack import reference_loop
from typer.testing import CliRunner

from audit.cli import app
from audit.config import ModelConfig
from audit.data.decode import load_image
from audit.data.segments import decode_segments
from audit.models import load_model
from audit.stages.attack import NEVER
from audit.stages.explain import explain
from audit.store import read_manifest, read_table

runner = CliRunner()
REPO = Path(__file__).parents[1]


# demo_cache, demo_run: the session's rendered demo set and demo run (tests/fixtures_demo.py)


def test_run_without_a_config_runs_the_demo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, demo_run: str
) -> None:
    # demo_run is `audit-cli run --set ...` with no config file, from a working folder
    # (tests/fixtures_demo.py): the demo config, written under that folder's ./audit-output.
    work = Path(demo_run).parents[1]
    assert [p.name for p in (work / "audit-output").iterdir()] == [Path(demo_run).name]
    output = demo_run_output(demo_run)
    m = read_manifest(demo_run)
    assert m["state"] == "succeeded" and m["model"]["name"] == "demo_digits"
    assert m["data"]["source"].endswith("demo-digits-v1")  # the rendered demo set
    preds = read_table(demo_run, "predictions")
    errors = read_table(demo_run, "errors")
    metrics = read_table(demo_run, "metrics")
    assert preds.num_rows + errors.num_rows == m["data"]["inputs"] == 301
    assert errors.column("image_id").to_pylist() == ["DEMO_val_99999999"]  # the planted broken file
    top1 = {r["scope"]: r["value"] for r in metrics.to_pylist() if r["name"] == "top1_error"}
    assert top1["all"] < 0.10
    assert len(top1) == 11  # overall + 10 digit classes
    assert "top1_error" in output
    assert "adv_top1_accuracy" in output and "steps_to_flip: 0:" in output
    # the summary ends with the next steps: the printed status command works as printed
    assert f"  audit-cli report {demo_run}   # the HTML report" in output
    assert f"1 input(s) could not be audited: {demo_run}/errors" in output
    status_line = next(line for line in output.splitlines() if "audit-cli status" in line)
    status = runner.invoke(app, shlex.split(status_line.split("#")[0])[1:])
    assert status.exit_code == 0 and "state: succeeded" in status.output, status.output
    check_adversarial_against_reference(demo_run, preds)
    check_selections_against_reference(demo_run, preds)
    check_explanations(demo_run, preds, n_samples=m["config"]["explain"]["n_samples"])
    # the report and the human-study commands are registered on the main CLI
    run = copy_run(demo_run, tmp_path / "demo")  # the report is written into the run
    report = runner.invoke(app, ["report", run])
    assert report.exit_code == 0, report.output
    html = (Path(run) / "report" / "index.html").read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and m["run_id"] in html
    public = runner.invoke(app, ["human", "public", "--help"])
    assert public.exit_code == 0 and "ReaL" in public.output

    monkeypatch.chdir(work)  # status with no run: the latest run under ./audit-output
    status = runner.invoke(app, ["status"])
    assert status.exit_code == 0, status.output
    assert "state: succeeded" in status.output and "table predictions: 300 rows" in status.output
    as_json = runner.invoke(app, ["status", "--json"])
    assert json.loads(as_json.output)["run_id"] == Path(demo_run).name


def check_adversarial_against_reference(run: str, preds: pa.Table) -> None:
    """The actor's step counts equal the plain reference loop run here on the same crops."""
    adv = read_table(run, "adversarial").to_pylist()
    assert sorted(r["image_id"] for r in adv) == sorted(preds.column("image_id").to_pylist())
    uris = dict(
        zip(preds.column("image_id").to_pylist(), preds.column("uri").to_pylist(), strict=True)
    )
    model = load_model(ModelConfig(name="demo_digits")).module
    adv = sorted(adv, key=lambda r: r["image_id"])[:120]  # a slice keeps the test quick
    images = np.stack([load_image(uris[r["image_id"]], 10**8) for r in adv])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    y = torch.tensor([r["target"] for r in adv])
    steps, _, cls, _ = reference_loop(model, x, y, 0.001, 10, "linf")
    got = [NEVER if r["steps_to_flip"] is None else r["steps_to_flip"] for r in adv]
    assert got == steps.tolist()
    assert [r["adv_class"] for r in adv] == cls.tolist()
    assert len(set(got)) >= 5  # a spread of step counts, not all 0 or all never


def check_selections_against_reference(run: str, preds: pa.Table) -> None:
    """Adversarial and probability picks equal a plain sort here; every method fills both roles."""
    sel = read_table(run, "selections").to_pylist()
    adv = {r["image_id"]: r for r in read_table(run, "adversarial").to_pylist()}
    rows = preds.to_pylist()
    for cls in range(10):
        mine = [r for r in rows if r["label"] == cls]
        ids = {r["image_id"] for r in mine}

        def picked(method: str, role: str, cls: int = cls) -> list[str]:
            got = [
                s for s in sel if s["class"] == cls and s["method"] == method and s["role"] == role
            ]
            return [s["image_id"] for s in sorted(got, key=lambda s: s["rank"])]

        def margin(r: dict) -> float:
            p = [float(v) for v in r["top5_probs"]]
            return float(r["label_prob"]) - (p[1] if r["top5_classes"][0] == r["label"] else p[0])

        never = [r for r in mine if adv[r["image_id"]]["steps_to_flip"] is None]
        once = [r for r in mine if adv[r["image_id"]]["steps_to_flip"] == 1]
        assert picked("adversarial", "prototype") == [
            r["image_id"] for r in sorted(never, key=lambda r: (-margin(r), r["image_id"]))[:3]
        ]
        assert picked("adversarial", "criticism") == [
            r["image_id"]
            for r in sorted(
                once, key=lambda r: (-float(adv[r["image_id"]]["adv_prob"]), r["image_id"])
            )[:3]
        ]
        hi = [r for r in mine if r["label_prob"] > 0.9]
        lo = [r for r in mine if r["label_prob"] < 0.1]
        assert picked("probability", "prototype") == [
            r["image_id"] for r in sorted(hi, key=lambda r: (-r["label_prob"], r["image_id"]))[:3]
        ]
        assert picked("probability", "criticism") == [
            r["image_id"] for r in sorted(lo, key=lambda r: (r["label_prob"], r["image_id"]))[:3]
        ]
        for method in ("mmd_critic", "random"):
            protos, crits = picked(method, "prototype"), picked(method, "criticism")
            assert len(protos) == 3 and len(crits) == 3, (cls, method)
            assert set(protos) <= ids and set(crits) <= ids and not set(protos) & set(crits)
        assert picked("adversarial", "prototype") and picked("probability", "prototype")
    assert {s["class_id"] for s in sel} == {f"digit_{d}" for d in range(10)}


def check_explanations(run: str, preds: pa.Table, n_samples: int) -> None:
    """One image of each class explained, the one with the smallest seeded draw
    (explain_draw: a hash of explain.seed and the image id), clean plus adversarial when
    flipped; one row re-explained directly from its stored segment map gives the same
    surrogate."""
    from audit.run.plan import explain_draw

    ex = read_table(run, "explanations").to_pylist()
    adv = {r["image_id"]: r for r in read_table(run, "adversarial").to_pylist()}
    seed = read_manifest(run)["config"]["explain"]["seed"]
    rows = sorted(preds.to_pylist(), key=lambda r: r["image_id"])
    firsts = {}
    for r in sorted(rows, key=lambda r: explain_draw(seed, r["image_id"])):
        firsts.setdefault(r["label"], r)
    expected = {(r["image_id"], "clean") for r in firsts.values()} | {
        (r["image_id"], "adversarial")
        for r in firsts.values()
        if (adv[r["image_id"]]["steps_to_flip"] or 0) >= 1
    }
    assert {(e["image_id"], e["variant"]) for e in ex} == expected
    by_id = {r["image_id"]: r for r in rows}
    for e in ex:
        seg = decode_segments(e["segments"])
        assert seg.shape == (224, 224) and int(seg.max()) + 1 == e["n_segments"]
        assert len(e["weights"]) == e["n_segments"] and 1 <= len(e["top_features"]) <= 8
        r = by_id[e["image_id"]]
        want = r["top5_classes"][0] if e["variant"] == "clean" else adv[e["image_id"]]["adv_class"]
        assert e["explained_class"] == want
    clean = next(e for e in ex if e["variant"] == "clean")
    model = load_model(ModelConfig(name="demo_digits")).module
    image = load_image(by_id[clean["image_id"]]["uri"], 10**8)
    seg = decode_segments(clean["segments"])
    again = explain(model, image, seg, clean["explained_class"], n_samples=n_samples)
    np.testing.assert_allclose(again.surrogate.weights, clean["weights"], rtol=1e-6, atol=1e-9)
    assert again.surrogate.top_features.tolist() == clean["top_features"]


def test_run_refuses_bad_config_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["run", "--set", "predict.batch_size=0"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "error: The 'predict.batch_size' field must be an int >= 1. Got 0 instead."
    ]
    assert not (tmp_path / "audit-output").exists()


def test_unknown_model_lists_valid_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ray_local: None
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["run", "--set", "model.name=resnet9000"])
    assert result.exit_code == 1
    assert "resnet9000" in result.output and "did you mean 'resnet50'" in result.output
    assert "'audit-cli models' lists them" in result.output
    assert not (tmp_path / "audit-output").exists()


def test_status_of_unknown_run(tmp_path: Path) -> None:
    result = runner.invoke(app, ["status", "nope", "--output", str(tmp_path)])
    assert result.exit_code == 1 and "no run 'nope'" in result.output
    result = runner.invoke(app, ["status", "--output", str(tmp_path / "empty")])
    assert result.exit_code == 1 and "no runs under" in result.output


def test_models_lists_registry() -> None:
    result = runner.invoke(app, ["models"])
    names = result.output.split()
    assert {"resnet18", "resnet101", "densenet121", "densenet161", "demo_digits"} <= set(names)


@pytest.mark.slow  # a small pipeline run on the session's Ray
def test_run_json_prints_the_result_as_status_json_does(
    tmp_path: Path, demo_cache: str, ray_local: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUDIT_CACHE_DIR", demo_cache)
    args = ["run", "--json", "--no-progress", "-o", str(tmp_path), "--run-id", "js"]
    for override in ("data.limit=12", "explain.enabled=false", "criticism.enabled=false"):
        args += ["--set", override]
    result = CliRunner().invoke(app, args)  # stdout alone: the logs go to stderr
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    m = read_manifest(str(tmp_path / "js"))
    assert got["url"].endswith("/js") and got["run_id"] == "js" and got["state"] == "succeeded"
    assert got["rows"] == {name: t["rows"] for name, t in m["tables"].items()}
    assert got["metrics"] == m["metrics"]
    assert got["stages"]["attack"]["done"] == got["rows"]["adversarial"]
    status = CliRunner().invoke(app, ["status", str(tmp_path / "js"), "--json"])
    assert json.loads(status.stdout)["progress"] == {k: v for k, v in got.items() if k != "url"}


def test_models_says_whether_the_default_weights_are_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from audit.models.torchvision import cache_path, default_weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache

    def local() -> bool:
        result = runner.invoke(app, ["models", "resnet18", "--json"])
        assert result.exit_code == 0, result.output
        (row,) = json.loads(result.stdout)
        return bool(row["weights_local"])

    assert local() is False
    assert "local: no" in runner.invoke(app, ["models", "resnet18"]).output
    path = Path(cache_path(default_weights("resnet18")))  # where torchvision looks for them
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    assert local() is True
    assert "local: yes" in runner.invoke(app, ["models", "resnet18"]).output


@pytest.mark.slow  # a fresh process starts its own Ray and runs 12 demo images
def test_job_entrypoint_runs_on_its_own(tmp_path: Path, demo_cache: str) -> None:
    env = {**os.environ, "AUDIT_CACHE_DIR": demo_cache, "RAY_ADDRESS": ""}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ray_jobs.audit",
            "--config",
            str(REPO / "configs" / "demo.yaml"),
            "--set",
            "data.limit=12",
            "--set",
            "explain.n_samples=20",
            "--set",
            f"output.root={tmp_path}",
            "--set",
            "output.run_id=job",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "run job: succeeded" in proc.stdout
    assert not loud_lines(proc.stderr)  # a healthy run on a Ray it started is quiet
    m = read_manifest(str(tmp_path / "job"))
    assert m["tables"]["predictions"]["rows"] + m["tables"]["errors"]["rows"] == 12


def test_job_entrypoint_bad_config_exits_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ray_jobs.audit", "--set", "data.layout=zip"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: The 'data.layout' field must be one of")


def write_manifest(folder: Path, **fields: object) -> None:
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"run_id": folder.name, **fields}))


def test_status_of_local_runs_in_progress_and_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # nothing answers at this address, so status shows the manifest as it is
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://127.0.0.1:9")
    stages = {
        "predict": {
            "state": "running",
            "done": 300,
            "total": 1000,
            "seconds": 60.0,
            "images_per_second": 5.0,
            "shards_done": 3,
            "shards_total": 10,
        },
        "criticism": {"state": "pending"},
    }
    tables = {"predictions": {"rows": 290, "files": ["p/0", "p/1", "p/2"]}}
    write_manifest(tmp_path / "busy", state="running", stages=stages, tables=tables)
    result = runner.invoke(app, ["status", "busy", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "run busy  state: running" in result.output
    # (1000 - 300) / 5 = 140 s left
    assert (
        "stage predict: running  300/1000 images, shards 3/10, 5.0 images/s, 60 s, "
        "about 2.3 min left" in result.output
    )
    assert "table predictions: 290 rows in 3 files" in result.output
    as_json = json.loads(
        runner.invoke(app, ["status", "busy", "-o", str(tmp_path), "--json"]).output
    )
    assert as_json["state"] == "running" and as_json["job"] is None and not as_json["stale"]
    assert as_json["progress"]["stages"]["predict"]["eta_seconds"] == 140.0
    assert as_json["progress"]["rows"] == {"predictions": 290}

    write_manifest(tmp_path / "broke", state="failed", error="OSError: disk full", stages={})
    result = runner.invoke(app, ["status", str(tmp_path / "broke")])
    assert result.exit_code == 0, result.output
    assert "state: failed" in result.output and "  error: OSError: disk full" in result.output
