"""A stage is one file: a stage class defined here, registered nowhere else, runs end to end.

``PixelSum`` below is a whole stage (config section, column, table, code), as a user's own
module would hold it. Registering it is the only step: its section becomes a section of the run
config, the model actors run it (the driver hands them the class), its table is written per
shard and listed in the manifest. The shipped optional stage ``image_stats`` is checked against a
plain per-pixel loop, and a stage that fails on some images is retried image by image so that
only those images become ``errors`` rows, with that stage's name.
"""

from __future__ import annotations

import colorsys
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from audit.columns import IMAGE_ID, MODEL, RUN_ID, Column, Table
from audit.config import ConfigError, build_config
from audit.config.checks import BOOL, Checked, FieldRules
from audit.model_actor import ModelActor
from audit.models import AuditModel
from audit.stages.image_stats import image_stats
from audit.stages.registry import STAGES, StageBase
from audit.store import TABLES, read_table


@dataclass(frozen=True)
class PixelSumConfig(Checked):
    enabled: bool = False
    SECTION: ClassVar[str | None] = "pixel_sum"
    RULES: ClassVar[Mapping[str, FieldRules]] = {"enabled": BOOL}


PIXEL_SUMS = Table(
    "pixel_sums",
    (RUN_ID, MODEL, IMAGE_ID, Column("pixel_sum", pa.int64(), np.int64, doc="sum of the crop")),
)


class PixelSum(StageBase):
    """The sum of every uint8 value of the crop; needs the prediction, to test the order."""

    name: ClassVar[str] = "pixel_sum"
    section: ClassVar[str] = "pixel_sum"
    config_type: ClassVar[type] = PixelSumConfig
    needs: ClassVar[tuple[str, ...]] = ("image", "predict")
    columns: ClassVar[tuple[Column, ...]] = (PIXEL_SUMS["pixel_sum"],)
    table: ClassVar[Table | None] = PIXEL_SUMS

    def run(self, batch: Mapping[str, np.ndarray], state: dict[str, Any]) -> dict[str, np.ndarray]:
        assert "top5_classes" in batch  # predict ran before
        return {"pixel_sum": batch["image"].reshape(len(batch["image"]), -1).sum(1)}


@dataclass(frozen=True)
class FlakyConfig(Checked):
    SECTION: ClassVar[str | None] = "flaky"


class Flaky(StageBase):
    """Fails on every batch that holds an image of class 3, and on those images alone."""

    name: ClassVar[str] = "flaky"
    section: ClassVar[str] = "flaky"
    config_type: ClassVar[type] = FlakyConfig
    needs: ClassVar[tuple[str, ...]] = ("image", "label")
    columns: ClassVar[tuple[Column, ...]] = (Column("ok", pa.bool_(), np.bool_),)

    def run(self, batch: Mapping[str, np.ndarray], state: dict[str, Any]) -> dict[str, np.ndarray]:
        if (np.asarray(batch["label"]) == 3).any():
            raise RuntimeError("threes are not allowed")
        return {"ok": np.ones(len(batch["label"]), dtype=bool)}


@pytest.fixture
def pixel_sum() -> Iterator[type[PixelSum]]:
    STAGES.register(PixelSum)
    try:
        yield PixelSum
    finally:
        STAGES.unregister(PixelSum.name)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


def _batch(labels: list[int], seed: int = 0) -> dict[str, np.ndarray]:
    n = len(labels)
    rng = np.random.default_rng(seed)
    return {
        "image_id": np.array([f"i{k}" for k in range(n)], dtype=object),
        "uri": np.array([f"u{k}" for k in range(n)], dtype=object),
        "label": np.array(labels, dtype=np.int64),
        "image": rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8),
        "segments": np.full(n, b"", dtype=object),
        "error": np.full(n, "", dtype=object),
        "stage": np.full(n, "", dtype=object),
    }


