"""The HTML report on a real demo run (the session's shared one, tests/fixtures_demo.py):
opened in headless Chromium (every image loads, the tables are there, the console stays
clean, the class search works), its numbers checked against plain loops over the Parquet files,
the sampling and size budget, the CLI, human-study tables, and object storage (moto S3)."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, ClassVar

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import moto_s3
from PIL import Image
from typer.testing import CliRunner

from audit.config import ConfigError
from audit.report.bias import read_attributes, read_pairs
from audit.report.build import build_report, make_report
from audit.report.cli import app
from audit.report.config import ReportConfig
from audit.report.data import load_run

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


# ---------------------------------------------------------------- a tiny DOM for assertions


class Node:
    def __init__(self, tag: str, attrs: dict[str, str], parent: Node | None) -> None:
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Node] = []
        self.texts: list[str] = []

    def text(self) -> str:
        return "".join(self.texts) + "".join(c.text() for c in self.children)

    def all(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> list[Node]:
        out = []
        for c in self.children:
            ok = (tag is None or c.tag == tag) and (
                cls is None or cls in c.attrs.get("class", "").split()
            )
            ok = ok and all(c.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())
            if ok:
                out.append(c)
            out.extend(c.all(tag, cls, **attrs))
        return out

    def one(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> Node:
        found = self.all(tag, cls, **attrs)
        assert len(found) == 1, f"expected one {tag}.{cls} {attrs}, found {len(found)}"
        return found[0]


class Tree(HTMLParser):
    VOID: ClassVar[set[str]] = {"img", "meta", "link", "input", "br", "hr"}

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {}, None)
        self.cur = self.root
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs}, self.cur)
        self.cur.children.append(node)
        if tag not in self.VOID:
            self.cur = node

    def handle_endtag(self, tag: str) -> None:
        node: Node | None = self.cur
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.cur = node.parent

    def handle_data(self, data: str) -> None:
        self.cur.texts.append(data)


def dom(html: str) -> Node:
    return Tree(html).root


def table_rows(table: Node) -> list[list[str]]:
    return [[c.text().strip() for c in tr.all("td")] for tr in table.all("tr") if tr.all("td")]


# ---------------------------------------------------------------- the runs


# demo_run: the session's shared demo run (tests/fixtures_demo.py: the embedded demo, 300
# digits + 1 broken file, adversarial images kept, LIME cut to 100 samples). Read-only: the
# fixtures and tests below that change a run copy it first.


HUMAN_TABLE1 = {
    "batch": ["misclassified-top1"],
    "metric": ["top-1 error"],
    "images": [300],
    "standard_error": [0.0267],
    "rectified_error": [0.0123],
    "rule": ["<b>4 of 5</b> & more"],
}
HUMAN_TABLE2 = {
    "study": ["adversarial"],
    "condition": ["<script>alert('x')</script>"],
    "yes_fraction": [0.625],
}
HUMAN_REAL = {"measure": ["top-1 accuracy"], "accuracy": [0.8765], "images": [300]}


@pytest.fixture(scope="module")
def second_run(demo_run: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A copy of the demo run standing in for a second model: adversarial pixels dropped (as
    with attack.keep_images false) and hand-written human-study tables and figure added."""
    dst = tmp_path_factory.mktemp("runs2") / "demo-b"
    shutil.copytree(demo_run, dst)
    for path in (dst / "adversarial").glob("*.parquet"):
        t = pq.read_table(path)
        t = t.set_column(
            t.schema.get_field_index("image_png"), "image_png", pa.nulls(t.num_rows, pa.binary())
        )
        t = t.set_column(
            t.schema.get_field_index("stored_flips"),
            "stored_flips",
            pa.nulls(t.num_rows, pa.bool_()),
        )
        pq.write_table(t, path)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["run_id"] = "demo-b"
    manifest["config"]["attack"]["keep_images"] = False
    (dst / "manifest.json").write_text(json.dumps(manifest))
    tables = dst / "human" / "tables"
    tables.mkdir(parents=True)
    pq.write_table(pa.table(HUMAN_TABLE1), tables / "table1_rectified.parquet")
    pq.write_table(pa.table(HUMAN_TABLE2), tables / "table2_adversarial.parquet")
    pq.write_table(pa.table(HUMAN_REAL), tables / "public_real.parquet")
    figures = dst / "human" / "figures"
    figures.mkdir()
    Image.new("RGB", (40, 30), (10, 200, 30)).save(figures / "fig2_positive_answers.png")
    return str(dst)


