"""A storage secret appears nowhere: not on stdout or stderr, in no log record and in no file
written, whatever a command that reads or writes storage meets (an unreachable endpoint, a
missing bucket, an option the filesystem does not take) and when it succeeds.

The secret is a unique string, given as ``--storage-options`` JSON, as ``--set
output.storage_options=...`` and in a YAML config file. ``audit-cli run`` runs as the installed
console script in a subprocess (Typer's real exception display; it connects to the session's
local Ray, and every failing case stops before any Ray work); the other commands run in-process
(typer.testing) so that their log records can be read too.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
import yaml
from conftest import AUDIT_CLI, free_port, moto_s3
from typer.testing import CliRunner

from audit.cli import app

SECRET = "SeCrEt-" + uuid.uuid4().hex
KEY = "AKIA" + uuid.uuid4().hex[:16].upper()
BUCKET = f"secrets-{uuid.uuid4().hex[:12]}"  # moto keeps buckets of earlier servers


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, Any]]:
    """Options reaching a real (moto) S3 server with one empty bucket, holding SECRET."""
    with moto_s3(KEY, SECRET, BUCKET) as options:
        yield options


def unreachable() -> dict[str, Any]:
    """Options of an endpoint where nothing listens."""
    url = f"http://127.0.0.1:{free_port()}"
    # botocore's own retries (5 tries with backoff, inside each of the tool's) only add time
    retries = {"retries": {"max_attempts": 1}}
    return {
        "key": KEY,
        "secret": SECRET,
        "client_kwargs": {"endpoint_url": url},
        "config_kwargs": retries,
    }


def bad_option(s3: dict[str, Any]) -> dict[str, Any]:
    return {"nonsense_option": 1, **s3}


def storages(s3: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(case, output root, options) of every failing storage."""
    return [
        ("unreachable", f"s3://{BUCKET}/out", unreachable()),
        ("missing-bucket", "s3://no-such-bucket-here/out", s3),
        ("bad-option", f"s3://{BUCKET}/out", bad_option(s3)),
    ]


def assert_nowhere(*texts: str | bytes, folders: tuple[Path, ...] = ()) -> None:
    for text in texts:
        data = text.encode() if isinstance(text, str) else text
        assert SECRET.encode() not in data, data.decode(errors="replace")[-3000:]
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                assert SECRET.encode() not in path.read_bytes(), path


def assert_not_in_bucket(s3: dict[str, Any]) -> None:
    fs = fsspec.filesystem("s3", skip_instance_cache=True, **s3)
    for path in fs.find(BUCKET):
        assert SECRET.encode() not in fs.cat_file(path), path


def records_text(caplog: pytest.LogCaptureFixture) -> str:
    """Every record's message, arguments and traceback."""
    parts = [caplog.text]
    for record in caplog.records:
        parts += [record.getMessage(), repr(record.args), str(record.exc_text or "")]
    return "\n".join(parts)


def cli(args: list[str], caplog: pytest.LogCaptureFixture) -> tuple[int, str]:
    """``audit-cli ARGS`` in-process; (exit code, stdout + stderr + log records)."""
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        result = CliRunner().invoke(app, args)
    shown = result.stdout + result.stderr + records_text(caplog)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        shown += "".join(traceback.format_exception(result.exception))
    return result.exit_code, shown


def write_run(root: str, run_id: str, options: dict[str, Any]) -> str:
    """A failed run with every table empty at ``root`` (no Ray), as fixtures_demo.empty_run."""
    from audit.store import RunStore

    store = RunStore(root, run_id, options)
    store.prepare(overwrite=False)
    store.ensure_tables()
    store.write_manifest(
        {
            "run_id": run_id,
            "state": "failed",
            "model": {"name": "resnet18", "classes": "imagenet", "num_classes": 1000},
            "tables": {t: {"rows": 0, "files": store.files[t]} for t in store.files},
        }
    )
    return store.url


def test_every_typer_app_hides_local_variables() -> None:
    import typer

    from audit.cli import jobs, models
    from audit.cli import run as run_group
    from audit.human import cli as human_cli
    from audit.report import cli as report_cli

    apps = [app, jobs.app, models.app, run_group.app, human_cli.app, report_cli.app]
    for each in apps:
        assert isinstance(each, typer.Typer)
        assert each.pretty_exceptions_show_locals is False, each.info.help


