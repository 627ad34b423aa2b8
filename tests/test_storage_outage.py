"""Storage outages are not bad images (issue #16): a transient storage error on an input is
retried, and if it persists the run fails (resumable) instead of recording ``errors`` rows; a
write is retried on every transient error class, and a persistent one fails the run with the
reason in the manifest and one ``error: ...`` line from ``audit-cli``.

Faults are real: a moto S3 server stopped after the inputs were listed and started again for
the rerun, or a filesystem subclass that raises the client libraries' own exception classes a
given number of times."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import fsspec
import numpy as np
import pytest
import typer
import yaml
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from conftest import free_port
from fsspec.implementations.local import LocalFileSystem
from test_cli_errors import one_error_line
from typer.testing import CliRunner

from audit import store
from audit.cli import app
from audit.cli_boundary import one_line_errors
from audit.config import build_config
from audit.data import decode
from audit.data.demo import ensure_demo_dataset
from audit.errors import AuditError
from audit.model_actor import decode_batch
from audit.run import run_audit
from audit.storage_errors import TransientStorageError, is_transient, retry
from audit.store import RunStore, read_manifest, read_table

KEY, SECRET = "OUTAGEKEYID-AKIAEXAMPLE", "outage-secret-wJalrXUtnFEMI"
BUCKET = "outage"
CLASSES = ("digit_1", "digit_4")
PER_CLASS = 10  # 20 images
OFFLINE = "http://127.0.0.1:9/outage"  # only named in the injected errors' messages

runner = CliRunner()


class OutageFileSystem(LocalFileSystem):
    """The local disk, but opening a file whose path contains ``target`` in ``mode`` ("r" or
    "w") raises botocore's ``EndpointConnectionError`` the first ``failures`` times."""

    protocol = ("outage",)
    target: ClassVar[str] = ""
    mode: ClassVar[str] = "r"
    failures: ClassVar[int] = 0

    @classmethod
    def _strip_protocol(cls, path: Any) -> str:
        path = str(path)
        if path.startswith("outage://"):
            path = path[len("outage://") :]
        return str(super()._strip_protocol(path))

    def _open(self, path: str, mode: str = "rb", *args: Any, **kwargs: Any) -> Any:
        cls = type(self)
        if cls.mode in mode and cls.target in path and cls.failures > 0:
            cls.failures -= 1
            raise EndpointConnectionError(endpoint_url=OFFLINE)
        return super()._open(path, mode, *args, **kwargs)


@pytest.fixture
def outage(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[OutageFileSystem]]:
    fsspec.register_implementation("outage", OutageFileSystem, clobber=True)
    monkeypatch.setattr(decode, "READ_BACKOFF_S", 0.0)
    monkeypatch.setattr(store, "WRITE_BACKOFF_S", 0.0)
    OutageFileSystem.target, OutageFileSystem.mode, OutageFileSystem.failures = "", "r", 0
    yield OutageFileSystem
    OutageFileSystem.target, OutageFileSystem.mode, OutageFileSystem.failures = "", "r", 0


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 demo digits in a local ImageFolder."""
    demo = Path(ensure_demo_dataset(str(tmp_path_factory.mktemp("cache"))))
    local = tmp_path_factory.mktemp("digits")
    for class_id in CLASSES:
        files = sorted(p for p in (demo / class_id).iterdir() if p.name != "DEMO_val_99999999.JPEG")
        (local / class_id).mkdir()
        for p in files[:PER_CLASS]:
            shutil.copy(p, local / class_id / p.name)
    return local


def raw_config(source: str, root: str, run_id: str, options: dict[str, Any]) -> dict[str, Any]:
    return {
        "data": {"source": source, "layout": "imagefolder", "storage_options": options},
        "model": {"name": "demo_digits"},
        "predict": {"batch_size": 8},
        "attack": {"enabled": False},
        "explain": {"enabled": False},
        "criticism": {"enabled": False},
        "output": {"root": root, "run_id": run_id, "shard_size": 10},
    }


def batch_of(uris: list[str]) -> dict[str, np.ndarray]:
    n = len(uris)
    return {
        "image_id": np.array([f"img{i}" for i in range(n)], dtype=object),
        "uri": np.array(uris, dtype=object),
        "label": np.zeros(n, dtype=np.int64),
    }


# ------------------------------------------------------------------ classification


def client_error(code: str, status: int) -> ClientError:
    response: Any = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "GetObject")


def wrapped_by_s3fs(cause: BaseException) -> OSError:
    """An OSError raised from a botocore error, as s3fs's error translation does."""
    try:
        raise OSError(5, "translated") from cause
    except OSError as exc:
        return exc


