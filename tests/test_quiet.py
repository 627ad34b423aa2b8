"""audit.run.quiet: the driver's stderr loses Ray's one known-benign C++ line and nothing else,
in order, whoever writes it (Python, C through descriptor 2, a child process); tested in fresh
interpreters whose stderr is a real pipe."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

RAY_LINE = (
    "[2026-12-04 21:49:24,887 E 31329 31329] core_worker.cc:2465: Actor with class name: "
    "'MapWorker(MapBatches(ModelActor))' and ID: '316e6b7c0c9ce993c0d4f1f201000000' has "
    "constructor arguments in the object store and max_restarts > 0. If the arguments in the "
    "object store go out of scope or are lost, the actor restart will fail. See "
    "https://github.com/ray-project/ray/issues/53727 for more details."
)
OTHER_E = "[2026-12-04 21:49:25,001 E 31329 31329] core_worker.cc:100: something else broke"

SCRIPT = textwrap.dedent(
    """
    import os, subprocess, sys, time
    from audit.run.quiet import drop_known_lines

    RAY_LINE, OTHER_E = sys.argv[1], sys.argv[2]
    print("before", file=sys.stderr, flush=True)
    with drop_known_lines() as terminal:
        os.write(2, (RAY_LINE + "\\n").encode())
        print("python line", file=sys.stderr, flush=True)
        os.write(2, (OTHER_E + "\\n").encode())
        os.write(2, b"partial ")  # no newline yet: goes on at once
        time.sleep(0.3)
        os.write(2, b"line\\n")
        os.write(2, b"[2026 E 1 1] core_worker.cc:1: Actor with class name: ")  # split write
        time.sleep(0.3)
        os.write(2, RAY_LINE.split("class name: ", 1)[1].encode() + b"\\n")
        subprocess.run(
            [sys.executable, "-c", f"import os; os.write(2, {RAY_LINE!r}.encode() + b'\\\\n')"],
            check=True,
        )
        subprocess.run([sys.executable, "-c", "import os; os.write(2, b'child line\\\\n')"])
        terminal.write("bar\\n")
        terminal.flush()
    print("after", file=sys.stderr, flush=True)
    """
)


def _run(env: dict[str, str]) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, RAY_LINE, OTHER_E],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


def test_only_the_known_line_is_dropped() -> None:
    err = _run({"AUDIT_RAW_STDERR": ""})
    lines = err.splitlines()  # the known line thrice: whole, in two writes, from a child
    assert "53727" not in err, err
    assert lines[0] == "before" and lines[-1] == "after"
    assert lines[1:-1] == ["python line", OTHER_E, "partial line", "child line", "bar"], err


def test_raw_stderr_keeps_everything() -> None:
    err = _run({"AUDIT_RAW_STDERR": "1"})
    assert err.count("ray-project/ray/issues/53727") == 3
    assert "something else broke" in err and "partial line" in err and "bar" in err


@pytest.mark.parametrize(
    "line",
    [
        RAY_LINE + " and more",  # a longer line is not the known one
        RAY_LINE.replace("max_restarts > 0", "max_restarts = 0"),
        "note: " + RAY_LINE,
    ],
)
def test_near_misses_are_kept(line: str) -> None:
    from audit.run.quiet import KNOWN_LINES

    assert not any(p.match(line.encode()) for p in KNOWN_LINES)
    assert any(p.match(RAY_LINE.encode()) for p in KNOWN_LINES)
