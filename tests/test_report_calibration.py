"""The report's ``calibration`` section: :func:`calibration` against a brute-force reference (a
plain loop over images with its own binning) on random and hand-made inputs, its edge cases and
exact values; the section on the shared demo run, its ECE checked against that reference on the
Parquet files read with pyarrow; a run without labeled images leaves the section out."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import audit
from audit.calibration import BINS, bin_index, calibration
from audit.report.build import build_report
from audit.report.config import ReportConfig
from audit.report.data import RunData, load_run
from audit.report.sections.calibration import ECE_LEGEND, run_calibration

# ---------------------------------------------------------------- the reference


def reference(
    conf: Sequence[float], correct: Sequence[bool], bins: int
) -> tuple[list[int], list[float | None], list[float | None], float, float]:
    """``(counts, mean confidence, accuracy, ECE, MCE)`` by a loop over the images: an image is
    in the highest bin ``k`` (of ``0 .. bins - 1``) whose lower edge ``k / bins`` it reaches."""
    members: list[list[tuple[float, bool]]] = [[] for _ in range(bins)]
    for c, ok in zip(conf, correct, strict=True):
        b = 0
        for k in range(1, bins):
            if c >= k / bins:
                b = k
        members[b].append((float(c), bool(ok)))
    n = len(conf)
    counts: list[int] = []
    confs: list[float | None] = []
    accs: list[float | None] = []
    ece, mce = 0.0, 0.0
    for m in members:
        counts.append(len(m))
        if not m:
            confs.append(None)
            accs.append(None)
            continue
        c_b = sum(c for c, _ in m) / len(m)
        a_b = sum(1 for _, ok in m if ok) / len(m)
        confs.append(c_b)
        accs.append(a_b)
        ece += len(m) / n * abs(a_b - c_b)
        mce = max(mce, abs(a_b - c_b))
    return counts, confs, accs, ece, mce


def assert_matches_reference(conf: Sequence[float], correct: Sequence[bool], bins: int) -> None:
    cal = calibration(np.asarray(conf), np.asarray(correct), bins)
    counts, confs, accs, ece, mce = reference(list(conf), list(correct), bins)
    assert list(cal.counts) == counts
    assert cal.images == len(conf) == sum(counts)
    for got, want in ((cal.confidence, confs), (cal.accuracy, accs)):
        assert [g is None for g in got] == [w is None for w in want]
        assert [g for g in got if g is not None] == pytest.approx(
            [w for w in want if w is not None], abs=1e-12
        )
    assert cal.ece == pytest.approx(ece, abs=1e-12)
    assert cal.mce == pytest.approx(mce, abs=1e-12)
    assert cal.mean_confidence == pytest.approx(float(np.mean(conf)), abs=1e-12)
    assert cal.mean_accuracy == pytest.approx(float(np.mean(correct)), abs=1e-12)
    # the overall gap averages the signed per-bin gaps: never more than the ECE
    assert abs(cal.overconfidence) <= cal.ece + 1e-12


# ---------------------------------------------------------------- the pure function


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("bins", [1, 2, 7, BINS, 40])
def test_random_inputs_match_the_reference(seed: int, bins: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    conf = rng.beta(5.0, 1.0, n)  # mostly high, like a classifier's top-1
    # a few on the edges and at both ends
    edges = rng.integers(0, bins + 1, n // 5) / bins
    conf[: len(edges)] = edges
    correct = rng.random(n) < conf**1.5
    assert_matches_reference(conf.tolist(), correct.tolist(), bins)


def test_every_edge_is_the_lower_edge_of_its_bin_and_1_is_in_the_last() -> None:
    conf = [k / BINS for k in range(BINS + 1)]  # 0, 1/15, ..., 14/15, 1
    cal = calibration(conf, [True] * len(conf), BINS)
    assert list(bin_index(np.asarray(conf), BINS)) == [*range(BINS), BINS - 1]
    assert cal.counts == (1,) * (BINS - 1) + (2,)
    assert cal.edges == tuple(k / BINS for k in range(BINS + 1))
    assert cal.edges[0] == 0.0 and cal.edges[-1] == 1.0
    assert_matches_reference(conf, [k % 2 == 0 for k in range(BINS + 1)], BINS)


def test_just_below_an_edge_is_in_the_bin_below() -> None:
    for k in range(1, BINS + 1):
        below = math.nextafter(k / BINS, 0.0)
        assert int(bin_index(np.asarray([below]), BINS)[0]) == k - 1
    assert_matches_reference(
        [math.nextafter(k / BINS, 0.0) for k in range(1, BINS + 1)], [True] * BINS, BINS
    )


def test_confidence_0_and_1() -> None:
    cal = calibration([0.0, 0.0, 1.0, 1.0], [False, False, True, True], BINS)
    assert cal.counts[0] == 2 and cal.counts[-1] == 2 and sum(cal.counts) == 4
    assert cal.confidence[0] == 0.0 and cal.accuracy[0] == 0.0
    assert cal.confidence[-1] == 1.0 and cal.accuracy[-1] == 1.0
    assert cal.ece == 0.0 and cal.mce == 0.0
    # sure and wrong, unsure and right: each image off by 1
    cal = calibration([0.0, 1.0], [True, False], BINS)
    assert cal.ece == 1.0 and cal.mce == 1.0


def test_empty_bins_have_no_means_and_do_not_count_in_the_mce() -> None:
    cal = calibration([0.9] * 10, [True] * 5 + [False] * 5, BINS)
    assert cal.counts[-2] == 10  # 0.9 is in [13/15, 14/15)
    assert sum(cal.counts) == 10
    assert [b for b, n in enumerate(cal.counts) if n] == [BINS - 2]
    assert all(c is None for b, c in enumerate(cal.confidence) if b != BINS - 2)
    assert all(a is None for b, a in enumerate(cal.accuracy) if b != BINS - 2)
    assert cal.ece == pytest.approx(0.4) and cal.mce == pytest.approx(0.4)
    assert cal.overconfidence == pytest.approx(0.4)


def test_all_correct_and_all_wrong() -> None:
    rng = np.random.default_rng(7)
    conf = rng.random(500)
    right = calibration(conf, np.ones(500, bool), BINS)
    assert right.ece == pytest.approx(1.0 - conf.mean(), abs=1e-12)  # under-confident
    assert right.mean_accuracy == 1.0 and right.overconfidence < 0
    wrong = calibration(conf, np.zeros(500, bool), BINS)
    assert wrong.ece == pytest.approx(conf.mean(), abs=1e-12)  # over-confident
    assert wrong.mean_accuracy == 0.0 and wrong.overconfidence > 0
    assert wrong.mce == pytest.approx(max(c for c in wrong.confidence if c is not None))
    assert_matches_reference(conf.tolist(), [True] * 500, BINS)
    assert_matches_reference(conf.tolist(), [False] * 500, BINS)


def test_a_perfectly_calibrated_model_has_a_small_ece() -> None:
    rng = np.random.default_rng(0)
    conf = rng.random(200_000)
    correct = rng.random(conf.size) < conf  # right exactly as often as it is sure
    cal = calibration(conf, correct, BINS)
    assert cal.ece < 0.01
    assert abs(cal.overconfidence) < 0.01
    # and one twice as unsure as it should be is far off
    assert calibration(conf / 2, correct, BINS).ece > 0.2


def test_analytic_cases() -> None:
    # two bins, each of 4 images: 0.25 sure and right 1 in 4 (gap 0), 0.75 sure and right
    # 1 in 4 (gap 0.5): ECE = 4/8 * 0 + 4/8 * 0.5, MCE 0.5, over-confident by 0.5 - 0.25
    conf = [0.25] * 4 + [0.75] * 4
    correct = [True, False, False, False] * 2
    cal = calibration(conf, correct, 2)
    assert cal.counts == (4, 4)
    assert cal.confidence == (0.25, 0.75) and cal.accuracy == (0.25, 0.25)
    assert cal.ece == 0.25 and cal.mce == 0.5
    assert cal.overconfidence == 0.25
    # one bin: ECE is |accuracy - mean confidence|
    cal = calibration([0.9] * 10, [True] * 8 + [False] * 2, 1)
    assert cal.counts == (10,)
    assert cal.ece == pytest.approx(0.1) and cal.mce == pytest.approx(0.1)
    # 15 bins: 0.5 (bin 7) right 3 of 4 and 0.9 (bin 13) right 1 of 1:
    # ECE = 4/5 * 0.25 + 1/5 * 0.1 = 0.22, MCE 0.25
    cal = calibration([0.5] * 4 + [0.9], [True, True, True, False, True], BINS)
    assert cal.counts[7] == 4 and cal.counts[13] == 1
    assert cal.ece == pytest.approx(0.22) and cal.mce == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("conf", "correct", "bins", "message"),
    [
        ([], [], BINS, "at least one image"),
        ([0.5, 0.6], [True], BINS, "one 'correct' per confidence"),
        ([0.5, 1.5], [True, True], BINS, r"in \[0, 1\]. Got 1.5"),
        ([-0.1], [True], BINS, r"in \[0, 1\]"),
        ([float("nan")], [True], BINS, r"in \[0, 1\]. Got nan"),
        ([0.5], [True], 0, "at least 1 bin"),
    ],
)
def test_bad_inputs_are_refused(
    conf: list[float], correct: list[bool], bins: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        calibration(conf, correct, bins)


def test_the_calibration_is_frozen() -> None:
    cal = calibration([0.5], [True], BINS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cal.ece = 0.0  # type: ignore[misc]
    assert cal == calibration([0.5], [True], BINS)
    hash(cal)


# ---------------------------------------------------------------- the section


class Tables(HTMLParser):
    """Every ``<table>``: its caption and the text of its cells, row by row."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[dict[str, Any]] = []
        self._cell: list[str] | None = None
        self._caption = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append(
                {"caption": "", "header": [], "rows": [], "class": dict(attrs).get("class")}
            )
        elif tag == "caption":
            self._caption = True
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "caption":
            self._caption = False
        elif tag in ("td", "th") and self._cell is not None:
            text = "".join(self._cell).strip()
            t = self.tables[-1]
            (t["header"] if tag == "th" else t["rows"][-1]).append(text)
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._caption:
            self.tables[-1]["caption"] += data
        elif self._cell is not None:
            self._cell.append(data)


