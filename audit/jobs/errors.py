"""The error every Jobs API helper raises, and the one-line form of a library's message."""

from __future__ import annotations

from audit.errors import AuditError


class JobsError(AuditError, RuntimeError):
    """A Jobs API call failed; the message is one line meant for the user."""


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
