"""A real local Ray cluster with token authentication, started by ``ray start --head``.

Everything is bound to 127.0.0.1 on free ports, under a private temp dir, with a token that
only this cluster knows (``$RAY_AUTH_TOKEN`` in the cluster's environment, so nobody's
``~/.ray/auth_token`` is read or written). Teardown stops only this cluster's processes: those
whose command line names its temp dir, and their children. ``ray stop`` is not used: it stops
every Ray process on the machine, including other test sessions'.

``jobs_cluster`` (a session fixture, imported by conftest.py) is one such cluster shared by
every test that submits jobs; ``jobs_cli`` runs ``audit-cli`` against it in this process.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class LocalCluster:
    """A running token-auth cluster: its Jobs API URL, token, and a clean client env."""

    address: str
    token: str
    temp_dir: str
    gcs_address: str = ""

    def env(self, *, token: bool = True, home: str | None = None) -> dict[str, str]:
        """Environment for a client process: the token (or none at all) and the address."""
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")
        }
        env["RAY_API_SERVER_ADDRESS"] = self.address
        if token:
            env["RAY_AUTH_TOKEN"] = self.token
        if home is not None:
            env["HOME"] = home
        return env


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line), read from /proc (Linux)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out[int(entry)] = (ppid, cmd)
    return out


def _cluster_pids(temp_dir: str, markers: Sequence[str] = ()) -> set[int]:
    """Processes whose command line names ``temp_dir`` or one of ``markers``, and all their
    descendants."""
    procs = _processes()
    names = (temp_dir, *markers)
    mine = {pid for pid, (_, cmd) in procs.items() if any(n in cmd for n in names)}
    grew = True
    while grew:
        more = {pid for pid, (ppid, _) in procs.items() if ppid in mine} - mine
        mine |= more
        grew = bool(more)
    ancestors, pid = set(), os.getpid()
    while pid in procs and pid not in ancestors:  # never this test process or its parents
        ancestors.add(pid)
        pid = procs[pid][0]
    return mine - ancestors - {os.getpid()}


def stop_cluster(temp_dir: str, grace: float = 2.0, markers: Sequence[str] = ()) -> None:
    """SIGTERM this cluster's processes, then SIGKILL what is left after ``grace`` seconds.

    Ray's processes are slow to go or stay (measured on a `ray start --head` cluster: the
    raylet and the runtime-env agent went after ten seconds, the GCS server and the dashboard
    were still running after eleven), so a long grace only waits; the cluster and its temp dir
    are thrown away, so nothing needs a clean shutdown.

    ``markers``: other strings that only this cluster's command lines hold (its GCS address:
    the Ray client server names that, not the temp dir)."""
    pids = _cluster_pids(temp_dir, markers)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and (pids & _cluster_pids(temp_dir, markers)):
        time.sleep(0.5)
    for pid in pids | _cluster_pids(temp_dir, markers):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def start_cluster(
    temp_dir: str,
    num_cpus: int = 2,
    port: int | None = None,
    extra_args: Sequence[str] = (),
    extra_env: Mapping[str, str] | None = None,
) -> LocalCluster:
    """Start the head: GCS on ``port`` (a free one by default), ``extra_args`` added to
    ``ray start`` and ``extra_env`` to its environment."""
    token = secrets.token_hex(32)
    dash = free_port()
    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=token,
        # the job's `python` must be this venv's: the entrypoint runs in a shell on this PATH
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        AUDIT_CACHE_DIR=str(Path(temp_dir) / "cache"),  # the demo set, rendered per cluster
    )
    env.update(extra_env or {})
    cmd = [
        str(VENV_BIN / "ray"),
        "start",
        "--head",
        "--node-ip-address=127.0.0.1",
        f"--port={port}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--ray-client-server-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        f"--num-cpus={num_cpus}",
        "--num-gpus=0",
        "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
        *extra_args,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    if proc.returncode != 0:
        stop_cluster(temp_dir)
        raise RuntimeError(f"ray start failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    address = f"http://127.0.0.1:{dash}"
    deadline = time.monotonic() + 120
    while True:  # the dashboard answers 401 to a token-less request once it is up
        try:
            r = requests.get(
                address + "/api/version", headers={"Authorization": f"Bearer {token}"}, timeout=5
            )
            if r.status_code == 200:
                break
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            stop_cluster(temp_dir)
            raise RuntimeError(f"the dashboard at {address} did not come up")
        time.sleep(1)
    return LocalCluster(
        address=address, token=token, temp_dir=temp_dir, gcs_address=f"127.0.0.1:{port}"
    )


@contextlib.contextmanager
def token_cluster(extra_env: Mapping[str, str] | None = None) -> Iterator[LocalCluster]:
    """A `ray start --head` cluster with token auth, stopped (only it) on exit; ``extra_env``
    is added to the cluster's environment (its jobs' drivers inherit it)."""
    # short path: Ray's Unix socket paths must stay under 108 bytes
    temp_dir = tempfile.mkdtemp(prefix="rayh7-", dir="/tmp")
    try:
        yield start_cluster(temp_dir, extra_env=extra_env)
    finally:
        stop_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def jobs_cluster(demo_cache: str) -> Iterator[LocalCluster]:
    """One token-auth cluster for every test that submits jobs to the Jobs API (imported by
    conftest.py); its jobs read the session's rendered demo set. Tests tell their jobs apart by
    run id, never by what else the cluster has run."""
    with token_cluster(extra_env={"AUDIT_CACHE_DIR": demo_cache}) as cluster:
        yield cluster


def jobs_cli(cluster: LocalCluster, *args: str) -> Any:
    """``audit-cli *args`` in this process (Typer's CliRunner) with the cluster's Jobs API
    address and token, and no token file or ``RAY_ADDRESS`` of the caller's."""
    from typer.testing import CliRunner

    from audit.cli import app

    env = {
        "RAY_API_SERVER_ADDRESS": cluster.address,
        "RAY_AUTH_TOKEN": cluster.token,
        "RAY_AUTH_TOKEN_PATH": None,
        "RAY_ADDRESS": None,
    }
    return CliRunner().invoke(app, list(args), env=env)  # type: ignore[arg-type]
