"""Per-stage progress (audit/run/progress.py): counts from the actors' ``stage_done`` and
``stage_seconds`` columns, a rate over recent arrivals, and a time left that tells the truth.

The unit tests drive :class:`StageProgress` with hand-made batches and a fake clock against
hand-computed answers; the end-to-end test reads the manifest ``audit-cli status`` reads while
a demo run streams and compares the time left it promised with the time it then took.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from audit.run.progress import WINDOW_S, StageProgress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def batch(done: list[list[int]], seconds: list[list[float]]) -> dict[str, np.ndarray]:
    n = len(done)
    return {
        "image_id": np.array([f"i{k}" for k in range(n)], dtype=object),
        "stage_done": np.array(done, dtype=np.uint8).reshape(n, -1),
        "stage_seconds": np.array(seconds, dtype=np.float32).reshape(n, -1),
    }


def test_counts_work_and_skip_rows_delivered_twice() -> None:
    clock = Clock()
    p = StageProgress(["predict", "explain"], pending=10, heavy={"explain"}, clock=clock)
    b = batch([[1, 0], [1, 1], [0, 0]], [[0.5, 0.0], [0.5, 2.0], [0.0, 0.0]])  # row 2: decode error
    p.add(b)
    clock.now += 2
    p.add(b, fresh=np.array([False, True, False]))  # a retried task delivered row 1 again
    states = {s.name: s for s in p.states()}
    assert [s.name for s in p.states()] == ["decode", "predict", "explain"]
    assert (states["decode"].done, states["decode"].total) == (4, 10)
    assert (states["predict"].done, states["predict"].total) == (3, 9)  # row 2 never will be
    assert (states["explain"].done, states["explain"].total) == (2, None)
    assert states["predict"].work_seconds == pytest.approx(1.5)
    assert states["explain"].work_seconds == pytest.approx(4.0)
    assert states["predict"].seconds == pytest.approx(2.0)
    assert states["explain"].eta_seconds is None  # no total: counted without one


def test_the_rate_is_the_recent_one_and_the_time_left_follows_it() -> None:
    """Start-up and a slow first minute do not count once they are older than the window."""
    clock = Clock()
    p = StageProgress(["predict"], pending=1000, clock=clock)
    one = batch([[1]] * 10, [[0.1]] * 10)
    p.add(one)  # the first 10 images, after a long start
    clock.now += 60  # a slow minute: 10 more
    p.add(one)
    for _ in range(10):  # then 10 images a second
        clock.now += 1
        p.add(one)
    st = p.state("predict")
    assert st is not None and st.done == 120
    # the window holds the arrivals of the last WINDOW_S seconds
    assert WINDOW_S < 60
    assert st.rate == pytest.approx(100 / 10, rel=0.01)
    assert st.eta_seconds == pytest.approx((1000 - 120) / 10, rel=0.01)
    since_start = 120 / 70
    assert st.rate > 5 * since_start  # what the old estimate used


def test_a_finished_stage_says_done_and_no_time_left() -> None:
    p = StageProgress(["predict"], pending=2, clock=Clock())
    p.add(batch([[1], [1]], [[0.1], [0.1]]))
    js = {s.name: s.to_json() for s in p.states()}
    assert js["predict"]["state"] == "done" and js["predict"]["eta_seconds"] is None


@pytest.mark.slow  # a demo run on the session's Ray, long enough to have a middle
def test_the_time_left_that_status_reads_is_within_a_factor_of_two(
    tmp_path: Path, ray_local: None, demo_cache: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from audit.config import build_config
    from audit.run import run_audit
    from audit.status import run_status

    monkeypatch.setenv("AUDIT_CACHE_DIR", demo_cache)
    cfg = build_config(
        {
            "data": {"source": "demo", "limit": 80, "decode_batch_size": 8},
            "predict": {"batch_size": 8},
            "attack": {"max_steps": 3},
            "explain": {"which": "all", "n_samples": 30, "batch_size": 30},
            "criticism": {"enabled": False},
            "output": {"root": str(tmp_path), "run_id": "eta", "shard_size": 20},
        }
    )
    run = tmp_path / "eta"
    seen: list[tuple[float, float, float]] = []  # (when, fraction done, time left promised)
    last: dict[str, Any] = {"text": "", "t": 0.0}

    def sample(states: list[Any]) -> None:
        now = time.monotonic()
        last["t"] = now
        text = (run / "manifest.json").read_text()
        if text == last["text"]:
            return
        last["text"] = text
        status = run_status(str(run), str(tmp_path))  # what `audit-cli status` shows
        predict = status.progress["stages"]["predict"] if status.progress else {}
        eta = predict.get("eta_seconds")
        total = predict.get("total") or 0
        if eta is not None and total:
            seen.append((now, predict["done"] / total, float(eta)))

    run_audit(cfg, on_stages=sample)
    end = last["t"]  # the last results arrived
    middle = [(t, eta) for t, frac, eta in seen if 0.2 <= frac <= 0.8]
    assert len(middle) >= 3, seen
    ratios = [eta / (end - t) for t, eta in middle if end - t > 1]
    assert ratios, middle
    print(f"time left promised / taken, mid-run: {[round(r, 2) for r in ratios]}")
    assert 0.5 <= statistics.median(ratios) <= 2.0, ratios
    m = json.loads((run / "manifest.json").read_text())
    assert [k for k in m["stages"] if k in ("decode", "predict", "attack", "explain")] == [
        "decode",
        "predict",
        "attack",
        "explain",
    ]
    n = m["tables"]["predictions"]["rows"]
    assert m["stages"]["attack"]["done"] == m["stages"]["attack"]["total"] == n
    assert m["stages"]["attack"]["state"] == "done"
    assert m["stages"]["explain"]["done"] == n and m["stages"]["explain"]["work_seconds"] > 0
