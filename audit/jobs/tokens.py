"""The dashboard's authentication token: where it is found, and what to say when it is refused.

A cluster started with ``RAY_AUTH_MODE=token`` refuses every dashboard request without
``Authorization: Bearer <token>``. The token is looked up as Ray itself does, highest precedence
first: ``$RAY_AUTH_TOKEN``, the file named by ``$RAY_AUTH_TOKEN_PATH``, then
``~/.ray/auth_token`` (what ``ray get-auth-token --generate`` writes and prints). The token is
sent as a header and never printed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from audit.jobs.errors import JobsError


@dataclass(frozen=True)
class AuthToken:
    """Where the dashboard token came from, and the token (never printed).

    Attributes:
        value: The token; ``None`` when no source has one.
        source: Human-readable source, e.g. ``$RAY_AUTH_TOKEN`` or ``~/.ray/auth_token``.
    """

    value: str | None = field(repr=False)
    source: str


def find_token(env: Mapping[str, str] | None = None) -> AuthToken:
    """Find the dashboard token the way Ray does (see the module docstring).

    Raises:
        JobsError: ``$RAY_AUTH_TOKEN_PATH`` names a file that is missing or empty (Ray treats
            this as a fatal misconfiguration too).
    """
    env = os.environ if env is None else env
    if env.get("RAY_AUTH_TOKEN", "").strip():
        return AuthToken(env["RAY_AUTH_TOKEN"].strip(), "$RAY_AUTH_TOKEN")
    if env.get("RAY_AUTH_TOKEN_PATH"):
        path = Path(env["RAY_AUTH_TOKEN_PATH"]).expanduser()
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise JobsError(
                f"$RAY_AUTH_TOKEN_PATH names {str(path)!r}, which cannot be read "
                f"({exc.strerror or exc})."
            ) from None
        if not text:
            raise JobsError(f"$RAY_AUTH_TOKEN_PATH names {str(path)!r}, which is empty.")
        return AuthToken(text, f"$RAY_AUTH_TOKEN_PATH ({path})")
    home = env.get("HOME") or str(Path.home())
    default = Path(home) / ".ray" / "auth_token"
    if default.is_file():
        text = default.read_text(encoding="utf-8").strip()
        if text:
            return AuthToken(text, str(default))
    return AuthToken(None, "none")


def auth_message(address: str, token: AuthToken, status: int) -> str:
    """The one-line reason for a 401/403 from the dashboard."""
    if status == 401 or token.value is None:
        return (
            f"the Ray cluster at {address} requires an authentication token and none was sent: "
            "set $RAY_AUTH_TOKEN, or $RAY_AUTH_TOKEN_PATH to a token file, or put the token in "
            "~/.ray/auth_token (`ray get-auth-token` prints it on the head node)."
        )
    return (
        f"the Ray cluster at {address} refused the authentication token from {token.source}: "
        "it is not this cluster's token (`ray get-auth-token` on the head node prints the "
        "right one)."
    )
