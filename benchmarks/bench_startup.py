"""Start-up of a fresh worker process: what importing the model actor's module costs.

Every model actor is a new Python process, and so is every decode or criticism worker Ray starts;
each imports ``audit.model_actor`` (the decode function and the stages) before its first batch.
This script times, in fresh interpreters, alternating, ``--repeats`` times:

- ``actor``: ``import audit.model_actor`` as the code is now;
- ``eager``: the same plus what it imported eagerly before 2026-12-03 (torchvision, which pulls
  in ``torch._dynamo``, and scikit-learn's linear models), now imported only where used;
- ``torch``: ``import torch`` alone, the floor.

Prints each median and the ratio eager / actor.

    .venv/bin/python benchmarks/bench_startup.py --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "actor": "import audit.model_actor",
    "eager": "import audit.model_actor, torchvision, sklearn.linear_model",
    "torch": "import torch",
}


def timed(code: str) -> float:
    """Wall seconds of a fresh interpreter that runs ``code`` and exits."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    timed(CASES["eager"])  # warm the page cache: every case reads the same files afterwards
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(args.repeats):
        for name, code in CASES.items():
            times[name].append(timed(code))
    med = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        runs = ", ".join(f"{v:.2f}" for v in values)
        print(f"{name:6s} median {med[name]:.2f} s  ({runs})")
    print(f"eager / actor: {med['eager'] / med['actor']:.2f}")


if __name__ == "__main__":
    main()
