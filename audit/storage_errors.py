"""Which storage errors are transient, and the one retry loop for reads and writes.

A *transient* storage error says nothing about the file: the storage was unreachable, slow,
throttling or failing on its side (a refused or dropped connection, a timeout, an HTTP 500/503,
S3's ``SlowDown``). Such an error is retried with backoff (:func:`retry`); if it persists, the
operation fails with :class:`TransientStorageError` and so does the run, which a rerun of the
same run id then resumes. It must never become an ``errors`` row: those are for files whose
bytes were read and are bad, or that do not exist.

The client libraries are imported lazily and may be absent: botocore (s3fs), aiohttp (s3fs,
gcsfs, HTTP). Their connection errors are mostly not ``OSError``\\ s, and s3fs sometimes
re-raises a botocore error as an ``OSError`` with the original as ``__cause__``, so
:func:`is_transient` walks the whole chain (``__cause__``, ``__context__`` and the ``cause``
of Ray's task errors).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from audit.errors import AuditError

T = TypeVar("T")

THROTTLE_OR_SERVER_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "500",
        "502",
        "503",
        "504",
    }
)
"""``ClientError`` codes (S3 and other AWS services) that mean "try again later"."""

TRANSIENT_HTTP_STATUS = frozenset({429, 500, 502, 503, 504})
"""HTTP statuses of a response that mean "try again later"."""

PERMANENT = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)
"""Errors that say what the path is (missing, a folder, forbidden): never transient, whatever
error they were raised while handling."""

MAX_REASON = 300
"""Longest last-error text a :class:`TransientStorageError` message quotes."""

_URL_USERINFO = re.compile(r"(?<=://)[^/\s@\"']+@")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_SECRET_NAME = re.compile(r"key|secret|token|passw|credential|signature|sas", re.IGNORECASE)
# how a TransientStorageError reads in the text of an error that lost the object (Ray's task
# errors carry the remote traceback as text only)
_IN_TEXT = re.compile(r"(?:^|\n)(?:[\w.]+\.)?TransientStorageError: ([^\n]+)")


class TransientStorageError(AuditError, OSError):
    """Storage kept failing with transient errors (see the module docstring) after every retry.

    The message is one line: what was being done, how many tries, and the last error's type and
    text (URL passwords and the given secrets masked, cut to :data:`MAX_REASON` characters). It
    is an ``OSError`` too, as storage failures always were here, so that code catching those
    keeps working; it is an :class:`~audit.errors.AuditError` because the person at the command
    line can act on it (check the storage, then rerun the same run id).
    """


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then its causes and contexts (and Ray's ``cause``), each once."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        item = todo.pop(0)
        if id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        for link in (item.__cause__, item.__context__, getattr(item, "cause", None)):
            if isinstance(link, BaseException):
                todo.append(link)


def _client_error_is_transient(exc: BaseException) -> bool:
    """botocore's ``ClientError`` with a throttling or server-side code or HTTP status."""
    response = getattr(exc, "response", None)
    if not isinstance(response, Mapping):
        return False
    error = response.get("Error") or {}
    code = str(error.get("Code", "")) if isinstance(error, Mapping) else ""
    meta = response.get("ResponseMetadata") or {}
    status = meta.get("HTTPStatusCode") if isinstance(meta, Mapping) else None
    return code in THROTTLE_OR_SERVER_CODES or status in TRANSIENT_HTTP_STATUS


