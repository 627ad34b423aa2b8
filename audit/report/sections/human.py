"""``human``: every table under ``<run>/human/tables/`` (the paper's Tables 2 and 3, public
judgments) and every figure under ``<run>/human/figures/`` (Figure 2), each in a plot card as
wide as the figure, or the page where that is narrower."""

from __future__ import annotations

from audit.report import html as h
from audit.report.sections.context import SectionContext
from audit.report.sections.registry import register_section
from audit.report.sections.tables import generic_table


@register_section(
    "human",
    title="Human studies and public judgments (Tables 1-3)",
    order=60,
    why="no human/tables/*.parquet",
)
def render(ctx: SectionContext) -> list[str] | None:
    body: list[str] = []
    for run in ctx.runs:
        if not run.human and not run.human_figures:
            continue
        body.append(h.heading(3, run.title))
        for name, table in run.human.items():
            body.append(generic_table(table, f"{name} ({table.num_rows} rows)"))
        for name, png in run.human_figures.items():
            body.append(h.figure(ctx.pictures.of_png(png), name, [name], cls="plot"))
    return body or None
