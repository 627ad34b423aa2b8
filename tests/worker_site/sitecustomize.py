"""A watch on what Ray's worker processes open, for the multi-node tests (never the product).

Python imports ``sitecustomize`` at start-up from the path; a test cluster started with this
folder on ``PYTHONPATH`` passes it to every process it starts. In Ray's worker processes
(``default_worker.py``) only, and only when ``$AUDIT_TEST_OPEN_LOG`` names a file, this adds an
audit hook (PEP 578) that appends one JSON line to that file when the worker starts and one for
every ``open``, ``os.listdir`` or ``os.scandir`` of a path under one of the
``os.pathsep``-separated prefixes of ``$AUDIT_TEST_DRIVER_ONLY``. Each line carries the worker's
pid and its raylet's command line (a worker is its raylet's child), so a test can tell which
node read what: all the nodes of a fake cluster share this machine's disk, so a read of the
driver's files from another node would otherwise succeed unseen.
"""

from __future__ import annotations

import json
import os
import sys


def _raylet() -> str:
    try:
        with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _install() -> None:
    log = os.environ.get("AUDIT_TEST_OPEN_LOG", "")
    argv = getattr(sys, "argv", None) or [""]
    if not log or not argv[0].endswith("default_worker.py"):
        return
    prefixes = tuple(p for p in os.environ.get("AUDIT_TEST_DRIVER_ONLY", "").split(os.pathsep) if p)
    me = {"pid": os.getpid(), "raylet": _raylet()}

    def write(line: dict[str, object]) -> None:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps({**me, **line}) + "\n").encode())
        finally:
            os.close(fd)

    def hook(event: str, args: tuple[object, ...]) -> None:
        if event not in ("open", "os.listdir", "os.scandir") or not args or not prefixes:
            return
        path = args[0]
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if isinstance(path, str) and os.path.abspath(path).startswith(prefixes):
            write({"event": event, "path": path})

    write({"event": "start"})
    sys.addaudithook(hook)


_install()
