"""Export a study of a run as uploadable batches: rendered images plus Mechanical Turk files.

A batch folder ``<human>/batches/<study>-<batch>/`` holds:

* ``mturk_input.csv``: MTurk's batch input (``item_id``, the question text, class names, image
  URLs), the columns ``template.html`` uses as ``${column}``;
* ``template.html``: the HTML question (MTurk "Custom HTML" project layout);
* ``items.csv`` and ``items.json``: the same rater-facing rows for other platforms;
* ``key.json``: the private answer key (image ids, ground truth, conditions): never upload it;
* ``batch.json``: the study, its settings, counts and the form field answers come back in;
* ``README.txt``: what to upload, how many raters, and study-specific instructions.

Images go to ``<human>/images/<kind>/<hash>.png`` once and are shared by batches; the hash is
salted with the secret in ``<human>/export-salt.txt`` (never upload it).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import pyarrow as pa

from audit.config import DEFAULT_MAX_PIXELS
from audit.data.classes import ClassIndex
from audit.human.config import ExportConfig, Study
from audit.human.mturk import write_input_csv
from audit.human.render import Renderer, image_name
from audit.human.storage import ANSWERS, BATCHES, IMAGES, HumanStore, human_root
from audit.human.studies import (
    Item,
    StudyError,
    adversarial_candidates,
    adversarial_items,
    assignment_items,
    images_per_row,
    misclassified_items,
)
from audit.run.reader import RunReader, shipped_class_index
from audit.store import utc_now

ADVERSARIAL_COLUMNS = [
    "image_id", "label", "steps_to_flip", "adv_class", "stored_flips", "image_png"
]  # fmt: skip
EXPLANATION_COLUMNS = ["image_id", "variant", "explained_class", "segments", "top_features"]
SELECTION_COLUMNS = ["class", "method", "role", "rank", "image_id"]

ANSWER_FIELDS = {
    Study.MISCLASSIFIED: "relevant",
    Study.ADVERSARIAL: "relevant",
    Study.ASSIGNMENT: "choice",
}


@dataclass(frozen=True)
class ExportedBatch:
    """What :func:`export_study` wrote for one batch."""

    name: str
    url: str
    items: int
    images_written: int
    condition: str | None


def class_index(name: str) -> ClassIndex:
    """The class list a run's manifest names (``model.classes``).

    Raises:
        StudyError: An unknown class list.
    """
    found = shipped_class_index(name)
    if found is None:
        raise StudyError(f"unknown class list {name!r} in the run's manifest")
    return found


def run_class_index(reader: RunReader) -> ClassIndex:
    """The run's class list (:meth:`RunReader.classes`: its ``classes`` table, or for an
    older run the shipped list its manifest names).

    Raises:
        StudyError: An older run with an unknown class list.
    """
    found = reader.classes()
    if found is not None:
        return found
    return class_index(str(reader.manifest.model.classes))


def template(name: str) -> str:
    """The text of a packaged HTML template (``audit/human/templates/<name>``)."""
    return resources.files("audit.human").joinpath("templates", name).read_text("utf-8")


def assignment_template(n_slots: int, n_images: int) -> str:
    """The assignment question with ``n_slots`` rows of ``n_images`` images each."""
    group = template("assignment_group.html")
    rows = []
    for s in range(1, n_slots + 1):
        imgs = "".join(
            f'<img src="${{slot{s}_img{j}_url}}" alt="" style="width: 112px; height: 112px; '
            f'margin: 2px;">'
            for j in range(1, n_images + 1)
        )
        rows.append(group.replace("@SLOT@", str(s)).replace("@IMAGES@", imgs))
    return template("assignment.html").replace("<!-- GROUPS -->\n", "".join(rows))


def _readme(cfg: ExportConfig, name: str, n_items: int, condition: str | None) -> str:
    lines = [
        f"Human study batch {name} ({cfg.study.value}), {n_items} items, exported {utc_now()}.",
        "",
        "Mechanical Turk: create a project with the 'Custom HTML' layout, paste template.html as",
        f"its design, set 'Number of assignments per task' to {cfg.raters_per_item} (raters per",
        "item), publish a batch with mturk_input.csv, and download the results CSV when done:",
        f"    audit-cli human ingest <run> {name} Batch_XXXX_batch_results.csv",
        "Other platforms: items.csv / items.json hold the same rows (item_id, question, image URLs);",
        "collect answers as item_id,worker_id,answer,work_time_seconds and ingest with --format plain.",
        "",
        "key.json is the answer key (image ids, ground truth, conditions): never upload or show it.",
        "The image URLs must be reachable over https by the raters (see --image-base-url).",
    ]
    if cfg.study is Study.ADVERSARIAL:
        lines += [
            "",
            "IMPORTANT: this study has two batches, '-whole' (the whole adversarial image) and",
            "'-explanation' (only its top super-pixels). Run them DAYS APART and with DIFFERENT",
            "raters (e.g. exclude the first batch's workers with a qualification), so nobody judges",
            f"the same image twice. This batch is the '{condition}' one.",
        ]
    if cfg.study is Study.ASSIGNMENT:
        lines += [
            "",
            "Each question shows groups of images (one class each) and a target image; the rater",
            "picks the group the target belongs to. Conditions (hidden from raters): "
            + ", ".join(cfg.conditions)
            + ".",
        ]
    return "\n".join(lines) + "\n"


def _items_csv(rows: list[dict[str, str]], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _write_batch(
    store: HumanStore,
    cfg: ExportConfig,
    name: str,
    items: list[Item],
    urls: Mapping[tuple[str, str], str],
    run: str,
    run_id: str,
    html: str,
    condition: str | None,
    group: str,
) -> str:
    folder = f"{BATCHES}/{name}"
    text_cols = list(items[0].fields)
    image_cols = list(items[0].images)
    columns = ["item_id", *text_cols, *image_cols]
    rows = [
        {
            "item_id": it.item_id,
            **it.fields,
            **{c: urls[(ref.kind, ref.image_id)] for c, ref in it.images.items()},
        }
        for it in items
    ]
    store.write_text(f"{folder}/mturk_input.csv", write_input_csv(rows, columns))
    store.write_text(f"{folder}/items.csv", _items_csv(rows, columns))
    store.write_json(f"{folder}/items.json", rows)
    store.write_json(f"{folder}/key.json", [{"item_id": it.item_id, **it.key} for it in items])
    store.write_text(f"{folder}/template.html", html)
    field = ANSWER_FIELDS[cfg.study]
    values = (
        [str(s) for s in range(1, cfg.classes_per_question + 1)]
        if cfg.study is Study.ASSIGNMENT
        else ["yes", "no"]
    )
    meta: dict[str, Any] = {
        "name": name,
        "study": cfg.study.value,
        "group": group,
        "condition": condition,
        "run": run,
        "run_id": run_id,
        "created": utc_now(),
        "items": len(items),
        "raters_per_item": cfg.raters_per_item,
        "answer_field": field,
        "answer_values": values,
        "columns": columns,
        "config": _asdict(cfg),
    }
    store.write_json(f"{folder}/batch.json", meta)
    store.write_text(f"{folder}/README.txt", _readme(cfg, name, len(items), condition))
    return store.url(folder)


SALT_FILE = "export-salt.txt"


def export_salt(store: HumanStore) -> str:
    """The human folder's secret that salts image names, created on the first export."""
    if not store.exists(SALT_FILE):
        store.write_text(SALT_FILE, secrets.token_hex(16) + "\n")
    return store.read_bytes(SALT_FILE).decode("utf-8").strip()


