"""What every ``audit-cli`` command shares at its boundary: the one-line error exit and the
options declared once for several commands (``--storage-options``; ``--set``, ``--output`` and
``--run-id`` of ``run`` and ``submit``).

Whatever fails, a command prints one ``error: ...`` line on stderr and exits 1: a
user-facing error (:class:`audit.errors.AuditError`) or storage refusing a read or a write
(an ``OSError``, or one of the client libraries' own errors: botocore's connection errors are
not ``OSError``\\ s), a storage outage that outlasted the retries
(:class:`audit.storage_errors.TransientStorageError`, also when a Ray task raised it), an fsspec
option the filesystem does not take, or a corrupt JSON file (:func:`user_facing`). Secrets
never reach that line: the values that look like credentials of the command's
``--storage-options`` and of the ``storage_options`` of its ``--config`` file and ``--set``
overrides, the dashboard token, cloud credentials from
the environment and the ``user:password@`` of URLs are masked. Anything else is a bug and keeps
its traceback (without local variables: every app sets ``pretty_exceptions_show_locals=False``).

This module is outside the :mod:`audit.cli` package so that the ``human`` and ``report`` command
groups (:mod:`audit.human.cli`, :mod:`audit.report.cli`), which :mod:`audit.cli` imports, can use
it without an import cycle; :mod:`audit.cli.common` hands it on to the ``audit.cli`` modules.

Example::

    @app.command()
    @one_line_errors
    def show(run: str, storage_options: StorageOpt = None) -> None:
        read_manifest(run, parse_storage(storage_options))
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, TypeVar, cast

import typer

from audit.errors import AuditError

StorageOpt = Annotated[
    str | None,
    typer.Option(
        "--storage-options",
        help="fsspec options for the run and the other files the command reads or writes, "
        "as JSON (e.g. '{\"anon\": true}').",
    ),
]

SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a field: section.field=value (repeatable)."),
]
OutputOpt = Annotated[str | None, typer.Option("--output", "-o", help="Output root (output.root).")]
RunIdOpt = Annotated[str | None, typer.Option("--run-id", help="Run folder name.")]

# fsspec option names whose values are credentials (s3fs key/secret/token, gcsfs token,
# adlfs account_key/sas_token, http password...)
_SECRET_NAME = re.compile(r"key|secret|token|passw|credential|signature|sas", re.IGNORECASE)
_SECRET_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
)
_URL_USERINFO = re.compile(r"(?<=://)[^/\s@\"']+@")
MASK = "***"

Command = TypeVar("Command", bound=Callable[..., Any])


def fail(message: str) -> typer.Exit:
    """Print ``error: <message>`` on stderr; the exit (code 1) to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=1)


def parse_storage(text: str | None) -> dict[str, Any]:
    """``--storage-options`` parsed (``{}`` when not given).

    Raises:
        ConfigError: not a JSON object (the message never echoes the text).
    """
    from audit.config import parse_storage_options

    return parse_storage_options(text)


def storage_errors() -> tuple[type[BaseException], ...]:
    """The errors storage raises for a refused read or write: ``OSError`` (local files,
    fsspec's FileNotFoundError/PermissionError, aiohttp's connection errors) and the client
    libraries' errors that are not ``OSError``\\ s (botocore's ``EndpointConnectionError``,
    ``NoCredentialsError``, ``ClientError``; aiohttp's ``ClientResponseError``)."""
    errors: list[type[BaseException]] = [OSError]
    try:
        from botocore.exceptions import BotoCoreError, ClientError

        errors += [BotoCoreError, ClientError]
    except ImportError:
        pass
    try:
        from aiohttp import ClientError as HTTPClientError

        errors.append(HTTPClientError)
    except ImportError:
        pass
    return tuple(errors)


def _secret_values(value: Any, secret: bool = False) -> Iterable[str]:
    if isinstance(value, Mapping):
        for name, item in value.items():
            yield from _secret_values(item, secret or bool(_SECRET_NAME.search(str(name))))
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _secret_values(item, secret)
    elif secret and isinstance(value, str | int) and not isinstance(value, bool):
        text = str(value)
        yield from [text] if len(text) >= 4 else []  # shorter ones would mask ordinary words