def test_reading_commands_show_no_secret_on_failing_storage(
    tmp_path: Path, s3: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    for case, root, options in storages(s3):
        run = f"{root}/some-run"
        opts = json.dumps(options)
        out = tmp_path / case
        commands = [
            ["status", run, "--storage-options", opts],
            ["status", "-o", root, "--storage-options", opts],
            ["report", run, "-o", str(out / "report.html"), "--storage-options", opts],
            [
                "human",
                "export",
                run,
                "misclassified",
                "-o",
                str(out / "human"),
                "--storage-options",
                opts,
            ],
            ["human", "public", run, "-o", str(out / "public"), "--storage-options", opts],
        ]
        for args in commands:
            code, shown = cli(args, caplog)
            assert code == 1, (case, args, shown[-2000:])
            assert "error: " in shown, (case, args, shown[-2000:])
            assert_nowhere(shown, folders=(tmp_path,))
    assert_not_in_bucket(s3)


def test_a_success_path_shows_no_secret(
    tmp_path: Path, s3: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    run = write_run(f"s3://{BUCKET}/runs", "empty", s3)
    opts = json.dumps(s3)
    code, shown = cli(["status", run, "--storage-options", opts], caplog)
    assert code == 0, shown[-2000:]
    assert "failed" in shown
    code, shown2 = cli(["report", run, "--storage-options", opts], caplog)
    assert code == 0, shown2[-2000:]
    assert_nowhere(shown, shown2, folders=(tmp_path,))
    assert_not_in_bucket(s3)  # the report was written next to the run, in the bucket


def run_cli(args: list[str], cwd: Path, gcs: str) -> subprocess.CompletedProcess[bytes]:
    """The installed ``audit-cli run ARGS`` on the session's Ray, logging at DEBUG."""
    env = {**os.environ, "AUDIT_LOG_LEVEL": "DEBUG"}
    env.pop("AWS_SECRET_ACCESS_KEY", None)
    return subprocess.run(
        [AUDIT_CLI, "run", "--no-progress", "--address", gcs, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        timeout=300,
    )


DEMO = [
    "--set", "data.per_class=2",
    "--set", "attack.enabled=false",
    "--set", "explain.enabled=false",
    "--set", "criticism.enabled=false",
]  # fmt: skip


def run_config(path: Path, root: str, run_id: str, options: dict[str, Any]) -> Path:
    """A YAML config holding ``options`` as the output's and the data's storage options."""
    path.write_text(
        yaml.safe_dump(
            {
                "data": {"per_class": 2, "storage_options": json.loads(json.dumps(options))},
                "attack": {"enabled": False},
                "explain": {"enabled": False},
                "criticism": {"enabled": False},
                "output": {"root": root, "run_id": run_id, "storage_options": options},
            }
        )
    )
    return path


@pytest.mark.slow  # a few `audit-cli run` processes connecting to Ray, one small demo run
def test_run_shows_no_secret_on_failing_storage_and_on_success(
    tmp_path: Path, s3: dict[str, Any], ray_local: None
) -> None:
    import ray

    gcs = ray.get_runtime_context().gcs_address
    work, configs = tmp_path / "work", tmp_path / "configs"  # written by the CLI; inputs
    work.mkdir()
    configs.mkdir()
    missing = "s3://no-such-bucket-here"
    cases = [  # (case, output root, options, extra arguments)
        ("unreachable", f"s3://{BUCKET}/out", unreachable(), []),
        # s3fs creates a missing output bucket, so the inputs are in the missing bucket
        ("missing-bucket", f"{missing}/out", s3, ["--set", f"data.source={missing}/val"]),
        ("bad-option", f"s3://{BUCKET}/out", bad_option(s3), []),
    ]
    for case, root, options, extra in cases:
        opts = json.dumps(options)
        over = ["-o", root, "--run-id", case, "--set", f"output.storage_options={opts}"]
        done = run_cli([*DEMO, *over, "--set", f"data.storage_options={opts}", *extra],
                       work, gcs)  # fmt: skip
        assert done.returncode == 1, (case, done.stderr[-3000:])
        assert done.stderr.decode().strip().splitlines()[-1].startswith("error: "), case
        assert_nowhere(done.stdout, done.stderr, folders=(work,))

        if case != "unreachable":  # one case is enough for the config-file path (CI time)
            continue
        # the same options in a YAML config file only, for the output and the data
        config = run_config(configs / f"{case}.yaml", root, case, options)
        done = run_cli(["-c", str(config), *extra], work, gcs)
        assert done.returncode == 1, (case, done.stderr[-3000:])
        assert_nowhere(done.stdout, done.stderr, folders=(work,))

    # success: the demo written to the bucket, then the same run id again (refused: finished)
    root = f"s3://{BUCKET}/ok"
    over = ["-o", root, "--run-id", "ok", "--set", f"output.storage_options={json.dumps(s3)}"]
    done = run_cli([*DEMO, *over], work, gcs)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_nowhere(done.stdout, done.stderr, folders=(work,))
    fs = fsspec.filesystem("s3", skip_instance_cache=True, **s3)
    assert fs.exists(f"{BUCKET}/ok/ok/manifest.json")
    assert not fs.exists(f"{BUCKET}/ok/ok/lease.json")  # released at the end
    done = run_cli(["-c", str(run_config(configs / "ok.yaml", root, "ok", s3))], work, gcs)
    assert done.returncode == 1 and b"already finished" in done.stderr, done.stderr[-3000:]
    assert_nowhere(done.stdout, done.stderr, folders=(work,))
    assert_not_in_bucket(s3)


def test_secrets_of_a_config_file_and_of_overrides_are_masked(tmp_path: Path) -> None:
    from audit.cli_boundary import error_message, secrets_in

    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"storage_options": {"token": SECRET + "-data"}},
                "output": {"storage_options": {"client_kwargs": {"aws_secret_access_key": SECRET}}},
            }
        )
    )
    found = secrets_in(
        {
            "config": config,
            "overrides": [f'output.storage_options={{"password": "{SECRET}-set"}}'],
        },
        env={},
    )
    assert {SECRET, SECRET + "-data", SECRET + "-set"} <= found
    line = error_message(OSError(f"boom {SECRET}-data {SECRET}-set {SECRET}"), found)
    assert SECRET not in line
