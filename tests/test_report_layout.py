"""The report's layout in headless Chromium: at a wide and a narrow window, every picture, table,
figure and card lies horizontally inside the card or section that holds it, nothing makes the
page wider than the window, wide tables scroll inside their own wrapper, the console stays
clean, and the screenshots are of a real page.

The report is of both demo runs (tests/test_report.py's ``second_run``: the shared demo run's
copy with human-study tables) with the human-study tables in the schemas
:mod:`audit.human.analysis` writes and its Figure 2 drawn by :func:`plot_fig2` (600 x 350
pixels, wider than a picture tile), as ``audit-cli human analyze`` leaves them."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from test_report import chromium, probe_files, second_run  # noqa: F401  (fixtures, a helper)

from audit.human.analysis import (
    FIG2,
    FIG2_SCHEMA,
    TABLE1,
    TABLE1_SCHEMA,
    TABLE2,
    TABLE2_SCHEMA,
    TABLE3,
    TABLE3_SCHEMA,
    plot_fig2,
)
from audit.report.bias import read_attributes, read_pairs
from audit.report.build import make_report
from audit.report.config import ReportConfig

WIDTHS = (1400, 800, 480)
"""Window widths the report is checked at: a desktop one, a narrow one (half a laptop screen,
narrower than the widest tables and than the 750-pixel plots) and a phone's."""

RULE = "at least 4 of 5 raters"
BATCHES = ("misclassified-top1-2024-rater-pool-a", "misclassified-top5-2024-rater-pool-b")


def human_tables() -> dict[str, pa.Table]:
    """Tables 1-3 and Figure 2's data in the schemas audit.human.analysis writes (batch names
    as long as real ones, which makes Table 1 wider than a narrow window)."""
    table1 = [
        {
            "batch": BATCHES[0],
            "metric": "top-1 error",
            "classes_shown": "top-1 prediction",
            "images": 300,
            "errors": 8,
            "standard_error": 8 / 300,
            "rated_errors": 8,
            "rectified_images": 4,
            "rectified_error": 4 / 300,
            "rule": RULE,
        },
        {
            "batch": BATCHES[1],
            "metric": "top-5 error",
            "classes_shown": "top-5 predictions",
            "images": 300,
            "errors": 2,
            "standard_error": 2 / 300,
            "rated_errors": 2,
            "rectified_images": 1,
            "rectified_error": 1 / 300,
            "rule": RULE,
        },
    ]
    fig2 = [
        {"batch": b, "positive_answers": yes, "images": n, "fraction": n / 8}
        for b in BATCHES
        for yes, n in enumerate((1, 1, 2, 1, 2, 1))
    ]
    table2 = [
        {
            "study": "adversarial",
            "batch": f"adversarial-{condition}-2024",
            "condition": label,
            "images": 12,
            "rated_images": 12,
            "answers": 60,
            "yes_fraction": 0.625,
            "relevant_images": 7,
            "relevant_fraction": 7 / 12,
            "rule": RULE,
        }
        for condition, label in (("whole", "whole image"), ("lime", "explanation"))
    ]
    table3 = [
        {
            "batch": "assignment-2024",
            "condition": condition,
            "method": method,
            "prototypes": 3,
            "criticisms": crit,
            "questions": 10,
            "rated_questions": 10,
            "answers": 50,
            "mean_success": 0.7,
            "std_success": 0.12,
        }
        for condition, method, crit in (("mmd_p3_c0", "mmd", 0), ("mmd_p3_c1", "mmd", 1))
    ]
    return {
        TABLE1: pa.Table.from_pylist(table1, schema=TABLE1_SCHEMA),
        FIG2: pa.Table.from_pylist(fig2, schema=FIG2_SCHEMA),
        TABLE2: pa.Table.from_pylist(table2, schema=TABLE2_SCHEMA),
        TABLE3: pa.Table.from_pylist(table3, schema=TABLE3_SCHEMA),
    }