def _config_secrets(config: Any, overrides: Any) -> Iterable[str]:
    """Credential-like values of every ``storage_options`` of a YAML config file (``config``,
    the ``--config`` path) and of ``--set`` overrides (``output.storage_options={...}`` or
    ``data.storage_options.secret=...``); a file or override that cannot be read is skipped
    (loading it reports that)."""
    import yaml

    def in_options(value: Any) -> Iterable[str]:
        if isinstance(value, Mapping):
            for name, item in value.items():
                if str(name) == "storage_options":
                    yield from _secret_values(item)
                else:
                    yield from in_options(item)

    if isinstance(config, str | os.PathLike) and str(config):
        with (
            contextlib.suppress(OSError, ValueError, yaml.YAMLError),
            open(config, encoding="utf-8") as f,
        ):
            yield from in_options(yaml.safe_load(f))
    for text in overrides if isinstance(overrides, list | tuple) else ():
        key, _, raw = str(text).partition("=")
        field = key.strip().split(".", 1)[-1]
        if not field.startswith("storage_options"):
            continue
        sub = field[len("storage_options") :].lstrip(".")
        if sub:  # data.storage_options.secret=...: secret by its name
            yield from _secret_values({sub: raw.strip()})
            continue
        try:
            yield from _secret_values(yaml.safe_load(raw))
        except yaml.YAMLError:  # unparsable: mask the whole text
            yield from _secret_values(raw.strip(), secret=True)


def secrets_in(params: Mapping[str, Any], env: Mapping[str, str] | None = None) -> set[str]:
    """The secrets a command's error line must not show: credential-like values of its
    ``storage_options`` parameter (the ``--storage-options`` JSON), of the ``storage_options``
    of its ``config`` file and ``overrides`` (``run``, ``submit``: :func:`_config_secrets`),
    the dashboard token and cloud credentials from ``env``."""
    env = os.environ if env is None else env
    found: set[str] = set()
    text = params.get("storage_options")
    if isinstance(text, str):
        with contextlib.suppress(ValueError):  # bad JSON is reported without echoing it
            found.update(_secret_values(json.loads(text)))
    found.update(_config_secrets(params.get("config"), params.get("overrides")))
    found.update(v for v in (env.get(name, "") for name in _SECRET_ENV) if len(v) >= 4)
    from audit.jobs.errors import JobsError
    from audit.jobs.tokens import find_token

    try:
        token = find_token(env).value
    except JobsError:
        token = None
    if token:
        found.add(token)
    return found


def error_message(exc: BaseException, secrets: Iterable[str] = ()) -> str:
    """One line for ``exc``: an :class:`AuditError`'s message as it is; a storage error's
    path and reason with its type; ``secrets`` and the passwords of URLs masked."""
    if isinstance(exc, AuditError):
        text = str(exc)
    else:
        if isinstance(exc, OSError) and exc.strerror:
            detail = f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc.strerror)
        else:
            detail = str(exc) or "no message"
        text = f"{detail} ({type(exc).__name__})"
    text = " ".join(part.strip() for part in text.splitlines() if part.strip())
    for secret in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return _URL_USERINFO.sub(MASK + "@", text)


# libraries whose TypeError "unexpected keyword argument" means an fsspec option they do not take
_STORAGE_MODULES = ("fsspec", "s3fs", "gcsfs", "adlfs", "aiobotocore", "botocore", "aiohttp")


def _raised_in_storage(exc: BaseException) -> bool:
    """Whether ``exc``'s traceback passes through a storage library (:data:`_STORAGE_MODULES`)."""
    tb = exc.__traceback__
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        if module.split(".")[0] in _STORAGE_MODULES:
            return True
        tb = tb.tb_next
    return False


def user_facing(exc: BaseException) -> BaseException | None:
    """The error to report in one line for ``exc``, or None when ``exc`` is a bug (traceback).

    That is ``exc`` itself for an :class:`AuditError` or a storage error
    (:func:`storage_errors`); the :class:`~audit.storage_errors.TransientStorageError` it
    carries, even as text only (a Ray task's error from a decode task that storage kept
    failing); a ``ConfigError`` naming the option for a ``TypeError`` "unexpected keyword
    argument" from a storage library (an fsspec option that filesystem does not take; its
    value is not shown); and a ``ConfigError`` for a ``JSONDecodeError`` (a corrupt JSON file
    such as a run's ``manifest.json``).
    """
    from audit.config import ConfigError
    from audit.storage_errors import find_transient

    transient = find_transient(exc)
    if transient is not None:
        return transient
    if isinstance(exc, (AuditError, *storage_errors())):
        return exc
    option = isinstance(exc, TypeError) and "unexpected keyword argument" in str(exc)
    if option and _raised_in_storage(exc):
        return ConfigError(
            f"a storage option is not accepted by the filesystem: {exc} "
            "(check the storage_options / --storage-options names)"
        )
    if isinstance(exc, json.JSONDecodeError):
        return ConfigError(
            f"a JSON file is corrupt (a run's manifest.json?): {exc.msg} at line {exc.lineno} "
            f"column {exc.colno}"
        )
    return None


def one_line_errors(command: Command) -> Command:
    """Wrap a command so that an :class:`AuditError` or a storage error (what
    :func:`user_facing` accepts) ends it with one ``error: ...`` line and exit code 1 (see the
    module docstring); put it under ``@app.command()``."""

    @functools.wraps(command)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except Exception as exc:
            reported = user_facing(exc)
            if reported is None:
                raise
            raise fail(error_message(reported, secrets_in(kwargs))) from None

    return cast(Command, guarded)
