"""``output.overwrite`` replaces a run and nothing else, and outputs never mix with inputs.

* overwrite deletes only a folder holding this tool's ``manifest.json``; a non-empty folder
  without one is refused, with overwrite or without;
* a run folder that is, contains or lies inside ``data.source`` (or holds the labels file) is
  refused by :func:`audit.run.plan.build_plan` before any work, whatever ``overwrite`` says;
* a run id (or any Text field with a pattern) ending in a newline is refused.

Real files and folders under tmp_path, small real JPEGs in the demo model's class folders.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from PIL import Image

from audit.cli.common import load
from audit.config import ConfigError, build_config
from audit.run import run_audit
from audit.run.plan import build_plan
from audit.store import RunStore


def no_cluster() -> float:
    raise AssertionError("the plan went on past the overlap check")


def images(folder: Path, n: int = 10) -> list[Path]:
    """``n`` small JPEGs in the demo model's class folders ``digit_0`` .. ``digit_9``."""
    out = []
    for i in range(n):
        path = folder / f"digit_{i % 10}" / f"img{i:02d}.JPEG"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), (20 * i, 100, 200)).save(path, format="JPEG")
        out.append(path)
    return out


def config(source: str, root: str, run_id: str, overwrite: bool = True, **data: Any) -> Any:
    return build_config(
        {
            "data": {"source": source, **data},
            "output": {"root": root, "run_id": run_id, "overwrite": overwrite},
            "attack": {"enabled": False},
            "explain": {"enabled": False},
            "criticism": {"enabled": False},
        }
    )


def one_line_overlap(info: pytest.ExceptionInfo[ConfigError]) -> str:
    message = str(info.value)
    assert "\n" not in message
    for field in ("output.root", "output.run_id", "data.source"):
        assert field in message
    return message


# --------------------------------------------------------------------------- RunStore.prepare


def test_overwrite_refuses_a_folder_without_a_manifest(tmp_path: Path) -> None:
    user = tmp_path / "out" / "r" / "notes.txt"
    user.parent.mkdir(parents=True)
    user.write_text("mine")
    with pytest.raises(ConfigError, match=r"no manifest\.json") as info:
        RunStore(str(tmp_path / "out"), "r").prepare(overwrite=True)
    assert "\n" not in str(info.value) and "output.run_id" in str(info.value)
    assert user.read_text() == "mine"


def test_overwrite_refuses_a_foreign_manifest(tmp_path: Path) -> None:
    # a manifest.json that is not this tool's (a web app's, say) does not make a run
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "manifest.json").write_text(json.dumps({"name": "my-app", "icons": []}))
    (tmp_path / "r" / "index.html").write_text("<html></html>")
    with pytest.raises(ConfigError, match=r"not a run of this tool"):
        RunStore(str(tmp_path), "r").prepare(overwrite=True)
    assert (tmp_path / "r" / "index.html").exists()


def test_overwrite_refuses_a_file_at_the_run_path(tmp_path: Path) -> None:
    (tmp_path / "r").write_text("a file, not a run")
    with pytest.raises(ConfigError, match=r"not a run of this tool"):
        RunStore(str(tmp_path), "r").prepare(overwrite=True)
    assert (tmp_path / "r").read_text() == "a file, not a run"


def test_overwrite_replaces_a_run(tmp_path: Path) -> None:
    store = RunStore(str(tmp_path), "r")
    store.prepare(False)
    store.write("errors", {"run_id": [], "image_id": [], "uri": [], "stage": [], "reason": []})
    store.write_manifest({"run_id": "r", "tables": {}})
    again = RunStore(str(tmp_path), "r")
    again.prepare(overwrite=True)
    assert list((tmp_path / "r").iterdir()) == []


def test_an_empty_folder_is_taken_with_or_without_overwrite(tmp_path: Path) -> None:
    for overwrite in (False, True):
        (tmp_path / f"r{overwrite}").mkdir()
        RunStore(str(tmp_path), f"r{overwrite}").prepare(overwrite)
        assert (tmp_path / f"r{overwrite}").is_dir()


def test_overwrite_on_memory_refuses_a_folder_without_a_manifest() -> None:
    fs = fsspec.filesystem("memory")
    base = f"/overwrite-{uuid.uuid4().hex}"
    fs.pipe_file(f"{base}/r/data.csv", b"a,b\n")
    try:
        with pytest.raises(ConfigError, match=r"no manifest\.json"):
            RunStore(f"memory://{base}", "r").prepare(overwrite=True)
        assert fs.cat_file(f"{base}/r/data.csv") == b"a,b\n"
    finally:
        fs.rm(base, recursive=True)


# --------------------------------------------------------------------------- inputs vs outputs


def test_run_folder_that_is_the_source_is_refused(tmp_path: Path) -> None:
    files = images(tmp_path / "src")
    cfg = config(str(tmp_path / "src"), str(tmp_path), "src")
    with pytest.raises(ConfigError, match=r"data\.source") as info:
        build_plan(cfg, "src", no_cluster)
    one_line_overlap(info)
    assert all(f.exists() for f in files)


