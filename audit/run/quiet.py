"""Drop the known-benign lines Ray's C++ core writes to the driver's stderr during a run.

One line is printed by every healthy run: when Ray Data starts an actor pool, Ray's core worker
logs once per process, at ERROR, that the actor "has constructor arguments in the object store
and max_restarts > 0" (ray-project/ray#53727). Ray Data itself passes every pool's data context
and map transformer as object-store arguments and asks for restarts, so no configuration of
ours avoids it short of giving up actor restarts after a lost node. The objects are owned by
the driver and kept on its node for the whole run, so the restart it warns about fails only if
the driver's node is lost, which ends the run anyway (docs/architecture.md, "A model actor that
dies").

The line is written by C++ straight to file descriptor 2, beyond Python's logging, so
:func:`drop_known_lines` points descriptor 2 at a pipe for the length of the run, and a thread
copies everything that arrives to the real stderr at once, except whole lines that match one of
:data:`KNOWN_LINES`. Nothing else is held back: a partial line goes on at once unless it starts
like a C++ log line (``[``), which is then kept until its newline (at most 64 KiB). With
``AUDIT_RAW_STDERR=1`` in the environment nothing is filtered.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import TextIO

RAW_STDERR_ENV = "AUDIT_RAW_STDERR"
"""Set (to anything but empty) to keep every line on stderr."""

KNOWN_LINES: tuple[re.Pattern[bytes], ...] = (
    re.compile(
        rb"^\[[^]]*\] core_worker\.cc:\d+: Actor with class name: '[^']*' and ID: '[0-9a-f]+' "
        rb"has constructor arguments in the object store and max_restarts > 0\. If the arguments "
        rb"in the object store go out of scope or are lost, the actor restart will fail\. See "
        rb"https://github\.com/ray-project/ray/issues/53727 for more details\.\r?$"
    ),
)
"""Lines dropped whole (bytes, without their newline)."""

_HOLD = 64 * 1024  # the longest partial C++ line kept back waiting for its newline


class Forwarder(threading.Thread):
    """Copies what arrives on ``read_fd`` to ``out_fd`` but the lines matching ``patterns``;
    ``dropped`` counts those. Ends at end of file (every writer closed)."""

    def __init__(self, read_fd: int, out_fd: int, patterns: Sequence[re.Pattern[bytes]]) -> None:
        super().__init__(name="audit-stderr", daemon=True)
        self.read_fd, self.out_fd, self.patterns = read_fd, out_fd, tuple(patterns)
        self.dropped = 0

    def run(self) -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(self.read_fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            *lines, pending = (pending + chunk).split(b"\n")
            out = []
            for line in lines:
                if any(p.match(line) for p in self.patterns):
                    self.dropped += 1
                else:
                    out.append(line + b"\n")
            if pending and (not pending.startswith(b"[") or len(pending) > _HOLD):
                out.append(pending)
                pending = b""
            if out:
                self._write(b"".join(out))
        if pending:
            self._write(pending)
        os.close(self.read_fd)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.out_fd, view)
            except InterruptedError:
                continue
            except OSError:  # the real stderr is gone (closed terminal): nothing to tell
                return
            view = view[n:]


@contextlib.contextmanager
def drop_known_lines(
    patterns: Sequence[re.Pattern[bytes]] = KNOWN_LINES, drain_s: float = 2.0
) -> Iterator[TextIO]:
    """Within the block, file descriptor 2 is a pipe whose lines are copied to the real stderr
    but those matching ``patterns``; on exit descriptor 2 is the real stderr again and what is
    left in the pipe is copied within ``drain_s`` (a process started inside the block that
    inherited the pipe keeps it open: the thread then goes on copying its lines for as long as
    this process lives).

    Yields:
        Where progress bars should draw: a stream on the real stderr when ``sys.stderr`` is
        descriptor 2 (so a terminal is still seen as one and the bars keep its width), else
        ``sys.stderr`` itself (a test runner's capture). Nothing is filtered, and
        ``sys.stderr`` is yielded, with ``AUDIT_RAW_STDERR`` set, without patterns, or without
        a descriptor 2.
    """
    if os.environ.get(RAW_STDERR_ENV) or not patterns:
        yield sys.stderr
        return
    try:
        saved = os.dup(2)
    except OSError:
        yield sys.stderr
        return
    _flush()
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    forwarder = Forwarder(read_fd, saved, patterns)
    forwarder.start()
    terminal: TextIO | None = None
    if _is_fd2(sys.stderr):
        terminal = os.fdopen(os.dup(saved), "w", buffering=1, errors="backslashreplace")
    try:
        yield terminal or sys.stderr
    finally:
        if terminal is not None:
            with contextlib.suppress(OSError):
                terminal.close()
        _flush()
        os.dup2(saved, 2)
        forwarder.join(drain_s)
        if not forwarder.is_alive():
            os.close(saved)


def _is_fd2(stream: object) -> bool:
    try:
        return bool(stream.fileno() == 2)  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return False


def _flush() -> None:
    with contextlib.suppress(Exception):  # a replaced or closed sys.stderr
        sys.stderr.flush()