def read_parquet_dir(run: str, table: str) -> pa.Table:
    """The reference reader: every Parquet file of the table folder, straight from pyarrow."""
    files = sorted(Path(run, table).glob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files])


def probe_pairs(run: str) -> list[tuple[str, str, str]]:
    """The first two images (by image_id) of every class ("same_class", 10 pairs), and the
    first images of classes k and k + 1 for k < 5 ("other_class", 5 pairs)."""
    by_label: dict[int, list[str]] = {}
    for p in sorted(read_parquet_dir(run, "predictions").to_pylist(), key=lambda p: p["image_id"]):
        by_label.setdefault(p["label"], []).append(p["image_id"])
    same = [(by_label[k][0], by_label[k][1], "same_class") for k in sorted(by_label)]
    other = [(by_label[k][0], by_label[k + 1][0], "other_class") for k in range(5)]
    return same + other


@pytest.fixture(scope="module")
def probe_files(demo_run: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """An attribute CSV (parity of the image number, and a 3-valued 'group') and a pairs CSV
    (consecutive images of the run, plus one pair naming an image the run does not have)."""
    folder = tmp_path_factory.mktemp("probes")
    ids = sorted(read_parquet_dir(demo_run, "predictions").column("image_id").to_pylist())
    lines = ["image_id,attribute,value"]
    for image_id in ids:
        number = int(image_id.rsplit("_", 1)[1])
        lines.append(f"{image_id},even_number,{'yes' if number % 2 == 0 else 'no'}")
        lines.append(f"{image_id},group,g{number % 3}")
    (folder / "attributes.csv").write_text("\n".join(lines) + "\n")
    pairs = ["image_a,image_b,attribute"]
    pairs += [f"{a},{b},{attribute}" for a, b, attribute in probe_pairs(demo_run)]
    pairs += [f"{ids[0]},NOT_IN_RUN,ghost"]
    (folder / "pairs.csv").write_text("\n".join(pairs) + "\n")
    return str(folder / "attributes.csv"), str(folder / "pairs.csv")


@pytest.fixture(scope="module")
def full_report(
    demo_run: str,
    second_run: str,
    probe_files: tuple[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[str, Any]:
    """The report of both runs with both probes, written to a local file."""
    out = tmp_path_factory.mktemp("report") / "index.html"
    attributes, pairs = probe_files
    url, report = make_report(
        [demo_run, second_run],
        str(out),
        ReportConfig(),
        read_attributes(attributes),
        read_pairs(pairs),
    )
    assert url == f"file://{out}"
    return str(out), report


# ---------------------------------------------------------------- Chromium


def chromium() -> Any:
    """Headless Chromium through the system chromedriver: no Selenium Manager, no network."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium"
    assert Path(CHROMEDRIVER).exists(), (
        f"{CHROMEDRIVER} is missing: apt-get install chromium-driver"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-report-')}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def visible_classes(driver: Any) -> list[str]:
    return list(
        driver.execute_script(
            "return Array.from(document.querySelectorAll('#class-list .cls'))"
            ".filter(e => !e.hidden && e.offsetParent !== null)"
            ".map(e => e.getAttribute('data-class'));"
        )
    )


def test_report_renders_in_chromium(full_report: tuple[str, Any], tmp_path: Path) -> None:
    path, report = full_report
    html = Path(path).read_text()
    assert "http://" not in html and "https://" not in html  # nothing to fetch
    driver = chromium()
    try:
        driver.get(Path(path).as_uri())
        assert driver.execute_script("return document.readyState") == "complete"
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt]);"
        )
        broken = [alt for complete, width, alt in images if not (complete and width > 0)]
        assert broken == []
        assert len(images) == report.images == html.count("<img ")
        assert report.images > 300  # every section has pictures (both runs)
        for section in (
            "summary",
            "accuracy",
            "per_class",
            "confusion",
            "calibration",
            "agreement",
            "misclassified",
            "adversarial",
            "classes",
            "paths",
            "human",
            "bias",
            "pairs",
        ):
            assert driver.execute_script(f"return !!document.getElementById('{section}')"), section
        for section in ("summary", "accuracy", "adversarial", "human", "bias", "pairs"):
            n = driver.execute_script(
                f"return document.querySelectorAll('#{section} table').length"
            )
            assert n >= 1, section
        assert driver.execute_script("return document.querySelectorAll('#classes img').length") > 0
        assert driver.execute_script("return document.querySelectorAll('#paths img').length") > 0

        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot))
        pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
        assert pixels.shape[0] > 500 and pixels.std() > 10  # a real page, not a blank one
        driver.execute_script("document.getElementById('classes').scrollIntoView()")
        assert driver.save_screenshot(str(tmp_path / "classes.png"))

        # the pager: 10 classes, 10 per page (default) -> all on page 1
        assert sorted(visible_classes(driver), key=int) == [str(i) for i in range(10)]
        box = driver.find_element("id", "class-search")
        box.send_keys("seven")
        assert visible_classes(driver) == ["7"]
        assert "1 class matches;" in driver.find_element("id", "class-page").text
        box.clear()
        box.send_keys("digit_")
        assert len(visible_classes(driver)) == 10

        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert errors == []
    finally:
        driver.quit()


def test_pager_pages_in_chromium(demo_run: str, tmp_path: Path) -> None:
    report = build_report([load_run(demo_run)], ReportConfig(classes_per_page=4, examples=0))
    path = tmp_path / "paged.html"
    path.write_text(report.html)
    driver = chromium()
    try:
        driver.get(path.as_uri())
        first = visible_classes(driver)
        assert first == ["0", "1", "2", "3"]
        driver.find_element("id", "class-next").click()
        assert visible_classes(driver) == ["4", "5", "6", "7"]
        driver.find_element("id", "class-next").click()
        assert visible_classes(driver) == ["8", "9"]
        assert not driver.find_element("id", "class-next").is_enabled()
        assert "page 3 of 3" in driver.find_element("id", "class-page").text
        assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []
    finally:
        driver.quit()


def test_error_tables_sort_in_chromium(demo_run: str, tmp_path: Path) -> None:
    """Clicking a heading of the per-class table sorts its rows by that column, descending and
    then ascending; the console stays clean."""
    report = build_report([load_run(demo_run)], ReportConfig(examples=0, max_classes=0))
    path = tmp_path / "sorted.html"
    path.write_text(report.html)
    driver = chromium()
    column = "return Array.from(document.querySelectorAll('#per_class tbody tr')).map(r => r.cells[3].textContent);"
    try:
        driver.get(path.as_uri())
        before = driver.execute_script(column)
        assert len(before) == 10
        driver.find_elements("css selector", "#per_class thead th")[3].click()  # top-1 error
        down = driver.execute_script(column)
        values = [float(v.rstrip(" %")) for v in down]
        assert values == sorted(values, reverse=True) and sorted(down) == sorted(before)
        driver.find_elements("css selector", "#per_class thead th")[3].click()
        up = [float(v.rstrip(" %")) for v in driver.execute_script(column)]
        assert up == sorted(up)
        assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []
    finally:
        driver.quit()


def test_per_class_filter_and_links_in_chromium(demo_run: str, tmp_path: Path) -> None:
    """The per-class table's box keeps the rows containing its text; a class's link opens the
    pager's page that holds the class (4 per page: class 6 is on page 2) and scrolls to it."""
    report = build_report([load_run(demo_run)], ReportConfig(examples=0, classes_per_page=4))
    path = tmp_path / "linked.html"
    path.write_text(report.html)
    root = dom(report.html)
    links = root.one("section", id="per_class").all("a")
    assert [a.attrs["href"] for a in links] == [f"#class-{c}" for c in range(10)]
    driver = chromium()
    shown = (
        "return Array.from(document.querySelectorAll('#per_class tbody tr'))"
        ".filter(r => !r.hidden).map(r => r.cells[1].textContent);"
    )
    try:
        driver.get(path.as_uri())
        assert len(driver.execute_script(shown)) == 10
        box = driver.find_element("css selector", "#per_class input.tablefilter")
        box.send_keys("seven")
        assert driver.execute_script(shown) == ["seven (digit_7)"]
        box.clear()
        box.send_keys("digit_")
        assert len(driver.execute_script(shown)) == 10
        assert visible_classes(driver) == ["0", "1", "2", "3"]
        driver.find_element("css selector", '#per_class a[href="#class-6"]').click()
        from selenium.webdriver.support.ui import WebDriverWait

        # hashchange is dispatched after the click returns: wait for the page it opens
        WebDriverWait(driver, 10).until(lambda d: visible_classes(d) == ["4", "5", "6", "7"])
        assert "page 2 of 3" in driver.find_element("id", "class-page").text
        top = driver.execute_script(
            "return document.getElementById('class-6').getBoundingClientRect().top"
        )
        assert -1 < top < driver.execute_script("return window.innerHeight")  # sub-pixel
        assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []
    finally:
        driver.quit()


# ---------------------------------------------------------------- content against references


def test_error_analysis_tables_match_plain_loops(demo_run: str) -> None:
    from collections import Counter

    report = build_report([load_run(demo_run)], ReportConfig(examples=0, max_classes=0))
    root = dom(report.html)
    preds = read_parquet_dir(demo_run, "predictions").to_pylist()
    labeled = [p for p in preds if p["label"] is not None]
    per = {r[1]: r for r in table_rows(root.one("section", id="per_class").all("table")[0])}
    for c in range(10):
        mine = [p for p in labeled if p["label"] == c]
        wrong = sum(p["top5_classes"][0] != c for p in mine)
        row = per[f"{DIGIT_NAMES[c]} (digit_{c})"]
        assert row[2] == str(len(mine)) and row[3] == f"{wrong / len(mine) * 100:.2f} %", row
    pairs = Counter(
        (p["label"], p["top5_classes"][0]) for p in labeled if p["top5_classes"][0] != p["label"]
    )
    per_true = Counter(p["label"] for p in labeled)
    got = table_rows(root.one("section", id="confusion").all("table")[0])
    want = sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[:30]
    assert [r[1:] for r in got] == [
        [
            f"{DIGIT_NAMES[t]} (digit_{t})",
            f"{DIGIT_NAMES[q]} (digit_{q})",
            str(n),
            f"{n / per_true[t] * 100:.2f} %",
        ]
        for (t, q), n in want
    ]
    # the matrix: every class in a mistake (fewer than its 12), each cell a plain count
    involved = sorted({c for pair in pairs for c in pair})
    assert len(involved) <= 12
    matrix = root.one("section", id="confusion").one("table", cls="confusion")
    heads = [th.text() for th in matrix.one("thead").all("th")][1:]
    assert heads == [DIGIT_NAMES[c] for c in involved]
    counts = Counter((p["label"], p["top5_classes"][0]) for p in labeled)
    assert table_rows(matrix) == [
        [str(counts[(t, q)]) if counts[(t, q)] else "" for q in involved] for t in involved
    ]
    row_heads = [tr.all("th")[0].text() for tr in matrix.one("tbody").all("tr")]
    assert row_heads == [f"{DIGIT_NAMES[t]} ({per_true[t]})" for t in involved]


def test_numbers_match_plain_loops(demo_run: str) -> None:
    report = build_report([load_run(demo_run)], ReportConfig())
    root = dom(report.html)
    preds = read_parquet_dir(demo_run, "predictions").to_pylist()
    labeled = [p for p in preds if p["label"] is not None]
    top1 = sum(p["top5_classes"][0] != p["label"] for p in labeled) / len(labeled)
    top5 = sum(p["label"] not in p["top5_classes"] for p in labeled) / len(labeled)
    acc = {r[0]: r[1] for r in table_rows(root.one("section", id="accuracy").all("table")[0])}
    assert acc["top-1 error"] == f"{top1 * 100:.2f} %"
    assert acc["top-5 error"] == f"{top5 * 100:.2f} %"
    assert acc["labeled images"] == str(len(labeled))

    adv = read_parquet_dir(demo_run, "adversarial").to_pylist()
    survived = sum(a["adv_class"] == a["label"] for a in adv) / len(adv)
    assert acc["adversarial top-1 accuracy"] == f"{survived * 100:.2f} %"
    row = table_rows(root.one("section", id="adversarial").all("table")[0])[0]
    one_step = sum(a["steps_to_flip"] == 1 for a in adv)
    never = sum(a["steps_to_flip"] is None for a in adv)
    assert row[1:5] == [
        str(len(adv)),
        f"{survived * 100:.2f} %",
        f"{one_step} ({one_step / len(adv) * 100:.2f} %)",
        f"{never} ({never / len(adv) * 100:.2f} %)",
    ]

    errors = read_parquet_dir(demo_run, "errors").to_pylist()
    assert len(errors) == 1  # the demo's deliberately broken file
    err_rows = table_rows(root.one("section", id="summary").all("table")[1])
    assert err_rows == [
        ["demo_digits (demo)", "decode", errors[0]["reason"], "1", errors[0]["image_id"]]
    ]

    # Figure 3: every tile is a misclassified image with its true and predicted class
    wrong = {p["image_id"]: p for p in labeled if p["top5_classes"][0] != p["label"]}
    tiles = root.one("section", id="misclassified").all("figure")
    assert len(tiles) == min(len(wrong), ReportConfig().examples) > 0
    for tile in tiles:
        lines = [d.text() for d in tile.one("figcaption").all("div")]
        p = wrong[lines[0]]
        assert lines[1] == f"true: {DIGIT_NAMES[p['label']]} (digit_{p['label']})"
        top = p["top5_classes"][0]
        assert lines[2] == f"predicted: {DIGIT_NAMES[top]} (digit_{top}) ({p['top5_probs'][0]:.2f})"
        assert lines[3] == f"p(true class): {p['label_prob']:.3f}"
        assert lines[4].startswith(f"top-5: {DIGIT_NAMES[top]} {p['top5_probs'][0]:.2f}, ")
    # the most confident mistakes, most confident first (the paper's Figure 3)
    confident = sorted(wrong, key=lambda k: (-wrong[k]["top5_probs"][0], k))
    shown = [t.one("figcaption").all("div")[0].text() for t in tiles]
    assert shown == confident[: len(tiles)]

    # Figures 7, 8, 10: each class block shows exactly that class's selections, in rank order
    sel = read_parquet_dir(demo_run, "selections").to_pylist()
    blocks = root.one("section", id="classes").all("div", cls="cls")
    assert sorted(int(b.attrs["data-class"]) for b in blocks) == sorted({s["class"] for s in sel})
    for block in blocks:
        cls = int(block.attrs["data-class"])
        for group in block.all("div", cls="sel"):
            method, role = group.attrs["data-method"], group.attrs["data-role"]
            want = [
                s["image_id"]
                for s in sorted(sel, key=lambda s: s["rank"])
                if s["class"] == cls and s["method"] == method and s["role"] == role
            ]
            got = [f.one("figcaption").all("div")[0].text().split()[1] for f in group.all("figure")]
            assert got == want
        shown = {
            (g.attrs["data-method"], g.attrs["data-role"]) for g in block.all("div", cls="sel")
        }
        assert shown >= {(s["method"], s["role"]) for s in sel if s["class"] == cls}

    # Figure 12: each path is the image plus one frame per top feature
    expl = {
        e["image_id"]: e
        for e in read_parquet_dir(demo_run, "explanations").to_pylist()
        if e["variant"] == "clean"
    }
    paths = root.one("section", id="paths").all("div", cls="path")
    assert len(paths) == min(len(expl), ReportConfig().paths) > 0
    for row in paths:
        figs = row.all("figure")
        image_id = figs[0].one("figcaption").all("div")[0].text()
        assert len(figs) == 1 + len(expl[image_id]["top_features"])

    # Figures 5, 6: explained adversarial images come with both explanations and stored pixels
    examples = root.one("section", id="adversarial").all("div", cls="adv-example")
    both = {
        e["image_id"]
        for e in read_parquet_dir(demo_run, "explanations").to_pylist()
        if e["variant"] == "adversarial"
    }
    assert len(examples) == ReportConfig().adversarial_examples
    first = examples[: min(len(both), len(examples))]
    for ex in first:
        figs = ex.all("figure")
        assert len(figs) == 4 and figs[0].attrs == {"class": "tile"}
        assert figs[2].one("figcaption").all("div")[0].text() == "adversarial"
    assert "adversarial pixels were not stored" not in report.html.lower()

    missing = root.one("section", id="summary").text()
    for absent in ("Human studies", "Bias probe", "Paired probe"):
        assert absent in missing
    assert report.sections == (
        "summary",
        "accuracy",
        "per_class",
        "confusion",
        "calibration",
        "misclassified",
        "adversarial",
        "classes",
        "paths",
    )


def test_two_runs_side_by_side_with_human_tables(
    full_report: tuple[str, Any], demo_run: str
) -> None:
    path, _ = full_report
    html = Path(path).read_text()
    root = dom(html)
    acc = root.one("section", id="accuracy").all("table")[0]
    header = [th.text() for th in acc.all("th")]
    assert header == ["", "demo_digits (demo)", "demo_digits (demo-b)"]
    rows = {r[0]: r[1:] for r in table_rows(acc)}
    assert rows["top-1 error"][0] == rows["top-1 error"][1]
    assert rows["rectified top-1 error (misclassified-top1)"] == ["-", "1.23 %"]
    assert rows["real: top-1 accuracy"] == ["-", "87.65 %"]

    human = root.one("section", id="human")
    captions = [c.text() for c in human.all("caption")]
    assert captions == [
        "public_real (1 rows)",
        "table1_rectified (1 rows)",
        "table2_adversarial (1 rows)",
    ]
    cells = [c for t in human.all("table") for r in table_rows(t) for c in r]
    assert "<b>4 of 5</b> & more" in cells and "<script>alert('x')</script>" in cells
    assert html.count("<script>") == 1  # the text was escaped, not injected
    assert len(human.all("img")) == 1  # the figure

    # the copy without adversarial pixels says so and shows clean pixels
    assert html.count("Adversarial pixels were not stored") == 1
    assert "clean pixels (adversarial not stored)" in html

    # the probes cover both runs
    bias = root.one("section", id="bias")
    assert [h.text() for h in bias.all("h3")] == ["demo_digits (demo)", "demo_digits (demo-b)"]
    pairs = root.one("section", id="pairs")
    rate_rows = table_rows(pairs.all("table")[0])
    preds = {p["image_id"]: p for p in read_parquet_dir(demo_run, "predictions").to_pylist()}
    changed = {"all pairs": 0, "same_class": 0, "other_class": 0}
    for a, b, attribute in probe_pairs(demo_run):
        flip = preds[a]["top5_classes"][0] != preds[b]["top5_classes"][0]
        changed["all pairs"] += flip
        changed[attribute] += flip
    assert changed["other_class"] > 0
    got = {r[1]: r[2:] for r in rate_rows if r[0] == "demo_digits (demo)"}
    assert got["all pairs"][:2] == ["15", str(changed["all pairs"])]
    assert got["all pairs"][4] == "1"  # the pair naming an image the run does not have
    assert got["same_class"][:2] == ["10", str(changed["same_class"])]
    assert got["other_class"][:2] == ["5", str(changed["other_class"])]
    assert got["ghost"][:2] == ["0", "0"]
    assert len(pairs.all("div", cls="pair")) == 16
    assert "NOT_IN_RUN: not in this run" in html


def test_bias_table_sorted_and_complete(demo_run: str, probe_files: tuple[str, str]) -> None:
    attrs = read_attributes(probe_files[0])
    report = build_report([load_run(demo_run)], ReportConfig(bias_rows=15), attributes=attrs)
    rows = table_rows(dom(report.html).one("section", id="bias").one("table"))
    assert len(rows) == 15
    effects = [abs(float(r[6].split()[0])) for r in rows]
    assert effects == sorted(effects, reverse=True)
    # expected number of tests: every (class, method, role) set x 4 features (all annotated)
    sel = read_parquet_dir(demo_run, "selections").to_pylist()
    sets = {(s["class"], s["method"], s["role"]) for s in sel}
    assert f"{len(sets) * 4 - 15} more rows" in report.html


# ---------------------------------------------------------------- sampling and size budget


def embedded_bytes(html: str) -> list[int]:
    return [len(base64.b64decode(m)) for m in re.findall(r'src="data:[^;]+;base64,([^"]+)"', html)]


def test_image_budget_and_sampling(demo_run: str) -> None:
    run = load_run(demo_run)
    small = build_report([run], ReportConfig(max_images=10))
    assert small.images == 10 == small.html.count("<img ")
    assert small.refused_images > 0
    assert f"{small.refused_images} image(s) were left out" in small.html
    assert small.html.count("report image budget spent") == small.refused_images

    cap = 60_000
    capped = build_report([run], ReportConfig(max_image_bytes=cap))
    sizes = embedded_bytes(capped.html)
    assert sum(sizes) == capped.image_bytes <= cap and capped.refused_images > 0

    cfg = ReportConfig(examples=2, adversarial_examples=1, paths=1, max_classes=3, seed=7)
    a = build_report([run], cfg)
    root = dom(a.html)
    assert len(root.one("section", id="misclassified").all("figure")) == 2
    assert len(root.one("section", id="adversarial").all("div", cls="adv-example")) == 1
    assert len(root.one("section", id="paths").all("div", cls="path")) == 1
    assert len(root.one("section", id="classes").all("div", cls="cls")) == 3
    assert build_report([run], cfg).html == a.html  # same seed, same report
    other = build_report([run], ReportConfig(examples=2, max_classes=3, seed=8))
    assert other.html != a.html

    full = build_report([run], ReportConfig())
    thumbs = [
        Image.open(io.BytesIO(base64.b64decode(m)))
        for m in re.findall(r'src="data:image/jpeg;base64,([^"]+)"', full.html)[:20]
    ]
    assert thumbs and all(max(t.size) <= ReportConfig().thumb_size for t in thumbs)


@pytest.mark.parametrize(
    ("field", "value"), [("examples", -1), ("thumb_size", 8), ("jpeg_quality", 100), ("seed", 1.5)]
)
def test_report_config_rejects_bad_values(field: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=f"'{field}'"):
        ReportConfig(**{field: value})


# ---------------------------------------------------------------- CLI


def test_cli_writes_default_and_explicit_output(demo_run: str, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, [demo_run, "--examples", "3", "--max-classes", "2"])
    assert result.exit_code == 0, result.output
    default = Path(demo_run) / "report" / "index.html"
    assert default.is_file() and f"report: file://{default}" in result.output
    out = tmp_path / "nested" / "r.html"
    result = runner.invoke(app, [demo_run, "-o", str(out), "--max-images", "5"])
    assert result.exit_code == 0, result.output
    assert out.read_text().count("<img ") == 5
    assert "images left out" in result.output
    default.unlink()


def test_cli_errors_are_one_line(demo_run: str, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, [str(tmp_path / "no-such-run")])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0
    assert "no-such-run: no manifest.json, not a run folder" in result.output

    bad = tmp_path / "attrs.csv"
    bad.write_text("image_id,attribute,value\nDEMO_val_00000005,dark,\n")
    result = runner.invoke(app, [demo_run, "--attributes", str(bad)])
    assert result.exit_code == 1
    assert f"error: {bad}: line 2: the field 'value' is empty." == result.output.strip()

    result = runner.invoke(app, [demo_run, "--thumb-size", "4"])
    assert result.exit_code == 1 and "'thumb_size'" in result.output

    result = runner.invoke(app, [demo_run, "--storage-options", "[1]"])
    assert result.exit_code == 1
    assert (
        result.output.strip() == "error: --storage-options must be a JSON object. Got list instead."
    )


# ---------------------------------------------------------------- object storage


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, Any]]:
    with moto_s3("report-key", "report-secret", "reports") as options:
        yield options


def test_report_from_and_to_s3(demo_run: str, s3: dict[str, Any]) -> None:
    fs = fsspec.filesystem("s3", **s3)
    fs.put(demo_run, "reports/runs/demo", recursive=True)
    url, report = make_report(
        ["s3://reports/runs/demo"], cfg=ReportConfig(max_classes=2), storage_options=s3
    )
    assert url == "s3://reports/runs/demo/report/index.html"
    text = fs.cat_file("reports/runs/demo/report/index.html").decode("utf-8")
    assert text == report.html and "misclassified" in report.sections
    assert "report-secret" not in text


def test_pictures_read_crops_as_the_run_decoded_them(tmp_path: Path) -> None:
    # a run with data.jpeg_draft decoded large JPEGs in draft mode: the report shows that crop,
    # and a stray unreadable figure becomes a placeholder, not a crash
    from audit.data.decode import decode_image
    from audit.report.images import ImageBudget, Pictures

    rng = np.random.default_rng(0)
    big = np.repeat(np.repeat(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8), 10, 0), 10, 1)
    path = tmp_path / "big.jpg"
    Image.fromarray(big).save(path, quality=90)
    data = path.read_bytes()
    exact, draft = decode_image(data, 10**8), decode_image(data, 10**8, draft=True)
    assert not np.array_equal(exact, draft)
    pictures = Pictures(ImageBudget(10, 10**7), thumb_size=96, quality=80)
    assert np.array_equal(pictures.crop(str(path), 10**8, draft=True), draft)
    assert np.array_equal(pictures.crop(str(path), 10**8), exact)
    assert np.array_equal(pictures.crop(str(path), 10**8, draft=True), draft)  # cached per mode
    bad = pictures.of_png(b"not a png")
    assert bad.uri is None and bad.note.startswith("figure unreadable (UnidentifiedImageError")


def test_a_run_without_a_sections_data_is_named_there(demo_run: str, tmp_path: Path) -> None:
    # two runs, the second without adversarial rows or explanations: the sections the first
    # run fills say that the second has none, instead of leaving it out silently
    dst = tmp_path / "no-attack"
    shutil.copytree(demo_run, dst)
    for table in ("adversarial", "explanations"):
        for path in (dst / table).glob("*.parquet"):
            pq.write_table(pq.read_table(path).slice(0, 0), path)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["run_id"] = "no-attack"
    (dst / "manifest.json").write_text(json.dumps(manifest))
    cfg = ReportConfig(examples=2, adversarial_examples=2, paths=1, max_classes=1)
    _, report = make_report([demo_run, str(dst)], str(tmp_path / "r.html"), cfg)
    root = dom(report.html)
    adversarial = root.one("section", id="adversarial").text()
    assert "demo_digits (no-attack): no adversarial rows (attack disabled?)." in adversarial
    paths = root.one("section", id="paths").text()
    assert "demo_digits (no-attack): no clean explanation." in paths
    assert "demo_digits (demo): no" not in adversarial + paths
