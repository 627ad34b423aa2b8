"""Work units: the model actor hands on a heavy stage's rows a few at a time, as they are done.

``Sleepy`` below is a heavy stage (``unit_rows``) whose per-image work is a sleep. Without work
units, one actor batch holds all of it and Ray Data sees no progress for the whole batch; with
them, each unit's rows reach the driver when done, so a run whose batch takes longer than
``data.no_progress_timeout_s`` still completes as long as one unit does not.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pytest
from test_stage_plugins import _batch as plugin_batch
from test_stage_plugins import _model

from audit.columns import Column
from audit.config import build_config
from audit.config.checks import BOOL, Checked, FieldRules, Interval
from audit.model_actor import PROGRESS_COLUMNS, ModelActor
from audit.stages.registry import STAGES, StageBase
from audit.store import read_table

WHOLE_BATCH = os.environ.get("AUDIT_TEST_WHOLE_BATCH") == "1"
"""Set to run the end-to-end test as before work units (one unit of the whole batch): it must
then fail with Ray Data's ExecutionTimeoutError."""


@dataclass(frozen=True)
class SleepyConfig(Checked):
    enabled: bool = False
    seconds: float = 0.0
    SECTION: ClassVar[str | None] = "sleepy"
    RULES: ClassVar[Mapping[str, FieldRules]] = {
        "enabled": BOOL,
        "seconds": Interval(float, 0, None),
    }


