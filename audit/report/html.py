"""Small HTML building blocks. Every piece of text goes through :func:`esc`; only :class:`Raw`
values (HTML built here) are inserted as they are. The page needs no network: styles and the
little script of the class pager are inline, images are ``data:`` URIs."""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from typing import Any

from audit.report.images import Picture


class Raw(str):
    """HTML that is already safe (built by this module from escaped parts)."""


def esc(value: Any) -> str:
    """Text as HTML (quotes too), unless it is :class:`Raw`."""
    if isinstance(value, Raw):
        return str(value)
    return html.escape(fmt(value), quote=True)


def fmt(value: Any) -> str:
    """A cell's text: floats with 4 significant digits, None as a dash."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.4g}"
    return str(value)


def pct(value: float | None, digits: int = 2) -> str:
    """``0.1234 -> "12.34 %"``; None as a dash."""
    return "-" if value is None else f"{value * 100:.{digits}f} %"


def table(
    header: Sequence[str],
    rows: Iterable[Sequence[Any]],
    caption: str = "",
    cls: str = "data",
    sortable: bool = False,
    filterable: bool = False,
) -> Raw:
    """A ``<table>`` with a header row; cells are escaped unless :class:`Raw`. A ``sortable``
    one sorts by a column when its heading is clicked (:data:`SORT_SCRIPT`); a ``filterable``
    one has a box above it that shows only the rows containing what is typed
    (:data:`FILTER_SCRIPT`). The table is in a ``<div class="tablewrap">`` of its own: a table
    wider than the page scrolls there, not the page."""
    parts = []
    if filterable:
        parts.append(
            '<input class="tablefilter" type="search" placeholder="filter rows (any text)" '
            'aria-label="filter rows">'
        )
    parts.append(
        f'<div class="tablewrap"><table class="{esc(cls)}{" sortable" if sortable else ""}">'
    )
    if caption:
        parts.append(f"<caption>{esc(caption)}</caption>")
    parts.append("<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead>")
    parts.append("<tbody>")
    for row in rows:
        parts.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>")
    parts.append("</tbody></table></div>")
    return Raw("".join(parts))


def picture(pic: Picture, alt: str) -> Raw:
    """An ``<img>`` of an embedded picture, or its placeholder text in a box of the same role."""
    if pic.uri is None:
        return Raw(f'<div class="noimg">{esc(pic.note or "no image")}</div>')
    return Raw(f'<img src="{pic.uri}" width="{pic.width}" height="{pic.height}" alt="{esc(alt)}">')


def figure(pic: Picture, alt: str, lines: Sequence[str | Raw] = (), cls: str = "tile") -> Raw:
    """A captioned card: the picture and one ``<div>`` per caption line. A ``tile`` (the
    default) is a thumbnail's, at most 240 pixels wide; a ``plot`` is as wide as its picture,
    or its section where that is narrower (the picture is scaled down to fit)."""
    caption = "".join(f"<div>{esc(line)}</div>" for line in lines)
    return Raw(
        f'<figure class="{esc(cls)}">{picture(pic, alt)}<figcaption>{caption}</figcaption></figure>'
    )


def grid(tiles: Iterable[str]) -> Raw:
    return Raw('<div class="grid">' + "".join(tiles) + "</div>")


def note(text: str) -> Raw:
    return Raw(f'<p class="note">{esc(text)}</p>')


def para(text: str) -> Raw:
    return Raw(f"<p>{esc(text)}</p>")


def heading(level: int, text: str, anchor: str = "") -> Raw:
    ident = f' id="{esc(anchor)}"' if anchor else ""
    return Raw(f"<h{level}{ident}>{esc(text)}</h{level}>")


def details(summary: str, body: str) -> Raw:
    return Raw(f"<details><summary>{esc(summary)}</summary>{body}</details>")


def pre(text: str) -> Raw:
    return Raw(f"<pre>{esc(text)}</pre>")


def section(anchor: str, title: str, body: Iterable[str]) -> Raw:
    return Raw(f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>' + "".join(body) + "</section>")


STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#1b1b1b;
background:#fafafa;line-height:1.4}
header{background:#20314a;color:#fff;padding:12px 24px}
header h1{margin:0;font-size:1.4em}
nav{padding:6px 24px;background:#e8edf3;position:sticky;top:0;z-index:1}
nav a{margin-right:14px;color:#20314a;text-decoration:none;font-size:.92em}
main{padding:8px 24px 48px}
section{margin-top:28px}
h2{border-bottom:2px solid #20314a;padding-bottom:2px}
img{max-width:100%;height:auto}
.tablewrap{max-width:100%;overflow-x:auto;margin:8px 0}
table.data{border-collapse:collapse;margin:0;font-size:.88em;background:#fff}
table.data th,table.data td{border:1px solid #ccd3dc;padding:3px 8px;text-align:left;
vertical-align:top}
table.data th{background:#eef2f6}
table.data caption{text-align:left;font-weight:600;padding:4px 0}
.grid{display:flex;flex-wrap:wrap;gap:10px;margin:8px 0}
figure.tile{margin:0;background:#fff;border:1px solid #ccd3dc;padding:4px;font-size:.78em;
max-width:240px}
figure.tile img{display:block;image-rendering:auto}
figure.plot{margin:8px 0;background:#fff;border:1px solid #ccd3dc;padding:6px;font-size:.85em;
width:fit-content;max-width:100%;box-sizing:border-box}
figure.plot img{display:block}
.row{display:flex;gap:6px;align-items:flex-start;flex-wrap:wrap;margin:4px 0}
.rowlabel{width:110px;font-size:.85em;font-weight:600;color:#333}
.group{border-left:3px solid #ccd3dc;padding-left:6px;margin-right:12px}
.grouplabel{font-size:.8em;color:#444}
.noimg{width:112px;height:112px;background:#eee;color:#777;font-size:.75em;display:flex;
align-items:center;justify-content:center;text-align:center;border:1px dashed #bbb}
.note{color:#5a4a00;background:#fff6d6;border-left:4px solid #e0b400;padding:4px 8px}
.cls{border:1px solid #ccd3dc;background:#fff;margin:10px 0;padding:6px 10px}
.pager{margin:8px 0;display:flex;gap:8px;align-items:center}
.pager input{padding:4px;width:260px}
input.tablefilter{padding:4px;width:260px;margin:6px 0 0}
pre{background:#f0f0f0;padding:8px;overflow:auto;max-height:420px;font-size:.8em}
"""

