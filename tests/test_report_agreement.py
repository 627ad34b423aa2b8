"""The report's ``agreement`` section on two runs that really differ: the shared demo run and a
copy whose predictions were changed on a known set of images (and that lacks a few images),
checked table by table against plain loops over the Parquet files."""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_report import dom, table_rows

from audit.report.build import build_report
from audit.report.config import ReportConfig
from audit.report.data import load_run


def _changed(image_id: str) -> bool:
    return sum(image_id.encode()) % 4 == 0


@pytest.fixture(scope="module")
def other_run(demo_run: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The demo run with the top-5 of about a quarter of its images shifted by one class (so
    right answers become wrong and some wrong ones right), and its last 5 images dropped."""
    dst = tmp_path_factory.mktemp("agree") / "demo-other"
    shutil.copytree(demo_run, dst)
    for path in sorted((dst / "predictions").glob("*.parquet")):
        rows = pq.read_table(path).to_pylist()
        for r in rows:
            if r["top5_classes"] and _changed(r["image_id"]):
                r["top5_classes"] = [(c + 1) % 10 for c in r["top5_classes"]]
                if r["label"] is not None:
                    r["correct_top1"] = r["top5_classes"][0] == r["label"]
        pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(path)), path)
    last = sorted((dst / "predictions").glob("*.parquet"))[-1]
    t = pq.read_table(last)
    pq.write_table(t.slice(0, max(0, t.num_rows - 5)), last)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["run_id"] = "demo-other"
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return str(dst)


def _answers(run: str) -> dict[str, tuple[int, int]]:
    t = pq.read_table(Path(run) / "predictions", columns=["image_id", "label", "top5_classes"])
    return {
        r["image_id"]: (r["label"], r["top5_classes"][0])
        for r in t.to_pylist()
        if r["label"] is not None and r["top5_classes"]
    }


def _mcnemar(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value: twice the smaller binomial tail at p = 1/2."""
    n = b + c
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def _table(html: str, caption: str) -> list[list[str]]:
    section = dom(html).one("section", id="agreement")
    found = [t for t in section.all("table") if caption in t.one("caption").text()]
    assert len(found) == 1, caption
    return table_rows(found[0])


def test_agreement_tables_match_plain_loops(demo_run: str, other_run: str) -> None:
    runs = [load_run(demo_run), load_run(other_run)]
    report = build_report(runs, ReportConfig(examples=6))
    title_a, title_b = (r.title for r in runs)
    assert "agreement" in report.sections
    a, b = _answers(demo_run), _answers(other_run)
    ids = sorted(set(a) & set(b))
    assert 0 < len(ids) < len(a)  # the dropped images are not compared
    right_a = {i: a[i][0] == a[i][1] for i in ids}
    right_b = {i: b[i][0] == b[i][1] for i in ids}

    outcomes: Counter[str] = Counter()
    for i in ids:
        if right_a[i] and right_b[i]:
            outcomes["every run right"] += 1
        elif right_a[i] or right_b[i]:
            outcomes["split: some right, some wrong"] += 1
        elif a[i][1] == b[i][1]:
            outcomes["all wrong, same answer"] += 1
        else:
            outcomes["all wrong, different answers"] += 1
    assert outcomes["split: some right, some wrong"] > 10  # the change really splits them
    got = {row[0]: int(row[1]) for row in _table(report.html, "outcome")}
    assert got == {k: outcomes[k] for k in got} and sum(got.values()) == len(ids)

    only_a = sum(right_a[i] and not right_b[i] for i in ids)
    only_b = sum(right_b[i] and not right_a[i] for i in ids)
    [pair] = _table(report.html, "Pairs of runs")
    assert pair[:3] == [title_a, title_b, str(len(ids))]
    same = sum(a[i][1] == b[i][1] for i in ids)
    assert pair[3] == f"{100 * same / len(ids):.2f} %"
    both = sum(right_a[i] and right_b[i] for i in ids)
    neither = len(ids) - both - only_a - only_b
    assert [int(v) for v in pair[4:8]] == [both, only_a, only_b, neither]
    assert float(pair[8]) == pytest.approx(_mcnemar(only_a, only_b), rel=1e-3)

    per_class = _table(report.html, "Per class, side by side")
    assert len(per_class) == 10
    for row in per_class:
        cls = int(row[0].split("digit_")[1].rstrip(")"))
        members = [i for i in ids if a[i][0] == cls]
        err_a = sum(not right_a[i] for i in members) / len(members)
        err_b = sum(not right_b[i] for i in members) / len(members)
        differ = sum(a[i][1] != b[i][1] for i in members) / len(members)
        assert row[1:] == [
            str(len(members)),
            f"{100 * err_a:.2f} %",
            f"{100 * err_b:.2f} %",
            f"{100 * abs(err_a - err_b):.2f} %",
            f"{100 * differ:.2f} %",
        ]

    # the cards: split images only, each naming both runs' answers
    section = dom(report.html).one("section", id="agreement")
    cards = section.all("figure", cls="tile")
    assert len(cards) == 6
    split = {i for i in ids if right_a[i] != right_b[i]}
    for card in cards:
        lines = [d.text() for d in card.one("figcaption").all("div")]
        assert lines[0] in split
        assert lines[2].startswith(f"{title_a}: ") and lines[3].startswith(f"{title_b}: ")
        assert lines[2].endswith("right" if right_a[lines[0]] else "wrong")
        assert lines[3].endswith("right" if right_b[lines[0]] else "wrong")


def test_one_run_has_no_agreement_section(demo_run: str) -> None:
    report = build_report([load_run(demo_run)], ReportConfig(examples=0, max_classes=0))
    assert "agreement" not in report.sections
    assert "fewer than two runs" in dom(report.html).one("section", id="summary").text()