@pytest.fixture(scope="module")
def layout_report(
    demo_run: str,
    second_run: str,  # noqa: F811  (the imported fixture)
    probe_files: tuple[str, str],  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> str:
    """The full report (both runs, both probes) with the second run's human folder as
    ``audit-cli human analyze`` writes it: Tables 1-3, Figure 2's table and its PNG."""
    folder = tmp_path_factory.mktemp("layout")
    run = folder / "demo-b"
    shutil.copytree(second_run, run)
    tables = run / "human" / "tables"
    for name, table in human_tables().items():
        pq.write_table(table, tables / f"{name}.parquet")
    figure = plot_fig2(human_tables()[FIG2])
    (run / "human" / "figures" / f"{FIG2}.png").write_bytes(figure)
    assert Image.open(run / "human" / "figures" / f"{FIG2}.png").size == (600, 350)
    out = folder / "index.html"
    attributes, pairs = probe_files
    make_report(
        [demo_run, str(run)],
        str(out),
        ReportConfig(),
        read_attributes(attributes),
        read_pairs(pairs),
    )
    return str(out)


# ---------------------------------------------------------------- measuring in the browser

CARDS = "section, figure, details, pre, .cls, .row, .grid, .group, .pager, .note, .noimg, .sel"
"""What holds other boxes: the sections and the card-like blocks of audit/report/html.py."""

BOXES = f"img, table, .tablewrap, svg, canvas, figcaption, p, h2, h3, {CARDS}"
"""What must lie inside the card or section that holds it."""

MEASURE = """
const CARDS = arguments[0], BOXES = arguments[1];
document.querySelectorAll('details').forEach(d => { d.open = true; });
function box(e) {
  const r = e.getBoundingClientRect();
  return {
    tag: e.tagName.toLowerCase(), cls: e.getAttribute('class') || '', id: e.id || '',
    section: (e.closest('section') || {}).id || '',
    alt: e.getAttribute('alt') || '', caption: e.caption ? e.caption.textContent : '',
    left: r.left, right: r.right, width: r.width,
  };
}
function clips(e) {
  const o = getComputedStyle(e).overflowX;
  return o !== 'visible';
}
function shown(e) {
  const r = e.getBoundingClientRect();
  return e.getClientRects().length > 0 && (r.width > 0 || r.height > 0);
}
const out = [];
let checked = 0;
document.querySelectorAll(BOXES).forEach(e => {
  if (!shown(e)) { return; }
  checked += 1;
  let c = e.parentElement, scroller = null;
  while (c && c !== document.body && !c.matches(CARDS)) {
    if (clips(c)) { scroller = c; break; }
    c = c.parentElement;
  }
  if (!c || c === document.body) { c = document.querySelector('main'); }
  if (scroller || !c || c === e || clips(c)) { return; }  // it scrolls (or is clipped) inside
  // its wrapper, which is checked itself
  const a = box(e), b = box(c);
  if (a.left < b.left - 1 || a.right > b.right + 1) { out.push([a, b]); }
});
const tables = Array.from(document.querySelectorAll('table')).filter(shown).map(t => {
  const w = t.parentElement, s = getComputedStyle(w).overflowX;
  return {
    table: box(t), wrapper: box(w), overflow: s,
    scrolls: w.scrollWidth > w.clientWidth + 1,
  };
});
return {
  out: out, tables: tables, checked: checked,
  scrollWidth: document.documentElement.scrollWidth,
  clientWidth: document.documentElement.clientWidth,
  innerWidth: window.innerWidth,
};
"""


def describe(b: dict[str, Any]) -> str:
    cls = "." + ".".join(b["cls"].split()) if b["cls"] else ""
    ident = f"#{b['id']}" if b["id"] else ""
    alt = f" alt={b['alt']!r}" if b["alt"] else ""
    alt += f" caption={b['caption']!r}" if b["caption"] else ""
    return f"{b['tag']}{ident}{cls}{alt} [{b['left']:.0f}, {b['right']:.0f}] ({b['width']:.0f} px)"


def overflow_lines(found: list[list[dict[str, Any]]]) -> list[str]:
    """One line per box sticking out of its card: what, where, its bounds vs the card's."""
    return [
        f"in section #{a['section'] or '-'}: {describe(a)} outside {describe(b)}" for a, b in found
    ]


def not_blank(shot: Path) -> np.ndarray:
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.std() > 10, f"{shot.name} looks blank (pixel std {pixels.std():.1f})"
    return pixels


def layout_problems(driver: Any, width: int) -> list[str]:
    """Everything wrong with the layout of the page open in ``driver`` (a window ``width``
    pixels wide), one line each, naming the element, its section and its bounds."""
    m = driver.execute_script(MEASURE, CARDS, BOXES)
    problems = overflow_lines(m["out"])
    if m["checked"] < 300:  # both runs' pictures, tables and cards: the page is all there
        problems.append(f"only {m['checked']} boxes on the page to check")
    if m["scrollWidth"] > m["clientWidth"]:
        problems.append(
            f"the page is {m['scrollWidth']} px wide, the window {m['clientWidth']} px "
            f"(inner {m['innerWidth']} px)"
        )
    # every table scrolls inside a wrapper of its own
    problems += [
        f"in section #{t['table']['section']}: {describe(t['table'])} is not in a scrolling "
        f"wrapper: its parent {describe(t['wrapper'])} has overflow-x: {t['overflow']}"
        for t in m["tables"]
        if t["overflow"] not in ("auto", "scroll")
    ]
    if width < 1000:  # and a narrow window has a table wider than its wrapper: it scrolls
        wide = [t for t in m["tables"] if t["scrolls"]]
        if not any(t["table"]["section"] == "human" for t in wide):
            problems.append(f"no human-study table scrolls in its wrapper at {width} px")
    return problems


@pytest.mark.parametrize("width", WIDTHS)
def test_every_box_stays_inside_its_card(layout_report: str, width: int, tmp_path: Path) -> None:
    html = Path(layout_report).read_text()
    assert "http://" not in html and "https://" not in html  # still self-contained
    driver = chromium()
    try:
        driver.set_window_size(width, 1000)
        driver.get(Path(layout_report).as_uri())
        assert driver.execute_script("return document.readyState") == "complete"
        inner = driver.execute_script("return window.innerWidth")
        assert abs(inner - width) <= 20, f"window is {inner} px wide, wanted {width}"
        problems = layout_problems(driver, width)
        assert problems == [], f"at {width} px, {len(problems)} layout problem(s):\n" + "\n".join(
            problems
        )

        # Figure 2: shown whole inside its card, as wide as the card allows, not distorted
        fig = driver.find_element("css selector", f'#human img[alt="{FIG2}"]')
        card = driver.execute_script("return arguments[0].closest('figure')", fig)
        assert card is not None, "Figure 2 is not in a figure card"
        img, holder = fig.rect, card.rect
        assert holder["x"] - 1 <= img["x"], (img, holder)
        assert img["x"] + img["width"] <= holder["x"] + holder["width"] + 1, (img, holder)
        natural = driver.execute_script(
            "return [arguments[0].naturalWidth, arguments[0].naturalHeight]", fig
        )
        assert natural == [600, 350]
        assert img["width"] >= min(600, width * 0.6) - 1, img  # not shrunk to a thumbnail
        assert abs(img["height"] / img["width"] - 350 / 600) < 0.02, img

        top = tmp_path / f"top-{width}.png"
        assert driver.save_screenshot(str(top))
        assert not_blank(top).shape[1] >= width - 20
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", card)
        human = tmp_path / f"human-{width}.png"
        assert driver.save_screenshot(str(human))
        not_blank(human)
        shot = tmp_path / f"fig2-{width}.png"
        assert card.screenshot(str(shot))
        pixels = not_blank(shot)  # the plot is drawn, within the card's bounds
        assert abs(pixels.shape[1] - holder["width"]) <= 2, (pixels.shape, holder)

        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert errors == []
    finally:
        driver.quit()