class Sleepy(StageBase):
    """Heavy work on the images of odd label (a sleep each), one image per unit; fails on
    label 7, so that a failure inside a unit is seen too."""

    name: ClassVar[str] = "sleepy"
    section: ClassVar[str] = "sleepy"
    config_type: ClassVar[type] = SleepyConfig
    needs: ClassVar[tuple[str, ...]] = ("image", "label", "predict")
    columns: ClassVar[tuple[Column, ...]] = (Column("slept", pa.int64(), np.int64),)
    unit_rows: int | None = None if WHOLE_BATCH else 1

    def heavy_rows(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.asarray(batch["label"]) % 2 == 1

    def run(self, batch: Mapping[str, np.ndarray], state: dict[str, Any]) -> dict[str, np.ndarray]:
        labels = np.asarray(batch["label"])
        if (labels == 7).any():
            raise RuntimeError("no sevens")
        heavy = labels % 2 == 1
        time.sleep(self.config.seconds * int(heavy.sum()))
        return {"slept": heavy.astype(np.int64)}


@pytest.fixture
def sleepy() -> Iterator[type[Sleepy]]:
    STAGES.register(Sleepy)
    try:
        yield Sleepy
    finally:
        STAGES.unregister(Sleepy.name)


def _actor(unit_rows: int | None) -> ModelActor:
    model = _model()  # test_stage_plugins' seeded net
    stage = type("Units", (Sleepy,), {"unit_rows": unit_rows})
    sections = {"sleepy": SleepyConfig(enabled=True)}
    return ModelActor(model, 10, 4, "cpu", sections=sections, stages=[STAGES.get("predict"), stage])


def _batch(labels: list[int]) -> dict[str, np.ndarray]:
    """test_stage_plugins' batch with a shard column, row 2 arriving with a decode error."""
    batch = plugin_batch(labels)
    n = len(labels)
    batch["shard"] = np.zeros(n, dtype=np.int64)
    batch["error"] = np.array(["bad file" if k == 2 else "" for k in range(n)], dtype=object)
    batch["stage"] = np.where(batch["error"] == "", "", "decode").astype(object)
    return batch


def test_heavy_rows_come_out_in_units_after_the_light_ones() -> None:
    labels = [0, 1, 4, 3, 7, 6, 5, 8, 9]  # row 2 comes with an error; label 7 fails the stage
    yields = list(_actor(unit_rows=2)(_batch(labels)))
    ids = [list(y["image_id"]) for y in yields]
    # light rows (even labels) and the row that came with an error first, then units of two
    # heavy rows; the stage fails on the unit holding the 7, which is retried image by image
    assert ids == [["i0", "i2", "i5", "i7"], ["i1", "i3"], ["i4", "i6"], ["i8"]]
    keys = list(yields[0])
    assert all(list(y) == keys for y in yields)  # every yield is a complete output batch
    merged = _actor(unit_rows=2).run_batch(_batch(labels))
    assert list(merged["image_id"]) == [f"i{k}" for k in range(len(labels))]
    assert list(merged["stage"]) == ["", "", "decode", "", "sleepy", "", "", "", ""]
    assert merged["error"][4] == "RuntimeError: no sevens"
    assert list(merged["slept"]) == [0, 1, 0, 1, 0, 0, 1, 0, 1]


def test_outputs_equal_those_of_one_batch_whole() -> None:
    labels = [0, 1, 4, 3, 7, 6, 5, 8, 9]
    units = _actor(unit_rows=1).run_batch(_batch(labels))
    (whole,) = list(_actor(unit_rows=None)(_batch(labels)))  # no unit: one yield, as before
    assert list(units) == list(whole)
    for key in whole:
        if key in PROGRESS_COLUMNS:  # how the work ran (timings), not what it found
            continue
        np.testing.assert_array_equal(units[key], whole[key], err_msg=key)
        assert units[key].dtype == whole[key].dtype, key


def test_stage_done_marks_the_rows_each_stage_worked_on() -> None:
    """``stage_done``: predict on every row that reached the model, the heavy stage on its heavy
    rows only (the 7 it failed on included: it worked on it), nothing on the row that came with
    an error; ``stage_seconds`` is positive exactly where a stage ran."""
    labels = [0, 1, 4, 3, 7, 6, 5, 8, 9]  # row 2 comes with an error
    actor = _actor(unit_rows=1)
    assert [s.name for s in actor.stages] == ["predict", "sleepy"]
    out = actor.run_batch(_batch(labels))
    done, seconds = out["stage_done"], out["stage_seconds"]
    assert done.shape == seconds.shape == (len(labels), 2)
    reached = [k != 2 for k in range(len(labels))]
    assert done[:, 0].tolist() == [int(r) for r in reached]
    odd = [int(k != 2 and lab % 2 == 1) for k, lab in enumerate(labels)]
    assert done[:, 1].tolist() == odd
    assert ((seconds[:, 0] > 0) == np.array(reached)).all()
    assert seconds[2].tolist() == [0.0, 0.0]


def test_a_batch_whose_rows_all_failed_comes_out_once() -> None:
    batch = _batch([2, 7])
    batch["error"][:] = "bad file"
    (only,) = list(_actor(unit_rows=1)(batch))
    assert list(only["image_id"]) == ["i0", "i1"] and "slept" in only


@pytest.mark.slow  # a pipeline run on Ray
def test_a_batch_longer_than_the_no_progress_timeout_completes(
    tmp_path: Path, ray_local: None, demo_cache: str, monkeypatch: pytest.MonkeyPatch,
    sleepy: type[Sleepy],
) -> None:  # fmt: skip
    from fixtures_demo import run_audit_function
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # tests/ is not on their path
    monkeypatch.setenv("AUDIT_CACHE_DIR", demo_cache)
    # 10 images in ONE actor batch, 5 of them heavy (odd digits, one of them a 7 that fails):
    # 4 x 7 s of work in the batch, beyond the 20 s timeout (which also has to cover the
    # workers starting up); one unit is 7 s.
    cfg = build_config(
        {"sleepy": {"enabled": True, "seconds": 7.0}},
        [
            f"output.root={json.dumps(str(tmp_path))}",
            "output.run_id=units",
            "data.per_class=1",
            "data.decode_batch_size=16",
            "predict.batch_size=64",
            "attack.enabled=false",
            "explain.enabled=false",
            "data.no_progress_timeout_s=20",
        ],
    )
    try:
        run_audit_function()(cfg)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    preds = read_table(str(tmp_path / "units"), "predictions").to_pandas()
    errors = read_table(str(tmp_path / "units"), "errors").to_pandas()
    assert len(preds) == 9 and list(errors["stage"]) == ["sleepy"]
    manifest = json.loads((tmp_path / "units" / "manifest.json").read_text())
    assert manifest["state"] == "succeeded"


# ------------------------------------------------------------------ when units are flushed


def _plan(
    *, flush: str = "auto", device: str = "cpu", timeout: float = 1800.0, heavy: bool = True
) -> Any:
    """The parts of a RunPlan that should_flush reads: the demo's stages with LIME at 1000
    samples and two variants (2000 forwards per heavy row) in batches of 64."""
    from types import SimpleNamespace

    raw = {"data": {"flush_units": flush, "no_progress_timeout_s": timeout}}
    raw["explain"] = {"enabled": heavy, "n_samples": 1000}
    cfg = build_config({**raw, "predict": {"batch_size": 64}})
    sections = STAGES.sections(cfg)  # what RunPlan.sections and .stages return
    stages = STAGES.enabled(sections)
    return SimpleNamespace(cfg=cfg, sections=sections, stages=stages, device=device)


@pytest.mark.parametrize(
    ("plan", "per_image", "want"),
    [
        ({}, 0.01, True),  # 2000 x 0.01 s x 64 = 1280 s > 450 s: a real model on a CPU
        ({}, 0.001, False),  # 128 s: the demo's small model
        ({"timeout": 200.0}, 0.001, True),  # 128 s > 50 s
        ({"timeout": -1.0}, 1.0, False),  # no guard, nothing to keep alive
        ({"device": "cuda"}, 1.0, False),  # a GPU batch of LIME takes seconds
        ({"flush": "always"}, 0.0, True),
        ({"flush": "never"}, 1.0, False),
        ({"heavy": False, "flush": "always"}, 1.0, False),  # no heavy stage, no units
    ],
)
def test_auto_flushes_when_a_batch_of_heavy_work_may_reach_the_timeout(
    plan: dict[str, Any], per_image: float, want: bool
) -> None:
    from audit.run.units import should_flush

    assert should_flush(_plan(**plan), timer=lambda: per_image) is want


def test_a_heavy_stage_that_does_not_count_its_forwards_is_always_long() -> None:
    from audit.run.units import heavy_forwards

    stages = [type("Heavy", (), {"unit_rows": 1, "section": "heavy"})]
    assert heavy_forwards(stages, {"heavy": None}) == float("inf")
    assert heavy_forwards([type("Cheap", (), {"unit_rows": None})], {}) is None
