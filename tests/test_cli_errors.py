"""Whatever fails, every ``audit-cli`` command prints one ``error: ...`` line and exits 1: a
user-facing error (:class:`audit.errors.AuditError`) or storage refusing a read or a write,
never a traceback and never a secret. Every command that reads a run takes the one
``--storage-options`` option."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import fsspec
import pytest
import typer
from conftest import AUDIT_CLI, free_port, moto_s3
from fsspec.implementations.local import LocalFileSystem
from test_human_export import make_run
from typer.core import TyperGroup
from typer.testing import CliRunner, Result

from audit.cli import app
from audit.cli.common import one_line_errors
from audit.config import ConfigError
from audit.errors import AuditError
from audit.human.judgments import PublicDataError
from audit.human.mturk import ResultsError
from audit.human.studies import StudyError
from audit.jobs.errors import JobsError
from audit.runtime import RayUnreachable
from audit.status import StatusError

runner = CliRunner()
KEY, SECRET, PASSWORD = "AKIAEXAMPLEKEYID", "wJalrXUtnFEMI-example-secret", "hunter2-url-password"


def one_error_line(result: Result) -> str:
    """The command failed with exactly one ``error: ...`` line and no traceback."""
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def unreachable_s3() -> str:
    """fsspec options with credentials for an S3 endpoint where nothing listens (s3fs then
    raises botocore's EndpointConnectionError, not an OSError), after a single attempt."""
    return json.dumps(
        {
            "key": KEY,
            "secret": SECRET,
            "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{free_port()}"},
            "config_kwargs": {"retries": {"max_attempts": 1, "mode": "standard"}},
        }
    )


def no_secret(line: str) -> None:
    for secret in (KEY, SECRET, PASSWORD):
        assert secret not in line, line


@pytest.mark.parametrize(
    "error",
    [
        ConfigError,
        JobsError,
        RayUnreachable,
        StatusError,
        StudyError,
        PublicDataError,
        ResultsError,
    ],
)
def test_user_facing_errors_share_one_base(error: type[Exception]) -> None:
    assert issubclass(error, AuditError)


def test_run_with_an_unwritable_output_root_prints_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ray_local: None
) -> None:
    """An OSError from storage (here the output root is under a regular file) used to end
    ``audit-cli run`` in a traceback."""
    monkeypatch.setenv("AUDIT_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "a-file").write_text("not a folder")
    out = tmp_path / "a-file" / "out"
    result = runner.invoke(
        app, ["run", "--output", str(out), "--set", "data.per_class=1", "--no-progress"]
    )
    line = one_error_line(result)
    assert str(out) in line and "Not a directory" in line


def test_status_with_unreachable_storage_prints_one_line_without_secrets() -> None:
    """botocore's connection errors are not OSErrors; they are storage errors all the same."""
    result = runner.invoke(
        app, ["status", "s3://bucket/run", "--storage-options", unreachable_s3()]
    )
    line = one_error_line(result)
    no_secret(line)


@pytest.mark.parametrize(
    "args",
    [
        ["report", "s3://bucket/run"],
        ["human", "analyze", "s3://bucket/run"],
        ["human", "export", "s3://bucket/run", "misclassified"],
        ["human", "public", "s3://bucket/run", "--real", "s3://bucket/real.json"],
        [
            "human",
            "ingest",
            "s3://bucket/run",
            "misclassified-batch1",
            "s3://bucket/results.csv",
        ],
    ],
    ids=lambda args: "-".join(a for a in args[:2] if "://" not in a),
)
def test_every_run_reading_command_takes_storage_options(args: list[str]) -> None:
    result = runner.invoke(app, [*args, "--storage-options", unreachable_s3()])
    line = one_error_line(result)
    no_secret(line)


@pytest.mark.parametrize(
    "args",
    [
        ["analyze", "run"],
        ["export", "run", "misclassified"],
        ["ingest", "run", "misclassified-batch1", "results.csv"],
        ["public", "run", "--real", "real.json"],
    ],
    ids=lambda args: args[0],
)
@pytest.mark.parametrize("text", ["[1]", "{", '"key"'])
def test_bad_storage_options_of_human_commands_are_one_line(args: list[str], text: str) -> None:
    line = one_error_line(runner.invoke(app, ["human", *args, "--storage-options", text]))
    assert "--storage-options must be a JSON object" in line


def test_a_secret_in_a_storage_error_is_masked() -> None:
    """Defence in depth: whatever storage puts in its message, the line masks the secrets."""
    sub = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)

    @sub.command()
    @one_line_errors
    def leak(storage_options: str | None = None) -> None:
        raise PermissionError(f"denied for s3://{KEY}:{SECRET}@bucket/x with {SECRET}")

    @sub.command()
    @one_line_errors
    def other() -> None:
        raise ValueError("a bug, not a user-facing error")

    options = json.dumps({"key": KEY, "secret": SECRET})
    line = one_error_line(runner.invoke(sub, ["leak", "--storage-options", options]))
    no_secret(line)
    assert "denied" in line
    # anything else is a bug and keeps its traceback
    result = runner.invoke(sub, ["other"])
    assert isinstance(result.exception, ValueError)


