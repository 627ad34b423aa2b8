"""ImageNet-scale load test: the full pass on a synthetic ImageNet-layout set, memory watched.

Runs ``audit.run.run_audit`` (prediction and IFGSM on every image, LIME on ``explain.which
= per_class`` with ``--explain-per-class`` images of each class, criticism off) on the first
``--images`` images of the synthetic set of :mod:`make_synthetic_imagenet` (generated once into
the cache), in a fresh local Ray instance, and reports:

- images per second of the whole ``run_audit`` call and of the Ray Data pass;
- peak memory (RSS, and RSS minus shared pages, which leaves out the object store's shared
  memory) of every process of this Ray instance, sampled every ``--sample-s`` seconds: the
  driver, the model actor, the decode workers, the raylet, the GCS;
- object-store spilling (``spilled_bytes_total`` of the raylets' store stats) after the run;
- the model actor's busy fraction, parsed from Ray Data's ``Dataset.stats()`` text.

With several ``--images`` values each size runs in its own subprocess (a fresh driver and Ray
instance), and a last table compares peak memory across sizes: flat memory means the ratio of
peaks stays near 1 while the input grows.

    .venv/bin/python benchmarks/load_test.py --images 2000 --images 10000
    .venv/bin/python benchmarks/load_test.py --images 500 --model resnet18 --classes imagenet
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_synthetic_imagenet import default_root, describe, ensure_synthetic_imagenet

GROUPS = ("driver", "model actor", "decode workers", "raylet", "gcs_server", "other Ray")


# --------------------------------------------------------------------------- memory


@dataclass
class ProcPeak:
    label: str
    rss: int = 0
    private: int = 0


@dataclass
class MemorySampler:
    """Samples RSS of this process and all its descendants (the local Ray instance it started:
    GCS, raylet and the workers the raylet forks) in a background thread."""

    interval: float = 0.5
    peaks: dict[int, ProcPeak] = field(default_factory=dict)
    timeline: list[tuple[float, int, dict[str, int]]] = field(default_factory=list)
    progress: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @staticmethod
    def _label(proc: Any, is_driver: bool) -> str:
        if is_driver:
            return "driver"
        cmd = proc.cmdline()
        first = cmd[0] if cmd else proc.name()
        if first.startswith("ray::"):
            return first.split(" ")[0]
        return os.path.basename(first) if "python" not in first else " ".join(cmd[1:3])

    @staticmethod
    def group(label: str) -> str:
        if label == "driver":
            return "driver"
        if "ModelActor" in label:
            return "model actor"
        if "decode_batch" in label or label == "ray::IDLE" or "FromItems" in label:
            return "decode workers"
        if "raylet" in label:
            return "raylet"
        if "gcs_server" in label:
            return "gcs_server"
        return "other Ray"

    def sample(self) -> None:
        import psutil

        me = psutil.Process(os.getpid())
        now: dict[str, int] = {}
        for proc in [me, *me.children(recursive=True)]:
            try:
                mem = proc.memory_info()
                label = self._label(proc, proc.pid == me.pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            peak = self.peaks.setdefault(proc.pid, ProcPeak(label))
            if peak.label == "ray::IDLE" or (
                label.startswith("ray::") and label != "ray::IDLE"
            ):  # keep the most telling name a worker had
                peak.label = label
            peak.rss = max(peak.rss, mem.rss)
            peak.private = max(peak.private, mem.rss - getattr(mem, "shared", 0))
            g = self.group(peak.label)
            now[g] = now.get(g, 0) + mem.rss - getattr(mem, "shared", 0)
        self.timeline.append((time.time(), self.progress, now))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def by_group(self) -> dict[str, dict[str, float]]:
        """Per group: the largest single-process peak (RSS and private) and the process count."""
        out: dict[str, dict[str, float]] = {}
        for peak in self.peaks.values():
            g = self.group(peak.label)
            row = out.setdefault(g, {"processes": 0, "peak_rss_mb": 0.0, "peak_private_mb": 0.0})
            row["processes"] += 1
            row["peak_rss_mb"] = max(row["peak_rss_mb"], peak.rss / 2**20)
            row["peak_private_mb"] = max(row["peak_private_mb"], peak.private / 2**20)
        return out

    def halves(self, total: int) -> dict[str, tuple[float, float]]:
        """Per group: the largest private memory (MB, summed over its processes) while the first
        half of the images was processed and while the second half was."""
        out: dict[str, tuple[float, float]] = {}
        for g in GROUPS:
            first = [s.get(g, 0) for _, done, s in self.timeline if 0 < done <= total // 2]
            second = [s.get(g, 0) for _, done, s in self.timeline if done > total // 2]
            if first and second:
                out[g] = (max(first) / 2**20, max(second) / 2**20)
        return out


# --------------------------------------------------------------------------- Ray Data stats

_OP = re.compile(
    r"^Operator \d+ (?P<name>.+?): (?P<tasks>\d+) tasks executed, (?P<blocks>\d+) "
    r"blocks produced in (?P<span>[\d.]+)s",
    re.M,
)
_WALL = re.compile(r"\* Remote wall time: .*?, (?P<total>[\d.]+)(?P<unit>us|ms|s) total")
_CPU = re.compile(r"\* Remote cpu time: .*?, (?P<total>[\d.]+)(?P<unit>us|ms|s) total")
_ROWS = re.compile(r"\* Output num rows per block: .*?, (?P<total>\d+) total")
_DS_THROUGHPUT = re.compile(
    r"Dataset throughput:\s*\n\s*\* Ray Data throughput: (?P<rate>[\d.e+-]+) rows/s"
)
_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def parse_operator_stats(stats: str) -> dict[str, dict[str, float]]:
    """Per operator of a ``Dataset.stats()`` text (ray 2.60): ``span_s`` (first task start to
    last task end), ``wall_s`` and ``cpu_s`` (sums over its tasks), ``rows``."""
    out: dict[str, dict[str, float]] = {}
    matches = list(_OP.finditer(stats))
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(stats)
        body = stats[m.end() : end]
        row: dict[str, float] = {"span_s": float(m["span"]), "tasks": float(m["tasks"])}
        for key, rx in (("wall_s", _WALL), ("cpu_s", _CPU)):
            found = rx.search(body)
            if found:
                row[key] = float(found["total"]) * _UNIT[found["unit"]]
        rows = _ROWS.search(body)
        if rows:
            row["rows"] = float(rows["total"])
        out[m["name"]] = row
    return out


def busy_fraction(stats: str, num_actors: int, call_seconds: float) -> dict[str, float]:
    """The model actor's busy time (sum of its tasks' wall time) over ``num_actors`` times:
    its own span (first to last task), the dataset's span (first to last block of any
    operator: rows / the dataset throughput Ray Data prints), and the whole ``run_audit`` call."""
    ops = parse_operator_stats(stats)
    actor = next((v for k, v in ops.items() if "ModelActor" in k), None)
    if actor is None or "wall_s" not in actor:
        raise ValueError("no MapBatches(ModelActor) operator with a remote wall time in the stats")
    out = {
        "actor_busy_s": actor["wall_s"],
        "actor_cpu_s": actor.get("cpu_s", float("nan")),
        "actor_span_s": actor["span_s"],
        "busy_of_actor_span": actor["wall_s"] / (num_actors * actor["span_s"]),
        "busy_of_call": actor["wall_s"] / (num_actors * call_seconds),
    }
    ds = _DS_THROUGHPUT.search(stats)
    if ds and float(ds["rate"]) > 0 and "rows" in actor:
        span = actor["rows"] / float(ds["rate"])
        out["dataset_span_s"] = span
        out["busy_of_dataset_span"] = actor["wall_s"] / (num_actors * span)
    return out


def spilled_bytes() -> tuple[int, int]:
    """(spilled, restored) bytes of the connected Ray instance's object stores, since start."""
    import ray
    from ray._private.internal_api import get_memory_info_reply, get_state_from_address

    reply = get_memory_info_reply(get_state_from_address(ray.get_runtime_context().gcs_address))
    return int(reply.store_stats.spilled_bytes_total), int(reply.store_stats.restored_bytes_total)


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


