"""MMD-critic prototypes: our greedy and sieve against the PyPI package ``mmd-critic``.

For each ``n`` in ``--sizes`` and ``d`` in ``--dims`` the data are a seeded mixture of 10
Gaussians in float32 (``(n, d)``), ``gamma`` comes from :func:`median_gamma` (computed once in
the parent and passed on), and each method
picks ``--m`` prototypes with the same RBF kernel (the package's ``sigma`` is
``sqrt(1 / (2 gamma))``). Our sieve estimates the mean kernel from ``--mean-sample`` rows
(its default, 2048). Printed per method: seconds, peak memory and the EXACT ``J_b`` of the
result (:func:`prototype_objective`, float64 with exact means over all ``n`` rows, computed
after the timed call and after the peak-memory reading, for all three), then the ratios package time / sieve
time, package time / greedy time and sieve ``J_b`` / greedy ``J_b``.

Each call runs in its own fresh subprocess. It generates the data, records ``ru_maxrss``
(peak resident set size) and then runs the method once; "peak MB" is the growth of the peak
RSS during the call, so it counts BLAS and numexpr buffers that tracemalloc would miss. Time is
wall-clock of that one call, the package's kernel matrix construction included.

``mmd-critic`` (0.1.2: ``MMDCritic(X, RBFKernel(sigma), labels=...)`` builds the full ``n x n``
kernel in ``__init__``, then ``select_prototypes(m)`` runs Kim's greedy on it) is a
benchmark-only dependency; it requires only numpy and numexpr:

    .venv/bin/pip install mmd-critic
    .venv/bin/python benchmarks/bench_mmd.py
    .venv/bin/python benchmarks/bench_mmd.py --sizes 1000 --dims 64

A package row whose estimated kernel memory (two ``n x n`` float32 arrays: the Gram product
and the kernel) exceeds ``--max-kernel-gb`` is skipped with the reason printed.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit.criticism.mmd import (
    greedy_prototypes,
    median_gamma,
    prototype_objective,
    sieve_prototypes,
)

METHODS = ("package", "greedy", "sieve")


def mixture(n: int, d: int, seed: int = 0, clusters: int = 10) -> np.ndarray:
    """``(n, d)`` float32 from a seeded Gaussian mixture, generated in float32 chunks."""
    rng = np.random.default_rng(seed)
    centres = (4.0 * rng.standard_normal((clusters, d))).astype(np.float32)
    labels = rng.integers(0, clusters, size=n)
    x = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, 1024):
        stop = min(start + 1024, n)
        x[start:stop] = rng.standard_normal((stop - start, d), dtype=np.float32)
        x[start:stop] += centres[labels[start:stop]]
    return x


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def worker(method: str, n: int, d: int, m: int, gamma: float) -> dict[str, float]:
    """Run one method once on fresh data; the caller is a separate process."""
    x = mixture(n, d)
    before = peak_mb()
    t0 = time.perf_counter()
    if method == "package":
        from mmd_critic import MMDCritic
        from mmd_critic.kernels import RBFKernel

        critic = MMDCritic(x, RBFKernel(sigma=math.sqrt(1.0 / (2.0 * gamma))), labels=np.arange(n))
        _, idx = critic.select_prototypes(m)
        chosen = [int(i) for i in idx]
    elif method == "greedy":
        chosen = greedy_prototypes(x, m, gamma)
    else:
        chosen = sieve_prototypes(x, m, gamma)  # mean_sample=2048 by default
    seconds = time.perf_counter() - t0
    grown = peak_mb() - before
    # Exact J_b (exact means, float64), outside the timed and memory-measured region.
    return {
        "seconds": seconds,
        "peak_mb": grown,
        "objective": prototype_objective(x, chosen, gamma),
        "count": len(chosen),
    }


def run_one(method: str, n: int, d: int, m: int, gamma: float) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--worker", method, "--sizes", str(n), "--dims", str(d)]
    cmd += ["--m", str(m), "--gamma", repr(gamma)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--dims", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--m", type=int, default=6)
    parser.add_argument("--max-kernel-gb", type=float, default=12.0)
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--gamma", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.sizes[0], args.dims[0], args.m, args.gamma)))
        return

    print(f"m = {args.m}; seconds and peak-RSS growth of one call, each in a fresh process\n")
    print("| n | d | method | seconds | peak MB | J_b | picked |")
    print("|---|---|---|---|---|---|---|")
    ratios = []
    for n in args.sizes:
        for d in args.dims:
            res: dict[str, dict[str, float] | None] = {}
            gamma = median_gamma(mixture(n, d))  # outside the measured processes
            for method in METHODS:
                kernel_gb = 2 * n * n * 4 / 1e9
                if method == "package" and kernel_gb > args.max_kernel_gb:
                    res[method] = None
                    print(
                        f"| {n} | {d} | package | skipped: kernel needs ~{kernel_gb:.1f} GB "
                        f"> --max-kernel-gb {args.max_kernel_gb} | | | |"
                    )
                    continue
                r = run_one(method, n, d, args.m, gamma)
                res[method] = r
                print(
                    f"| {n} | {d} | {method} | {r['seconds']:.2f} | {r['peak_mb']:.0f} "
                    f"| {r['objective']:.6f} | {int(r['count'])} |",
                    flush=True,
                )
            ratios.append((n, d, res))
    print(
        "\n| n | d | package s / sieve s | package s / greedy s | sieve J_b / greedy J_b "
        "| package J_b / greedy J_b |"
    )
    print("|---|---|---|---|---|---|")
    for n, d, res in ratios:
        g, s, p = res["greedy"], res["sieve"], res["package"]
        assert g is not None and s is not None
        pt_s = f"{p['seconds'] / s['seconds']:.2f}" if p else "n/a"
        pt_g = f"{p['seconds'] / g['seconds']:.2f}" if p else "n/a"
        pj = f"{p['objective'] / g['objective']:.4f}" if p else "n/a"
        print(f"| {n} | {d} | {pt_s} | {pt_g} | {s['objective'] / g['objective']:.4f} | {pj} |")


if __name__ == "__main__":
    main()
