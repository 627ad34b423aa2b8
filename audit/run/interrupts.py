"""SIGINT and SIGTERM to a driver: stop the run within seconds and record it ``interrupted``.

:func:`stop_on_signals` turns either signal into :class:`Interrupted` (a ``KeyboardInterrupt``)
in the main thread, wherever it waits: Ray Data's iterator returns to Python often, so the
exception is raised there, Ray Data shuts its operators down on the way out, and
:func:`audit.run.lifecycle.run_audit` records the run as ``interrupted`` with the stage and the
shards committed. The handlers are installed explicitly because a process started in the
background by a shell (``audit-cli run ... &``) inherits SIGINT *ignored*, and Python then
never raises ``KeyboardInterrupt`` for it: ``kill -INT <pid>`` did nothing.

A second signal while the first one unwinds is ignored (with a line saying so): the manifest is
being written, and a SIGKILL is what stops a driver at once.

**Test-only fault injection.** With :data:`SIGNAL_AFTER_COMMITS_ENV` set to ``N:SIGNAME``
(``2:SIGINT``), the driver sends itself that signal right after the ``N``-th shard commit of
this attempt (:func:`signal_after_commits_from_env`), so a test interrupts a run at an exact
point with a real signal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType

from audit.run.ledger import OnCommit

log = logging.getLogger(__name__)

SIGNAL_AFTER_COMMITS_ENV = "AUDIT_TEST_SIGNAL_AFTER_COMMITS"
"""Test only: ``N:SIGNAME``, the driver signals itself after its ``N``-th commit."""

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The driver got SIGINT or SIGTERM. A ``KeyboardInterrupt``, so whatever lets Ctrl-C
    through lets it through too, and the CLI exits 130 as for Ctrl-C."""

    def __init__(self, signame: str) -> None:
        super().__init__(f"interrupted by {signame}")
        self.signame = signame


def signal_name(exc: BaseException) -> str:
    """``SIGTERM`` for an :class:`Interrupted` by it; ``SIGINT`` for a plain Ctrl-C."""
    return exc.signame if isinstance(exc, Interrupted) else "SIGINT"


@contextlib.contextmanager
def stop_on_signals(signals: Sequence[signal.Signals] = STOP_SIGNALS) -> Iterator[None]:
    """Within the block, each of ``signals`` raises :class:`Interrupted` in the main thread
    (once: a later one only logs); the previous handlers come back on exit. Outside the main
    thread (where Python cannot install handlers) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal raised
        name = signal.Signals(signum).name
        if raised:
            print(
                f"{name}: already stopping (recording the interrupted run; SIGKILL stops at once)",
                file=sys.stderr,
                flush=True,
            )
            return
        raised = True
        raise Interrupted(name)

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def signal_after_commits_from_env() -> OnCommit | None:
    """The test-only hook :data:`SIGNAL_AFTER_COMMITS_ENV` asks for, or None when it is unset.

    Raises:
        ValueError: the variable is not ``N:SIGNAME`` with a positive ``N``.
    """
    raw = os.environ.get(SIGNAL_AFTER_COMMITS_ENV, "").strip()
    if not raw:
        return None
    count, _, name = raw.partition(":")
    if not count.isdigit() or int(count) < 1 or name not in ("SIGINT", "SIGTERM"):
        raise ValueError(
            f"The {SIGNAL_AFTER_COMMITS_ENV} environment variable must be N:SIGINT or "
            f"N:SIGTERM with a positive N. Got {raw!r} instead."
        )
    limit, signum = int(count), signal.Signals[name]
    sent = False

    def send(shard: int, commits: int) -> None:
        nonlocal sent
        if commits >= limit and not sent:
            sent = True
            log.warning("%s=%s: %s after shard %d", SIGNAL_AFTER_COMMITS_ENV, raw, name, shard)
            os.kill(os.getpid(), signum)

    return send
