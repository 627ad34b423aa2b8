"""The typed manifest (:mod:`audit.run.manifest_types`) and the one run reader
(:mod:`audit.run.reader`): JSON round trips, format versions, committed files only, classes."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner

from audit.run.manifest_types import (
    FORMAT_VERSION,
    Manifest,
    ManifestError,
    ManifestVersionError,
    NoRunError,
)
from audit.run.reader import RunReader
from audit.store import RunStore

runner = CliRunner()

SHA = "ab" * 32
TRANSFORM = {
    "resize": [256],
    "crop": [224, 224],
    "interpolation": "bilinear",
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
    "resize_mode": "shorter",
}


def v3_manifest() -> dict[str, Any]:
    """A manifest as this version writes it (every section), hand-made."""
    return {
        "format_version": FORMAT_VERSION,
        "run_id": "r",
        "state": "succeeded",
        "created": "2026-01-01T00:00:00Z",
        "config": {"data": {"max_pixels": 1000, "jpeg_draft": True}, "attack": {"enabled": True}},
        "model": {
            "name": "demo_digits",
            "source": "demo",
            "weights": "w.pt",
            "weights_sha256": SHA,
            "weights_digest_of": "file",
            "classes": "digits",
            "num_classes": 2,
            "embedding_dim": 64,
            "embedding": "input of fc",
            "transform": TRANSFORM,
            "transform_text": "resize 256",
            "class_ids": ["digit_0", "digit_1"],
        },
        "data": {"source": ["a", "b"], "layout": "imagefolder", "inputs": 3, "fingerprint": "f"},
        "execution": {
            "device": "cpu",
            "num_actors": 1,
            "accelerator_type": None,
            "resources": {"fake_gpu": 1.0},
            "nodes": ["a" * 56, "b" * 56],
        },
        "versions": {"python": "3.11"},
        "stages": {
            "list": {"state": "done", "seconds": 0.1, "records": 3, "errors": 0},
            "predict": {"state": "done", "done": 3, "total": 3, "images_per_second": None},
        },
        "updated": "2026-01-01T00:01:00Z",
        "error": None,
        "shards": {"size": 2, "total": 2, "committed": [0, 1]},
        "tables": {"errors": {"rows": 1, "files": ["errors/shard-00000.parquet"]}},
        "attempts": [{"started": "2026-01-01T00:00:30Z", "committed_shards_at_start": 1}],
        "metrics": {"top1_error": 0.5},
        "a_plugin_key": {"kept": True},
    }


def test_a_written_manifest_round_trips_key_for_key() -> None:
    m = v3_manifest()
    typed = Manifest.from_json(copy.deepcopy(m))
    assert typed.to_json() == m
    assert list(typed.to_json()) == list(m)  # the order the writer has always used
    assert typed.model.class_ids == ("digit_0", "digit_1")
    assert typed.shards is not None and typed.shards.committed == (0, 1)
    assert typed.files("errors") == ("errors/shard-00000.parquet",) and typed.rows("nope") == 0
    assert typed.config_value("data", "max_pixels") == 1000
    assert typed.config_value("explain", "num_features", 8) == 8
    assert typed.stages["predict"].done == 3 and typed.stages["predict"].images_per_second is None


def test_the_demo_runs_manifest_round_trips_and_lists_its_class_ids(demo_run: str) -> None:
    raw = json.loads((Path(demo_run) / "manifest.json").read_text())
    assert raw["format_version"] == FORMAT_VERSION == 3
    assert Manifest.from_json(raw).to_json() == raw
    reader = RunReader(demo_run)
    classes = reader.classes()
    assert classes is not None and len(classes) == 10
    assert reader.manifest.model.class_ids == classes.ids
    assert reader.manifest.model.eval_transform().crop == (224, 224)


def test_a_newer_manifest_is_refused_in_one_line(tmp_path: Path) -> None:
    m = v3_manifest()
    m["format_version"] = 99
    with pytest.raises(ManifestVersionError) as info:
        Manifest.from_json(m, where="'runs/r'")
    message = str(info.value)
    assert len(message.splitlines()) == 1
    assert "format_version 99" in message and f"format_version {FORMAT_VERSION}" in message
    folder = tmp_path / "r"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ManifestVersionError):
        RunReader(str(folder)).manifest  # noqa: B018
    from audit.cli import app

    result = runner.invoke(app, ["status", str(folder)])
    assert result.exit_code == 1
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "99" in lines[0], lines


def test_a_version_1_manifest_loads_with_defaults() -> None:
    m = {
        "run_id": "old",
        "state": "succeeded",
        "model": {"name": "resnet18", "weights": "IMAGENET1K_V1", "classes": "imagenet"},
        "tables": {"predictions": {"rows": 5, "files": ["predictions/part-00000.parquet"]}},
    }
    typed = Manifest.from_json(m)
    assert typed.format_version == 1
    assert typed.model.weights_sha256 is None and typed.model.transform is None
    assert typed.model.class_ids == ()
    t = typed.model.eval_transform()  # the old fixed transform
    assert t.resize == (256,) and t.crop == (224, 224)
    assert typed.shards is None and typed.stages == {} and typed.metrics is None
    assert typed.rows("predictions") == 5
    assert Manifest.from_json({"format_version": 1, "run_id": "x"}).state is None


def test_a_malformed_manifest_is_a_manifest_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="format_version 'two'"):
        Manifest.from_json({"format_version": "two"})
    with pytest.raises(ManifestError, match="'model' is not an object"):
        Manifest.from_json({"model": [1]})
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        RunReader(str(tmp_path / "bad")).manifest  # noqa: B018
    with pytest.raises(NoRunError, match="not a run folder"):
        RunReader(str(tmp_path / "nothing")).manifest  # noqa: B018


def errors_rows(ids: list[str], stage: str) -> dict[str, list[str]]:
    return {
        "run_id": ["r"] * len(ids),
        "image_id": ids,
        "uri": [f"file:///{i}.png" for i in ids],
        "stage": [stage] * len(ids),
        "reason": ["broken"] * len(ids),
    }


def small_run(root: Path, with_classes: bool = True) -> str:
    """A run of two errors shards, only the first committed: the second's file is on disk but
    the manifest does not list it (a shard in flight when the driver died)."""
    store = RunStore(str(root), "r")
    store.prepare(overwrite=False)
    store.write("errors", errors_rows(["a", "b", "c"], "decode"), name="shard-00000")
    store.write("errors", errors_rows(["d", "e"], "read"), name="shard-00001", record=False)
    if with_classes:
        store.write(
            "classes",
            {"index": [1, 0], "class_id": ["digit_1", "digit_0"], "name": ["one", "zero"]},
            name="all",
        )
    store.write_manifest(
        {
            "format_version": FORMAT_VERSION,
            "run_id": "r",
            "state": "running",
            "model": {"name": "m", "classes": "digits", "num_classes": 10},
            "tables": {t: {"rows": store.rows[t], "files": store.files[t]} for t in store.files},
        }
    )
    assert (root / "r" / "errors" / "shard-00001.parquet").exists()
    return store.url


def test_the_reader_reads_only_committed_files(tmp_path: Path) -> None:
    reader = RunReader(small_run(tmp_path))
    table = reader.table("errors")
    assert sorted(table.column("image_id").to_pylist()) == ["a", "b", "c"]
    assert table.schema.field("stage").type == "string"


def test_the_reader_selects_columns_and_filters_rows(tmp_path: Path) -> None:
    reader = RunReader(small_run(tmp_path))
    table = reader.table("errors", columns=["image_id", "stage"])
    assert table.column_names == ["image_id", "stage"]
    picked = reader.table("errors", columns=["image_id"], filters=pc.field("image_id") == "b")
    assert picked.to_pylist() == [{"image_id": "b"}]
    empty = reader.table("adversarial", columns=["image_id", "steps_to_flip"])
    assert empty.num_rows == 0 and empty.column_names == ["image_id", "steps_to_flip"]


def test_the_reader_gives_the_runs_classes(tmp_path: Path) -> None:
    classes = RunReader(small_run(tmp_path / "a")).classes()
    assert classes is not None
    assert classes.ids == ("digit_0", "digit_1") and classes.names == ("zero", "one")
    # an older run without a classes table: the shipped list its manifest names
    old = RunReader(small_run(tmp_path / "b", with_classes=False)).classes()
    assert old is not None and old.name == "digits" and len(old) == 10


def test_the_reader_reads_the_manifest_once(tmp_path: Path) -> None:
    url = small_run(tmp_path)
    reader = RunReader(url)
    assert reader.manifest.state == "running"
    (tmp_path / "r" / "manifest.json").write_text(json.dumps({"run_id": "r", "state": "failed"}))
    assert reader.manifest.state == "running" and RunReader(url).manifest.state == "failed"


def test_execution_nodes_and_resources_round_trip_and_older_manifests_read() -> None:
    from audit.run.manifest_types import ExecutionInfo

    info = ExecutionInfo("cuda", 2, "A10G", {"fake_gpu": 1.0}, ("n2", "n1"))
    back = ExecutionInfo.from_json(json.loads(json.dumps(info.to_json())))
    assert back.nodes == ("n1", "n2")  # sorted
    assert (back.device, back.num_actors, back.accelerator_type) == ("cuda", 2, "A10G")
    assert back.resources == {"fake_gpu": 1.0}
    old = ExecutionInfo.from_json({"device": "cpu", "num_actors": 1})  # before these fields
    assert (old.accelerator_type, dict(old.resources), old.nodes) == (None, {}, ())
