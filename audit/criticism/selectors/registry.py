"""Selectors by name, what they need, and which of them a run can execute.

Names are the :class:`~audit.config.SelectionMethod` values. A selector module registers its
class with :func:`register_selector`; :mod:`audit.criticism.selectors` imports every module of
its folder, so a new selector is one new file there.

Example:
    >>> get_selector("probability").requires[0]
    Column(table='predictions', name='label_prob')
    >>> runnable_methods(["random", "adversarial"], {"predictions": ["image_id"]},
    ...                  {"adversarial": "attack.enabled is false"})
    (['random'], {'adversarial': 'attack.enabled is false'})
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from enum import Enum
from typing import TypeVar

from audit.criticism.selectors.base import Selector

_SELECTORS: dict[str, type[Selector]] = {}

T = TypeVar("T", bound=type[Selector])


def register_selector(cls: T) -> T:
    """Class decorator: register ``cls`` under ``cls.name``.

    Raises:
        ValueError: The name is empty or taken by another class.
    """
    name = cls.name
    if not name:
        raise ValueError(f"The selector {cls.__name__} must set a non-empty 'name'.")
    if name in _SELECTORS and _SELECTORS[name] is not cls:
        raise ValueError(
            f"A selector named {name!r} is registered already ({_SELECTORS[name].__name__})."
        )
    _SELECTORS[name] = cls
    return cls


def selector_names() -> tuple[str, ...]:
    """The registered names, sorted."""
    return tuple(sorted(_SELECTORS))


def get_selector(name: str | Enum) -> type[Selector]:
    """The selector class registered as ``name`` (a name or a ``SelectionMethod``).

    Raises:
        ValueError: No selector has that name; the message lists the valid ones.
    """
    key = _name(name)
    if key not in _SELECTORS:
        valid = ", ".join(repr(n) for n in selector_names())
        raise ValueError(f"Unknown selection method {key!r}. Valid methods: {valid}.")
    return _SELECTORS[key]


def required_columns(methods: Iterable[str | Enum]) -> dict[str, list[str]]:
    """Table -> the columns that ``methods`` need from it, in the order they declare them."""
    out: dict[str, list[str]] = {}
    for method in methods:
        for col in get_selector(method).requires:
            cols = out.setdefault(col.table, [])
            if col.name not in cols:
                cols.append(col.name)
    return out


def runnable_methods(
    methods: Iterable[str | Enum],
    available: Mapping[str, Collection[str]],
    reasons: Mapping[str, str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """Split ``methods`` into those whose required columns this run has, and the rest.

    Args:
        methods: Selector names (or ``SelectionMethod`` members), in run order.
        available: Table -> the columns the run wrote; a table not listed was not written.
        reasons: Why a table (``"adversarial"``) or a column (``"predictions.embedding"``) is
            missing, for the manifest; the column's reason wins over its table's.

    Returns:
        The names to run, in the given order, and name -> why it is skipped: the reason given
        for its first missing column that has one, else ``needs <table.column>, which this run
        did not write`` for the first missing column.

    Raises:
        ValueError: An unknown method name.
    """
    why = reasons or {}
    run: list[str] = []
    skipped: dict[str, str] = {}
    for method in methods:
        name = _name(method)
        missing = [
            col
            for col in get_selector(name).requires
            if col.name not in available.get(col.table, ())
        ]
        if not missing:
            run.append(name)
            continue
        told = [why.get(str(c), why.get(c.table)) for c in missing]
        skipped[name] = next(
            (r for r in told if r is not None), f"needs {missing[0]}, which this run did not write"
        )
    return run, skipped


def _name(method: str | Enum) -> str:
    return str(method.value) if isinstance(method, Enum) else str(method)
