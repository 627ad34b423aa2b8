"""SIGINT and SIGTERM to a driver (audit/run/interrupts.py): the run stops, records itself
``interrupted`` with the stage and the shards committed, the CLI prints the command that resumes
it and exits 130, and that command completes the run, equal to an uninterrupted one.

The signals are real: the end-to-end test's driver sends SIGINT to itself right after its
second shard commit (``AUDIT_TEST_SIGNAL_AFTER_COMMITS``, a fixed point, no timer), started the
way a shell starts a background job, with SIGINT ignored (what made ``kill -INT`` do nothing).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from conftest import AUDIT_CLI, loud_lines

from audit.cli.run import resume_command
from audit.run.interrupts import (
    SIGNAL_AFTER_COMMITS_ENV,
    Interrupted,
    signal_after_commits_from_env,
    stop_on_signals,
)
from audit.store import read_table


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_raises_interrupted_even_where_sigint_was_ignored(sig: signal.Signals) -> None:
    before = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(Interrupted) as raised, stop_on_signals():
            os.kill(os.getpid(), sig)
            for _ in range(1000):  # the handler runs at the next bytecode boundary
                pass
        assert raised.value.signame == sig.name
        assert isinstance(raised.value, KeyboardInterrupt)
        assert signal.getsignal(sig) is signal.SIG_IGN  # the previous handler is back
    finally:
        for s, h in before.items():
            signal.signal(s, h)


def test_a_second_signal_while_stopping_is_only_reported(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(Interrupted), stop_on_signals():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
        except Interrupted:
            os.kill(os.getpid(), signal.SIGTERM)  # while the first one unwinds
            for _ in range(1000):
                pass
            raise
    assert "SIGTERM: already stopping" in capsys.readouterr().err


@pytest.mark.parametrize("raw", ["x", "0:SIGINT", "2", "2:SIGKILL"])
def test_the_test_hook_refuses_bad_values(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SIGNAL_AFTER_COMMITS_ENV, raw)
    with pytest.raises(ValueError, match=SIGNAL_AFTER_COMMITS_ENV):
        signal_after_commits_from_env()


def test_the_resume_command_repeats_the_arguments_and_hides_storage_options() -> None:
    got = resume_command(
        Path("configs/my run.yaml"),
        ["data.limit=10", 'output.storage_options={"secret": "s3cr3t"}'],
        "s3://bucket/out",
        "20261204-120000-resnet50",
        "127.0.0.1:6379",
    )
    assert "s3cr3t" not in got
    assert shlex.split(got) == [
        "audit-cli",
        "run",
        "-c",
        "configs/my run.yaml",
        "--set",
        "data.limit=10",
        "--set",
        "output.storage_options=...",
        "-o",
        "s3://bucket/out",
        "--run-id",
        "20261204-120000-resnet50",
        "--address",
        "127.0.0.1:6379",
    ]


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as `cmd &` in a non-interactive shell


@pytest.mark.slow  # two `audit-cli run` processes on the session's Ray, over the demo set
def test_sigint_stops_the_run_and_the_printed_command_resumes_it(
    tmp_path: Path, demo_cache: str, demo_run: str, ray_local: None
) -> None:
    import ray

    gcs = ray.get_runtime_context().gcs_address
    env = {**os.environ, "AUDIT_CACHE_DIR": demo_cache}
    args = [
        AUDIT_CLI, "run", "--no-progress", "--address", gcs,
        "--set", "data.limit=100",
        "--set", "output.shard_size=20",
        "--set", "explain.enabled=false",
        "--set", "criticism.enabled=false",
    ]  # fmt: skip
    first = subprocess.run(
        args,
        cwd=tmp_path,
        env={**env, SIGNAL_AFTER_COMMITS_ENV: "2:SIGINT"},
        preexec_fn=_ignore_sigint,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert first.returncode == 130, first.stderr[-3000:]
    lines = first.stderr.strip().splitlines()
    assert lines[-2].startswith("SIGINT: run ") and lines[-2].endswith("resume it with:")
    resume = shlex.split(lines[-1])
    assert resume[:2] == ["audit-cli", "run"] and "--run-id" in resume
    run_id = resume[resume.index("--run-id") + 1]
    run = tmp_path / "audit-output" / run_id
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["state"] == "interrupted"
    assert manifest["error"] == (
        "SIGINT during predict: 2 of 5 shards committed; rerun the same run id to resume"
    )
    assert manifest["stages"]["predict"]["state"] == "interrupted"
    assert manifest["shards"]["committed"] == [0, 1]
    assert not (run / "lease.json").exists()  # released: the resume need not wait for it

    second = subprocess.run(
        [AUDIT_CLI, *resume[1:]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert not loud_lines(second.stderr)  # a healthy run is quiet
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["state"] == "succeeded" and manifest["error"] is None
    rows = {t: read_table(str(run), t).num_rows for t in ("predictions", "errors")}
    assert rows["predictions"] + rows["errors"] == manifest["data"]["inputs"] == 100
    # every image once, and the tables equal the session's uninterrupted demo run (floats to
    # float32 precision: the resumed attempt's batches hold other images)
    for table, exact, close in (
        ("predictions", ["label", "top5_classes"], ["top5_probs", "loss", "embedding"]),
        ("errors", ["stage", "reason"], []),
        ("adversarial", ["target", "steps_to_flip", "adv_class"], ["adv_prob", "linf"]),
    ):
        cols = ["image_id", *exact, *close]
        got = read_table(str(run), table).select(cols).sort_by("image_id").to_pydict()
        ids = pa.array(
            got["image_id"], pa.string()
        )  # data.limit: the first 100 inputs of the demo run's
        ref = read_table(demo_run, table).filter(pc.is_in(pc.field("image_id"), ids))
        want = ref.select(cols).sort_by("image_id").to_pydict()
        assert len(set(got["image_id"])) == len(got["image_id"]), table
        for c in ["image_id", *exact]:
            assert got[c] == want[c], f"{table}.{c}"
        for c in close:
            np.testing.assert_allclose(
                np.array(got[c], dtype=np.float64),
                np.array(want[c], dtype=np.float64),
                rtol=1e-4,
                atol=1e-5,
                err_msg=f"{table}.{c}",
            )
