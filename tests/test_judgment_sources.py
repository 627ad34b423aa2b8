"""The judgment-source registry: the built-in sources, and a new source run end to end."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import audit.human.judgments as judgments
from audit.human.cli import app
from audit.human.judgments import (
    PUBLIC_SCHEMA,
    JudgmentSource,
    ReadText,
    get_source,
    public_tables,
    register_source,
    registered_sources,
    unregister_source,
)
from audit.human.judgments.common import _all_rows, _predictions, _set_rows

PREDS = pa.table(
    {
        "image_id": ["a.JPEG", "b.JPEG", "c.JPEG"],
        "label": [1, 2, 3],
        "top5_classes": [[7, 1, 0, 0, 0], [2, 7, 0, 0, 0], [3, 0, 0, 0, 0]],
    }
)


def _read(text: str, source: str, params: Mapping[str, Any], read_text: ReadText) -> int:
    return int(text) + params["shift"]


def _table(predictions: pa.Table, judgment: int, params: Mapping[str, Any]) -> pa.Table:
    preds = _predictions(predictions)
    valid = {i: {judgment} for i in preds}  # every image accepts the one class in the file
    return pa.Table.from_pylist(
        _all_rows(preds) + _set_rows("Fake", preds, valid), schema=PUBLIC_SCHEMA
    )


@pytest.fixture
def fake() -> Iterator[JudgmentSource]:
    source = register_source(
        JudgmentSource("fake", "--fake", "A test source.", 99, _read, _table, {"shift": 0})
    )
    yield source
    unregister_source("fake")


def _fake_top1(tables: dict[str, pa.Table]) -> float:
    rows = {r["measure"]: r for r in tables["public_fake"].to_pylist()}
    return rows["Fake top-1 accuracy"]["accuracy"]


def test_registry_holds_the_built_in_sources_in_order() -> None:
    sources = registered_sources()
    assert [s.name for s in sources] == ["real", "cleanlab", "madrylab"]
    assert [s.flag for s in sources] == ["--real", "--cleanlab", "--madrylab"]
    assert get_source("cleanlab").params == {"majority": 3, "k": 3}
    assert dict(get_source("madrylab").params) == {"index_to_filepath": None, "min_fraction": 0.5}


def test_a_new_file_in_the_package_folder_is_registered(tmp_path: Path) -> None:
    # In a fresh interpreter, the package is loaded with a second folder on its __path__ that
    # holds one new source module; importing the package alone must register it.
    (tmp_path / "extra.py").write_text(
        "from audit.human.judgments.registry import JudgmentSource, register_source\n"
        "register_source(JudgmentSource('extra', '--extra', '', 98, print, print))\n"
    )
    script = f"""
import importlib.util, sys
import audit.human
package = {str(Path(judgments.__file__).parent)!r}
spec = importlib.util.spec_from_file_location(
    "audit.human.judgments", package + "/__init__.py",
    submodule_search_locations=[package, {str(tmp_path)!r}],
)
module = importlib.util.module_from_spec(spec)
sys.modules["audit.human.judgments"] = module
spec.loader.exec_module(module)
print([s.name for s in module.registered_sources()])
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['real', 'cleanlab', 'madrylab', 'extra']"


def test_a_registered_source_is_run_by_public_tables(fake: JudgmentSource) -> None:
    texts = {"fake.txt": "7"}
    tables = public_tables(PREDS, {"fake": "fake.txt"}, texts.__getitem__)
    assert list(tables) == ["public_fake"]
    assert tables["public_fake"].schema == PUBLIC_SCHEMA
    assert _fake_top1(tables) == pytest.approx(1 / 3)  # only a's top class is 7
    # The parameter reaches the reader: 5 + 2 = 7 again; 5 alone matches nothing.
    texts["fake.txt"] = "5"
    assert _fake_top1(public_tables(PREDS, {"fake": "fake.txt"}, texts.__getitem__)) == 0.0
    shifted = public_tables(PREDS, {"fake": "fake.txt"}, texts.__getitem__, {"shift": 2})
    assert _fake_top1(shifted) == pytest.approx(1 / 3)


def test_the_cli_runs_a_registered_source_with_judgment(
    fake: JudgmentSource, tmp_path: Path
) -> None:
    pq.write_table(PREDS, tmp_path / "p.parquet")
    (tmp_path / "fake.txt").write_text("2")
    args = ["public", "--predictions", str(tmp_path / "p.parquet"), "--output", str(tmp_path)]
    result = CliRunner().invoke(app, [*args, "--judgment", f"fake={tmp_path / 'fake.txt'}"])
    assert result.exit_code == 0, result.output
    assert "public_fake" in result.output
    table = pq.read_table(tmp_path / "tables" / "public_fake.parquet")
    assert _fake_top1({"public_fake": table}) == pytest.approx(1 / 3)  # only b's is 2
    result = CliRunner().invoke(app, [*args, "--judgment", "nope=x"])
    assert result.exit_code == 1 and "registered sources: real, cleanlab" in result.output


def test_registry_refuses_duplicates_and_unknown_names(fake: JudgmentSource) -> None:
    with pytest.raises(ValueError, match="already taken by 'fake'"):
        register_source(fake)
    with pytest.raises(ValueError, match="order 10, already taken by 'real'"):
        register_source(JudgmentSource("other", "--other", "", 10, _read, _table))
    with pytest.raises(ValueError, match="registered sources: real, cleanlab, madrylab, fake"):
        get_source("nope")
    with pytest.raises(ValueError, match="Unknown judgment parameter"):
        public_tables(PREDS, {"fake": "x"}, lambda p: "1", {"shfit": 1})
