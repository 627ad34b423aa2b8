"""Assemble the HTML report of one or more runs and write it through fsspec.

Sections, each present only when some run has its data (the summary lists the others):

- ``summary``: the runs side by side (state, model, data, row counts, stage timings), errors by
  stage and reason, each run's configuration;
- ``accuracy``: top-1/top-5 error and adversarial accuracy side by side (the paper's Table 1),
  with the rectified and ReaL figures of the human-study tables when they exist;
- ``misclassified``: a sample of misclassified images with true and predicted class (Figure 3);
- ``adversarial``: adversarial accuracy, the histogram of ``steps_to_flip``, adversarial images
  beside their LIME explanations for the clean and the adversarial class (Figures 5 and 6);
- ``classes``: per class, the prototypes and criticisms of every method (Figures 7, 8, 10),
  searchable and paged;
- ``paths``: explanation paths, super-pixels uncovered in order of importance (Figure 12);
- ``human``: every table under ``<run>/human/tables/`` (Tables 2 and 3, public judgments);
- ``bias`` and ``pairs``: the bias probe and the paired probe (:mod:`audit.report.bias`).

Images are embedded as ``data:`` URIs, so the one HTML file is the whole report.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa

from audit.report import html as h
from audit.report import plots
from audit.report.bias import (
    Attributes,
    Pair,
    bias_probe,
    change_rates,
    paired_probe,
)
from audit.report.config import ReportConfig
from audit.report.data import RunData, adversarial_pngs, load_run
from audit.report.images import ImageBudget, Pictures, attention, decode_png, path_frames

REPORT_PATH = "report/index.html"
MAX_ERROR_ROWS = 50
"""Distinct (stage, reason) rows of the errors table shown per run; the rest are summed."""
METHOD_ORDER = ("adversarial", "mmd_critic", "probability", "random")
SECTION_TITLES = {
    "summary": "Runs",
    "accuracy": "Accuracy (Table 1)",
    "misclassified": "Misclassified images (Figure 3)",
    "adversarial": "Adversarial images (Figures 5, 6)",
    "classes": "Prototypes and criticisms (Figures 7, 8, 10)",
    "paths": "Explanation paths (Figure 12)",
    "human": "Human studies and public judgments (Tables 1-3)",
    "bias": "Bias probe",
    "pairs": "Paired probe (Figure 9)",
}


@dataclass
class _Context:
    cfg: ReportConfig
    runs: list[RunData]
    pictures: Pictures
    notes: list[str] = field(default_factory=list)
    _preds: dict[int, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def preds(self, run: RunData) -> dict[str, dict[str, Any]]:
        """image_id -> prediction row (uri, label, top-5, correct_top1), built once per run."""
        key = id(run)
        if key not in self._preds:
            self._preds[key] = _by_id(run)
        return self._preds[key]

    def rng(self, section: str, run: int) -> np.random.Generator:
        key = sum(ord(c) * (i + 1) for i, c in enumerate(section))
        return np.random.default_rng([self.cfg.seed, run, key])


@dataclass(frozen=True)
class Report:
    """A built report.

    Attributes:
        html: The document.
        sections: Anchors of the sections it has, in page order.
        images: Embedded images.
        image_bytes: Their size before base64.
        refused_images: Images left out because the budget was spent.
    """

    html: str
    sections: tuple[str, ...]
    images: int
    image_bytes: int
    refused_images: int


def _sample(items: Sequence[Any], k: int, rng: np.random.Generator) -> list[Any]:
    """``k`` of ``items`` drawn without replacement, kept in their original order."""
    if len(items) <= k:
        return list(items)
    keep = np.sort(rng.choice(len(items), size=k, replace=False))
    return [items[int(i)] for i in keep]


def _rows(table: pa.Table, columns: Sequence[str]) -> list[dict[str, Any]]:
    return table.select(list(columns)).to_pylist()


def _by_id(run: RunData) -> dict[str, dict[str, Any]]:
    cols = ["image_id", "uri", "label", "top5_classes", "top5_probs", "correct_top1"]
    return {r["image_id"]: r for r in _rows(run.tables["predictions"], cols)}


def _metric(run: RunData, name: str, scope: str = "all") -> tuple[float, int] | None:
    for r in _rows(run.tables["metrics"], ["name", "scope", "value", "count"]):
        if r["name"] == name and r["scope"] == scope:
            return float(r["value"]), int(r["count"])
    return None


def _metrics_by_scope(run: RunData) -> dict[str, dict[str, tuple[float, int]]]:
    out: dict[str, dict[str, tuple[float, int]]] = {}
    for r in _rows(run.tables["metrics"], ["name", "scope", "value", "count"]):
        out.setdefault(r["scope"], {})[r["name"]] = (float(r["value"]), int(r["count"]))
    return out


def _crop(ctx: _Context, run: RunData, pred: Mapping[str, Any] | None) -> np.ndarray | str:
    if pred is None:
        return "image not in the predictions table"
    return ctx.pictures.crop(pred["uri"], run.max_pixels, run.jpeg_draft, run.transform)


def _explanation_tile(
    ctx: _Context, run: RunData, image_id: str, e: Mapping[str, Any], image: Any, k: int
) -> h.Raw:
    """An image with only its top-``k`` super-pixels of explanation ``e`` shown, captioned."""
    return h.figure(
        ctx.pictures.of_array(attention(image, e["segments"], e["top_features"], k)),
        f"{image_id} {e['variant']} explanation",
        [f"LIME for {run.classes.label(e['explained_class'])}", f"R2 {e['score']:.2f}"],
    )


def _pred_line(run: RunData, pred: Mapping[str, Any]) -> str:
    top, prob = pred["top5_classes"][0], pred["top5_probs"][0]
    return f"predicted: {run.classes.label(top)} ({prob:.2f})"


# ---------------------------------------------------------------- summary


def _summary(ctx: _Context, missing: Sequence[str]) -> str:
    runs = ctx.runs
    header = ["", *[r.title for r in runs]]

    def get(run: RunData, *keys: str) -> Any:
        value: Any = run.manifest
        for k in keys:
            value = value.get(k) if isinstance(value, Mapping) else None
        return value

    def row(label: str, fn: Callable[[RunData], Any]) -> list[Any]:
        return [label, *[fn(r) for r in runs]]

    rows = [
        row("run folder", lambda r: r.url),
        row("state", lambda r: get(r, "state")),
        *([row("error", lambda r: get(r, "error"))] if any(get(r, "error") for r in runs) else []),
        row("created / updated", lambda r: f"{get(r, 'created')} / {get(r, 'updated')}"),
        row("model", lambda r: r.model),
        row("weights", lambda r: get(r, "model", "weights")),
        row("classes", lambda r: f"{get(r, 'model', 'classes')} ({len(r.classes.ids)})"),
        row("data source", lambda r: get(r, "data", "source")),
        row("layout", lambda r: get(r, "data", "layout")),
        row("inputs", lambda r: get(r, "data", "inputs")),
        row("device", lambda r: get(r, "execution", "device")),
    ]
    for table in ("predictions", "errors", "adversarial", "explanations", "selections"):
        rows.append([f"{table} rows", *[r.tables[table].num_rows for r in runs]])
    stages = sorted({s for r in runs for s in (get(r, "stages") or {})})
    for stage in stages:
        rows.append(
            [f"stage {stage} (s)", *[(get(r, "stages", stage) or {}).get("seconds") for r in runs]]
        )
    body: list[str] = [h.table(header, rows)]
    if missing:
        body.append(h.note("Not in this report, for lack of data: " + "; ".join(missing) + "."))
    body.extend(h.note(n) for n in ctx.notes)
    err_rows = []
    for r in runs:
        counts = Counter(
            (e["stage"], e["reason"]) for e in _rows(r.tables["errors"], ["stage", "reason"])
        )
        examples: dict[tuple[str, str], str] = {}
        for e in _rows(r.tables["errors"], ["stage", "reason", "image_id"]):
            examples.setdefault((e["stage"], e["reason"]), e["image_id"])
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        for (stage, reason), n in ranked[:MAX_ERROR_ROWS]:
            err_rows.append([r.title, stage, reason, n, examples[(stage, reason)]])
        if len(ranked) > MAX_ERROR_ROWS:
            rest = ranked[MAX_ERROR_ROWS:]
            err_rows.append(
                [r.title, "", f"{len(rest)} other reasons", sum(n for _, n in rest), ""]
            )
    body.append(h.heading(3, "Errors by stage and reason"))
    if err_rows:
        body.append(h.table(["run", "stage", "reason", "images", "example image_id"], err_rows))
    else:
        body.append(h.para("No input failed."))
    for r in runs:
        body.append(
            h.details(
                f"configuration of {r.title}", h.pre(json.dumps(r.manifest.get("config"), indent=2))
            )
        )
    return h.section("summary", SECTION_TITLES["summary"], body)


# ---------------------------------------------------------------- accuracy


def _human_rows(run: RunData) -> list[tuple[str, float | None]]:
    """Rectified and ReaL figures from the human-study tables, when their columns are there."""
    out: list[tuple[str, float | None]] = []
    t1 = run.human.get("table1_rectified")
    if t1 is not None and {"metric", "rectified_error"} <= set(t1.column_names):
        for r in t1.to_pylist():
            label = f"rectified {r['metric']}"
            if r.get("batch"):
                label += f" ({r['batch']})"
            out.append((label, r["rectified_error"]))
    for name in sorted(run.human):
        t = run.human[name]
        if name.startswith("public_") and {"measure", "accuracy"} <= set(t.column_names):
            for r in t.to_pylist():
                out.append((f"{name.removeprefix('public_')}: {r['measure']}", r["accuracy"]))
    return out


def _accuracy(ctx: _Context) -> str:
    runs = ctx.runs
    header = ["", *[r.title for r in runs]]
    rows: list[list[Any]] = []
    for label, name in (
        ("top-1 error", "top1_error"),
        ("top-5 error", "top5_error"),
        ("adversarial top-1 accuracy", "adv_top1_accuracy"),
    ):
        values = [_metric(r, name) for r in runs]
        rows.append([label, *[h.pct(v[0]) if v else "-" for v in values]])
    loss = [_metric(r, "mean_loss") for r in runs]
    rows.append(["mean loss", *[f"{v[0]:.4f}" if v else "-" for v in loss]])
    counted = [_metric(r, "top1_error") for r in runs]
    rows.append(["labeled images", *[v[1] if v else 0 for v in counted]])
    extra: dict[str, list[Any]] = {}
    for i, r in enumerate(runs):
        for label, value in _human_rows(r):
            extra.setdefault(label, ["-"] * len(runs))[i] = (
                h.pct(value) if value is not None else "-"
            )
    for label, values in extra.items():
        rows.append([label, *values])
    body: list[str] = [
        h.table(header, rows, caption="Standard errors (and rectified / ReaL where computed)")
    ]
    if not extra:
        body.append(
            h.note(
                "No rectified or ReaL figures: no human/tables/table1_rectified.parquet or "
                "public_*.parquet in these runs."
            )
        )
    for r in runs:
        t1 = r.human.get("table1_rectified")
        if t1 is not None:
            body.append(_generic_table(t1, f"Table 1 (human study) of {r.title}"))
    return h.section("accuracy", SECTION_TITLES["accuracy"], body)


# ---------------------------------------------------------------- misclassified


def _misclassified(ctx: _Context) -> str | None:
    body: list[str] = []
    missing: list[str] = []  # runs without any, named when another run has some
    for i, run in enumerate(ctx.runs):
        preds = ctx.preds(run)
        wrong = sorted(k for k, p in preds.items() if p["correct_top1"] is False)
        if not wrong:
            missing.append(h.para(f"{run.title}: no misclassified labeled image."))
            continue
        shown = _sample(wrong, ctx.cfg.examples, ctx.rng("misclassified", i))
        tiles = []
        for image_id in shown:
            p = preds[image_id]
            pic = ctx.pictures.of_array(_crop(ctx, run, p))
            tiles.append(
                h.figure(
                    pic,
                    image_id,
                    [image_id, f"true: {run.classes.label(p['label'])}", _pred_line(run, p)],
                )
            )
        labeled = sum(1 for p in preds.values() if p["label"] is not None)
        body.append(h.heading(3, run.title))
        body.append(
            h.para(
                f"{len(wrong)} of {labeled} labeled images are misclassified (top-1); "
                f"{len(shown)} shown, a sample drawn with seed {ctx.cfg.seed}."
            )
        )
        body.append(h.grid(tiles))
    if not body:
        return None
    return h.section("misclassified", SECTION_TITLES["misclassified"], [*missing, *body])


# ---------------------------------------------------------------- adversarial


def _steps_bins(run: RunData) -> tuple[list[str], list[int]]:
    steps = run.tables["adversarial"].column("steps_to_flip").to_pylist()
    top = max([run.max_steps or 0, *[s for s in steps if s is not None]])
    counts = Counter(steps)
    bins = [str(k) for k in range(top + 1)] + ["never"]
    return bins, [counts.get(k, 0) for k in range(top + 1)] + [counts.get(None, 0)]


def _adversarial(ctx: _Context) -> str | None:
    runs = [(i, r) for i, r in enumerate(ctx.runs) if r.tables["adversarial"].num_rows]
    if not runs:
        return None
    body: list[str] = [
        h.para(f"{r.title}: no adversarial rows (attack disabled?).")
        for r in ctx.runs
        if not r.tables["adversarial"].num_rows
    ]
    rows = []
    for _, r in runs:
        adv = _rows(r.tables["adversarial"], ["label", "steps_to_flip", "adv_class", "linf"])
        labeled = [a for a in adv if a["label"] is not None]
        survived = sum(1 for a in labeled if a["adv_class"] == a["label"])
        flipped = [a for a in adv if a["steps_to_flip"] not in (None, 0)]
        one = sum(1 for a in adv if a["steps_to_flip"] == 1)
        never = sum(1 for a in adv if a["steps_to_flip"] is None)
        mean_linf = float(np.mean([a["linf"] for a in flipped])) if flipped else None
        rows.append(
            [
                r.title,
                len(adv),
                h.pct(survived / len(labeled)) if labeled else "-",
                f"{one} ({h.pct(one / len(adv))})",
                f"{never} ({h.pct(never / len(adv))})",
                mean_linf,
            ]
        )
    body.append(
        h.table(
            [
                "run",
                "attacked images",
                "adversarial top-1 accuracy",
                "flipped by 1 step (criticism candidates)",
                "never flipped (prototype candidates)",
                "mean L-inf of flipped",
            ],
            rows,
        )
    )
    series = []
    bins: list[str] = []
    for _, r in runs:
        b, counts = _steps_bins(r)
        if len(b) > len(bins):
            bins = b
        series.append((r.title, counts))
    # align runs with different max_steps on the longest axis ("never" last)
    aligned = [(t, c[:-1] + [0] * (len(bins) - len(c)) + c[-1:]) for t, c in series]
    png = plots.steps_histogram(bins, aligned)
    body.append(h.picture(ctx.pictures.of_png(png), "histogram of steps_to_flip"))
    for i, run in runs:
        body.append(h.heading(3, run.title))
        body.extend(_adversarial_examples(ctx, i, run))
    return h.section("adversarial", SECTION_TITLES["adversarial"], body)


def _adversarial_examples(ctx: _Context, i: int, run: RunData) -> list[str]:
    preds = ctx.preds(run)
    adv = {
        a["image_id"]: a
        for a in _rows(
            run.tables["adversarial"],
            ["image_id", "label", "target", "steps_to_flip", "adv_class", "adv_prob", "linf"],
        )
    }
    explained: dict[str, dict[str, dict[str, Any]]] = {}
    for e in _rows(
        run.tables["explanations"],
        ["image_id", "variant", "explained_class", "segments", "top_features", "score"],
    ):
        explained.setdefault(e["image_id"], {})[e["variant"]] = e
    both = sorted(
        k for k, v in explained.items() if {"clean", "adversarial"} <= set(v) and k in adv
    )
    flipped = sorted(
        k for k, a in adv.items() if a["steps_to_flip"] not in (None, 0) and k not in set(both)
    )
    rng = ctx.rng("adversarial", i)
    chosen = _sample(both, ctx.cfg.adversarial_examples, rng)
    chosen += _sample(flipped, ctx.cfg.adversarial_examples - len(chosen), rng)
    out: list[str] = []
    stored = adversarial_pngs(run, chosen) if run.keep_images else {}
    if not run.keep_images:
        out.append(
            h.note(
                "Adversarial pixels were not stored (attack.keep_images is false): the clean "
                "image is shown with the adversarial class and step count, and LIME's "
                "adversarial explanation is drawn on the clean pixels."
            )
        )
    out.append(
        h.para(
            f"{len(both)} images have LIME explanations of both the clean and the adversarial "
            f"image and {len(flipped)} other images were flipped; {len(chosen)} shown. Attention "
            "images show the top super-pixels of the explanation, the rest grey."
        )
    )
    k = int(run.manifest.get("config", {}).get("explain", {}).get("num_features") or 8)
    for image_id in chosen:
        a, p = adv[image_id], preds.get(image_id)
        clean = _crop(ctx, run, p)
        adv_img: np.ndarray | str = decode_png(stored[image_id]) if image_id in stored else clean
        adv_note = "adversarial" if image_id in stored else "clean pixels (adversarial not stored)"
        steps = a["steps_to_flip"]
        tiles = [
            h.figure(
                ctx.pictures.of_array(clean),
                f"{image_id} clean",
                [
                    f"{image_id} clean",
                    f"true: {run.classes.label(a['label'])}",
                    _pred_line(run, p) if p else "no prediction",
                ],
            )
        ]
        lime = explained.get(image_id, {})

        if "clean" in lime:
            tiles.append(_explanation_tile(ctx, run, image_id, lime["clean"], clean, k))
        tiles.append(
            h.figure(
                ctx.pictures.of_array(adv_img),
                f"{image_id} adversarial",
                [
                    adv_note,
                    f"adversarial class: {run.classes.label(a['adv_class'])} ({a['adv_prob']:.2f})",
                    f"steps to flip: {steps if steps is not None else 'never'}",
                    f"L-inf {a['linf']:.4f}",
                ],
            )
        )
        if "adversarial" in lime:
            tiles.append(_explanation_tile(ctx, run, image_id, lime["adversarial"], adv_img, k))
        out.append(h.Raw('<div class="row adv-example">' + "".join(tiles) + "</div>"))
    return out


# ---------------------------------------------------------------- classes


def _classes(ctx: _Context) -> str | None:
    present = sorted(
        {c for r in ctx.runs for c in r.tables["selections"].column("class").to_pylist()}
    )
    if not present:
        return None
    shown = _sample(present, ctx.cfg.max_classes, ctx.rng("classes", 0))
    per_run = []
    for r in ctx.runs:
        sel: dict[int, list[dict[str, Any]]] = {}
        for s in _rows(
            r.tables["selections"], ["class", "method", "role", "rank", "image_id", "score"]
        ):
            sel.setdefault(s["class"], []).append(s)
        per_run.append((r, sel, ctx.preds(r), _metrics_by_scope(r)))
    blocks = []
    names = ctx.runs[0].classes
    for cls in shown:
        label = names.label(cls)
        parts = [f"<h3>{h.esc(label)}</h3>"]
        for r, sel, preds, metrics in per_run:
            rows = sel.get(cls, [])
            if len(ctx.runs) > 1:
                parts.append(h.heading(4, r.title))
            cid = r.classes.ids[cls] if cls < len(r.classes.ids) else str(cls)
            m = metrics.get(cid, {})
            stats = []
            if "top1_error" in m:
                stats.append(
                    f"{m['top1_error'][1]} images, top-1 error {h.pct(m['top1_error'][0])}"
                )
            if "adv_top1_accuracy" in m:
                stats.append(f"adversarial accuracy {h.pct(m['adv_top1_accuracy'][0])}")
            if stats:
                parts.append(h.para("; ".join(stats)))
            if not rows:
                parts.append(h.para("No selections for this class."))
                continue
            methods = sorted(
                {s["method"] for s in rows},
                key=lambda m_: (METHOD_ORDER.index(m_) if m_ in METHOD_ORDER else 99, m_),
            )
            for method in methods:
                groups = []
                for role in ("prototype", "criticism"):
                    chosen = sorted(
                        (s for s in rows if s["method"] == method and s["role"] == role),
                        key=lambda s: s["rank"],
                    )
                    tiles = []
                    for s in chosen:
                        p = preds.get(s["image_id"])
                        lines = [f"#{s['rank']} {s['image_id']}", f"score {s['score']:.3g}"]
                        if p is not None and p["top5_classes"]:
                            lines.append(f"pred: {r.classes.short(p['top5_classes'][0])}")
                        tiles.append(
                            h.figure(
                                ctx.pictures.of_array(_crop(ctx, r, p)),
                                f"{method} {role} {s['rank']}",
                                lines,
                            )
                        )
                    text = f"{role}s" + ("" if tiles else ": none qualified")
                    groups.append(
                        f'<div class="group sel" data-method="{h.esc(method)}" '
                        f'data-role="{h.esc(role)}"><div class="grouplabel">{h.esc(text)}</div>'
                        f'<div class="grid">{"".join(tiles)}</div></div>'
                    )
                parts.append(
                    h.Raw(
                        f'<div class="row"><div class="rowlabel">{h.esc(method)}</div>'
                        + "".join(groups)
                        + "</div>"
                    )
                )
        search = f"{label} {names.ids[cls] if cls < len(names.ids) else cls}".lower()
        blocks.append(
            f'<div class="cls" data-class="{cls}" data-search="{h.esc(search)}">'
            + "".join(parts)
            + "</div>"
        )
    intro = h.para(
        f"{len(shown)} of {len(present)} classes with selections"
        + (f" (a sample drawn with seed {ctx.cfg.seed})" if len(shown) < len(present) else "")
        + f", {ctx.cfg.classes_per_page} per page. Prototypes are typical images of their "
        "class and criticisms atypical ones, each method by its own score (docs/tables.md)."
    )
    return h.section(
        "classes", SECTION_TITLES["classes"], [intro, h.pager(ctx.cfg.classes_per_page, blocks)]
    )


# ---------------------------------------------------------------- paths


def _paths(ctx: _Context) -> str | None:
    body: list[str] = []
    missing: list[str] = []  # runs without any, named when another run has some
    for i, run in enumerate(ctx.runs):
        rows = [
            e
            for e in _rows(
                run.tables["explanations"],
                ["image_id", "variant", "explained_class", "segments", "top_features"],
            )
            if e["variant"] == "clean"
        ]
        if not rows:
            missing.append(h.para(f"{run.title}: no clean explanation."))
            continue
        rows.sort(key=lambda e: e["image_id"])
        preds = ctx.preds(run)
        shown = _sample(rows, ctx.cfg.paths, ctx.rng("paths", i))
        body.append(h.heading(3, run.title))
        body.append(
            h.para(
                f"{len(shown)} of {len(rows)} clean explanations; frame k shows the k most "
                "important super-pixels."
            )
        )
        for e in shown:
            crop = _crop(ctx, run, preds.get(e["image_id"]))
            frames = path_frames(crop, e["segments"], e["top_features"])
            tiles = [
                h.figure(
                    ctx.pictures.of_array(crop),
                    e["image_id"],
                    [e["image_id"], f"explains {run.classes.label(e['explained_class'])}"],
                )
            ]
            if isinstance(frames, str):
                tiles.append(h.note(frames))
            else:
                tiles += [
                    h.figure(
                        ctx.pictures.of_array(f), f"{e['image_id']} step {k + 1}", [f"{k + 1}"]
                    )
                    for k, f in enumerate(frames)
                ]
            body.append(h.Raw('<div class="row path">' + "".join(tiles) + "</div>"))
    if not body:
        return None
    return h.section("paths", SECTION_TITLES["paths"], [*missing, *body])


# ---------------------------------------------------------------- human studies


def _cell(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=str)
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return value


def _generic_table(table: pa.Table, caption: str, limit: int = 1000) -> h.Raw:
    rows = [[_cell(v) for v in row.values()] for row in table.slice(0, limit).to_pylist()]
    out = h.table(table.column_names, rows, caption=caption)
    if table.num_rows > limit:
        out = h.Raw(out + h.note(f"{table.num_rows - limit} more rows not shown."))
    return out


def _human(ctx: _Context) -> str | None:
    body: list[str] = []
    for run in ctx.runs:
        if not run.human and not run.human_figures:
            continue
        body.append(h.heading(3, run.title))
        for name, table in run.human.items():
            body.append(_generic_table(table, f"{name} ({table.num_rows} rows)"))
        for name, png in run.human_figures.items():
            body.append(h.figure(ctx.pictures.of_png(png), name, [name]))
    if not body:
        return None
    return h.section("human", SECTION_TITLES["human"], body)


# ---------------------------------------------------------------- probes


def _bias(ctx: _Context, attributes: Attributes) -> str:
    body: list[str] = [
        h.para(
            f"Attributes from {attributes.source}: {len(attributes.values)} attribute(s), "
            f"{len(attributes.image_ids)} annotated images. Rate = share of the annotated "
            "images with the feature; effect = rate among the selected images minus the rate "
            "in the class; p: Fisher's exact test (two-sided) of the selected images against "
            "the class's other images; q: Benjamini-Hochberg over all rows of the run."
        )
    ]
    for run in ctx.runs:
        result = bias_probe(
            attributes, run.tables["predictions"], run.tables["selections"], run.title
        )
        body.append(h.heading(3, run.title))
        if result.unknown_images:
            body.append(
                h.note(
                    f"{len(result.unknown_images)} annotated image(s) are not labeled "
                    f"predictions of this run and were not counted, e.g. "
                    + ", ".join(result.unknown_images[:5])
                )
            )
        if result.unannotated_selections:
            body.append(
                h.note(
                    f"{result.unannotated_selections} (feature, class, method, role) sets have "
                    "no annotated image and give no row."
                )
            )
        shown = result.rows[: ctx.cfg.bias_rows]
        rows = [
            [
                run.classes.label(r.class_index),
                r.feature,
                r.method,
                r.role,
                f"{r.class_with}/{r.class_images} ({h.pct(r.rate_class, 1)})",
                f"{r.selected_with}/{r.selected} ({h.pct(r.rate_selected, 1)})",
                f"{r.effect * 100:+.1f} pts",
                r.odds_ratio,
                r.p_value,
                r.q_value,
            ]
            for r in shown
        ]
        body.append(
            h.table(
                [
                    "class",
                    "feature",
                    "method",
                    "role",
                    "class rate",
                    "selected rate",
                    "effect",
                    "odds ratio",
                    "p",
                    "q (BH)",
                ],
                rows,
                cls="data bias",
            )
        )
        if len(result.rows) > len(shown):
            body.append(
                h.note(f"{len(result.rows) - len(shown)} more rows with smaller effects not shown.")
            )
    return h.section("bias", SECTION_TITLES["bias"], body)


def _pairs(ctx: _Context, pairs: Sequence[Pair]) -> str:
    first = ctx.runs[0]
    outcomes = [paired_probe(pairs, r.tables["predictions"], r.tables["errors"]) for r in ctx.runs]
    body: list[str] = []
    rate_rows = []
    for r, outs in zip(ctx.runs, outcomes, strict=True):
        for c in change_rates(outs):
            rate_rows.append(
                [
                    r.title,
                    c.attribute,
                    c.pairs,
                    c.changed,
                    h.pct(c.rate) if c.rate is not None else "-",
                    f"{h.pct(c.low, 1)} - {h.pct(c.high, 1)}",
                    c.missing,
                ]
            )
    body.append(
        h.table(
            [
                "run",
                "attribute",
                "pairs compared",
                "prediction changed",
                "rate",
                "Wilson 95 % interval",
                "pairs not comparable",
            ],
            rate_rows,
            caption="How often the predicted class changes within a pair",
        )
    )
    preds = [ctx.preds(r) for r in ctx.runs]
    shown = list(range(min(len(pairs), ctx.cfg.pairs)))
    if len(pairs) > len(shown):
        body.append(h.para(f"The first {len(shown)} of {len(pairs)} pairs are shown."))
    for k in shown:
        pair = pairs[k]
        tiles = []
        for image_id in (pair.image_a, pair.image_b):
            owner = next((j for j, p in enumerate(preds) if image_id in p), None)
            if owner is None:
                pic = ctx.pictures.of_array(f"{image_id}: no prediction in the run(s)")
            else:
                pic = ctx.pictures.of_array(_crop(ctx, ctx.runs[owner], preds[owner][image_id]))
            label = preds[owner][image_id]["label"] if owner is not None else None
            tiles.append(h.figure(pic, image_id, [image_id, f"true: {first.classes.label(label)}"]))
        lines = [f"pair {pair.pair_id}" + (f": {pair.attribute}" if pair.attribute else "")]
        for r, outs in zip(ctx.runs, outcomes, strict=True):
            o = outs[k]
            if o.changed is None:
                lines.append(f"{r.title}: not comparable ({o.missing})")
            else:
                lines.append(
                    f"{r.title}: {r.classes.short(o.pred_a)} ({o.prob_a:.2f}) vs "
                    f"{r.classes.short(o.pred_b)} ({o.prob_b:.2f})"
                    + (" - changed" if o.changed else " - same")
                )
        text = "".join(f"<div>{h.esc(t)}</div>" for t in lines)
        body.append(
            h.Raw(f'<div class="row pair">{"".join(tiles)}<div class="pairtext">{text}</div></div>')
        )
    return h.section("pairs", SECTION_TITLES["pairs"], body)


# ---------------------------------------------------------------- assembly


def build_report(
    runs: Sequence[RunData],
    cfg: ReportConfig | None = None,
    attributes: Attributes | None = None,
    pairs: Sequence[Pair] | None = None,
) -> Report:
    """Build the HTML report of ``runs`` (several runs are shown side by side).

    Args:
        runs: From :func:`audit.report.data.load_run`; the first names the classes.
        cfg: Sampling and size limits.
        attributes: Per-image attributes for the bias probe.
        pairs: Image pairs for the paired probe.

    Returns:
        The :class:`Report`.

    Raises:
        ValueError: no runs.
    """
    if not runs:
        raise ValueError("build_report needs at least one run.")
    cfg = cfg or ReportConfig()
    budget = ImageBudget(cfg.max_images, cfg.max_image_bytes)
    pictures = Pictures(budget, cfg.thumb_size, cfg.jpeg_quality, runs[0].storage_options)
    ctx = _Context(cfg, list(runs), pictures)
    built: dict[str, str | None] = {
        "accuracy": _accuracy(ctx),
        "misclassified": _misclassified(ctx),
        "adversarial": _adversarial(ctx),
        "classes": _classes(ctx),
        "paths": _paths(ctx),
        "human": _human(ctx),
        "bias": _bias(ctx, attributes) if attributes is not None else None,
        "pairs": _pairs(ctx, pairs) if pairs else None,
    }
    why = {
        "misclassified": "no misclassified labeled image",
        "adversarial": "no adversarial table rows (attack disabled?)",
        "classes": "no selections (criticism stage disabled or not run)",
        "paths": "no clean LIME explanations",
        "human": "no human/tables/*.parquet",
        "bias": "no attributes CSV given (--attributes)",
        "pairs": "no pairs CSV given (--pairs)",
    }
    missing = [f"{SECTION_TITLES[k]}: {why[k]}" for k, v in built.items() if v is None]
    if budget.refused:
        ctx.notes.append(
            f"{budget.refused} image(s) were left out: the report's image budget "
            f"(max_images={cfg.max_images}, max_image_bytes={cfg.max_image_bytes}) was spent."
        )
    sections = {"summary": _summary(ctx, missing), **built}
    present = [(k, v) for k, v in sections.items() if v is not None]
    title = "Audit report: " + ", ".join(r.title for r in runs)
    document = h.page(
        title,
        [(k, SECTION_TITLES[k]) for k, _ in present],
        [v for _, v in present if v is not None],
    )
    return Report(
        document,
        tuple(k for k, _ in present),
        budget.images,
        budget.bytes,
        budget.refused,
    )


def default_output(run: str) -> str:
    """``<run>/report/index.html``."""
    return run.rstrip("/") + "/" + REPORT_PATH


def write_report(
    report: Report, output: str, storage_options: Mapping[str, Any] | None = None
) -> str:
    """Write the document to ``output`` (local path or fsspec URL); returns its URL."""
    fs, path = fsspec.core.url_to_fs(output, **dict(storage_options or {}))
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    fs.pipe_file(path, report.html.encode("utf-8"))
    return str(fs.unstrip_protocol(path))


def make_report(
    runs: Sequence[str],
    output: str | None = None,
    cfg: ReportConfig | None = None,
    attributes: Attributes | None = None,
    pairs: Sequence[Pair] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> tuple[str, Report]:
    """Load ``runs`` (folders or URLs), build their report and write it.

    Args:
        runs: Run folders; the report goes to the first one's ``report/index.html`` unless
            ``output`` is given.
        output: Where to write the HTML file.
        cfg: Sampling and size limits.
        attributes: For the bias probe.
        pairs: For the paired probe.
        storage_options: fsspec options for the runs, their images and the output.

    Returns:
        ``(URL written, report)``.

    Raises:
        ConfigError: a run that cannot be read.
    """
    loaded = [load_run(r, storage_options) for r in runs]
    report = build_report(loaded, cfg, attributes, pairs)
    url = write_report(report, output or default_output(runs[0]), storage_options)
    return url, report
