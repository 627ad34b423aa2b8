"""``audit-cli submit/status/logs/stop/list`` against a real ``ray start --head`` cluster with
token authentication (tests/cluster_fixtures.py), plus the pure helpers of audit/jobs/."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from cluster_fixtures import LocalCluster, jobs_cli
from conftest import free_port
from typer.testing import CliRunner

from audit.cli import app
from audit.jobs.client import DEFAULT_ADDRESS, call, connect, resolve_address
from audit.jobs.errors import JobsError
from audit.jobs.packaging import build_entrypoint, job_spec, submission_id
from audit.jobs.presentation import stage_progress
from audit.jobs.state import error_line, job_of_run, manifest_predates, merged_state, same_run_url
from audit.jobs.tokens import find_token
from audit.store import read_manifest, read_table

runner = CliRunner()
REPO = Path(__file__).parents[1]
CLI = [sys.executable, "-c", "from audit.cli import app; app()"]


# --- pure helpers ---------------------------------------------------------------------------


def test_token_precedence_follows_ray(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text("from-home\n")
    path = tmp_path / "tok"
    path.write_text("from-path\n")
    assert find_token({"HOME": str(home)}).value == "from-home"
    assert find_token({"HOME": str(home), "RAY_AUTH_TOKEN_PATH": str(path)}).value == "from-path"
    both = {"HOME": str(home), "RAY_AUTH_TOKEN_PATH": str(path), "RAY_AUTH_TOKEN": "from-env"}
    assert find_token(both).value == "from-env"
    assert find_token({"HOME": str(tmp_path / "nobody")}).value is None
    with pytest.raises(JobsError, match="cannot be read"):
        find_token({"HOME": str(home), "RAY_AUTH_TOKEN_PATH": str(tmp_path / "missing")})
    assert "from-env" not in repr(find_token(both))  # the token never shows in a repr


def test_address_resolution() -> None:
    assert resolve_address(None, {}) == DEFAULT_ADDRESS
    assert resolve_address("10.0.0.1:8265", {}) == "http://10.0.0.1:8265"
    env = {"RAY_API_SERVER_ADDRESS": "http://a:1", "RAY_ADDRESS": "http://b:2"}
    assert resolve_address(None, env) == "http://a:1"
    assert resolve_address("http://c:3/", env) == "http://c:3"
    assert resolve_address(None, {"RAY_ADDRESS": "http://b:2"}) == "http://b:2"
    assert resolve_address(None, {"RAY_ADDRESS": "127.0.0.1:6379"}) == DEFAULT_ADDRESS  # GCS


@pytest.mark.parametrize(
    ("job", "manifest", "want"),
    [
        (None, "running", ("running", False)),
        (None, None, ("unknown", False)),
        ("PENDING", None, ("pending", False)),
        ("RUNNING", None, ("starting", False)),
        ("RUNNING", "running", ("running", False)),
        ("SUCCEEDED", "succeeded", ("succeeded", False)),
        ("FAILED", "running", ("failed", True)),
        ("STOPPED", "running", ("stopped", True)),
        ("FAILED", "failed", ("failed", False)),
        ("FAILED", None, ("failed", False)),
    ],
)
def test_job_state_wins_over_a_stale_manifest(
    job: str | None, manifest: str | None, want: tuple[str, bool]
) -> None:
    assert merged_state(job, manifest) == want


def test_stage_progress_fills_in_time_left() -> None:
    m = {
        "stages": {
            "predict": {"state": "running", "done": 30, "total": 120, "images_per_second": 4.5},
            "criticism": {"state": "pending"},
        }
    }
    got = stage_progress(m)
    assert got["predict"]["eta_seconds"] == 20.0  # (120 - 30) / 4.5
    assert "eta_seconds" not in got["criticism"]
    m["stages"]["predict"]["eta_seconds"] = 7
    assert stage_progress(m)["predict"]["eta_seconds"] == 7  # the manifest's own estimate wins


def test_error_line_picks_the_reason() -> None:
    logs = "starting\nsome noise\nerror: The data folder '/x' does not exist.\n"
    assert error_line(logs) == "The data folder '/x' does not exist."
    tb = "Traceback (most recent call last):\n  File x\nValueError: bad\n"
    assert error_line(tb) == "ValueError: bad"
    assert error_line("all fine\n") is None


def test_job_spec_ships_config_and_pins_the_run(tmp_path: Path) -> None:
    wd = tmp_path / "proj"
    (wd / "configs").mkdir(parents=True)
    (wd / "configs" / "a.yaml").write_text("data: {source: demo}\n")
    spec = job_spec(
        "configs/a.yaml", ["data.limit=5"], "r1", "./out", str(wd), num_gpus=1, cwd=str(wd)
    )
    assert spec.config == "configs/a.yaml"
    assert spec.run_url == f"{wd}/out/r1"
    assert spec.entrypoint == build_entrypoint(
        "configs/a.yaml", ["data.limit=5", f'output.root="{wd}/out"', 'output.run_id="r1"']
    )
    assert spec.metadata == {
        "audit_run_id": "r1",
        "audit_run_url": f"{wd}/out/r1",
        "audit_config": "configs/a.yaml",
    }
    assert ".venv/" in spec.excludes and ".git/" in spec.excludes
    s3 = job_spec(None, [], "r2", "s3://b/out", str(wd), cwd=str(wd))
    assert s3.run_url == "s3://b/out/r2" and "--config" not in s3.entrypoint
    outside = tmp_path / "b.yaml"
    outside.write_text("{}\n")
    with pytest.raises(JobsError, match="outside the working dir"):
        job_spec(str(outside), [], "r3", "out", str(wd), cwd=str(wd))
    with pytest.raises(JobsError, match="storage options may hold credentials"):
        job_spec(None, ['output.storage_options={"secret": "x"}'], "r4", "o", str(wd))
    assert submission_id("r1") == "audit-r1" and submission_id("r1", 3) == "audit-r1.3"


# --- a real cluster -------------------------------------------------------------------------


def test_manifest_of_an_earlier_attempt_and_the_job_of_a_folder(tmp_path: Path) -> None:
    from ray.job_submission import JobDetails

    started = 1_700_000_000_500  # ms: 2023-11-14T22:13:20.5Z
    job = JobDetails(
        type="SUBMISSION",
        submission_id="audit-r1.2",
        status="RUNNING",
        entrypoint="python -m ray_jobs.audit",
        start_time=started,
        metadata={"audit_run_url": str(tmp_path / "out" / "r1")},
    )
    assert manifest_predates({"updated": "2023-11-14T22:13:19Z"}, job)
    # the same second, truncated, may be this job's own manifest: never called earlier
    assert not manifest_predates({"updated": "2023-11-14T22:13:20Z"}, job)
    assert not manifest_predates({"updated": "2023-11-14T22:20:00Z"}, job)
    assert not manifest_predates({}, job) and not manifest_predates({"updated": "x"}, job)
    assert not manifest_predates({"updated": "2023-11-14T22:13:19Z"}, None)

    assert same_run_url(f"file://{tmp_path}/out/r1/", str(tmp_path / "out" / "r1"))
    assert same_run_url("s3://b/audits/r1/", "s3://b/audits/r1")
    assert not same_run_url("s3://b/audits/r1", "s3://b/other/r1")
    assert job_of_run(job, f"file://{tmp_path}/out/r1") is job
    assert job_of_run(job, str(tmp_path / "elsewhere" / "r1")) is None  # a reused run id
    assert job_of_run(None, str(tmp_path)) is None


def test_job_spec_excludes_an_output_root_inside_the_working_dir(tmp_path: Path) -> None:
    spec = job_spec(None, [], "r1", "results", str(tmp_path), cwd=str(tmp_path))
    assert spec.run_url == f"{tmp_path}/results/r1" and "/results/" in spec.excludes
    outside = job_spec(None, [], "r1", str(tmp_path.parent / "o"), str(tmp_path))
    assert not any(e.strip("/") == "o" for e in outside.excludes)
    assert outside.excludes == job_spec(None, [], "r1", "s3://b/o", str(tmp_path)).excludes


class _Reply(http.server.BaseHTTPRequestHandler):
    """A web server that is not a Ray dashboard: a fixed status and body for every request."""

    status = 404
    body = b"not here"

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize(
    ("status", "body"), [(404, b"not here"), (502, b"bad gateway"), (200, b'{"foo": 1}')]
)
def test_a_server_that_is_not_a_dashboard_is_one_line(
    status: int, body: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_AUTH_TOKEN", "t")
    handler = type("Reply", (_Reply,), {"status": status, "body": body})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(JobsError, match="did not answer as a Ray dashboard") as info:
            connect(url)
        assert "\n" not in str(info.value)
        result = runner.invoke(app, ["list", "--address", url], env={"RAY_AUTH_TOKEN": "t"})
        assert result.exit_code == 1 and result.output.startswith("error: ")
        assert len(result.output.strip().splitlines()) == 1
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(JobsError):  # a dropped connection after connecting (requests' error)
        call(lambda: requests.get(url, timeout=10))


def test_run_and_submit_stop_on_a_bad_model_or_address_first(tmp_path: Path) -> None:
    # in a fresh process (no Ray started by other tests): nothing may be started or submitted
    port = free_port()
    env = {"RAY_ADDRESS": "", "RAY_API_SERVER_ADDRESS": "", "PATH": os.environ["PATH"]}
    bad = subprocess.run(
        [*CLI, "submit", "--set", "model.name=resnet9999", "--address", f"http://127.0.0.1:{port}"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 1 and "resnet9999" in bad.stdout + bad.stderr
    assert "dashboard" not in bad.stdout + bad.stderr
    t0 = time.monotonic()
    dead = subprocess.run(
        [*CLI, "run", "--address", f"127.0.0.1:{port}", "--no-progress"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )  # fmt: skip
    assert dead.returncode == 1, dead.stdout + dead.stderr
    lines = (dead.stdout + dead.stderr).strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith(
        f"error: no Ray cluster answers at 127.0.0.1:{port}"
    )
    assert time.monotonic() - t0 < 60


def status_json(jobs_cluster: LocalCluster, ref: str, *extra: str) -> dict[str, Any]:
    result = jobs_cli(jobs_cluster, "status", ref, "--json", *extra)
    assert result.exit_code == 0, result.output
    out: dict[str, Any] = json.loads(result.output)
    return out


def wait_for(cond: Any, timeout: float, what: str, poll: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_missing_or_wrong_token_is_one_clear_line(
    jobs_cluster: LocalCluster, tmp_path: Path
) -> None:
    # a fresh process with no token anywhere (HOME points at an empty folder)
    proc = subprocess.run(
        [*CLI, "list"],
        cwd=REPO,
        env=jobs_cluster.env(token=False, home=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: the Ray cluster at " + jobs_cluster.address)
    assert "requires an authentication token and none was sent" in lines[-1]
    assert "Traceback" not in proc.stderr
    wrong = jobs_cluster.env(token=False, home=str(tmp_path))
    wrong["RAY_AUTH_TOKEN"] = "0" * 64
    proc = subprocess.run(
        [*CLI, "status", "anything", "-o", str(tmp_path)],
        cwd=REPO,
        env=wrong,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "refused the authentication token from $RAY_AUTH_TOKEN" in proc.stderr
    assert "0" * 64 not in proc.stderr + proc.stdout and "Traceback" not in proc.stderr
    # the token from a file named by RAY_AUTH_TOKEN_PATH works
    (tmp_path / "tok").write_text(jobs_cluster.token + "\n")
    result = runner.invoke(
        app,
        ["list"],
        env={  # type: ignore[arg-type]
            "RAY_API_SERVER_ADDRESS": jobs_cluster.address,
            "RAY_AUTH_TOKEN": None,
            "RAY_AUTH_TOKEN_PATH": str(tmp_path / "tok"),
        },
    )
    assert result.exit_code == 0, result.output
    assert jobs_cluster.token not in result.output


@pytest.mark.slow  # a Ray job
def test_failed_job_shows_failed_and_its_error(jobs_cluster: LocalCluster, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder"
    result = jobs_cli(
        jobs_cluster,
        "submit",
        "--working-dir",
        str(REPO),
        "--config",
        str(REPO / "configs" / "demo.yaml"),
        "--set",
        f"data.source={missing}",
        "--set",
        "data.layout=imagefolder",
        "--run-id",
        "h7-fails",
        "-o",
        str(tmp_path / "out"),
    )
    assert result.exit_code == 0, result.output
    assert "submitted job audit-h7-fails" in result.output
    wait_for(
        lambda: status_json(jobs_cluster, "audit-h7-fails")["job"]["status"] == "FAILED",
        240,
        "the job to fail",
    )
    st = jobs_cli(jobs_cluster, "status", "h7-fails")
    assert st.exit_code == 0, st.output
    assert "job audit-h7-fails: FAILED" in st.output and "state: failed" in st.output
    error = [ln for ln in st.output.splitlines() if ln.strip().startswith("error: ")]
    assert len(error) == 1 and str(missing) in error[0], st.output
    as_json = status_json(jobs_cluster, "h7-fails")
    assert as_json["state"] == "failed" and str(missing) in as_json["error"]


@pytest.mark.slow  # a Ray job over the demo, stopped while it runs
@pytest.mark.timeout(900)
def test_running_job_shows_progress_then_stop_gives_stopped(
    jobs_cluster: LocalCluster, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    # LIME on every image with many samples keeps the job busy for minutes
    args = [
        "submit",
        "--working-dir",
        str(REPO),
        "--config",
        str(REPO / "configs" / "demo.yaml"),
        "--set",
        "explain.which=all",
        "--set",
        "explain.n_samples=3000",
        "--set",
        "output.shard_size=8",
        "--set",
        "predict.batch_size=8",
        "--run-id",
        "h7-long",
        "-o",
        str(out),
    ]
    result = jobs_cli(jobs_cluster, *args)
    assert result.exit_code == 0, result.output

    def running() -> dict[str, Any] | None:
        s = status_json(jobs_cluster, "h7-long")
        ok = s["job"]["status"] == "RUNNING" and s["progress"] is not None
        return s if ok and s["progress"]["state"] == "running" else None

    s = wait_for(running, 300, "the run to be in progress")
    assert s["state"] == "running" and not s["stale"]
    assert s["job"]["submission_id"] == "audit-h7-long" and s["url"] == f"{out}/h7-long"
    predict = s["progress"]["stages"]["predict"]
    if "total" in predict:
        assert predict["total"] == 301 and 0 <= predict["done"] <= 301  # 300 digits + 1 broken
    on_disk = read_manifest(str(out / "h7-long"))
    assert on_disk["run_id"] == "h7-long" and on_disk["state"] == "running"
    text = jobs_cli(jobs_cluster, "status", "audit-h7-long")
    assert "job audit-h7-long: RUNNING" in text.output and "state: running" in text.output
    assert "stage predict:" in text.output

    again = jobs_cli(jobs_cluster, *args)  # the same run while it is still running
    assert again.exit_code == 1
    assert "job audit-h7-long of run 'h7-long' is still RUNNING" in again.output

    stopped = jobs_cli(jobs_cluster, "stop", "h7-long")
    assert stopped.exit_code == 0, stopped.output
    assert "job audit-h7-long: STOPPED" in stopped.output
    final = status_json(jobs_cluster, "h7-long")
    assert final["job"]["status"] == "STOPPED" and final["state"] == "stopped"
    # a killed driver leaves its manifest at 'running': the job's STOPPED wins and says so
    left = read_manifest(str(out / "h7-long"))["state"]
    assert left in ("running", "interrupted")  # SIGTERM recorded, or killed before it could
    assert final["stale"] is (left == "running")
    text = jobs_cli(jobs_cluster, "status", "h7-long")
    assert "state: stopped" in text.output
    assert ("the manifest is stale" in text.output) is (left == "running")
    assert "already ended: STOPPED" in jobs_cli(jobs_cluster, "stop", "h7-long").output


@pytest.mark.slow  # one demo class as a Ray job, then a second attempt of its run id
@pytest.mark.timeout(900)  # a shared 2-core machine can be slow
def test_demo_job_runs_to_succeeded(jobs_cluster: LocalCluster, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = jobs_cli(
        jobs_cluster,
        "submit",
        "--working-dir",
        str(REPO),
        "--config",
        str(REPO / "configs" / "demo.yaml"),
        "--run-id",
        "h7-demo",
        "-o",
        str(out),
        "--num-cpus",
        "0",
        "--set",
        "explain.n_samples=100",
        "--set",  # one class: its 30 digits and the broken file (the demo's error row)
        "data.classes=[digit_0]",
        "--wait",
        "--timeout",
        "600",
    )
    assert result.exit_code == 0, result.output
    assert "job audit-h7-demo: SUCCEEDED" in result.output
    run = str(out / "h7-demo")
    preds, errors = read_table(run, "predictions"), read_table(run, "errors")
    assert preds.num_rows + errors.num_rows == 31
    assert errors.column("image_id").to_pylist() == ["DEMO_val_99999999"]

    s = status_json(jobs_cluster, "h7-demo")
    assert s["state"] == "succeeded" and not s["stale"] and s["error"] is None
    assert s["job"]["status"] == "SUCCEEDED" and s["job"]["run_url"] == run
    # the progress rows are what the tables on disk hold
    assert s["progress"]["rows"]["predictions"] == preds.num_rows
    assert s["progress"]["errors"] == errors.num_rows == 1
    assert s["progress"]["stages"]["predict"]["done"] == s["progress"]["stages"]["predict"]["total"]
    text = jobs_cli(jobs_cluster, "status", "audit-h7-demo")
    assert "job audit-h7-demo: SUCCEEDED" in text.output and "state: succeeded" in text.output
    assert f"table predictions: {preds.num_rows} rows" in text.output

    logs = jobs_cli(jobs_cluster, "logs", "h7-demo")
    assert logs.exit_code == 0 and "run h7-demo: succeeded -> " in logs.output
    assert f"{run}\n" in logs.output  # the summary names the run folder
    followed = jobs_cli(jobs_cluster, "logs", "audit-h7-demo", "--follow")  # ends with the job
    assert followed.exit_code == 0 and "run h7-demo: succeeded" in followed.output

    listed = jobs_cli(jobs_cluster, "list")
    rows = {ln.split()[0]: ln.split()[1] for ln in listed.output.splitlines()}
    assert rows["audit-h7-demo"] == "SUCCEEDED"
    as_json = json.loads(jobs_cli(jobs_cluster, "list", "--json").output)
    assert {r["submission_id"]: r["run_url"] for r in as_json}["audit-h7-demo"] == run

    # A manifest written before the job started is an earlier attempt's: its state and error
    # are not shown as current, whether the run is named by id or read from its folder.
    manifest = read_manifest(run)
    manifest.update(updated="2000-01-01T00:00:00Z", state="failed", error="an earlier error")
    (out / "h7-demo" / "manifest.json").write_text(json.dumps(manifest))
    for ref in ("h7-demo", run):
        s = status_json(jobs_cluster, ref)
        assert s["manifest_of_earlier_attempt"] and s["job"]["status"] == "SUCCEEDED"
        assert s["state"] == "succeeded" and s["error"] is None, ref
    text = jobs_cli(jobs_cluster, "status", run).output
    assert (
        "note: this manifest is from an earlier attempt" in text and "an earlier error" not in text
    )

    # a second attempt of the run id gets the next submission id
    again = jobs_cli(
        jobs_cluster,
        "submit",
        "--working-dir",
        str(REPO),
        "--run-id",
        "h7-demo",
        "-o",
        str(out),
        "--set",
        "output.overwrite=true",
        "--set",
        "data.limit=20",
        "--set",
        "explain.enabled=false",
        "--wait",
        "--timeout",
        "600",
    )
    assert again.exit_code == 0, again.output
    assert "job audit-h7-demo.2: SUCCEEDED" in again.output
    latest = status_json(jobs_cluster, "h7-demo")
    assert latest["job"]["submission_id"] == "audit-h7-demo.2"
    assert latest["progress"]["inputs"] == 20


def test_unknown_run_or_job(jobs_cluster: LocalCluster, tmp_path: Path) -> None:
    st = jobs_cli(jobs_cluster, "status", "h7-nope", "-o", str(tmp_path))
    assert st.exit_code == 1
    assert st.output.strip().splitlines() == [
        f"error: no run 'h7-nope': neither a run folder nor a run id under {str(tmp_path)!r}, "
        f"nor a job at {jobs_cluster.address}"
    ]
    for cmd in ("logs", "stop"):
        r = jobs_cli(jobs_cluster, cmd, "h7-nope")
        assert r.exit_code == 1
        assert r.output.strip() == f"error: no job 'h7-nope' at {jobs_cluster.address} " + (
            "(neither a submission id, a job id nor a run id)"
        )