@pytest.mark.slow
def test_whole_run_into_its_own_source_deletes_nothing(tmp_path: Path, ray_local: None) -> None:
    # the case: overwrite into the input folder deleted the 10 JPEGs, then "succeeded"
    # with 10 read errors
    files = images(tmp_path / "src")
    with pytest.raises(ConfigError) as info:
        run_audit(config(str(tmp_path / "src"), str(tmp_path), "src"))
    one_line_overlap(info)
    assert all(f.exists() for f in files)


def test_run_folder_linked_to_the_source_is_refused(tmp_path: Path) -> None:
    files = images(tmp_path / "src")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "r").symlink_to(tmp_path / "src")
    with pytest.raises(ConfigError) as info:
        build_plan(config(str(tmp_path / "src"), str(tmp_path / "out"), "r"), "r", no_cluster)
    one_line_overlap(info)
    assert all(f.exists() for f in files)


@pytest.mark.parametrize("overwrite", [False, True])
def test_output_root_inside_the_source_is_refused(tmp_path: Path, overwrite: bool) -> None:
    images(tmp_path / "src")
    cfg = config(str(tmp_path / "src"), str(tmp_path / "src" / "out"), "r", overwrite)
    with pytest.raises(ConfigError) as info:
        build_plan(cfg, "r", no_cluster)
    assert "lies inside" in one_line_overlap(info)


def test_run_folder_containing_the_source_is_refused(tmp_path: Path) -> None:
    images(tmp_path / "runs" / "r" / "images")
    cfg = config(str(tmp_path / "runs" / "r" / "images"), str(tmp_path / "runs"), "r")
    with pytest.raises(ConfigError) as info:
        build_plan(cfg, "r", no_cluster)
    assert "contains" in one_line_overlap(info)


def test_run_folder_holding_the_labels_file_is_refused(tmp_path: Path) -> None:
    images(tmp_path / "src")
    labels = tmp_path / "out" / "r" / "LOC_val_solution.csv"
    labels.parent.mkdir(parents=True)
    labels.write_text("ImageId,PredictionString\n")
    cfg = config(str(tmp_path / "src"), str(tmp_path / "out"), "r", labels_file=str(labels))
    with pytest.raises(ConfigError, match=r"data\.labels_file") as info:
        build_plan(cfg, "r", no_cluster)
    assert "\n" not in str(info.value)
    assert labels.exists()


def test_a_listed_input_inside_the_run_folder_is_refused(tmp_path: Path) -> None:
    [one, *_] = images(tmp_path / "out" / "r", 2)
    cfg = build_config(
        {
            "data": {"source": [str(one)], "layout": "unlabeled"},
            "output": {"root": str(tmp_path / "out"), "run_id": "r", "overwrite": True},
        }
    )
    with pytest.raises(ConfigError) as info:
        build_plan(cfg, "r", no_cluster)
    one_line_overlap(info)


def test_sibling_folders_with_a_common_prefix_are_apart(tmp_path: Path) -> None:
    images(tmp_path / "src")
    cfg = config(str(tmp_path / "src"), str(tmp_path), "src2")  # <tmp>/src2 is not inside src
    plan = build_plan(cfg, "src2", lambda: 0.0)
    assert plan.total == 10


@pytest.fixture
def mem() -> Iterator[str]:
    fs = fsspec.filesystem("memory")
    base = f"/overlap-{uuid.uuid4().hex}"
    for i in range(3):
        path = Path("/tmp") / f"m{uuid.uuid4().hex}.JPEG"
        Image.new("RGB", (32, 32)).save(path, format="JPEG")
        fs.pipe_file(f"{base}/src/digit_{i}/m{i}.JPEG", path.read_bytes())
        path.unlink()
    yield base
    fs.rm(base, recursive=True)


def test_url_output_inside_a_url_source_is_refused(mem: str) -> None:
    cfg = config(f"memory://{mem}/src", f"memory://{mem}/src/out/", "r")
    with pytest.raises(ConfigError) as info:
        build_plan(cfg, "r", no_cluster)
    one_line_overlap(info)


def test_url_output_elsewhere_is_allowed(mem: str, tmp_path: Path) -> None:
    plan = build_plan(config(f"memory://{mem}/src", f"memory://{mem}/out", "r"), "r", no_gpu)
    assert plan.total == 3
    # another protocol is another storage, even with the same path
    plan = build_plan(config(f"memory://{mem}/src", f"{mem}", "src"), "src", no_gpu)
    assert plan.total == 3


def no_gpu() -> float:
    return 0.0


# --------------------------------------------------------------------------- run id


@pytest.mark.parametrize("run_id", ["abc\n", "abc\r\n", "\nabc", "a\nb"])
def test_a_run_id_with_a_newline_is_refused(run_id: str) -> None:
    with pytest.raises(ConfigError, match=r"'output\.run_id' field must be") as info:
        build_config({"output": {"run_id": run_id}})
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"'output\.run_id' field must be"):
        load(None, [], None, run_id)  # what audit-cli run --run-id does


@pytest.mark.parametrize("section", ["data", "explain"])
def test_a_class_id_with_a_trailing_newline_is_refused(section: str) -> None:
    with pytest.raises(ConfigError, match=rf"'{section}\.classes' field must be") as info:
        build_config({section: {"classes": ["n01440764\n"]}})
    assert "\n" not in str(info.value)
