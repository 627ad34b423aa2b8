"""The section registry: a name, a title, a place on the page and a ``render`` function.

Example::

    @register_section("digits", title="Digits", order=55, why="no digits in these runs")
    def render(ctx: SectionContext) -> list[str] | None:
        n = sum(r.tables["predictions"].num_rows for r in ctx.runs)
        return [h.para(f"{n} predictions.")] if n else None
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from audit.registry import Registry
from audit.report.sections.context import SectionContext

Render = Callable[[SectionContext], Sequence[str] | None]
"""Returns the section's body (HTML fragments), or None when it has nothing to show."""

_NAME = re.compile(r"[a-z][a-z0-9_-]*")


@dataclass(frozen=True)
class Section:
    """One registered section.

    Attributes:
        name: Its anchor (``<section id=...>``) and the name in ``Report.sections``.
        title: Its heading and its link in the navigation bar.
        order: Its place on the page, smallest first; sections are rendered in this order
            too, so the image budget goes to the earlier ones first.
        render: Builds its body from the :class:`SectionContext`.
        why: Why it is absent when ``render`` returns None, listed in the summary.
        after_others: Rendered after every other section, wherever it stands on the page, so
            that it can read ``ctx.missing`` and ``ctx.notes`` (the summary).
    """

    name: str
    title: str
    order: int
    render: Render
    why: str = "nothing to show"
    after_others: bool = False


# the built-in sections are imported by the package (audit/report/sections/__init__.py)
_SECTIONS: Registry[Section] = Registry(
    "report section",
    order=lambda s: s.order,
    unique=("order",),
    duplicate="A report section named {name!r} is already registered.",
    unknown="Unknown report section {name!r}; registered sections: {names}.",
)


def register_section(
    name: str, *, title: str, order: int, why: str = "nothing to show", after_others: bool = False
) -> Callable[[Render], Render]:
    """Register the decorated function as the ``render`` of section ``name``.

    Args:
        name: Lower-case letters, digits, ``_`` or ``-``, starting with a letter.
        title: The heading.
        order: Place on the page (the built-in sections use multiples of 10).
        why: Shown in the summary when the section has nothing to show.
        after_others: See :class:`Section`.

    Returns:
        The decorator, which returns the function unchanged.

    Raises:
        ValueError: a bad name, or a name or order already registered.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            "The 'name' parameter of register_section must match "
            f"{_NAME.pattern!r}. Got {name!r} instead."
        )
    # refused at the call, before the decorated function is defined
    _SECTIONS.check(Section(name, title, order, _nothing, why, after_others))

    def decorate(render: Render) -> Render:
        _SECTIONS.register(Section(name, title, order, render, why, after_others))
        return render

    return decorate


def _nothing(ctx: SectionContext) -> None:
    return None


def unregister_section(name: str) -> Section:
    """Remove section ``name`` (for tests and plugins); returns it.

    Raises:
        ValueError: no such section.
    """
    return _SECTIONS.unregister(name)


def get_section(name: str) -> Section:
    """The section registered as ``name``.

    Raises:
        ValueError: no such section; the message lists the registered names.
    """
    return _SECTIONS.get(name)


def registered_sections() -> tuple[Section, ...]:
    """Every registered section, in page order."""
    return _SECTIONS.values()