def _model() -> AuditModel:
    torch.manual_seed(0)
    return AuditModel(_Net(), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def test_a_registered_stage_gets_a_config_section(pixel_sum: type[PixelSum]) -> None:
    cfg = build_config({"pixel_sum": {"enabled": True}})
    assert cfg.section("pixel_sum") == PixelSumConfig(enabled=True)
    assert cfg.to_dict()["pixel_sum"] == {"enabled": True}
    assert build_config({}, ["pixel_sum.enabled=true"]) == cfg
    with pytest.raises(ConfigError, match=r"Unknown field 'pixel_sum\.nope'"):
        build_config({}, ["pixel_sum.nope=1"])
    with pytest.raises(ConfigError, match=r"The 'pixel_sum\.enabled' field must be a bool"):
        build_config({"pixel_sum": {"enabled": "yes"}})
    assert "pixel_sums" in TABLES


def test_an_unregistered_section_is_refused_naming_the_sections() -> None:
    with pytest.raises(ConfigError) as info:
        build_config({"pixel_sum": {"enabled": True}})
    assert str(info.value).startswith("Unknown config section 'pixel_sum'. Allowed sections: data,")
    assert "image_stats" in str(info.value)
    assert "pixel_sums" not in TABLES  # the fixture of the other test unregistered it


def test_a_stage_that_fails_on_some_images_fails_only_those() -> None:
    labels = [1, 3, 5, 3, 7]
    batch = _batch(labels)
    classes = [STAGES.get("predict"), Flaky]
    actor = ModelActor(_model(), 10, 4, "cpu", stages=classes)
    out = actor.run_batch(batch)
    bad = np.array(labels) == 3
    assert list(out["stage"][bad]) == ["flaky", "flaky"]
    assert all(e == "RuntimeError: threes are not allowed" for e in out["error"][bad])
    assert list(out["error"][~bad]) == ["", "", ""]
    assert out["ok"][~bad].all() and not out["ok"][bad].any()
    # the other rows' predictions are those of a run without the flaky stage
    alone = ModelActor(_model(), 10, 4, "cpu", stages=[STAGES.get("predict")]).run_batch(
        _batch(labels)
    )
    np.testing.assert_array_equal(out["top5_classes"][~bad], alone["top5_classes"][~bad])
    np.testing.assert_array_equal(out["top5_probs"][~bad], alone["top5_probs"][~bad])


def test_later_stages_run_only_on_the_rows_that_survived(pixel_sum: type[PixelSum]) -> None:
    class Late(PixelSum):
        name: ClassVar[str] = "late"
        needs: ClassVar[tuple[str, ...]] = ("image", "predict", "flaky")
        table: ClassVar[Table | None] = None

        def run(self, batch: Mapping[str, np.ndarray], state: dict[str, Any]) -> dict[str, Any]:
            assert (np.asarray(batch["label"]) != 3).all()
            return super().run(batch, state)

    labels = [3, 2, 3, 4]
    stages = [STAGES.get("predict"), Flaky, Late]
    on = {"pixel_sum": PixelSumConfig(enabled=True)}
    actor = ModelActor(_model(), 10, 4, "cpu", sections=on, stages=stages)
    out = actor.run_batch(_batch(labels, seed=1))
    sums = _batch(labels, seed=1)["image"].reshape(4, -1).sum(1)
    np.testing.assert_array_equal(out["pixel_sum"], np.where(np.array(labels) == 3, 0, sums))
    assert list(out["stage"]) == ["flaky", "", "flaky", ""]


def test_unmet_needs_stop_the_run_before_any_work(pixel_sum: type[PixelSum]) -> None:
    from audit.run.plan import build_plan

    class Needy(PixelSum):
        name: ClassVar[str] = "needy"
        section: ClassVar[str] = "needy"
        config_type: ClassVar[type] = FlakyConfig  # no 'enabled' field: always on
        needs: ClassVar[tuple[str, ...]] = ("image", "nothing_here")
        table: ClassVar[Table | None] = None

    STAGES.register(Needy)
    try:
        asked: list[bool] = []
        with pytest.raises(ConfigError, match="'needy' needs 'nothing_here'") as info:
            build_plan(build_config({}), "r", lambda: asked.append(True) or 0.0)
        assert "\n" not in str(info.value) and not asked
    finally:
        STAGES.unregister("needy")


def _loop_stats(image: np.ndarray) -> tuple[float, float, float]:
    """Brightness, contrast and saturation of one crop, pixel by pixel."""
    lumas, sats = [], []
    for r, g, b in image.reshape(-1, 3) / 255.0:
        lumas.append(0.299 * r + 0.587 * g + 0.114 * b)
        sats.append(colorsys.rgb_to_hsv(r, g, b)[1])
    return float(np.mean(lumas)), float(np.std(lumas)), float(np.mean(sats))


def test_image_stats_equal_a_plain_loop() -> None:
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (4, 6, 5, 3), dtype=np.uint8)
    images[1] = 0  # black: saturation 0 by definition
    images[2] = 200  # grey
    got = image_stats(images)
    for i, image in enumerate(images):
        want = _loop_stats(image)
        got_i = (got["brightness"][i], got["contrast"][i], got["saturation"][i])
        np.testing.assert_allclose(got_i, want, rtol=1e-6, atol=1e-7)


@pytest.mark.slow  # a pipeline run on Ray
def test_a_plugin_stage_and_image_stats_end_to_end(
    tmp_path: Path, ray_local: None, demo_cache: str, monkeypatch: pytest.MonkeyPatch,
    pixel_sum: type[PixelSum],
) -> None:  # fmt: skip
    import sys

    from fixtures_demo import run_audit_function
    from ray import cloudpickle

    # The Ray workers cannot import this test module (tests/ is not on their path), so its
    # classes travel by value, as the classes of a notebook's __main__ do.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.setenv("AUDIT_CACHE_DIR", demo_cache)
    cfg = build_config(
        {"pixel_sum": {"enabled": True}, "image_stats": {"enabled": True}},
        [
            f"output.root={json.dumps(str(tmp_path))}",
            "output.run_id=plug",
            "output.shard_size=40",
            "data.per_class=6",
            "attack.enabled=false",
            "explain.enabled=false",
        ],
    )
    try:
        run_audit_function()(cfg)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    run = str(tmp_path / "plug")
    manifest = json.loads((tmp_path / "plug" / "manifest.json").read_text())
    preds = read_table(run, "predictions").to_pandas().set_index("image_id")
    sums = read_table(run, "pixel_sums").to_pandas().set_index("image_id")
    stats = read_table(run, "image_stats").to_pandas().set_index("image_id")
    assert set(sums.index) == set(preds.index) == set(stats.index) and len(preds) == 60
    files = manifest["tables"]["pixel_sums"]["files"]
    assert sorted(files) == [f"pixel_sums/shard-{k:05d}.parquet" for k in range(2)]
    assert sum(pq.read_metadata(tmp_path / "plug" / f).num_rows for f in files) == 60
    assert manifest["config"]["pixel_sum"] == {"enabled": True}
    from audit.data.decode import load_image
    from audit.models import EvalTransform

    transform = EvalTransform.from_dict(manifest["model"]["transform"])
    for image_id in preds.index[::7]:  # the crop the model saw, decoded again here
        crop = load_image(preds.loc[image_id, "uri"], 10**8, transform=transform)
        assert sums.loc[image_id, "pixel_sum"] == int(crop.astype(np.int64).sum())
        np.testing.assert_allclose(
            stats.loc[image_id, ["brightness", "contrast", "saturation"]].to_numpy(float),
            _loop_stats(crop),
            rtol=1e-5,
            atol=1e-6,
        )
