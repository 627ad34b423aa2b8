"""Entry point of the audit job: ``python -m ray_jobs.audit --config FILE [--set k=v ...]``.

Runs under ``ray job submit --working-dir . -- python -m ray_jobs.audit ...`` (it joins the
job's cluster) and on its own (it starts a local Ray when no cluster address is given). It only
parses, validates and calls :func:`audit.pipeline.run_audit`.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys

from audit.config import ConfigError, load_config


class RayUnreachable(Exception):
    """No Ray cluster answers at the address given (one line, for the CLI)."""


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

    A local instance is started without the dashboard: progress is read from the run manifest.

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
        ray.init(include_dashboard=False, logging_level=logging.WARNING)
    import ray.data  # configures Ray Data's loggers on import; quiet them afterwards

    logging.getLogger("ray.data").setLevel(logging.WARNING)


def format_summary(result_manifest: dict, url: str) -> str:
    """The few lines printed at the end of a run: where, how many, and the error rates."""
    tables = result_manifest.get("tables", {})
    pred = result_manifest.get("stages", {}).get("predict", {})
    lines = [
        f"run {result_manifest['run_id']}: {result_manifest['state']} -> {url}",
        f"  model {result_manifest['model']['name']} ({result_manifest['model']['weights']})"
        + (
            f", {result_manifest['model']['transform_text']}"
            if result_manifest["model"].get("transform_text")
            else ""
        ),
        f"  inputs {result_manifest['data']['inputs']}: predictions "
        f"{tables.get('predictions', {}).get('rows', 0)}, errors {tables.get('errors', {}).get('rows', 0)}",
        f"  predict: {pred.get('seconds', 0):.1f} s, {pred.get('images_per_second') or 0:.1f} images/s",
        f"  tables: adversarial {tables.get('adversarial', {}).get('rows', 0)} rows, "
        f"explanations {tables.get('explanations', {}).get('rows', 0)} rows, "
        f"selections {tables.get('selections', {}).get('rows', 0)} rows",
    ]
    lines += format_metrics(result_manifest.get("metrics", {}))
    return "\n".join(lines)


def format_metrics(metrics: dict[str, float]) -> list[str]:
    """Overall metrics as lines: error rates and accuracies in %, the step histogram on one line."""
    lines, hist = [], []
    for name, value in metrics.items():
        if name.startswith("steps_to_flip_"):
            hist.append(f"{name.removeprefix('steps_to_flip_')}: {100 * value:.1f}%")
        elif name.endswith(("_error", "_accuracy")):
            lines.append(f"  {name}: {100 * value:.2f} %")
        else:
            lines.append(f"  {name}: {value:.4f}")
    if hist:
        lines.append("  steps_to_flip: " + ", ".join(hist))
    return lines


class Stopped(Exception):
    """The job was asked to stop (SIGTERM)."""


def _stopped(signum: int, frame: object) -> None:
    raise Stopped("the job was stopped (SIGTERM); rerun the same run id to resume")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ray_jobs.audit", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--config", help="YAML config file (default: the embedded demo)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override one config field, e.g. --set data.limit=100 (repeatable)",
    )
    parser.add_argument(
        "--address", help="Ray cluster address (default: $RAY_ADDRESS or a local Ray)"
    )
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from audit.pipeline import run_audit

    start_ray(args.address)
    # `audit-cli stop` / `ray job stop` send SIGTERM: turn it into an exception so the run
    # records itself as failed ("stopped") in its manifest instead of staying "running".
    signal.signal(signal.SIGTERM, _stopped)
    try:
        result = run_audit(cfg)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_summary(result.manifest, result.url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