def section_html(html: str) -> str:
    found = re.search(r'<section id="calibration">.*?</section>', html, re.S)
    assert found, "no calibration section"
    return found.group(0)


def tables_of(html: str) -> list[dict[str, Any]]:
    out = Tables(html).tables
    for t in out:
        t["rows"] = [r for r in t["rows"] if r]
    return out


def read_predictions(run: str) -> pa.Table:
    """The reference reader: every Parquet file of ``predictions``, straight from pyarrow."""
    files = sorted(Path(run, "predictions").glob("*.parquet"))
    return pa.concat_tables(
        [pq.read_table(f, columns=["label", "top5_probs", "correct_top1"]) for f in files]
    )


def percent(cell: str) -> float:
    assert cell.endswith(" %"), cell
    return float(cell.removesuffix(" %")) / 100.0


def with_predictions(run: RunData, table: pa.Table, run_id: str | None = None) -> RunData:
    out = dataclasses.replace(run, tables={**run.tables, "predictions": table})
    if run_id is not None:
        out = dataclasses.replace(out, manifest=dataclasses.replace(run.manifest, run_id=run_id))
    return out


def unlabeled(table: pa.Table) -> pa.Table:
    for name in ("label", "correct_top1"):
        i = table.schema.get_field_index(name)
        table = table.set_column(
            i, table.schema.field(i), pa.nulls(table.num_rows, table.schema.field(i).type)
        )
    return table


