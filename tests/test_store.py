from __future__ import annotations

import json
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from audit.config import ConfigError
from audit.store import ERRORS, PREDICTIONS, RunStore, read_manifest, read_table


def _pred_rows(n: int) -> dict[str, list]:
    return {
        "run_id": ["r"] * n,
        "model": ["m"] * n,
        "image_id": [f"img{i}" for i in range(n)],
        "uri": [f"file:///x/img{i}.JPEG" for i in range(n)],
        "label": [i if i % 2 else None for i in range(n)],
        "top5_classes": [[1, 2, 3, 4, 5]] * n,
        "top5_probs": [[0.5, 0.2, 0.1, 0.1, 0.1]] * n,
        "correct_top1": [True] * n,
        "correct_top5": [True] * n,
        "loss": [0.1] * n,
        "label_prob": [0.3] * n,
        "embedding": [[0.0, 1.0]] * n,
    }


@pytest.mark.parametrize("root_kind", ["local", "memory"])
def test_write_read_roundtrip(tmp_path: Path, root_kind: str) -> None:
    root = str(tmp_path) if root_kind == "local" else "memory://store-test"
    store = RunStore(root, "run1")
    store.prepare(overwrite=False)
    store.write("predictions", _pred_rows(3))
    store.write("predictions", _pred_rows(2))
    store.ensure_tables()
    store.write_manifest(
        {
            "run_id": "run1",
            "tables": {k: {"rows": store.rows[k], "files": store.files[k]} for k in store.files},
        }
    )
    run = root.rstrip("/") + "/run1"
    m = read_manifest(run)
    assert m["tables"]["predictions"]["rows"] == 5
    t = read_table(run, "predictions")
    assert t.num_rows == 5 and t.schema.equals(PREDICTIONS)
    assert t.column("label").null_count == 3
    errors = read_table(run, "errors")
    assert errors.num_rows == 0 and errors.schema.equals(ERRORS)
    # every file on storage is readable by plain pyarrow with the declared schema
    fs, base = fsspec.core.url_to_fs(run)
    for rel in m["tables"]["predictions"]["files"]:
        assert pq.read_schema(base + "/" + rel, filesystem=fs).equals(PREDICTIONS)
    if root_kind == "memory":
        fs.rm(base, recursive=True)


def test_schema_is_enforced(tmp_path: Path) -> None:
    store = RunStore(str(tmp_path), "r")
    store.prepare(False)
    bad = _pred_rows(1)
    del bad["loss"]
    with pytest.raises((KeyError, ValueError, pa.ArrowInvalid)):
        store.write("predictions", bad)
    wrong = _pred_rows(1)
    wrong["label"] = ["not-an-int"]
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)):
        store.write("predictions", wrong)


def test_existing_run_is_refused_unless_overwrite(tmp_path: Path) -> None:
    store = RunStore(str(tmp_path), "r")
    store.prepare(False)
    store.write_manifest({"run_id": "r"})
    with pytest.raises(ConfigError, match="already exists"):
        RunStore(str(tmp_path), "r").prepare(False)
    again = RunStore(str(tmp_path), "r")
    again.prepare(True)
    assert not again.exists()


def test_manifest_replace_leaves_no_temp_files(tmp_path: Path) -> None:
    store = RunStore(str(tmp_path), "r")
    store.prepare(False)
    for i in range(5):
        store.write_manifest({"i": i})
    assert json.loads((tmp_path / "r" / "manifest.json").read_text()) == {"i": 4}
    assert [p.name for p in (tmp_path / "r").iterdir()] == ["manifest.json"]


def test_a_failed_manifest_write_leaves_no_temp_file(tmp_path: Path) -> None:
    # a folder where the manifest should go makes every rename fail, on the real filesystem
    store = RunStore(str(tmp_path), "r")
    store.prepare(False)
    (tmp_path / "r" / "manifest.json" / "x").mkdir(parents=True)
    with pytest.raises(OSError):
        store.write_manifest({"run_id": "r"})
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["manifest.json"]
