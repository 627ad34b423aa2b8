"""What ``audit-cli status`` and ``list`` show of a job and of a run's manifest: the JSON-ready
fields, per-stage progress with rates and time left, and the one line per stage."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from audit.jobs.packaging import META_CONFIG, META_RUN_ID, META_RUN_URL

if TYPE_CHECKING:
    from ray.job_submission import JobDetails

    from audit.run.manifest_types import Manifest


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


def stage_progress(manifest: Manifest | Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per-stage progress from a manifest (typed, or as JSON gives it), with rates and time
    left filled in when the manifest does not carry them (older manifests)."""
    from audit.run.manifest_types import Manifest

    out: dict[str, dict[str, Any]] = {}
    for name, stage in Manifest.of(manifest).stages.items():
        st = stage.to_json()
        done, total, ips = stage.done, stage.total, stage.images_per_second
        running = st.get("eta_seconds") is None and stage.state == "running"
        if running and done is not None and total is not None and ips:
            st["eta_seconds"] = round(max(total - done, 0) / ips, 1)
        out[name] = st
    return out


def run_summary(manifest: Manifest | Mapping[str, Any]) -> dict[str, Any]:
    """What ``status --json`` shows of a manifest: state, progress, rows, errors, metrics."""
    from audit.run.manifest_types import Manifest

    m = Manifest.of(manifest)
    return {
        "run_id": m.run_id,
        "state": m.state,
        "updated": m.updated,
        "error": m.error,
        "inputs": m.inputs,
        "stages": stage_progress(m),
        "rows": {name: t.rows for name, t in m.tables.items()},
        "errors": m.tables["errors"].rows if "errors" in m.tables else None,
        "metrics": dict(m.metrics or {}),
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
    elif st.get("done") is not None:  # a stage that chooses its images as the run goes
        parts.append(f"{st['done']} {unit}")
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