def _asdict(cfg: ExportConfig) -> dict[str, Any]:
    out = dataclasses.asdict(cfg)
    out["conditions"] = list(cfg.conditions)
    return json.loads(json.dumps(out, default=lambda v: getattr(v, "value", str(v))))


_Batch = tuple[str, list[Item], str | None, str]
"""``(batch name, items, condition or None, template kind)``."""


def export_study(
    run: str,
    cfg: ExportConfig,
    output: str | None = None,
    overwrite: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> list[ExportedBatch]:
    """Select a study's items from a run, render their images and write the batch folder(s).

    The adversarial study writes two batches, ``adversarial-<batch>-whole`` and
    ``adversarial-<batch>-explanation``; the others write ``<study>-<batch>``.

    Args:
        run: The run folder (path or fsspec URL).
        cfg: The export settings.
        output: The human folder (default ``<run>/human``).
        overwrite: Replace existing batch folders of the same name.
        storage_options: fsspec options for the run, the inputs and the output.

    Returns:
        One :class:`ExportedBatch` per batch written.

    Raises:
        StudyError: The run cannot give the study's items, an image cannot be rendered, or a
            batch exists and ``overwrite`` is false.
    """
    reader = RunReader(run, storage_options)
    manifest = reader.manifest
    store = HumanStore(human_root(run, output), storage_options)
    predictions = reader.table(
        "predictions",
        ["image_id", "uri", "label", "top5_classes", "correct_top1", "correct_top5"],
    )
    batches, renderer_kw = _study_batches(reader, predictions, cfg)
    for name, _, _, _ in batches:
        if store.exists(f"{BATCHES}/{name}") and not overwrite:
            raise StudyError(
                f"batch {store.url(f'{BATCHES}/{name}')} exists: choose another batch name or "
                "pass overwrite"
            )
    renderer = Renderer(
        dict(
            zip(
                predictions.column("image_id").to_pylist(),
                predictions.column("uri").to_pylist(),
                strict=True,
            )
        ),
        explanation_features=cfg.explanation_features,
        storage_options=storage_options,
        max_pixels=int(manifest.config_value("data", "max_pixels") or DEFAULT_MAX_PIXELS),
        draft=bool(manifest.config_value("data", "jpeg_draft")),
        transform=manifest.model.eval_transform(),
        **renderer_kw,
    )
    urls, written = _render_images(store, renderer, batches, cfg)
    out = []
    run_id = str(manifest.run_id)
    for name, items, condition, kind in batches:
        if overwrite:  # the old batch's answers refer to its items, not to the new ones
            store.remove(f"{BATCHES}/{name}")
            store.remove(f"{ANSWERS}/{name}")
        html = (
            template("yes_no.html")
            if kind == "yes_no"
            else assignment_template(cfg.classes_per_question, images_per_row(cfg))
        )
        url = _write_batch(store, cfg, name, items, urls, run, run_id, html, condition, cfg.name)
        out.append(ExportedBatch(name, url, len(items), written, condition))
        written = 0  # the images are counted once, on the first batch
    return out


def _study_batches(
    reader: RunReader, predictions: pa.Table, cfg: ExportConfig
) -> tuple[list[_Batch], dict[str, Any]]:
    """The study's batches, and what the renderer needs beyond the inputs (adversarial images
    and explanations for the adversarial study)."""
    classes = run_class_index(reader)
    renderer_kw: dict[str, Any] = {}
    batches: list[_Batch] = []
    if cfg.study is Study.MISCLASSIFIED:
        batches.append((cfg.name, misclassified_items(predictions, classes, cfg), None, "yes_no"))
    elif cfg.study is Study.ADVERSARIAL:
        candidates = adversarial_candidates(
            reader.table("adversarial", ADVERSARIAL_COLUMNS),
            reader.table("explanations", EXPLANATION_COLUMNS),
        )
        renderer_kw["adversarial"] = {c["image_id"]: c for c in candidates}
        renderer_kw["explanations"] = {c["image_id"]: c["explanation"] for c in candidates}
        for cond in ("whole", "explanation"):
            items = adversarial_items(candidates, classes, cfg, cond)
            batches.append((f"{cfg.name}-{cond}", items, cond, "yes_no"))
    else:
        items = assignment_items(
            reader.table("selections", SELECTION_COLUMNS),
            predictions,
            classes,
            cfg,
        )
        batches.append((cfg.name, items, None, "assignment"))
    return batches, renderer_kw


def _render_images(
    store: HumanStore, renderer: Renderer, batches: list[_Batch], cfg: ExportConfig
) -> tuple[dict[tuple[str, str], str], int]:
    """Render every image the batches show once (an image already in the folder is kept).

    Returns:
        ``(kind, image_id) -> the URL a rater's browser loads``, and how many images were written.
    """
    refs = {
        (r.kind, r.image_id): r
        for _, items, _, _ in batches
        for it in items
        for r in it.images.values()
    }
    urls: dict[tuple[str, str], str] = {}
    written = 0
    salt = export_salt(store)
    for key, ref in sorted(refs.items()):
        image = image_name(salt, ref, cfg.explanation_features)
        rel = f"{IMAGES}/{image}"
        if not store.exists(rel):
            store.write_bytes(rel, renderer.render(ref))
            written += 1
        if cfg.image_base_url:
            urls[key] = cfg.image_base_url.rstrip("/") + "/" + image
        else:
            urls[key] = store.url(rel)
    return urls, written