def test_every_command_has_the_one_line_handler() -> None:
    """Every command of audit-cli, groups included, is wrapped by :func:`one_line_errors`."""
    marker = one_line_errors(lambda: None).__code__

    def leaves(command: Any, path: str) -> list[tuple[str, Any]]:
        if isinstance(command, TyperGroup):
            return [
                leaf
                for name, sub in command.commands.items()
                for leaf in leaves(sub, f"{path} {name}")
            ]
        return [(path, command)]

    found = leaves(typer.main.get_command(app), "audit-cli")
    assert len(found) >= 12
    for path, command in found:
        # Typer wraps each callback in its own converter, which keeps ours as __wrapped__
        callback = getattr(command.callback, "__wrapped__", None)
        assert callback is not None and callback.__code__ is marker, path


def test_human_commands_read_and_write_a_run_in_object_storage(tmp_path: Path) -> None:
    """``--storage-options`` reaches the run, the input files and the human folder."""
    run = make_run(tmp_path / "out")
    with moto_s3(KEY, SECRET, "bucket") as options:
        fs = fsspec.filesystem("s3", **options)
        fs.put(run.removeprefix("file://"), "bucket/run", recursive=True)
        fs.pipe("bucket/real.json", json.dumps([[0]] * 3).encode())
        so = ["--storage-options", json.dumps(options)]
        line = one_error_line(runner.invoke(app, ["human", "analyze", "s3://bucket/run", *so]))
        assert "no ingested answers under s3://bucket/run/human" in line
        no_secret(line)
        args = ["human", "public", "s3://bucket/run", "--real", "s3://bucket/real.json", *so]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert fs.exists("bucket/run/human/tables/public_real.parquet")
        assert SECRET not in result.output


class ReadOnlyFileSystem(LocalFileSystem):
    """The local disk as a read-only mount: creating a folder or writing a file is refused
    with ``PermissionError`` (as root, mode bits would not refuse anything)."""

    protocol = ("readonly",)

    @classmethod
    def _strip_protocol(cls, path: Any) -> str:
        path = str(path)
        if path.startswith("readonly://"):
            path = path[len("readonly://") :]
        return str(super()._strip_protocol(path))

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", path)

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", path)

    def _open(self, path: str, mode: str = "rb", *args: Any, **kwargs: Any) -> Any:
        if "r" not in mode:
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return super()._open(path, mode, *args, **kwargs)


def run_args(*extra: str) -> list[str]:
    return [
        "run",
        "--set",
        "data.limit=4",
        "--set",
        "attack.enabled=false",
        "--no-progress",
        *extra,
    ]


def test_run_with_a_regular_file_as_output_root_prints_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ray_local: None
) -> None:
    monkeypatch.setenv("AUDIT_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "a-file").write_text("not a folder")
    line = one_error_line(runner.invoke(app, run_args("--output", str(tmp_path / "a-file"))))
    assert str(tmp_path / "a-file") in line and "Not a directory" in line


def test_run_with_a_read_only_output_folder_prints_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ray_local: None
) -> None:
    monkeypatch.setenv("AUDIT_CACHE_DIR", str(tmp_path / "cache"))
    fsspec.register_implementation("readonly", ReadOnlyFileSystem, clobber=True)
    (tmp_path / "ro").mkdir()
    out = f"readonly://{tmp_path / 'ro'}"
    line = one_error_line(runner.invoke(app, run_args("--output", out, "--run-id", "r")))
    assert str(tmp_path / "ro" / "r") in line and "Permission denied" in line


def test_run_with_a_300_character_run_id_prints_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ray_local: None
) -> None:
    monkeypatch.setenv("AUDIT_CACHE_DIR", str(tmp_path / "cache"))
    args = run_args("--output", str(tmp_path / "out"), "--run-id", "r" * 300)
    line = one_error_line(runner.invoke(app, args))
    assert "File name too long" in line or "run_id" in line


def test_resuming_a_run_with_a_corrupt_manifest_prints_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ray_local: None
) -> None:
    monkeypatch.setenv("AUDIT_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "out" / "half").mkdir(parents=True)
    (tmp_path / "out" / "half" / "manifest.json").write_text('{"run_id": "half", "sta')
    args = run_args("--output", str(tmp_path / "out"), "--run-id", "half")
    line = one_error_line(runner.invoke(app, args))
    assert "JSON" in line


def test_run_with_an_unknown_s3fs_option_prints_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ray_local: None
) -> None:
    monkeypatch.setenv("AUDIT_CACHE_DIR", str(tmp_path / "cache"))
    options = json.dumps({"no_such_s3fs_option": 1, "secret": SECRET})
    args = run_args("--output", "s3://bucket/out", "--set", f"output.storage_options={options}")
    line = one_error_line(runner.invoke(app, args))
    assert "no_such_s3fs_option" in line
    no_secret(line)