def _one_is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` itself (not its chain) is a transient storage error."""
    if isinstance(exc, TransientStorageError | ConnectionError | TimeoutError):
        return True  # builtins: refused/reset/aborted connections, socket and asyncio timeouts
    try:
        from botocore import exceptions as boto
    except ImportError:
        pass
    else:
        connection = (
            boto.EndpointConnectionError,
            boto.ConnectionClosedError,
            boto.ConnectTimeoutError,
            boto.ReadTimeoutError,
        )
        if isinstance(exc, connection):
            return True
        if isinstance(exc, boto.ClientError):
            return _client_error_is_transient(exc)
    try:
        import aiohttp
    except ImportError:
        pass
    else:
        if isinstance(exc, aiohttp.ClientConnectionError):  # ServerDisconnectedError among them
            return True
        if isinstance(exc, aiohttp.ClientResponseError):
            return exc.status in TRANSIENT_HTTP_STATUS
    return False


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc``, or anything in its cause/context chain, is a transient storage error
    (a refused, dropped or timed-out connection, throttling, a server-side 5xx): worth a retry,
    and never a property of the file. An error in :data:`PERMANENT` is not transient."""
    if isinstance(exc, PERMANENT):
        return False
    return any(_one_is_transient(item) for item in _chain(exc))


def find_transient(exc: BaseException) -> TransientStorageError | None:
    """The :class:`TransientStorageError` in ``exc``'s chain, or one rebuilt from the text of an
    error that carries it only as text (a Ray task error from a decode task); else None."""
    for item in _chain(exc):
        if isinstance(item, TransientStorageError):
            return item
    for item in _chain(exc):
        found = _IN_TEXT.search(_ANSI.sub("", str(item)))
        if found:
            return TransientStorageError(found.group(1).strip())
    return None


def secret_values(options: Mapping[str, Any] | None) -> set[str]:
    """The values of fsspec ``options`` whose names look like credentials (``key``,
    ``secret``, ``token``, ``password``...), at any depth; shorter ones than 4 characters are
    left out (masking them would mangle ordinary words)."""
    found: set[str] = set()

    def walk(value: Any, secret: bool) -> None:
        if isinstance(value, Mapping):
            for name, item in value.items():
                walk(item, secret or bool(_SECRET_NAME.search(str(name))))
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item, secret)
        elif secret and isinstance(value, str | int) and not isinstance(value, bool):
            found.update([str(value)] if len(str(value)) >= 4 else [])

    walk(options or {}, False)
    return found


def describe(exc: BaseException, secrets: Iterable[str] = ()) -> str:
    """``Type: message`` of ``exc`` on one line, secrets and URL passwords masked, cut to
    :data:`MAX_REASON` characters."""
    text = _ANSI.sub("", str(exc))
    text = " ".join(part.strip() for part in text.splitlines() if part.strip()) or "no message"
    for secret in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    text = _URL_USERINFO.sub("***@", text)
    if len(text) > MAX_REASON:
        text = text[: MAX_REASON - 3] + "..."
    return f"{type(exc).__name__}: {text}"


def retry(
    fn: Callable[[], T],
    what: str,
    attempts: int,
    backoff: float,
    *,
    retry_on: Callable[[BaseException], bool] = is_transient,
    secrets: Iterable[str] = (),
) -> T:
    """Call ``fn`` up to ``attempts`` times while it raises errors that ``retry_on`` accepts,
    waiting ``backoff`` seconds before the second try and twice as long before each later one.

    Args:
        fn: The read or write; its result is returned.
        what: What ``fn`` does, for the message (``"reading s3://bucket/x.JPEG"``).
        attempts: Tries in all (at least 1).
        backoff: The first wait, in seconds.
        retry_on: Which errors are worth another try (default :func:`is_transient`); any other
            error propagates at once, unchanged.
        secrets: Strings the message must not show (credential values of storage options).

    Raises:
        TransientStorageError: every try failed with a retried error; chained to the last one.
    """
    secrets = tuple(secrets)
    for attempt in range(1, max(1, attempts) + 1):
        try:
            return fn()
        except Exception as exc:
            if not retry_on(exc):
                raise
            if attempt >= attempts:
                raise TransientStorageError(
                    f"{what} failed {attempt} times; last error: {describe(exc, secrets)}"
                ) from exc
            time.sleep(backoff * 2 ** (attempt - 1))
    raise AssertionError("unreachable")  # the loop returns or raises
