"""The run lease (audit/run/lease.py): one driver at a time on a run id.

A fresh lease of another driver refuses a second one before it touches anything; a stale one
(no heartbeat for the timeout, or a dead process of this host) is taken over; the lease is gone
after a run ends either way, and a killed driver's lease is taken over by the rerun, which
resumes. Staleness is decided by an injected clock or a timeout the test sets, never by waiting.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec
import pytest

from audit.cli_boundary import error_message
from audit.config import build_config
from audit.run.lease import LEASE, Holder, LeaseLostError, RunInUseError, RunLease

NOW = 1_800_000_000.0  # the injected clock's "now"


def write_lease(run: Path, host: str, pid: int, heartbeat: float, token: str = "theirs") -> None:
    run.mkdir(parents=True, exist_ok=True)
    holder = Holder(host=host, pid=pid, token=token, started=heartbeat - 60, heartbeat=heartbeat)
    (run / LEASE).write_text(json.dumps(holder.to_json()))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def lease_of(run: Path, timeout_s: float = 600.0, now: float = NOW) -> RunLease:
    fs = fsspec.filesystem("file")
    return RunLease(fs, str(run), run.name, str(run), timeout_s, clock=lambda: now)


def demo_config(root: Path, run_id: str, **output: Any) -> dict[str, Any]:
    return {
        "data": {"per_class": 2},
        "attack": {"enabled": False},
        "explain": {"enabled": False},
        "criticism": {"enabled": False},
        "output": {"root": str(root), "run_id": run_id, "shard_size": 5, **output},
    }


def test_fresh_foreign_lease_refuses_the_run_and_touches_nothing(
    tmp_path: Path, empty_run: Callable[..., str]
) -> None:
    from audit.run import run_audit

    empty_run("busy")
    run = tmp_path / "busy"
    write_lease(run, "other-host", 4242, heartbeat=time.time())
    before = snapshot(run)
    with pytest.raises(RunInUseError) as caught:
        run_audit(build_config(demo_config(tmp_path, "busy")))
    line = error_message(caught.value)
    assert "\n" not in line
    assert line.startswith("run 'busy' is in use by the driver pid 4242 on host other-host since ")
    assert "wait for it, or if that driver is gone, rerun after" in line
    assert snapshot(run) == before  # not a byte changed, the lease included


def test_stale_lease_is_taken_over_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = tmp_path / "r"
    write_lease(run, "other-host", 4242, heartbeat=NOW - 601)
    with pytest.raises(RunInUseError, match="pid 4242 on host other-host"):
        lease_of(run, now=NOW - 300).check()  # 301 s old at that time: fresh
    lease = lease_of(run)
    with caplog.at_level(logging.WARNING, logger="audit.run.lease"):
        lease.take()
    assert "taking over the stale lease of the driver pid 4242 on host other-host" in caplog.text
    ours = json.loads((run / LEASE).read_text())
    assert ours["token"] == lease.token and ours["pid"] == os.getpid()
    lease.refresh()
    lease.release()
    assert not (run / LEASE).exists()


def test_timeout_zero_takes_over_any_other_holder(tmp_path: Path) -> None:
    run = tmp_path / "r"
    write_lease(run, "other-host", 4242, heartbeat=NOW)
    with pytest.raises(RunInUseError):
        lease_of(run, timeout_s=600).check()
    lease = lease_of(run, timeout_s=0)
    lease.take()
    assert json.loads((run / LEASE).read_text())["token"] == lease.token
    lease.release()


def test_a_dead_process_of_this_host_is_stale(tmp_path: Path) -> None:
    import socket

    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    run = tmp_path / "r"
    write_lease(run, socket.gethostname(), int(done.stdout), heartbeat=NOW)
    lease_of(run).check()  # no refusal: that pid has ended
    write_lease(run, socket.gethostname(), os.getppid(), heartbeat=NOW)  # alive
    with pytest.raises(RunInUseError):
        lease_of(run).check()


def test_a_lease_taken_over_meanwhile_stops_the_first_driver(tmp_path: Path) -> None:
    run = tmp_path / "r"
    first = lease_of(run)
    first.take()
    second = lease_of(run, timeout_s=0)
    second.take()  # takes over (timeout 0)
    with pytest.raises(LeaseLostError, match="taken over by the driver pid"):
        first.refresh()
    first.release()  # not ours any more: left alone
    assert json.loads((run / LEASE).read_text())["token"] == second.token
    second.release()
    assert not (run / LEASE).exists()


@pytest.mark.slow  # two small demo runs on Ray
def test_lease_is_gone_after_a_successful_and_a_failed_run(
    tmp_path: Path, demo_cache: str, ray_local: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from audit.run import run_audit

    monkeypatch.setenv("AUDIT_CACHE_DIR", demo_cache)
    result = run_audit(build_config(demo_config(tmp_path, "ok")))
    assert result.manifest["state"] == "succeeded"
    assert not (tmp_path / "ok" / LEASE).exists()

    calls: list[int] = []

    def failing_progress(done: int, total: int) -> None:
        calls.append(done)
        if len(calls) > 1:  # the first call is before the stream; fail inside it
            raise RuntimeError("injected failure while streaming")

    with pytest.raises(RuntimeError, match="injected failure"):
        run_audit(build_config(demo_config(tmp_path, "failed")), progress=failing_progress)
    manifest = json.loads((tmp_path / "failed" / "manifest.json").read_text())
    assert manifest["state"] == "failed"
    assert not (tmp_path / "failed" / LEASE).exists()