# --------------------------------------------------------------------------- one run


def run_once(args: argparse.Namespace, n_images: int) -> dict[str, Any]:
    import ray

    from audit.config import build_config
    from audit.run import run_audit

    root = args.root or default_root(args.classes)
    ensure_synthetic_imagenet(n_images, args.classes, root)
    data_info = describe(root, n_images, args.classes) if args.describe else {}
    out_root = args.output or tempfile.mkdtemp(prefix="audit-loadtest-")
    overrides = [
        f"data.source={root}",
        "data.layout=imagefolder",
        f"data.limit={n_images}",
        f"model.name={args.model}",
        f"model.weights={'default' if args.model == 'demo_digits' else 'random'}",
        "attack.enabled=true",
        f"attack.max_steps={args.max_steps}",
        "explain.enabled=true",
        "explain.which=per_class",
        f"explain.per_class={args.explain_per_class}",
        f"explain.n_samples={args.lime_samples}",
        "criticism.enabled=false",
        "predict.embeddings=true",
        f"output.root={out_root}",
        f"output.run_id=load-{n_images}",
        "output.overwrite=true",
        *args.set,
    ]
    cfg = build_config({}, overrides)
    sampler = MemorySampler(interval=args.sample_s)
    load_before = load_average()
    t0 = time.time()
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    import ray.data

    logging.getLogger("ray.data").setLevel(logging.WARNING)
    store_gb = ray.cluster_resources().get("object_store_memory", 0) / 2**30
    sampler.start()
    first: list[tuple[float, int]] = []  # (time, images done) when the first results arrived
    last: list[float] = [0.0]

    def progress(done: int, total: int) -> None:
        sampler.progress = done
        if done and not first:
            first.append((time.time(), done))
        last[0] = time.time()

    try:
        t_call = time.time()
        result = run_audit(cfg, progress=progress)
        call_s = time.time() - t_call
        spilled, restored = spilled_bytes()
    finally:
        sampler.sample()
        sampler.stop()
        ray.shutdown()
    manifest = result.manifest
    num_actors = int(manifest["execution"]["num_actors"])
    rows = {k: v["rows"] for k, v in manifest["tables"].items()}
    out = {
        "images": n_images,
        "model": args.model,
        "classes": args.classes,
        "lime": f"per_class {args.explain_per_class}, n_samples {args.lime_samples}",
        "max_steps": args.max_steps,
        "overrides": args.set,
        "ray_init_s": t_call - t0,
        "run_audit_s": call_s,
        "images_per_s_call": n_images / call_s,
        "first_result_s": (first[0][0] - t_call) if first else None,
        "steady_images_per_s": (
            (n_images - first[0][1]) / (last[0] - first[0][0])
            if first and last[0] > first[0][0]
            else None
        ),
        "predict_stage": manifest["stages"]["predict"],
        "tables": rows,
        "spilled_bytes": spilled,
        "restored_bytes": restored,
        "object_store_gb": store_gb,
        "memory": sampler.by_group(),
        "memory_halves_mb": sampler.halves(n_images),
        "busy": busy_fraction(result.data_stats, num_actors, call_s),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "data": data_info,
        "output": result.url,
    }
    out["operators"] = parse_operator_stats(result.data_stats)
    if args.print_stats:
        print(result.data_stats)
    accounted = rows.get("predictions", 0) + rows.get("errors", 0)
    if accounted != n_images:
        raise SystemExit(f"{n_images} images but {accounted} predictions + errors rows")
    return out


