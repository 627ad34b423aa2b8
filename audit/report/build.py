"""Assemble the HTML report of one or more runs and write it through fsspec.

The sections are in :mod:`audit.report.sections`, one module each, in a registry;
:func:`build_report` renders every registered section in page order, and a section shows only
when some run has its data (the summary lists the others and why). Adding a section is one new
file there (docs/architecture.md, "Adding a report section").

Images are embedded as ``data:`` URIs, so the one HTML file is the whole report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import fsspec

from audit.report import html as h
from audit.report.bias import Attributes, Pair
from audit.report.config import ReportConfig
from audit.report.data import RunData, load_run
from audit.report.images import ImageBudget, Pictures
from audit.report.sections import Section, SectionContext, registered_sections

REPORT_PATH = "report/index.html"


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


def build_report(
    runs: Sequence[RunData],
    cfg: ReportConfig | None = None,
    attributes: Attributes | None = None,
    pairs: Sequence[Pair] | None = None,
) -> Report:
    """Build the HTML report of ``runs`` (several runs are shown side by side).

    Every registered section (:func:`audit.report.sections.registered_sections`) is rendered in
    page order, those marked ``after_others`` (the summary) last, so that they can name the
    sections left out and the images the budget refused.

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
    ctx = SectionContext(cfg, list(runs), pictures, attributes, list(pairs or ()))
    sections = registered_sections()
    bodies: dict[str, Sequence[str] | None] = {}
    for s in sections:
        if not s.after_others:
            bodies[s.name] = s.render(ctx)
    ctx.missing.extend(
        f"{s.title}: {s.why}" for s in sections if s.name in bodies and bodies[s.name] is None
    )
    if budget.refused:
        ctx.notes.append(
            f"{budget.refused} image(s) were left out: the report's image budget "
            f"(max_images={cfg.max_images}, max_image_bytes={cfg.max_image_bytes}) was spent."
        )
    for s in sections:
        if s.after_others:
            bodies[s.name] = s.render(ctx)
    present: list[tuple[Section, Sequence[str]]] = [
        (s, body) for s in sections if (body := bodies[s.name]) is not None
    ]
    title = "Audit report: " + ", ".join(r.title for r in runs)
    document = h.page(
        title,
        [(s.name, s.title) for s, _ in present],
        [h.section(s.name, s.title, body) for s, body in present],
    )
    return Report(
        document,
        tuple(s.name for s, _ in present),
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
