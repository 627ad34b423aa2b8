"""Selectors by name, what they need, and which of them a run can execute.

A selector module registers its class with :func:`register_selector` under its ``name``, which
is also the method name a run config's ``criticism.methods`` lists (checked against
:func:`selector_names`). Every module of :mod:`audit.criticism.selectors` is imported the first
time the registry is used, so a new selector is one new file there.

Example:
    >>> get_selector("probability").requires[0]
    Column(table='predictions', name='label_prob')
    >>> runnable_methods(["random", "adversarial"], {"predictions": ["image_id"]},
    ...                  {"adversarial": "attack.enabled is false"})
    (['random'], {'adversarial': 'attack.enabled is false'})
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import TypeVar

from audit.criticism.selectors.base import Selector
from audit.registry import Registry

_SELECTORS: Registry[type[Selector]] = Registry(
    "selector",
    order=lambda cls: cls.name,
    builtins="audit.criticism.selectors",
    duplicate="A selector named {name!r} is registered already ({existing.__name__}).",
    unknown="Unknown selection method {name!r}. Valid methods: {quoted}.",
)

T = TypeVar("T", bound=type[Selector])


def register_selector(cls: T) -> T:
    """Class decorator: register ``cls`` under ``cls.name`` (again: nothing happens).

    Raises:
        ValueError: The name is empty or taken by another class.
    """
    if not cls.name:
        raise ValueError(f"The selector {cls.__name__} must set a non-empty 'name'.")
    if cls.name in _SELECTORS and _SELECTORS.get(cls.name) is cls:
        return cls
    _SELECTORS.register(cls)
    return cls


def unregister_selector(name: str) -> type[Selector]:
    """Remove selector ``name`` (for tests and plugins); returns its class.

    Raises:
        ValueError: No selector has that name; the message lists the valid ones.
    """
    return _SELECTORS.unregister(name)


def selector_names() -> tuple[str, ...]:
    """The registered names, sorted: the valid ``criticism.methods`` and their default."""
    return _SELECTORS.names()


def get_selector(name: str) -> type[Selector]:
    """The selector class registered as ``name``.

    Raises:
        ValueError: No selector has that name; the message lists the valid ones.
    """
    return _SELECTORS.get(name)


def required_columns(methods: Iterable[str]) -> dict[str, list[str]]:
    """Table -> the columns that ``methods`` need from it, in the order they declare them."""
    out: dict[str, list[str]] = {}
    for method in methods:
        for col in get_selector(method).requires:
            cols = out.setdefault(col.table, [])
            if col.name not in cols:
                cols.append(col.name)
    return out


def runnable_methods(
    methods: Iterable[str],
    available: Mapping[str, Collection[str]],
    reasons: Mapping[str, str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """Split ``methods`` into those whose required columns this run has, and the rest.

    Args:
        methods: Selector names, in run order.
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
        name = str(method)
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
