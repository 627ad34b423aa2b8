"""Entry point of the audit job: ``python -m ray_jobs.audit --config FILE [--set k=v ...]``.

Runs under ``ray job submit --working-dir . -- python -m ray_jobs.audit ...`` (it joins the
job's cluster) and on its own (it starts a local Ray when no cluster address is given). It only
parses, validates and calls :func:`audit.run.run_audit`.
"""

from __future__ import annotations

import argparse
import signal
import sys

from audit.config import ConfigError, load_config
from audit.runtime import start_ray
from audit.summary import format_summary


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
    from audit.run import check_output

    try:
        check_output(cfg)  # a finished run id or a busy run: before Ray starts
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    start_ray(args.address)
    from audit.run import run_audit  # the pipeline: seconds of imports, after the checks

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
