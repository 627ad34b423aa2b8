"""The resume policy on hand-made manifests: which earlier attempts may be continued, and why
not."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from audit.config import build_config
from audit.data.layouts import InputRecord, Layout, Listing
from audit.models import EvalTransform
from audit.run.manifest import FORMAT_VERSION
from audit.run.plan import RunPlan, fingerprint, shard_sizes
from audit.run.resume import (
    RESUME_IGNORED,
    committed_shards,
    config_changes,
    refusals,
    refusals_before_plan,
)

URL = "file:///runs/r"
SHA = "ab" * 32


def make_plan(**cfg: dict[str, Any]) -> RunPlan:
    inputs = (InputRecord("a", "file:///a.png", 0), InputRecord("b", "file:///b.png", None))
    model = SimpleNamespace(name="m", weights="w.pt", weights_sha256=SHA, transform=EvalTransform())
    return RunPlan(
        run_id="r",
        cfg=build_config(cfg),
        model=model,  # type: ignore[arg-type]
        listing=Listing(Layout.UNLABELED, inputs, ()),
        seconds_listing=0.0,
        inputs=inputs,
        shard_of={(r.image_id, r.uri): 0 for r in inputs},
        shard_sizes=shard_sizes(2, 1000),
        fingerprint=fingerprint(inputs),
        explain=(False, False),
        driver_only=("memory://",),
        cluster_gpus=0.0,
        device="cpu",
        num_actors=1,
    )


def manifest_of(plan: RunPlan, **changes: Any) -> dict[str, Any]:
    """What the first attempt of ``plan`` wrote, as JSON gives it back, edited."""
    m: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "state": "running",
        "config": plan.cfg.to_dict(),
        "model": {"weights": "w.pt", "weights_sha256": SHA, "transform": EvalTransform().to_dict()},
        "data": {"fingerprint": plan.fingerprint},
        "execution": {"device": "cpu"},
        "shards": {"committed": [1, 0]},
    }
    m = json.loads(json.dumps(m, default=str))
    for path, value in changes.items():
        section, _, name = path.partition("__")
        if name:
            m[section][name] = value
        else:
            m[section] = value
    return m


def test_the_same_plan_resumes() -> None:
    plan = make_plan()
    previous = manifest_of(plan)
    assert refusals_before_plan(previous, URL) == []
    assert refusals(previous, plan, URL) == []
    assert committed_shards(previous) == {0, 1}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"state": "succeeded"}, "The output run 'file:///runs/r' already finished: choose"),
        ({"format_version": 1}, "was written by another version of this tool"),
        ({"shards": None}, "was written by another version of this tool"),
    ],
)
def test_a_finished_or_foreign_run_is_refused_before_the_plan(
    changes: dict[str, Any], message: str
) -> None:
    previous = manifest_of(make_plan(), **changes)
    if changes.get("shards", 0) is None:
        del previous["shards"]
    reasons = refusals_before_plan(previous, URL)
    assert len(reasons) == 1 and message in reasons[0]
    assert "\n" not in reasons[0]


def test_a_changed_config_names_the_fields_but_not_the_ignored_ones() -> None:
    previous = manifest_of(make_plan())
    plan = make_plan(
        attack={"eps_step": 0.5},
        predict={"batch_size": 7, "num_actors": 3},
        output={"overwrite": True},
    )
    assert refusals(previous, plan, URL) == [
        f"The output run {URL!r} was started with a different configuration (attack.eps_step "
        "changed): rerun it with the same configuration to resume, or choose another "
        "'output.run_id'."
    ]


def test_config_changes_skips_exactly_the_ignored_fields() -> None:
    old = {"predict": {"batch_size": 1, "bf16": False}, "output": {"root": "a"}}
    new = {"predict": {"batch_size": 2, "bf16": True}, "output": {"root": "b"}, "x": {"y": 1}}
    assert config_changes(old, new) == ["predict.bf16", "x.y"]
    assert ("predict", "batch_size") in RESUME_IGNORED


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"data__fingerprint": "0" * 64}, "The inputs of run 'file:///runs/r' changed"),
        ({"model__weights_sha256": "cd" * 32}, "(sha256 cdcdcdcdcdcd... from w.pt, now abab"),
        (
            {"model__transform": EvalTransform(crop=(200, 200)).to_dict()},
            "The evaluation transform of run 'file:///runs/r' changed since it started (was",
        ),
        ({"execution__device": "cuda"}, "started on cuda and would resume on cpu"),
    ],
)
def test_other_inputs_weights_transform_or_device_are_refused(
    changes: dict[str, Any], message: str
) -> None:
    plan = make_plan()
    reasons = refusals(manifest_of(plan, **changes), plan, URL)
    assert len(reasons) == 1 and message in reasons[0], reasons


def test_every_reason_is_given_most_basic_first() -> None:
    plan = make_plan()
    previous = manifest_of(
        make_plan(attack={"eps_step": 0.5}), data__fingerprint="x", execution__device="cuda"
    )
    reasons = refusals(previous, plan, URL)
    assert [r.split(" ")[:4] for r in reasons] == [
        ["The", "output", "run", f"{URL!r}"],
        ["The", "inputs", "of", "run"],
        ["Run", f"{URL!r}", "started", "on"],
    ]


def test_a_manifest_without_model_or_execution_sections_is_not_refused_for_them() -> None:
    plan = make_plan()
    previous = manifest_of(plan)
    previous.pop("model")
    previous.pop("execution")
    assert refusals(previous, plan, URL) == []
