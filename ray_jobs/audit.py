"""Entry point of the audit job: ``python -m ray_jobs.audit --config FILE [--set k=v ...]``.

Runs under ``ray job submit --working-dir . -- python -m ray_jobs.audit ...`` (it joins the
job's cluster) and on its own (it starts a local Ray when no cluster address is given). It only
parses, validates and calls :func:`audit.run.run_audit`.
"""

from __future__ import annotations

import argparse
import sys

from audit.config import ConfigError, load_config
from audit.runtime import start_ray
from audit.summary import format_summary


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
    from audit.run import check_output, check_weights

    try:
        check_output(cfg)  # a finished run id or a busy run: before Ray starts
        check_weights(cfg)  # and weights missing from this node's cache
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    start_ray(args.address)
    from audit.run import run_audit  # the pipeline: seconds of imports, after the checks
    from audit.run.interrupts import signal_name, stop_on_signals
    from audit.run.quiet import drop_known_lines

    # `audit-cli stop` / `ray job stop` send SIGTERM: the run stops and records itself as
    # interrupted in its manifest instead of staying "running" (audit.run.interrupts).
    try:
        with stop_on_signals(), drop_known_lines():
            result = run_audit(cfg)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(
            f"{signal_name(exc)}: the run stopped, recorded as interrupted; "
            "rerun the same run id to resume",
            file=sys.stderr,
        )
        return 130
    print(format_summary(result.manifest, result.url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
