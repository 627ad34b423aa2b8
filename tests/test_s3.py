"""Inputs and outputs on object storage: s3:// against a local moto server (as s3fs's own tests
do), and memory://. Credentials must never leak into what the run writes, logs or prints."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from conftest import moto_s3
from typer.testing import CliRunner

from audit.cli import app
from audit.config import build_config
from audit.data.demo import ensure_demo_dataset
from audit.run import run_audit
from audit.store import read_manifest, read_table

KEY = "h7KEYID-AKIAEXAMPLE0042"
SECRET = "h7SECRET-wJalrXUtnFEMI-K7MDENG-bPxRfiCY"  # fake, checked for leaks below
BUCKET = "audit-h7"
CLASSES = ("digit_1", "digit_4", "digit_7")
PER_CLASS = 6


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, Any]]:
    with moto_s3(KEY, SECRET, BUCKET) as options:
        yield options


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few classes of the demo digits, copied into a local ImageFolder."""
    demo = Path(ensure_demo_dataset(str(tmp_path_factory.mktemp("cache"))))
    local = tmp_path_factory.mktemp("digits")
    for class_id in CLASSES:
        files = sorted(p for p in (demo / class_id).iterdir() if p.name != "DEMO_val_99999999.JPEG")
        (local / class_id).mkdir()
        for p in files[:PER_CLASS]:
            shutil.copy(p, local / class_id / p.name)
    return local


def config(
    source: str, root: str, run_id: str, options: dict[str, Any] | None, criticism: bool = True
) -> Any:
    raw = {
        "data": {"source": source, "layout": "imagefolder", "storage_options": options or {}},
        "model": {"name": "demo_digits"},
        "predict": {"batch_size": 8},
        "explain": {"enabled": False},  # LIME adds minutes and nothing storage-specific
        "criticism": {"enabled": criticism, "methods": ["adversarial", "probability", "random"]},
        "output": {"root": root, "run_id": run_id, "storage_options": options or {}},
    }
    return build_config(raw)


def by_image(run: str, options: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    rows = read_table(run, "predictions", options).to_pylist()
    return {r["image_id"]: r for r in rows}


@pytest.mark.slow  # two pipeline runs on Ray
def test_s3_inputs_and_outputs_match_a_local_run(
    s3: dict[str, Any],
    digits: Path,
    tmp_path: Path,
    ray_local: None,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    fs = fsspec.filesystem("s3", **s3)
    fs.put(str(digits), f"{BUCKET}/digits", recursive=True)
    assert len(fs.find(f"{BUCKET}/digits")) == len(CLASSES) * PER_CLASS

    local = run_audit(config(str(digits), str(tmp_path), "local", None))
    remote = run_audit(config(f"s3://{BUCKET}/digits", f"s3://{BUCKET}/out", "s3run", s3))
    assert remote.url == f"s3://{BUCKET}/out/s3run"
    assert remote.manifest["state"] == "succeeded"

    want, got = by_image(local.url), by_image(remote.url, s3)
    assert sorted(got) == sorted(want) and len(got) == len(CLASSES) * PER_CLASS
    for image_id, r in got.items():
        w = want[image_id]
        assert r["uri"].startswith(f"s3://{BUCKET}/digits/")
        assert r["label"] == w["label"] and r["top5_classes"] == w["top5_classes"]
        assert r["top5_probs"] == pytest.approx(w["top5_probs"], abs=1e-6)
    assert read_table(remote.url, "errors", s3).num_rows == 0
    sel_local = read_table(local.url, "selections").to_pylist()
    sel_remote = read_table(remote.url, "selections", s3).to_pylist()
    key = lambda s: (s["class"], s["method"], s["role"], s["rank"], s["image_id"])  # noqa: E731
    assert sorted(map(key, sel_remote)) == sorted(map(key, sel_local)) and sel_remote

    # the CLI reads the run back from s3 with the same options
    runner = CliRunner()
    opts = json.dumps(s3)
    text = runner.invoke(
        app, ["status", "s3run", "-o", f"s3://{BUCKET}/out", "--storage-options", opts]
    )
    assert text.exit_code == 0, text.output
    assert "state: succeeded" in text.output
    assert f"table predictions: {len(got)} rows" in text.output
    as_json = runner.invoke(app, ["status", remote.url, "--json", "--storage-options", opts])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output)["progress"]["rows"]["predictions"] == len(got)

    # the credentials appear nowhere: not in any object written, nor in what was printed/logged
    written = fs.find(f"{BUCKET}/out")
    assert any(p.endswith("manifest.json") for p in written) and len(written) > 6
    for path in written:
        blob = fs.cat_file(path)
        assert KEY.encode() not in blob and SECRET.encode() not in blob, path
    manifest = json.dumps(read_manifest(remote.url, s3))
    printed = capfd.readouterr()
    seen = [manifest, text.output, as_json.output, printed.out, printed.err, caplog.text]
    seen += [p.read_text(errors="replace") for p in ray_log_files()]
    for blob in seen:
        assert KEY not in blob and SECRET not in blob


def ray_log_files() -> list[Path]:
    """This session's Ray log files (workers' stdout/stderr, raylet, ...)."""
    import ray

    logs = Path(ray._private.worker.global_worker.node.get_logs_dir_path())
    return [p for p in logs.rglob("*") if p.is_file() and p.stat().st_size < 50 * 2**20]


@pytest.mark.slow  # a pipeline run on Ray
def test_memory_output_without_per_class_tasks(digits: Path, ray_local: None) -> None:
    """memory:// lives in the driver's process, which writes every table: they read back."""
    result = run_audit(config(str(digits), "memory://h7-out", "mem", None, criticism=False))
    assert result.url.endswith("/h7-out/mem") and result.url.startswith("memory://")
    want = {p.stem for c in CLASSES for p in (digits / c).iterdir()}
    assert set(by_image(result.url)) == want
    assert read_manifest(result.url)["state"] == "succeeded"


@pytest.mark.slow  # a pipeline run on Ray
def test_memory_output_with_per_class_tasks(digits: Path, ray_local: None) -> None:
    """Per-class criticism would run in other Ray worker processes, which cannot see the
    driver's memory:// files, so with a memory:// output it runs on the driver."""
    cfg = config(str(digits), "memory://h7-out2", "mem2", None)
    result = run_audit(cfg)
    assert read_manifest(result.url)["stages"]["criticism"]["where"].startswith("driver")
    sel = read_table(result.url, "selections").to_pylist()
    assert {s["class_id"] for s in sel} == set(CLASSES)


@pytest.mark.slow  # a pipeline run on Ray
def test_memory_inputs(digits: Path, tmp_path: Path, ray_local: None) -> None:
    """memory:// inputs are listed by the driver and decoded in Ray worker processes, which
    cannot see them: the driver's bytes travel with the rows, so every image is predicted."""
    mem = fsspec.filesystem("memory")
    mem.put(str(digits), "/h7-in", recursive=True)
    result = run_audit(config("memory://h7-in", str(tmp_path), "memin", None, False))
    got = by_image(result.url)
    assert read_table(result.url, "errors").num_rows == 0, read_table(
        result.url, "errors"
    ).to_pylist()[:2]
    assert set(got) == {p.stem for c in CLASSES for p in (digits / c).iterdir()}
