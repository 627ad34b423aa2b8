"""The run lease: one driver at a time on a run id.

Two drivers on one run folder would rewrite each other's shard files and manifest (one of them
once crashed reading a 0-byte shard the other was rewriting in place). So a driver takes a
*lease* on the run before it deletes or writes anything there: ``<run>/lease.json``, a small
JSON object naming the holder (host, pid, a random token, when it started) and a heartbeat
time. The driver rewrites the heartbeat after every shard commit and, from a daemon thread,
every third of the timeout; it deletes the file when the run ends, whatever the outcome.

A second driver that finds a lease of another holder whose heartbeat is younger than the
timeout is refused with one line naming that holder (:class:`RunInUseError`); a lease whose
heartbeat is older (its driver was killed: a killed driver cannot delete it), a corrupt one, or
one of a process of this host that no longer exists, is *stale*: it is taken over with a warning.

The timeout is :data:`DEFAULT_TIMEOUT_S`, or the environment variable :data:`TIMEOUT_ENV`, or
what the caller passes (``0``: any other holder is stale; the tests use it instead of waiting).
Heartbeats are compared with this host's clock, so hosts whose clocks disagree by more than the
timeout can take each other's leases too early or too late.

**What this does not guarantee.** Taking the lease is read, then write, then read again (the
token read back must be ours). On local disk the write is write-then-rename; on an object store
it is one PUT, and an object store has no atomic create-if-absent, so two drivers that start
within the same moment can both read "no holder", both write, and each read back its own token
if the second PUT lands between the other's write and read-back. Then the later of them is
refused at its next heartbeat or commit (:class:`LeaseLostError`), not before it started. The
lease makes a second driver a one-line refusal in every ordinary case (a driver still running, a
rerun started by hand or by a retrying scheduler); it is not a distributed lock.

Example::

    lease = RunLease(store.fs, store.path, run_id, store.url)
    lease.check()      # refuses a fresh foreign holder, before anything is touched
    lease.take()       # writes ours; the heartbeat thread starts
    try:
        ...            # lease.refresh() after each commit
    finally:
        lease.release()
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from audit.config import ConfigError
from audit.errors import AuditError

log = logging.getLogger(__name__)

LEASE = "lease.json"
"""The lease's file name in the run folder."""

DEFAULT_TIMEOUT_S = 600.0
"""Seconds without a heartbeat after which a lease is stale."""

TIMEOUT_ENV = "AUDIT_LEASE_TIMEOUT_S"
"""Environment variable overriding :data:`DEFAULT_TIMEOUT_S` (seconds, ``>= 0``)."""

Clock = Callable[[], float]
"""Seconds since the epoch (``time.time``); injectable for tests."""


class RunInUseError(AuditError):
    """Another driver holds a fresh lease on the run; nothing was touched."""


class LeaseLostError(AuditError):
    """This driver's lease was taken over by another driver while it ran (it stops)."""


def timeout_from_env(env: Mapping[str, str] | None = None) -> float:
    """:data:`TIMEOUT_ENV` as seconds, else :data:`DEFAULT_TIMEOUT_S`.

    Raises:
        ConfigError: the variable is set to something other than a number ``>= 0``.
    """
    raw = (os.environ if env is None else env).get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also NaN
        raise ConfigError(f"{TIMEOUT_ENV} must be a number of seconds >= 0. Got {raw!r} instead.")
    return value


def _iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(
        timespec="seconds"
    )


