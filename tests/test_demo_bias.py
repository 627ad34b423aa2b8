"""The planted-bias demos (audit.data.demo_bias): the renderings keep the demo's own pictures,
the cue lies outside the digit's box and inside the model's crop, the answer key holds the
planted rates, and a config names its source, model and boxes."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from audit.config import ConfigError, build_config
from audit.config.loading import load_config
from audit.data.decode import eval_crop
from audit.data.demo import DIGIT_CLASSES, demo_split, render_demo_digit
from audit.data.demo_bias import (
    BOXES_FILE,
    CUES,
    CUES_FILE,
    EVAL_RATE_CUED,
    EVAL_RATE_OTHER,
    FRAME,
    IMAGES,
    ensure_bias_dataset,
    get_cue,
    render_cued,
)
from audit.run.plan import preflight, resolve_data

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("cue", sorted(CUES))
def test_the_cue_is_drawn_outside_the_box_only(cue: str) -> None:
    """Cued and plain renderings differ only outside the digit's box, and the difference
    survives the centre crop (the model can see the cue)."""
    for index in (0, 5, 17, 40, 101):
        plain, box = render_cued(index, 0, CUES[cue], False)
        cued, box2 = render_cued(index, 0, CUES[cue], True)
        assert box == box2 and plain.size == cued.size
        diff = np.any(np.asarray(plain) != np.asarray(cued), axis=2)
        assert diff.any()
        x0, y0, x1, y1 = box
        assert not diff[y0:y1, x0:x1].any(), (index, box)
        assert not np.array_equal(eval_crop(plain), eval_crop(cued))


def test_the_frame_keeps_the_demo_picture() -> None:
    """Without its cue a planted-bias picture is the demo's own rendering in a frame; the box
    is the digit's ink."""
    for index in (3, 99):
        demo = np.asarray(render_demo_digit(index))
        framed, (x0, y0, x1, y1) = render_cued(index, 0, CUES["patch"], False)
        pad = round(FRAME * min(demo.shape[:2]))
        inner = np.asarray(framed)[pad : pad + demo.shape[0], pad : pad + demo.shape[1]]
        assert np.array_equal(inner, demo)
        assert pad <= x0 < x1 <= pad + demo.shape[1] and pad <= y0 < y1 <= pad + demo.shape[0]


def test_the_dataset_and_its_answer_key(tmp_path: Path) -> None:
    base = ensure_bias_dataset("stripes", str(tmp_path))
    assert ensure_bias_dataset("stripes", str(tmp_path)) == base  # written once
    _, demo_idx = demo_split()
    files = sorted(Path(base, IMAGES).rglob("*.png"))
    assert len(files) == len(demo_idx) == 300
    with open(os.path.join(base, BOXES_FILE)) as f:
        boxes = list(csv.DictReader(f))
    with open(os.path.join(base, CUES_FILE)) as f:
        cues = {r["image_id"]: r for r in csv.DictReader(f)}
    assert len(boxes) == len(cues) == 300
    for r in boxes:
        path = Path(base, IMAGES, r["wnid"], r["image_id"] + ".png")
        w, h = Image.open(path).size
        x0, y0, x1, y1 = (int(r[k]) for k in ("x0", "y0", "x1", "y1"))
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    planted = get_cue("stripes").class_id
    own = [int(r["cued"]) for r in cues.values() if r["class_id"] == planted]
    other = [int(r["cued"]) for r in cues.values() if r["class_id"] != planted]
    assert abs(np.mean(own) - EVAL_RATE_CUED) < 0.2 and 0 < np.mean(own) < 1
    assert abs(np.mean(other) - EVAL_RATE_OTHER) < 0.06
    assert {r["class_id"] for r in cues.values()} == set(DIGIT_CLASSES.ids)


@pytest.mark.parametrize("cue", sorted(CUES))
def test_the_config_names_source_model_and_boxes(
    cue: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUDIT_CACHE_DIR", str(tmp_path))
    cfg = load_config(str(REPO / "configs" / f"demo-bias-{cue}.yaml"))
    assert cfg.data.is_demo and cfg.data.demo_model == f"demo_bias_{cue}"
    preflight(cfg)
    data = resolve_data(cfg.data)
    assert data.boxes == os.path.join(os.path.dirname(data.source), BOXES_FILE)
    assert os.path.isfile(data.boxes)
    wrong = build_config({"data": {"source": f"demo-bias-{cue}"}})  # the demo model
    with pytest.raises(ConfigError, match=f"model.name=demo_bias_{cue}"):
        preflight(wrong)


def test_unreadable_boxes_stop_the_run_before_any_work(tmp_path: Path) -> None:
    """A missing or unreadable data.boxes is one line naming the field at planning
    (audit.run.plan.prepare), not a failure at the end of the pass."""
    from audit.run.plan import check_boxes

    missing = build_config({"data": {"source": str(tmp_path), "boxes": str(tmp_path / "no.csv")}})
    with pytest.raises(ConfigError, match=r"^The 'data.boxes' field cannot be used: .*no\.csv"):
        check_boxes(missing.data)
    bad = tmp_path / "bad.csv"
    bad.write_text("something,else\n1,2\n")
    with pytest.raises(ConfigError, match=r"data\.boxes"):
        check_boxes(build_config({"data": {"source": str(tmp_path), "boxes": str(bad)}}).data)
    good = tmp_path / "good.csv"
    good.write_text("image_id,wnid,x0,y0,x1,y1\na,digit_1,1,1,5,5\nb,digit_1,9,1,5,5\n")
    check_boxes(build_config({"data": {"source": str(tmp_path), "boxes": str(good)}}).data)
