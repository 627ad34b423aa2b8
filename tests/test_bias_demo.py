"""Bias discovery on the planted-bias demos, end to end: ``audit-cli run -c
configs/demo-bias-<cue>.yaml`` must put the planted class first of ``bias_candidates`` by
context reliance, for both cues (a corner patch on digit_3, stripes on digit_7), with the
context score equal to a plain loop over the stored explanations and boxes, and the planted
class must show in the co-activation or slice evidence too."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pytest
from PIL import Image
from typer.testing import CliRunner

from audit.cli import app
from audit.data.demo_bias import BOXES_FILE, get_cue
from audit.data.segments import decode_segments

REPO = Path(__file__).resolve().parents[1]


def _table(run: Path, name: str) -> list[dict]:
    return pads.dataset(run / name, format="parquet").to_table().to_pylist()


def _plain_context(run: Path, boxes_csv: Path) -> dict[int, list[float]]:
    """Per explained class: the share of the positive LIME weight outside the digit's box, by
    pixel loops (resize the shorter side to 256, centre crop 224, a pixel inside a box when its
    centre is)."""
    with open(boxes_csv) as f:
        boxes = {
            r["image_id"]: [float(r[k]) for k in ("x0", "y0", "x1", "y1")]
            for r in csv.DictReader(f)
        }
    preds = {r["image_id"]: r for r in _table(run, "predictions")}
    out: dict[int, list[float]] = {}
    for e in _table(run, "explanations"):
        if e["variant"] != "clean":
            continue
        p = preds[e["image_id"]]
        w, h = Image.open(p["uri"].removeprefix("file://")).size
        rw, rh = (256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256)
        left, top = round((rw - 224) / 2), round((rh - 224) / 2)
        x0, y0, x1, y1 = boxes[e["image_id"]]
        bx0, bx1 = x0 * rw / w - left, x1 * rw / w - left
        by0, by1 = y0 * rh / h - top, y1 * rh / h - top
        seg = decode_segments(e["segments"])
        weights = e["weights"]
        pos_total = pos_out = 0.0
        for k, wk in enumerate(weights):
            if wk <= 0:
                continue
            ys, xs = np.nonzero(seg == k)
            if not len(xs):
                continue
            inside = sum(
                1
                for x, y in zip(xs, ys, strict=True)
                if bx0 <= x + 0.5 < bx1 and by0 <= y + 0.5 < by1
            )
            pos_total += wk
            pos_out += wk * (len(xs) - inside) / len(xs)
        if pos_total > 0:
            out.setdefault(p["top5_classes"][0], []).append(pos_out / pos_total)
    return out


@pytest.fixture(scope="module")
def bias_runs(tmp_path_factory: pytest.TempPathFactory, demo_cache: str) -> dict[str, Path]:
    """Both planted-bias demos, each run as a user runs it: ``audit-cli run -c
    configs/demo-bias-<cue>.yaml``."""
    out = tmp_path_factory.mktemp("bias-runs")
    runs = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUDIT_CACHE_DIR", demo_cache)
        for cue in ("patch", "stripes"):
            config = str(REPO / "configs" / f"demo-bias-{cue}.yaml")
            args = ["run", "-c", config, "--output", str(out), "--run-id", cue, "--no-progress"]
            result = CliRunner().invoke(app, args)
            assert result.exit_code == 0, result.output[-3000:]
            assert "bias_candidates" in result.output
            runs[cue] = out / cue
    return runs


@pytest.mark.slow  # two audits of 300 pictures with LIME on 100 of them
@pytest.mark.parametrize("cue", ["patch", "stripes"])
def test_the_planted_class_is_found(cue: str, bias_runs: dict[str, Path]) -> None:
    planted = get_cue(cue).class_id
    run = bias_runs[cue]
    manifest = json.loads((run / "manifest.json").read_text())
    bias = manifest["stages"]["bias"]
    assert bias["state"] == "done" and bias["boxes"]["images"] == 300, bias
    rows = _table(run, "bias_candidates")
    context = sorted((r for r in rows if r["kind"] == "context"), key=lambda r: r["rank"])
    assert context[0]["class_id"] == planted, [(r["class_id"], r["statistic"]) for r in context]
    assert context[0]["p_value"] is not None and context[0]["p_value"] <= 0.05

    # the score against a plain loop, and the ranking it gives
    boxes = Path(manifest["config"]["data"]["boxes"])
    assert boxes.name == BOXES_FILE
    plain = _plain_context(run, boxes)
    means = {c: float(np.mean(v)) for c, v in plain.items()}
    assert max(means, key=means.__getitem__) == int(planted.split("_")[1])
    for r in context:
        assert r["statistic"] == pytest.approx(means[r["class"]], abs=1e-9), r["class_id"]

    # the planted class in the other evidence: a slice of its own, or the class other classes'
    # mistakes or criticisms co-activate
    named = re.compile(rf"score of {planted} is higher")
    coactivated = [r for r in rows if r["kind"] == "coactivation" and named.search(r["evidence"])]
    sliced = [r for r in rows if r["kind"] == "slice" and r["class_id"] == planted]
    assert coactivated or sliced


@pytest.mark.slow
def test_the_report_shows_the_candidates(bias_runs: dict[str, Path], tmp_path: Path) -> None:
    """The report's candidates section: the table is the top 10 of each kind, the top context
    candidate's exemplars are shown with boxes drawn, and it renders in Chromium with a clean
    console and every box inside its card."""
    from test_report import chromium, dom, table_rows
    from test_report_layout import BOXES, CARDS, MEASURE, overflow_lines

    from audit.report.build import build_report
    from audit.report.config import ReportConfig
    from audit.report.data import load_run

    runs = [load_run(str(bias_runs[c])) for c in ("patch", "stripes")]
    report = build_report(runs, ReportConfig(examples=4, max_classes=10))
    assert "candidates" in report.sections
    section = dom(report.html).one("section", id="candidates")
    # the top context class links to its prototypes and criticisms (first run's classes)
    assert next(a.attrs["href"] for a in section.all("a")) == "#class-3"
    rows = table_rows(section.all("table")[0])
    want = [
        (r.title, k["kind"], str(k["rank"]))
        for r, cue in zip(runs, ("patch", "stripes"), strict=True)
        for k in sorted(
            _table(bias_runs[cue], "bias_candidates"), key=lambda k: (k["kind"], k["rank"])
        )
        if k["rank"] <= 10
    ]
    assert [(row[0], row[1], row[2]) for row in rows] == want
    first = sorted(
        (k for k in _table(bias_runs["patch"], "bias_candidates") if k["kind"] == "context"),
        key=lambda k: k["rank"],
    )[0]
    captions = [f.one("figcaption").text() for f in section.all("figure")]
    for image_id in first["exemplar_ids"]:
        assert any(c.startswith(image_id) for c in captions), image_id
    path = tmp_path / "bias.html"
    path.write_text(report.html)
    driver = chromium()
    try:
        driver.get(path.as_uri())
        assert (
            driver.execute_script("return document.querySelectorAll('#candidates img').length") >= 6
        )
        m = driver.execute_script(MEASURE, CARDS, BOXES)
        assert overflow_lines(m["out"]) == []
        assert m["scrollWidth"] <= m["clientWidth"]
        assert [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")] == []
    finally:
        driver.quit()
