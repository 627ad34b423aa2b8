"""Joining or starting Ray, for the entry points (``audit-cli run`` and ``ray_jobs/audit.py``).

Library code never calls ``ray.init()``; the entry points call :func:`start_ray` once, before
:func:`audit.run.run_audit`.
"""

from __future__ import annotations

import logging
import os
import socket

from audit.errors import AuditError


class RayUnreachable(AuditError):
    """No Ray cluster answers at the address given (one line, for the CLI)."""


LOCAL_IP_ENV = "AUDIT_RAY_NODE_IP"
"""Environment variable: the address a local Ray instance binds to (default 127.0.0.1)."""


def _probe(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast when nothing listens at a ``host:port`` address: ``ray.init`` would otherwise
    retry its connection for minutes. ``auto``, ``local`` and ``ray://`` addresses are left to
    Ray."""
    if address in ("auto", "local") or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise RayUnreachable(f"the Ray address {address!r} is not host:port (e.g. 10.0.0.5:6379)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise RayUnreachable(
            f"no Ray cluster answers at {address} ({exc.strerror or exc}); start one with "
            "'ray start --head' or fix --address / $RAY_ADDRESS"
        ) from None


def start_ray(address: str | None = None, probe: bool = False) -> None:
    """Connect to ``address`` (or ``$RAY_ADDRESS``), or start a local Ray instance.

    A local instance is started without the dashboard (progress is read from the run manifest)
    and bound to 127.0.0.1, so that nothing of it listens on the machine's network address;
    ``$AUDIT_RAY_NODE_IP`` binds it to another address.

    Args:
        address: The cluster's address; None starts a local instance.
        probe: First check that something listens at a ``host:port`` address (the CLI does;
            a job's driver, given its address by Ray, does not).

    Raises:
        RayUnreachable: ``probe`` and nothing listens at the address.
    """
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        if probe:
            _probe(address)
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        # A local instance listens on the loopback interface only, unless the user asks.
        # ray.init maps 127.0.0.1 to the machine's address unless Ray's loopback mode (its
        # default on macOS and Windows) is on; it is read when the address is resolved.
        bind = os.environ.get(LOCAL_IP_ENV, "127.0.0.1")
        if bind == "127.0.0.1":
            from ray._private import ray_constants

            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
            ray_constants.ENABLE_RAY_CLUSTER = False
        # Ray turns token authentication on for a new local instance and warns at WARNING
        # that it did (unless RAY_AUTH_MODE chose it before Ray read its config): on a healthy
        # run that line is noise, and docs/cluster.md says how the token works.
        logging.getLogger(_TOKEN_SETUP_LOGGER).setLevel(logging.ERROR)
        ray.init(
            include_dashboard=False,
            logging_level=logging.WARNING,
            _node_ip_address=bind,
        )
    import ray.data  # configures Ray Data's loggers on import; quiet them afterwards

    logging.getLogger("ray.data").setLevel(logging.WARNING)
    show_run_logs()


_TOKEN_SETUP_LOGGER = "ray._private.authentication.authentication_token_setup"


def show_run_logs() -> None:
    """Send the ``audit`` loggers' INFO lines to stderr (the run's start line, the wait for the
    autoscaler's nodes: :mod:`audit.run.devices`), unless the application configured them."""
    logger = logging.getLogger("audit")
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