SORT_SCRIPT = """
(function () {
  function key(cell) {
    var t = cell.textContent.trim();
    var n = parseFloat(t);
    return (t === '-' || t === '') ? null : (isNaN(n) ? t.toLowerCase() : n);
  }
  Array.prototype.forEach.call(document.querySelectorAll('table.sortable'), function (table) {
    var body = table.tBodies[0];
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.style.cursor = 'pointer';
      th.title = 'sort by this column';
      th.addEventListener('click', function () {
        var down = th.getAttribute('aria-sort') !== 'descending';
        Array.prototype.forEach.call(table.tHead.rows[0].cells, function (other) {
          other.removeAttribute('aria-sort');
        });
        th.setAttribute('aria-sort', down ? 'descending' : 'ascending');
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = key(a.cells[col]), y = key(b.cells[col]);
          if (x === null || y === null) { return (x === null) - (y === null); }
          var c = (typeof x === typeof y) ? (x < y ? -1 : x > y ? 1 : 0)
            : (typeof x === 'number' ? -1 : 1);
          return down ? -c : c;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
})();
"""

FILTER_SCRIPT = """
(function () {
  Array.prototype.forEach.call(document.querySelectorAll('input.tablefilter'), function (box) {
    var table = box.nextElementSibling.querySelector('table');
    box.addEventListener('input', function () {
      var q = box.value.trim().toLowerCase();
      Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
        row.hidden = q !== '' && row.textContent.toLowerCase().indexOf(q) < 0;
      });
    });
  });
})();
"""

PAGER_SCRIPT = """
(function () {
  var root = document.getElementById('class-list');
  if (!root) { return; }
  var box = document.getElementById('class-search');
  var info = document.getElementById('class-page');
  var prev = document.getElementById('class-prev');
  var next = document.getElementById('class-next');
  var items = Array.prototype.slice.call(root.querySelectorAll('.cls'));
  var per = parseInt(root.getAttribute('data-per-page'), 10) || 10;
  var page = 0;
  function render() {
    var q = box.value.trim().toLowerCase();
    var hits = items.filter(function (el) {
      return el.getAttribute('data-search').indexOf(q) >= 0;
    });
    var pages = Math.max(1, Math.ceil(hits.length / per));
    if (page >= pages) { page = pages - 1; }
    items.forEach(function (el) { el.hidden = true; });
    hits.slice(page * per, (page + 1) * per).forEach(function (el) { el.hidden = false; });
    info.textContent = hits.length + (hits.length === 1 ? ' class matches' : ' classes match') +
      '; page ' + (page + 1) + ' of ' + pages;
    prev.disabled = page === 0;
    next.disabled = page >= pages - 1;
  }
  box.addEventListener('input', function () { page = 0; render(); });
  prev.addEventListener('click', function () { page -= 1; render(); });
  next.addEventListener('click', function () { page += 1; render(); });
  // a link to #class-N (the per-class table's) opens the page that holds that class
  function reveal() {
    var at = items.findIndex(function (el) { return '#' + el.id === location.hash; });
    if (at < 0) { return; }
    box.value = '';
    page = Math.floor(at / per);
    render();
    items[at].scrollIntoView();
  }
  window.addEventListener('hashchange', reveal);
  render();
  reveal();
})();
"""


def pager(per_page: int, blocks: Iterable[str]) -> Raw:
    """The searchable, paged class list (each block a ``<div class="cls" data-search=...>``)."""
    controls = (
        '<div class="pager"><input id="class-search" type="search" '
        'placeholder="search classes (name or id)" aria-label="search classes">'
        '<button id="class-prev" type="button">previous</button>'
        '<button id="class-next" type="button">next</button>'
        '<span id="class-page"></span></div>'
    )
    return Raw(
        controls
        + f'<div id="class-list" data-per-page="{int(per_page)}">'
        + "".join(blocks)
        + "</div>"
    )


def page(title: str, nav: Sequence[tuple[str, str]], sections: Iterable[str]) -> str:
    """The whole document: inline style, header, navigation, sections, the pager script."""
    links = "".join(f'<a href="#{esc(anchor)}">{esc(text)}</a>' for anchor, text in nav)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>{esc(title)}</h1></header><nav>{links}</nav><main>"
        + "".join(sections)
        + f"</main><script>{PAGER_SCRIPT}{SORT_SCRIPT}{FILTER_SCRIPT}</script></body></html>\n"
    )