def test_the_section_on_the_demo_run_agrees_with_the_parquet_files(demo_run: str) -> None:
    preds = read_predictions(demo_run)
    conf, correct = [], []
    for r in preds.to_pylist():
        if r["label"] is not None:
            conf.append(r["top5_probs"][0])
            correct.append(r["correct_top1"])
    assert len(conf) > 100
    counts, _, accs, ece, mce = reference(conf, correct, BINS)

    report = build_report([load_run(demo_run)], ReportConfig())
    assert "calibration" in report.sections
    names = list(report.sections)
    assert names.index("confusion") < names.index("calibration") < names.index("misclassified")
    assert '<a href="#calibration">Calibration</a>' in report.html
    body = section_html(report.html)
    assert ECE_LEGEND in body
    summary, bins_table = tables_of(body)
    assert summary["caption"] == "Calibration" and "sortable" in summary["class"]
    assert summary["header"] == [
        "run",
        "labeled images",
        "ECE",
        "MCE",
        "mean confidence",
        "accuracy",
        "confidence - accuracy",
    ]
    (row,) = summary["rows"]
    assert int(row[1]) == len(conf)
    assert percent(row[2]) == pytest.approx(ece, abs=0.00005)  # shown as 12.34 %
    assert percent(row[3]) == pytest.approx(mce, abs=0.00005)
    assert percent(row[4]) == pytest.approx(float(np.mean(conf)), abs=0.00005)
    assert percent(row[5]) == pytest.approx(float(np.mean(correct)), abs=0.00005)
    # the bins: one row each, sortable, counts and accuracies as the reference's
    assert "sortable" in bins_table["class"]
    assert len(bins_table["rows"]) == BINS
    assert [int(r[2]) for r in bins_table["rows"]] == counts
    for r, acc in zip(bins_table["rows"], accs, strict=True):
        assert (r[5] == "-") if acc is None else percent(r[5]) == pytest.approx(acc, abs=5e-5)
    assert bins_table["rows"][0][1] == "[0.000, 0.067)"
    assert bins_table["rows"][-1][1] == "[0.933, 1.000]"
    contributions = [percent(r[7]) for r in bins_table["rows"] if r[7] != "-"]
    assert sum(contributions) == pytest.approx(ece, abs=BINS * 0.00005)
    # the reliability diagram, embedded
    img = re.search(r'<img src="data:image/png;base64,[^"]+"[^>]*alt="reliability diagram"', body)
    assert img, "no reliability diagram"