@dataclass(frozen=True)
class Holder:
    """Who holds a lease (the JSON of ``lease.json``).

    Attributes:
        host: The driver's host name.
        pid: The driver's process id on that host.
        token: Random, new for every driver (two drivers with equal host and pid differ here).
        started: When the driver took the lease, seconds since the epoch.
        heartbeat: When it last refreshed the lease, seconds since the epoch.
    """

    host: str
    pid: int
    token: str
    started: float
    heartbeat: float

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "pid": self.pid,
            "token": self.token,
            "started": _iso(self.started),
            "started_unix": self.started,
            "heartbeat": _iso(self.heartbeat),
            "heartbeat_unix": self.heartbeat,
        }

    @classmethod
    def from_json(cls, data: Any) -> Holder:
        """Raises: ValueError: not a lease this module wrote (missing or mistyped fields)."""
        if not isinstance(data, Mapping):
            raise ValueError("a lease is a JSON object")
        try:
            return cls(
                host=str(data["host"]),
                pid=int(data["pid"]),
                token=str(data["token"]),
                started=float(data["started_unix"]),
                heartbeat=float(data["heartbeat_unix"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"a lease field is missing or mistyped: {exc}") from None

    def describe(self) -> str:
        return f"the driver pid {self.pid} on host {self.host} since {_iso(self.started)}"


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process, or a platform that cannot tell: assume alive
    return True


class RunLease:
    """The lease of one run folder, as held (or to be held) by this driver.

    Args:
        fs: The run's filesystem.
        run_path: The run folder on ``fs`` (no protocol).
        run_id: For messages.
        url: The run folder as a URL, for messages.
        timeout_s: Seconds without a heartbeat after which another holder's lease is stale
            (``0``: always); None reads :func:`timeout_from_env`.
        clock: Seconds since the epoch.
        host: This driver's host name (default: ``socket.gethostname()``).
        pid: This driver's process id (default: ``os.getpid()``).
    """

    def __init__(
        self,
        fs: AbstractFileSystem,
        run_path: str,
        run_id: str,
        url: str,
        timeout_s: float | None = None,
        clock: Clock = time.time,
        host: str | None = None,
        pid: int | None = None,
    ):
        self.fs = fs
        self.path = run_path.rstrip("/") + "/" + LEASE
        self.run_id = run_id
        self.url = url.rstrip("/") + "/" + LEASE
        self.timeout_s = timeout_from_env() if timeout_s is None else float(timeout_s)
        self.clock = clock
        self.host = host if host is not None else socket.gethostname()
        self.pid = pid if pid is not None else os.getpid()
        self.token = uuid.uuid4().hex
        self.started = clock()
        self.taken = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost: Holder | None = None

    # ------------------------------------------------------------------ reading

    def holder(self) -> Holder | None:
        """The lease on storage now: None when there is none; a corrupt one is logged and
        taken as none (it is stale)."""
        try:
            raw = self.fs.cat_file(self.path)
        except FileNotFoundError:
            return None
        try:
            return Holder.from_json(json.loads(raw))
        except ValueError as exc:  # JSONDecodeError is a ValueError
            log.warning("run %r: ignoring the unreadable lease %s (%s)", self.run_id, self.url, exc)
            return None

    def is_stale(self, holder: Holder) -> bool:
        """Whether ``holder`` (not us) may be taken over: no heartbeat for the timeout, or a
        process of this host that no longer exists."""
        if self.clock() - holder.heartbeat >= self.timeout_s:
            return True
        return (
            holder.host == self.host and holder.pid != self.pid and not _process_exists(holder.pid)
        )

    def check(self) -> None:
        """Refuse if another driver holds a fresh lease; warn when a stale one will be taken
        over. Reads only.

        Raises:
            RunInUseError: naming the holder, when it is not stale.
        """
        current = self.holder()
        if current is None or current.token == self.token:
            return
        if not self.is_stale(current):
            wait = max(0.0, current.heartbeat + self.timeout_s - self.clock())
            raise RunInUseError(
                f"run {self.run_id!r} is in use by {current.describe()} (last heartbeat "
                f"{_iso(current.heartbeat)}); wait for it, or if that driver is gone, rerun "
                f"after {wait:.0f} s (or delete {self.url})"
            )
        log.warning(
            "run %r: taking over the stale lease of %s (last heartbeat %s, timeout %g s)",
            self.run_id,
            current.describe(),
            _iso(current.heartbeat),
            self.timeout_s,
        )

    # ------------------------------------------------------------------ writing

    def _write(self) -> None:
        now = self.clock()
        data = Holder(self.host, self.pid, self.token, self.started, now).to_json()
        text = json.dumps(data, indent=2).encode("utf-8")
        if isinstance(self.fs, LocalFileSystem):  # readers never see a partial file
            self.fs.makedirs(self.path.rsplit("/", 1)[0], exist_ok=True)
            tmp = f"{self.path}.{uuid.uuid4().hex}.tmp"
            try:
                with open(tmp, "wb") as f:
                    f.write(text)
                os.replace(tmp, self.path)
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
        else:
            self.fs.pipe_file(self.path, text)  # one PUT

    def take(self) -> None:
        """Take the lease: :meth:`check`, write ours, read it back, start the heartbeat.

        Raises:
            RunInUseError: another driver holds it, or wrote its own in the meantime.
        """
        with self._lock:
            self.check()
            self._write()
            back = self.holder()
            if back is None or back.token != self.token:
                raise RunInUseError(
                    f"run {self.run_id!r} was just taken by "
                    f"{back.describe() if back else 'another driver'}; this driver stops"
                )
            self.taken = True
        if self.timeout_s > 0:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._beat, name=f"lease-{self.run_id}", daemon=True
            )
            self._thread.start()

    def refresh(self) -> None:
        """Rewrite the heartbeat (after each commit).

        Raises:
            LeaseLostError: another driver's lease replaced ours (it took ours for stale).
        """
        with self._lock:
            if not self.taken:
                return
            if self._lost is None:
                current = self.holder()
                if current is not None and current.token != self.token:
                    self._lost = current
                else:
                    self._write()
            if self._lost is not None:
                raise LeaseLostError(
                    f"run {self.run_id!r} was taken over by {self._lost.describe()} while this "
                    "driver ran (its heartbeat was older than the lease timeout?); this driver "
                    "stops"
                )

    def _beat(self) -> None:
        interval = max(self.timeout_s / 3, 0.5)
        while not self._stop.wait(interval):
            try:
                self.refresh()
            except LeaseLostError as exc:
                log.error("%s", exc)
                return
            except Exception as exc:  # storage hiccup: the next beat or commit tries again
                log.warning(
                    "run %r: could not refresh the lease (%s)", self.run_id, type(exc).__name__
                )

    def release(self) -> None:
        """Stop the heartbeat and delete the lease if it is still ours; never raises (a
        failure is logged, so that the run's own error is the one reported)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            if not self.taken:
                return
            self.taken = False
            try:
                current = self.holder()
                if current is not None and current.token == self.token:
                    self.fs.rm_file(self.path)
            except Exception as exc:
                log.warning(
                    "run %r: could not delete the lease %s (%s); the next driver takes it over "
                    "after %g s",
                    self.run_id,
                    self.url,
                    type(exc).__name__,
                    self.timeout_s,
                )
