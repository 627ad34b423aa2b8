"""The report's section registry: the built-in sections in their documented order, one module
each, and a section registered by a test (as a new file would) in the built report. No Ray: the
runs are written with RunStore."""

from __future__ import annotations

import pkgutil
from collections.abc import Callable, Iterator

import pytest

import audit.report.sections as sections_pkg
from audit.report import html as h
from audit.report.build import build_report
from audit.report.config import ReportConfig
from audit.report.data import RunData, load_run
from audit.report.images import ImageBudget, Pictures
from audit.report.sections import (
    Section,
    SectionContext,
    get_section,
    register_section,
    registered_sections,
    unregister_section,
)

DOCUMENTED = (  # docs/report.md, "What it shows", in page order
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
    "candidates",
    "pairs",
)
HELPERS = {"context", "registry", "tables"}  # the package's modules that are not sections


@pytest.fixture
def run(empty_run: Callable[..., str]) -> RunData:
    """A failed run with every table empty: the report has its summary and accuracy only."""
    return load_run(empty_run("empty"))


@pytest.fixture
def extra_sections() -> Iterator[None]:
    """Two sections registered the way a new module under audit/report/sections/ does: one
    with something to show (between paths and human), one without (after pairs)."""

    @register_section("test_rows", title="Rows from a test", order=55)
    def rows(ctx: SectionContext) -> list[str]:
        n = sum(r.tables["predictions"].num_rows for r in ctx.runs)
        return [h.para(f"{len(ctx.runs)} run(s), {n} predictions.")]

    @register_section("test_nothing", title="Nothing from a test", order=95, why="a test said so")
    def nothing(ctx: SectionContext) -> None:
        return None

    yield
    unregister_section("test_rows")
    unregister_section("test_nothing")


def test_registry_has_the_documented_sections_in_order() -> None:
    assert tuple(s.name for s in registered_sections()) == DOCUMENTED
    assert [s.name for s in registered_sections() if s.after_others] == ["summary"]
    assert get_section("classes").title == "Prototypes and criticisms (Figures 7, 8, 10)"


def test_each_section_module_registers_one_section() -> None:
    modules = {m.name for m in pkgutil.iter_modules(sections_pkg.__path__)} - HELPERS
    owners = {s.render.__module__.rsplit(".", 1)[1]: s.name for s in registered_sections()}
    assert owners == {m: m for m in modules}


def test_a_section_registered_by_a_test_is_in_the_report(
    run: RunData, extra_sections: None
) -> None:
    names = [s.name for s in registered_sections()]
    assert names.index("paths") < names.index("test_rows") < names.index("human")
    report = build_report([run, run], ReportConfig())
    assert report.sections == ("summary", "accuracy", "test_rows")
    assert '<a href="#test_rows">Rows from a test</a>' in report.html
    assert (
        '<section id="test_rows"><h2>Rows from a test</h2><p>2 run(s), 0 predictions.</p>'
        "</section>" in report.html
    )
    assert "Nothing from a test: a test said so" in report.html
    assert 'id="test_nothing"' not in report.html


@pytest.mark.parametrize(
    ("name", "order", "message"),
    [
        ("accuracy", 1, "named 'accuracy' is already registered"),
        ("fresh", 10, "order 10, already taken by 'accuracy'"),
        ("Bad Name", 1, "'name' parameter of register_section must match"),
    ],
)
def test_register_rejects_duplicates_and_bad_names(name: str, order: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        register_section(name, title="x", order=order)
    assert tuple(s.name for s in registered_sections()) == DOCUMENTED


def test_unknown_section_lists_the_registered_ones() -> None:
    with pytest.raises(ValueError, match="'nope'; registered sections: summary, accuracy, "):
        get_section("nope")
    with pytest.raises(ValueError, match="Unknown report section 'nope'"):
        unregister_section("nope")


@pytest.mark.parametrize("section", registered_sections(), ids=lambda s: s.name)
def test_every_section_renders_an_empty_run(section: Section, run: RunData) -> None:
    cfg = ReportConfig()
    budget = ImageBudget(cfg.max_images, cfg.max_image_bytes)
    pictures = Pictures(budget, cfg.thumb_size, cfg.jpeg_quality)
    ctx = SectionContext(cfg, [run], pictures)
    body = section.render(ctx)
    if section.name in ("summary", "accuracy"):
        assert body and all(isinstance(part, str) for part in body)
    else:
        assert body is None and section.why