def test_only_labeled_rows_count_and_runs_without_labels_are_named(demo_run: str) -> None:
    run = load_run(demo_run)
    preds = run.tables["predictions"]
    half = pa.concat_tables([unlabeled(preds.slice(0, 100)), preds.slice(100)])
    t = half.select(["label", "top5_probs", "correct_top1"]).filter(pc.field("label").is_valid())
    _, _, _, ece, _ = reference(
        [p[0] for p in t.column("top5_probs").to_pylist()],
        t.column("correct_top1").to_pylist(),
        BINS,
    )
    runs = [
        with_predictions(run, half, "half"),
        with_predictions(run, unlabeled(preds), "nolabels"),
    ]
    report = build_report(runs, ReportConfig())
    body = section_html(report.html)
    summary = tables_of(body)[0]
    (row,) = summary["rows"]
    assert row[0] == runs[0].title and int(row[1]) == t.num_rows
    assert percent(row[2]) == pytest.approx(ece, abs=0.00005)
    assert f"{runs[1].title}: no labeled predictions." in body


def test_an_empty_run_has_no_calibration_section(empty_run: Callable[..., str]) -> None:
    report = build_report([load_run(empty_run("empty"))], ReportConfig())
    assert "calibration" not in report.sections
    assert "Calibration: no labeled predictions" in report.html


def test_the_notebook_recipe_of_the_module_docstring(demo_run: str) -> None:
    run = audit.open_run(demo_run)
    t = run.table(
        "predictions", ["top5_probs", "correct_top1"], filters=pc.field("label").is_valid()
    )
    cal = calibration(pc.list_element(t["top5_probs"], 0), t["correct_top1"])
    assert cal == run_calibration(load_run(demo_run))


def test_a_run_without_labeled_images_has_no_calibration_section(demo_run: str) -> None:
    run = load_run(demo_run)
    run = with_predictions(run, unlabeled(run.tables["predictions"]))
    report = build_report([run], ReportConfig())
    assert "calibration" not in report.sections
    assert 'id="calibration"' not in report.html
    assert "Calibration: no labeled predictions" in report.html
