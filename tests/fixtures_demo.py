"""Session-scoped demo fixtures, shared by every module that asks for them (imported by
conftest.py).

``demo_cache``: one ``AUDIT_CACHE_DIR`` with the embedded demo set rendered once for the whole
session (rendering it is seconds of CPU per module otherwise). Tests point
``AUDIT_CACHE_DIR`` at it; they read the set and never change it. A test that moves or edits
the rendered files must keep a cache of its own (tests/test_pipeline.py's
``test_demo_bytes_travel_with_the_rows`` does).

``demo_run``: the embedded demo run that the CLI, report, human-study and manifest tests read
(300 digits + 1 broken file, adversarial images kept, LIME cut to 100 samples), made once per
session by ``audit-cli run`` on the session's local Ray. It is read-only: a test that changes
a run copies it first (``copy_run``). Sharing it means asking for the same configuration: a
module that needs the demo under other settings builds its own run.

``empty_run``: writes a failed run with every table empty (no Ray: ``RunStore``), on which the
report has its summary and accuracy only; a function-scoped factory under the test's tmp_path.
"""

from __future__ import annotations

import importlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# The demo run shared by the report tests: `audit-cli run` on the demo with these overrides.
DEMO_RUN_ID = "demo"
DEMO_RUN_OVERRIDES = (
    "output.run_id=demo",
    "attack.keep_images=true",
    "explain.n_samples=100",
    "explain.batch_size=50",
)
RUN_OUTPUT = "run-output.txt"  # beside ./audit-output in the demo run's working folder


def run_audit_function() -> Callable[..., Any]:
    """``run_audit`` from wherever the package keeps it (``audit.run`` or ``audit.pipeline``)."""
    for module in ("audit.run", "audit.pipeline"):
        try:
            found = getattr(importlib.import_module(module), "run_audit", None)
        except ImportError:
            continue
        if found is not None:
            return found
    raise ImportError("run_audit is in neither audit.run nor audit.pipeline")


def copy_run(run: str | Path, dst: Path) -> str:
    """A private, writable copy of a shared run at ``dst`` (which must not exist yet)."""
    shutil.copytree(run, dst)
    return str(dst)


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An AUDIT_CACHE_DIR holding the rendered demo set, shared read-only by the session."""
    from audit.data.demo import ensure_demo_dataset

    cache = str(tmp_path_factory.mktemp("demo-cache"))
    ensure_demo_dataset(cache)
    return cache


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory, demo_cache: str, ray_local: None) -> str:
    """The embedded demo (300 digits + 1 broken file), adversarial images kept, LIME cut to
    100 samples so that the run takes about half a minute. Read-only: copy it to change it.

    It is made as a user makes it: ``audit-cli run --set ...`` (no config file, so the demo
    config) in the session's process, from a working folder, into that folder's
    ``./audit-output``. The CLI's output is kept beside it (:func:`demo_run_output`)."""
    from typer.testing import CliRunner

    from audit.cli import app

    work = tmp_path_factory.mktemp("demo-run")
    args = ["run"]
    for override in DEMO_RUN_OVERRIDES:
        args += ["--set", override]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUDIT_CACHE_DIR", demo_cache)
        mp.chdir(work)
        result = CliRunner().invoke(app, args)
    if result.exit_code != 0:
        raise RuntimeError(f"the shared demo run failed:\n{result.output[-3000:]}")
    (work / RUN_OUTPUT).write_text(result.output, encoding="utf-8")
    return str(work / "audit-output" / DEMO_RUN_ID)


def demo_run_output(run: str) -> str:
    """What ``audit-cli run`` printed while it made the shared ``demo_run``."""
    return (Path(run).parents[1] / RUN_OUTPUT).read_text(encoding="utf-8")


@pytest.fixture
def empty_run(tmp_path: Path) -> Callable[..., str]:
    """``empty_run(run_id, **fields)``: the URL of a failed run under ``tmp_path`` with every
    table empty; ``fields`` are added to its manifest (``error="..."``)."""
    from audit.store import RunStore

    def write(run_id: str, **fields: Any) -> str:
        store = RunStore(str(tmp_path), run_id)
        store.prepare(overwrite=False)
        store.ensure_tables()
        store.write_manifest(
            {
                "run_id": run_id,
                "state": "failed",
                **fields,
                "model": {"name": "resnet18", "classes": "imagenet", "num_classes": 1000},
                "tables": {t: {"rows": 0, "files": store.files[t]} for t in store.files},
            }
        )
        return store.url

    return write
