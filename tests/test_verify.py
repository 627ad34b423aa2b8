"""Committed files are verified, not trusted: the manifest records each file's size and sha256,
``audit-cli verify`` / ``status --verify`` / ``report`` check them, a resume redoes a shard whose
file is missing or altered, and an object-store root never creates its bucket."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from conftest import moto_s3
from typer.testing import CliRunner

from audit.cli import app
from audit.config import ConfigError, build_config
from audit.run.manifest_types import FORMAT_VERSION, Manifest, TableInfo
from audit.run.verify import verify_run
from audit.store import RunStore

runner = CliRunner()

ROWS = {
    "run_id": ["r"] * 3,
    "image_id": ["a", "b", "c"],
    "uri": ["/x/a", "/x/b", "/x/c"],
    "stage": ["decode"] * 3,
    "reason": ["broken"] * 3,
}


def flip_byte(path: Path, at: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if at is None else at
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 20])


def make_run(root: Path, run_id: str = "r", files: int = 3, checksums: bool = True) -> Path:
    """A small finished run written through RunStore: ``files`` errors files, a manifest."""
    store = RunStore(str(root), run_id)
    store.prepare(overwrite=False)
    for k in range(files):
        store.write("errors", ROWS, name=f"shard-{k:05d}")
    tables = {
        name: TableInfo(
            rows=store.rows[name],
            files=tuple(store.files[name]),
            checksums={r: store.checksums[r] for r in store.files[name]} if checksums else {},
        )
        for name in store.files
    }
    m = Manifest(run_id=run_id, state="succeeded", format_version=FORMAT_VERSION, tables=tables)
    store.write_manifest(m.to_json())
    return root / run_id


# ------------------------------------------------------------------ recording


def test_write_records_size_and_sha256_of_the_bytes_written(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    m = json.loads((run / "manifest.json").read_text())
    assert m["format_version"] == FORMAT_VERSION
    entry = m["tables"]["errors"]
    assert entry["files"] == [f"errors/shard-{k:05d}.parquet" for k in range(3)]
    for rel in entry["files"]:
        data = (run / rel).read_bytes()
        assert entry["checksums"][rel] == {
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
    assert Manifest.from_json(m).to_json() == m  # reads back key for key
    # an older manifest (no checksums) still reads, with none
    old = {**m, "tables": {"errors": {"rows": 9, "files": entry["files"]}}}
    assert Manifest.from_json(old).tables["errors"].checksums == {}


# ------------------------------------------------------------------ verify


def test_verify_names_every_missing_truncated_and_altered_file(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    assert verify_run(str(run), {}).ok
    assert verify_run(str(run), {}).lines() == ["ok: 3 files verified"]
    truncate(run / "errors/shard-00000.parquet")
    flip_byte(run / "errors/shard-00001.parquet")
    (run / "errors/shard-00002.parquet").unlink()
    report = verify_run(str(run), {})
    assert not report.ok and report.checked == 3
    lines = report.lines()
    assert len(lines) == 3, lines
    assert lines[0].startswith("errors/shard-00000.parquet: ") and "bytes" in lines[0]
    assert lines[1].startswith("errors/shard-00001.parquet: ") and "sha256" in lines[1]
    assert lines[2] == "errors/shard-00002.parquet: missing"


def test_verify_of_an_older_run_checks_existence_and_footer(tmp_path: Path) -> None:
    run = make_run(tmp_path, checksums=False)
    assert verify_run(str(run), {}).ok
    truncate(run / "errors/shard-00000.parquet")
    (run / "errors/shard-00002.parquet").unlink()
    lines = verify_run(str(run), {}).lines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("errors/shard-00000.parquet: unreadable Parquet footer")
    assert "\n" not in lines[0]
    assert lines[1] == "errors/shard-00002.parquet: missing"


def test_cli_verify(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    ok = runner.invoke(app, ["verify", str(run)])
    assert ok.exit_code == 0, ok.output
    assert ok.output.strip() == "ok: 3 files verified"
    flip_byte(run / "errors/shard-00001.parquet")
    bad = runner.invoke(app, ["verify", str(run), "--storage-options", "{}"])
    assert bad.exit_code == 1, bad.output
    assert bad.output.strip().splitlines() == [
        "errors/shard-00001.parquet: sha256 differs from the one recorded at commit"
    ]
    nothing = runner.invoke(app, ["verify", str(tmp_path / "nope")])
    assert nothing.exit_code == 1 and nothing.output.startswith("error: ")


def test_status_verify_says_succeeded_but_files_altered(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    plain = runner.invoke(app, ["status", str(run), "--verify"])
    assert plain.exit_code == 0, plain.output
    assert "state: succeeded  (" in plain.output
    (run / "errors/shard-00002.parquet").unlink()
    unverified = runner.invoke(app, ["status", str(run)])
    assert "state: succeeded  (" in unverified.output  # without --verify: the manifest's word
    result = runner.invoke(app, ["status", str(run), "--verify"])
    assert result.exit_code == 1, result.output
    assert "state: succeeded, but 1 file is missing or altered" in result.output
    assert "errors/shard-00002.parquet: missing" in result.output
    as_json = json.loads(runner.invoke(app, ["status", str(run), "--verify", "--json"]).output)
    assert as_json["verify"] == ["errors/shard-00002.parquet: missing"]


def test_report_refuses_a_run_with_altered_files(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    flip_byte(run / "errors/shard-00000.parquet")
    result = runner.invoke(app, ["report", str(run), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 1
    line = result.output.strip()
    assert line.startswith("error: ") and "\n" not in line, result.output
    assert "errors/shard-00000.parquet" in line and "sha256" in line
    assert not (tmp_path / "r.html").exists()


# ------------------------------------------------------------------ adopt


def test_adopt_rejects_bad_files_instead_of_raising(tmp_path: Path) -> None:
    for checksums in (True, False):
        run = make_run(tmp_path / str(checksums), checksums=checksums)
        truncate(run / "errors/shard-00000.parquet")
        (run / "errors/shard-00002.parquet").unlink()
        if checksums:
            flip_byte(run / "errors/shard-00001.parquet")
        tables = json.loads((run / "manifest.json").read_text())["tables"]
        store = RunStore(str(run.parent), run.name)
        rejected = store.adopt(tables, keep=lambda rel: True)
        want = {"errors/shard-00000.parquet", "errors/shard-00002.parquet"}
        if checksums:
            want.add("errors/shard-00001.parquet")
        assert set(rejected) == want, rejected
        assert rejected["errors/shard-00002.parquet"] == "missing"
        kept = sorted({f"errors/shard-{k:05d}.parquet" for k in range(3)} - want)
        assert store.files["errors"] == kept
        assert store.rows["errors"] == 3 * len(kept)
        if checksums:
            assert not kept
        else:  # the flip-free middle file is adopted, with its checksum unknown
            assert kept == ["errors/shard-00001.parquet"]


# ------------------------------------------------------------------ buckets

KEY = "v7KEYID-AKIAEXAMPLE0077"
SECRET = "v7SECRET-wJalrXUtnFEMI-K7MDENG-bPxRfiCY"
BUCKET = "audit-v7"


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, Any]]:
    with moto_s3(KEY, SECRET, BUCKET) as options:
        yield options


def test_a_root_in_a_missing_bucket_is_refused_and_not_created(s3: dict[str, Any]) -> None:
    store = RunStore("s3://no-such-bucket-v7/audits", "r", s3)
    with pytest.raises(ConfigError, match=r"^output.root names bucket 'no-such-bucket-v7', "):
        store.prepare(overwrite=False)
    fs = fsspec.filesystem("s3", **s3)
    fs.invalidate_cache()
    assert not fs.exists("no-such-bucket-v7")


@pytest.mark.slow  # plans the run on Ray
def test_a_root_in_a_missing_bucket_is_refused_before_any_work(
    s3: dict[str, Any], tmp_path: Path, ray_local: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUDIT_CACHE_DIR", str(tmp_path / "cache"))
    raw = {
        "data": {"limit": 10},
        "output": {"root": "s3://gone-v7/audits", "run_id": "x", "storage_options": s3},
    }
    from audit.run import run_audit

    with pytest.raises(ConfigError, match="bucket 'gone-v7', which does not exist"):
        run_audit(build_config(raw))
    fs = fsspec.filesystem("s3", **s3)
    fs.invalidate_cache()
    assert not fs.exists("gone-v7")


def test_a_bucket_that_vanishes_mid_run_is_not_recreated(s3: dict[str, Any]) -> None:
    fs = fsspec.filesystem("s3", **s3)
    fs.mkdir("vanishing-v7")
    store = RunStore("s3://vanishing-v7/audits", "r", s3)
    store.prepare(overwrite=False)
    rel = store.write("errors", ROWS, name="shard-00000")
    got = fs.cat_file(f"vanishing-v7/audits/r/{rel}")
    assert hashlib.sha256(got).hexdigest() == store.checksums[rel].sha256
    fs.rm("vanishing-v7", recursive=True)  # the server "restarted empty"
    fs.invalidate_cache()
    assert not fs.exists("vanishing-v7")
    with pytest.raises(OSError):
        store.write("errors", ROWS, name="shard-00001")
    with pytest.raises(OSError):
        store.write_manifest({"run_id": "r"})
    fs.invalidate_cache()
    assert not fs.exists("vanishing-v7")