@pytest.mark.parametrize(
    "exc",
    [
        EndpointConnectionError(endpoint_url=OFFLINE),
        ConnectionClosedError(endpoint_url=OFFLINE),
        ConnectTimeoutError(endpoint_url=OFFLINE),
        ReadTimeoutError(endpoint_url=OFFLINE),
        client_error("SlowDown", 503),
        client_error("Throttling", 400),
        client_error("RequestTimeout", 400),
        client_error("InternalError", 500),
        client_error("ServiceUnavailable", 503),
        client_error("Whatever", 500),
        aiohttp.ClientConnectionError("refused"),
        aiohttp.ServerDisconnectedError(),
        TimeoutError("timed out"),
        ConnectionRefusedError(111, "Connection refused"),
        wrapped_by_s3fs(EndpointConnectionError(endpoint_url=OFFLINE)),
        TransientStorageError("reading x failed 4 times"),
    ],
    ids=repr,
)
def test_transient_storage_errors_are_recognised(exc: BaseException) -> None:
    assert is_transient(exc)


def not_found_while_offline() -> FileNotFoundError:
    try:
        raise EndpointConnectionError(endpoint_url=OFFLINE)
    except EndpointConnectionError:
        try:
            raise FileNotFoundError("s3://b/x")  # while handling: the context is the point
        except FileNotFoundError as exc:
            return exc


@pytest.mark.parametrize(
    "exc",
    [
        client_error("NoSuchKey", 404),
        client_error("AccessDenied", 403),
        FileNotFoundError("x"),
        PermissionError(13, "Permission denied"),
        not_found_while_offline(),
        OSError("a plain OSError"),
        ValueError("a bug"),
    ],
    ids=repr,
)
def test_other_errors_are_not_transient(exc: BaseException) -> None:
    assert not is_transient(exc)


def test_retry_gives_up_with_one_line_without_secrets() -> None:
    calls: list[int] = []

    def down() -> None:
        calls.append(1)
        raise EndpointConnectionError(endpoint_url=f"http://user:{SECRET}@127.0.0.1:9/{KEY}")

    with pytest.raises(TransientStorageError) as info:
        retry(down, "reading s3://b/x", attempts=3, backoff=0.0, secrets=[KEY])
    assert len(calls) == 3
    message = str(info.value)
    assert message.startswith("reading s3://b/x failed 3 times; last error: EndpointConnection")
    assert "\n" not in message and KEY not in message and SECRET not in message
    assert isinstance(info.value, AuditError) and isinstance(info.value, OSError)
    assert isinstance(info.value.__cause__, EndpointConnectionError)


# ------------------------------------------------------------------ reads


def test_transient_read_errors_are_retried_and_leave_no_error_row(
    outage: type[OutageFileSystem], digits: Path
) -> None:
    files = sorted((digits / CLASSES[0]).iterdir())[:3]
    outage.target, outage.failures = files[1].name, decode.READ_ATTEMPTS - 1
    out = decode_batch(batch_of([f"outage://{p}" for p in files]), max_pixels=10**8)
    assert outage.failures == 0  # every injected failure happened, the last try read it
    assert list(out["error"]) == ["", "", ""] and list(out["stage"]) == ["", "", ""]
    assert all(img.any() for img in out["image"])


def test_persistent_read_outage_fails_the_decode_task(
    outage: type[OutageFileSystem], digits: Path
) -> None:
    files = sorted((digits / CLASSES[0]).iterdir())[:3]
    outage.target, outage.failures = files[1].name, 10**6
    with pytest.raises(TransientStorageError, match=r"failed 4 times; last error: EndpointConn"):
        decode_batch(batch_of([f"outage://{p}" for p in files]), max_pixels=10**8)
    assert outage.failures == 10**6 - decode.READ_ATTEMPTS


def test_a_missing_input_is_still_a_read_error_row(outage: type[OutageFileSystem]) -> None:
    out = decode_batch(batch_of(["outage:///nonexistent/a.JPEG"]), max_pixels=10**8)
    assert out["stage"][0] == "read" and "not found" in out["error"][0]