def report(r: dict[str, Any]) -> str:
    b = r["busy"]
    lines = [
        f"## {r['images']} images, {r['model']} ({r['classes']} classes), IFGSM M={r['max_steps']}, "
        f"LIME {r['lime']}",
        f"- run_audit: {r['run_audit_s']:.1f} s = {r['images_per_s_call']:.2f} images/s "
        f"(ray.init {r['ray_init_s']:.1f} s before it; first results after "
        f"{r['first_result_s']:.1f} s; after them {r['steady_images_per_s'] or 0:.2f} images/s)",
        f"- tables: {r['tables']}",
        f"- object store: {r['object_store_gb']:.1f} GiB; spilled: {r['spilled_bytes']} bytes, "
        f"restored: {r['restored_bytes']} bytes",
        f"- model actor busy: {b['actor_busy_s']:.1f} s of wall time ({b['actor_cpu_s']:.1f} s CPU)"
        f"; busy fraction {b['busy_of_actor_span']:.3f} of its own span "
        f"({b['actor_span_s']:.1f} s), "
        + (
            f"{b['busy_of_dataset_span']:.3f} of the dataset's span ({b['dataset_span_s']:.1f} s), "
            if "busy_of_dataset_span" in b
            else ""
        )
        + f"{b['busy_of_call']:.3f} of the whole run_audit call",
        f"- load average (1, 5, 15 min): before {r['load_average_before']}, "
        f"after {r['load_average_after']}",
        "",
        "| process group | processes | peak RSS MB (one process) | peak RSS - shared MB |"
        " private MB, 1st half -> 2nd half |",
        "|---|---|---|---|---|",
    ]
    halves = r["memory_halves_mb"]
    for g in GROUPS:
        m = r["memory"].get(g)
        if not m:
            continue
        h = halves.get(g)
        lines.append(
            f"| {g} | {int(m['processes'])} | {m['peak_rss_mb']:.0f} | {m['peak_private_mb']:.0f} "
            f"| {f'{h[0]:.0f} -> {h[1]:.0f}' if h else '-'} |"
        )
    return "\n".join(lines) + "\n"