REFUSE_IN_A_FRESH_PROCESS = """
import json, sys
from typer.testing import CliRunner
from audit.cli import app
from ray_jobs.audit import main
root, nobody = sys.argv[1], sys.argv[2]
cli = CliRunner().invoke(app, ["run", "-o", root, "--run-id", "done", "--address", nobody])
job = main(["--set", "output.root=" + root, "--set", "output.run_id=done"])
pipeline = ("audit.run.lifecycle", "audit.model_actor", "ray.data")
print(json.dumps({"cli": cli.exit_code, "cli_output": cli.output, "job": job,
                  "imported": [m for m in pipeline if m in sys.modules]}))
"""


def test_a_refusal_comes_before_the_pipeline_is_imported(tmp_path: Path, empty_run: Any) -> None:
    """``audit-cli run`` and the job entry point refuse a finished run without importing the
    pipeline (the model actor, Ray Data: seconds of a fresh process's start), in a fresh
    interpreter where nothing else imported it."""
    import subprocess
    import sys

    empty_run("done", state="succeeded")
    done = subprocess.run(
        [sys.executable, "-c", REFUSE_IN_A_FRESH_PROCESS, str(tmp_path), f"127.0.0.1:{free_port()}"],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["cli"] == 1 and "already finished" in got["cli_output"], got
    assert got["job"] == 2 and "already finished" in done.stderr, done.stderr[-3000:]
    assert got["imported"] == [], got


def test_run_refuses_a_finished_or_busy_run_before_it_joins_ray(
    tmp_path: Path, empty_run: Any
) -> None:
    """The checks that need no Ray come first: with no Ray at the address, the refusal is the
    run's, not "no Ray cluster answers" (which it was, after Ray, before). The installed CLI
    runs in a fresh process, where no Ray is ever up already."""
    import json as json_
    import os
    import socket
    import subprocess
    import time

    from audit.run.lease import LEASE, Holder

    def refusal(run_id: str) -> str:
        args = ["run", "-o", str(tmp_path), "--address", nobody, "--no-progress"]
        done = subprocess.run(
            [AUDIT_CLI, *args, "--run-id", run_id], capture_output=True, text=True, timeout=120
        )
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode == 1 and len(lines) == 1, done.stdout + done.stderr
        assert lines[0].startswith("error: ") and "Traceback" not in done.stderr, done.stderr
        return lines[0]

    nobody = f"127.0.0.1:{free_port()}"
    empty_run("done", state="succeeded")
    line = refusal("done")
    assert "already finished" in line, line
    empty_run("busy")
    now = time.time()
    holder = Holder(host=socket.gethostname(), pid=os.getpid(), token="t", started=now,
                    heartbeat=now).to_json()  # fmt: skip
    (tmp_path / "busy" / LEASE).write_text(json_.dumps(holder))
    line = refusal("busy")
    assert line.startswith("error: run 'busy' is in use by the driver pid"), line
    from audit.config import build_config
    from audit.run import check_output

    # a new run id passes the checks (the CLI would go on to join Ray)
    check_output(build_config({"output": {"root": str(tmp_path), "run_id": "new"}}))
    assert not (tmp_path / "new").exists()  # the checks only read


def test_run_refuses_weights_missing_from_the_cache_before_it_joins_ray(tmp_path: Path) -> None:
    """Named torchvision weights that are not in torch's cache: one line naming
    ``model.weights``, not "no Ray cluster answers" (with no Ray at the address, a check made
    after joining Ray would report that instead), in a fresh process of the installed CLI."""
    import subprocess

    images = tmp_path / "images" / "n01440764"
    images.mkdir(parents=True)
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "empty-torch-home")}
    args = [
        "run", "--no-progress", "--address", f"127.0.0.1:{free_port()}", "-o", str(tmp_path / "out"),
        "--set", "model.name=resnet18", "--set", "model.weights=DEFAULT",
        "--set", f"data.source={tmp_path / 'images'}",
    ]  # fmt: skip
    done = subprocess.run([AUDIT_CLI, *args], capture_output=True, text=True, timeout=120, env=env)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1 and len(lines) == 1, done.stdout + done.stderr
    assert lines[0].startswith("error: The 'model.weights' field is 'DEFAULT'"), lines[0]
    assert "not in torch's cache" in lines[0], lines[0]
    assert not (tmp_path / "out").exists()