@pytest.mark.slow  # two pipeline runs on Ray
def test_input_storage_outage_fails_the_run_and_the_rerun_resumes(
    digits: Path, tmp_path: Path, ray_local: None
) -> None:
    """The S3 server holding the inputs goes down after they were listed: the run fails (no
    ``errors`` rows for storage faults); with the server back, the same run id resumes."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    options = {
        "key": KEY,
        "secret": SECRET,
        "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"},
        "config_kwargs": {"retries": {"max_attempts": 1, "mode": "standard"}},
    }
    running = True
    try:
        fs = fsspec.filesystem("s3", **options)
        fs.mkdir(BUCKET)
        fs.put(str(digits), f"{BUCKET}/digits", recursive=True)
        raw = raw_config(f"s3://{BUCKET}/digits", str(tmp_path), "outage", options)

        def stop_server(done: int, total: int) -> None:  # first called before the stream
            nonlocal running
            if running:
                server.stop()
                running = False

        with pytest.raises(Exception, match="TransientStorageError") as info:
            run_audit(build_config(raw), progress=stop_server)
        assert "EndpointConnectionError" in str(info.value)
        run = tmp_path / "outage"
        manifest = read_manifest(str(run))
        assert manifest["state"] == "failed"
        assert "TransientStorageError" in manifest["error"] and "reading s3://" in manifest["error"]
        assert SECRET not in json.dumps(manifest) and KEY not in json.dumps(manifest)
        for path in run.glob("errors/*.parquet"):  # whatever was written: no storage faults
            reasons = read_table(str(run), "errors").column("reason").to_pylist()
            assert not any("Connect" in r or "endpoint" in r for r in reasons), path

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)  # its data is kept
        server.start()
        running = True
        result = run_audit(build_config(raw))
        assert result.manifest["state"] == "succeeded"
        assert read_table(result.url, "errors").num_rows == 0
        predicted = read_table(result.url, "predictions").column("image_id").to_pylist()
        assert len(predicted) == len(set(predicted)) == len(CLASSES) * PER_CLASS
    finally:
        if running:
            server.stop()


@pytest.mark.slow  # a Ray Data pipeline
def test_a_transient_error_in_a_ray_task_is_one_line(ray_local: None) -> None:
    """Ray hands the driver a task's error as text only; the line still names it."""
    import ray

    def decode_task(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise TransientStorageError("reading s3://b/x failed 4 times; last error: boom")

    sub = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)

    @sub.command()
    @one_line_errors
    def stream() -> None:
        ds = ray.data.from_items([{"a": 1}]).map_batches(decode_task, batch_format="numpy")
        ds.take_all()

    @sub.command()
    @one_line_errors
    def other() -> None:
        pass

    line = one_error_line(runner.invoke(sub, ["stream"]))
    assert line == "error: reading s3://b/x failed 4 times; last error: boom"


# ------------------------------------------------------------------ writes


def test_transient_write_errors_are_retried(outage: type[OutageFileSystem], tmp_path: Path) -> None:
    run = RunStore(f"outage://{tmp_path}", "w")
    run.prepare(overwrite=False)
    outage.target, outage.mode, outage.failures = "errors/shard-00001", "w", 2
    rel = run.write("errors", store.ERRORS.empty_table(), name="shard-00001")
    assert outage.failures == 0 and (tmp_path / "w" / rel).is_file()

    outage.failures = 10**6
    with pytest.raises(TransientStorageError) as info:
        run.write("errors", store.ERRORS.empty_table(), name="shard-00001")
    message = str(info.value)
    assert message.startswith("writing errors/shard-00001.parquet of run 'w' failed 3 times;")
    assert "EndpointConnectionError" in message and "\n" not in message


@pytest.mark.slow  # two pipeline runs on Ray
def test_output_outage_fails_the_run_with_one_line_and_the_rerun_resumes(
    outage: type[OutageFileSystem], digits: Path, tmp_path: Path, ray_local: None
) -> None:
    raw = raw_config(str(digits), f"outage://{tmp_path}", "down", {})
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    outage.target, outage.mode, outage.failures = "predictions/shard-00001", "w", 10**6
    line = one_error_line(runner.invoke(app, ["run", "-c", str(config), "--no-progress"]))
    assert "predictions/shard-00001.parquet of run 'down' failed 3 times" in line
    assert "EndpointConnectionError" in line
    manifest = read_manifest(str(tmp_path / "down"))
    assert manifest["state"] == "failed" and "EndpointConnectionError" in manifest["error"]

    outage.failures = store.WRITE_ATTEMPTS - 1  # a short outage: the retries ride it out
    result = run_audit(build_config(raw))
    assert outage.failures == 0
    assert result.manifest["state"] == "succeeded"
    predicted = read_table(result.url, "predictions").column("image_id").to_pylist()
    assert len(predicted) == len(set(predicted)) == len(CLASSES) * PER_CLASS