def compare(results: list[dict[str, Any]]) -> str:
    small, big = results[0], results[-1]
    lines = [
        f"## Memory, {small['images']} vs {big['images']} images (peak RSS - shared, MB)",
        "",
        f"| process group | {small['images']} images | {big['images']} images | ratio |",
        "|---|---|---|---|",
    ]
    worst = 0.0
    for g in GROUPS:
        a, b = small["memory"].get(g), big["memory"].get(g)
        if not a or not b:
            continue
        ratio = b["peak_private_mb"] / max(a["peak_private_mb"], 1.0)
        worst = max(worst, ratio)
        lines.append(
            f"| {g} | {a['peak_private_mb']:.0f} | {b['peak_private_mb']:.0f} | {ratio:.2f} |"
        )
    lines += [
        "",
        f"Input grew {big['images'] / small['images']:.1f}x; the largest peak grew {worst:.2f}x. "
        f"images/s: {small['images_per_s_call']:.2f} -> {big['images_per_s_call']:.2f}.",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, action="append", help="repeatable; default 2000")
    parser.add_argument("--model", default="demo_digits")
    parser.add_argument("--classes", choices=["imagenet", "digits"])
    parser.add_argument("--root", type=Path, help="synthetic set folder (default: the cache)")
    parser.add_argument("--output", help="output root (default: a fresh temporary folder)")
    parser.add_argument("--max-steps", type=int, default=10)
    parser.add_argument("--explain-per-class", type=int, default=1)
    parser.add_argument("--lime-samples", type=int, default=1000)
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--sample-s", type=float, default=0.5)
    parser.add_argument("--set", action="append", default=[], help="extra config override")
    parser.add_argument("--describe", action="store_true", help="report file sizes of the set")
    parser.add_argument("--print-stats", action="store_true", help="print Ray Data's stats")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    args.classes = args.classes or ("digits" if args.model == "demo_digits" else "imagenet")
    sizes = args.images or [2000]

    if len(sizes) == 1:
        result = run_once(args, sizes[0])
        print(report(result))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2, default=str))
        return 0

    results = []
    ensure_synthetic_imagenet(max(sizes), args.classes, args.root)
    passthrough = [a for a in sys.argv[1:]]
    for n in sizes:  # each size in a fresh process: a fresh driver heap and Ray instance
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            path = f.name
        cmd = [sys.executable, __file__, *_without_images(passthrough), "--images", str(n)]
        cmd += ["--json", path]
        subprocess.run(cmd, check=True)
        results.append(json.loads(Path(path).read_text()))
        os.unlink(path)
    print(compare(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


def _without_images(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--images", "--json"):
            skip = True
            continue
        if a.startswith(("--images=", "--json=")):
            continue
        out.append(a)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
