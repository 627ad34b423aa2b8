"""What ``audit-cli status`` and ``list`` show of a job and of a run's manifest: the JSON-ready
fields, per-stage progress with rates and time left, and the one line per stage."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from audit.jobs.packaging import META_CONFIG, META_RUN_ID, META_RUN_URL

if TYPE_CHECKING:
    from ray.job_submission import JobDetails


def job_info(job: JobDetails) -> dict[str, Any]:
    """The JSON-ready fields of a job that ``status``/``list`` show (no runtime env: it can
    carry environment variables)."""
    meta = job.metadata or {}
    return {
        "submission_id": job.submission_id,
        "job_id": job.job_id,
        "status": str(job.status),
        "message": job.message,
        "entrypoint": job.entrypoint,
        "start_time": job.start_time,
        "end_time": job.end_time,
        "run_id": meta.get(META_RUN_ID),
        "run_url": meta.get(META_RUN_URL),
        "config": meta.get(META_CONFIG),
    }


def stage_progress(manifest: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per-stage progress from a manifest, with rates and time left filled in when the
    manifest does not carry them (older manifests)."""
    out: dict[str, dict[str, Any]] = {}
    for name, st in (manifest.get("stages") or {}).items():
        st = dict(st)
        done, total = st.get("done"), st.get("total")
        ips = st.get("images_per_second")
        running = st.get("eta_seconds") is None and st.get("state") == "running"
        if running and isinstance(done, int) and isinstance(total, int) and ips:
            st["eta_seconds"] = round(max(total - done, 0) / float(ips), 1)
        out[name] = st
    return out


def run_summary(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """What ``status --json`` shows of a manifest: state, progress, rows, errors, metrics."""
    tables = manifest.get("tables") or {}
    return {
        "run_id": manifest.get("run_id"),
        "state": manifest.get("state"),
        "updated": manifest.get("updated"),
        "error": manifest.get("error"),
        "inputs": (manifest.get("data") or {}).get("inputs"),
        "stages": stage_progress(manifest),
        "rows": {name: t.get("rows", 0) for name, t in tables.items()},
        "errors": (tables.get("errors") or {}).get("rows"),
        "metrics": manifest.get("metrics") or {},
    }


def _seconds(s: float) -> str:
    s = float(s)
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def stage_line(name: str, st: Mapping[str, Any]) -> str:
    """One line per stage: ``predict: running  120/300 images, shards 1/3, 12.3 images/s,
    10 s, about 15 s left``."""
    parts = []
    unit = "classes" if name == "criticism" else "images"
    total = st.get("total", st.get("classes"))
    if total is not None:
        parts.append(f"{st.get('done', 0)}/{total} {unit}")
    if st.get("shards_total") is not None:
        parts.append(f"shards {st.get('shards_done', 0)}/{st['shards_total']}")
    if st.get("records") is not None:
        parts.append(f"{st['records']} records, {st.get('errors', 0)} errors")
    if st.get("images_per_second"):
        parts.append(f"{float(st['images_per_second']):.1f} images/s")
    if st.get("seconds") is not None:
        parts.append(_seconds(st["seconds"]))
    if st.get("eta_seconds") is not None and st.get("state") == "running":
        parts.append(f"about {_seconds(st['eta_seconds'])} left")
    return f"  stage {name}: {st.get('state')}" + ("  " + ", ".join(parts) if parts else "")
