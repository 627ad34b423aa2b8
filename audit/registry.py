"""One small generic registry: values by name, for the plugin points that are "one new file".

The judgment sources (:mod:`audit.human.judgments.registry`), the report sections
(:mod:`audit.report.sections.registry`) and the selectors
(:mod:`audit.criticism.selectors.registry`) are each a :class:`Registry` behind their own
``register_*`` / ``get_*`` functions, which keep their own messages.

Example:
    >>> shapes = Registry[str]("shape", key=str.lower)
    >>> shapes.register("Circle")
    'Circle'
    >>> shapes.names()
    ('circle',)
    >>> shapes.get("square")
    Traceback (most recent call last):
    ...
    ValueError: Unknown shape 'square'; registered: circle.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def _name_attribute(value: Any) -> str:
    return str(value.name)


class Registry(Generic[T]):
    """Values of type ``T`` by name, listed in registration order (or by ``order``).

    Args:
        kind: What a value is, in messages (``"report section"``).
        key: A value's name; by default its ``name`` attribute.
        order: Sort key of :meth:`names` / :meth:`values` (``None``: registration order).
        unique: Attributes of the values that no two may share, besides the name; checked in
            this order after the name.
        builtins: A package whose every module is imported the first time the registry is
            used (registered to, read or iterated), so that its modules register themselves
            without the package importing them eagerly. The flag is set before the imports,
            so a module that registers while being imported does not recurse.
        duplicate: Message of a name registered already; fields ``{kind}``, ``{Kind}``,
            ``{name}``, ``{names}`` (the registered names, comma-separated), ``{quoted}`` (the
            same, each quoted) and ``{existing}`` (the value registered under ``name``).
        unknown: Message of an unknown name; the same fields but ``{existing}``.
        taken: Message of a ``unique`` attribute already taken; fields ``{Kind}``,
            ``{name}``, ``{attr}``, ``{value}`` and ``{other}`` (the name of the value that
            has it).

    Not thread-safe: values are registered at import time, or by tests.
    """

    def __init__(
        self,
        kind: str,
        *,
        key: Callable[[T], str] = _name_attribute,
        order: Callable[[T], Any] | None = None,
        unique: tuple[str, ...] = (),
        builtins: str | None = None,
        duplicate: str = "A {kind} named {name!r} is registered already.",
        unknown: str = "Unknown {kind} {name!r}; registered: {names}.",
        taken: str = "{Kind} {name!r} has {attr} {value!r}, already taken by {other!r}.",
    ) -> None:
        self.kind = kind
        self._key = key
        self._order = order
        self._unique = unique
        self._builtins = builtins
        self._loaded = builtins is None
        self._messages = {"duplicate": duplicate, "unknown": unknown, "taken": taken}
        self._values: dict[str, T] = {}

    def register(self, value: T) -> T:
        """Add ``value`` under its name; returns it, so this is usable as a decorator.

        Raises:
            ValueError: Its name, or one of its ``unique`` attributes, is taken already.
        """
        self.check(value)
        self._values[self._key(value)] = value
        return value

    def check(self, value: T) -> None:
        """Raise what :meth:`register` would for ``value``, without registering it (for a
        decorator factory that must fail when called, before it has the decorated value).

        Raises:
            ValueError: Its name, or one of its ``unique`` attributes, is taken already.
        """
        self._load()
        name = self._key(value)
        if name in self._values:
            raise ValueError(self._message("duplicate", name, existing=self._values[name]))
        for attr in self._unique:
            mine = getattr(value, attr)
            for other_name, other in self._values.items():
                if getattr(other, attr) == mine:
                    raise ValueError(
                        self._messages["taken"].format(
                            Kind=self.kind[:1].upper() + self.kind[1:],
                            name=name,
                            attr=attr,
                            value=mine,
                            other=other_name,
                        )
                    )

    def unregister(self, name: str) -> T:
        """Remove ``name`` (for tests and plugins); returns its value.

        Raises:
            ValueError: No such name (the ``unknown`` message).
        """
        value = self.get(name)
        del self._values[name]
        return value

    def get(self, name: str) -> T:
        """The value registered as ``name``.

        Raises:
            ValueError: No such name; the ``unknown`` message, which lists the valid names.
        """
        self._load()
        if name not in self._values:
            raise ValueError(self._message("unknown", name))
        return self._values[name]

    def names(self) -> tuple[str, ...]:
        """The registered names, in order."""
        return tuple(self._key(v) for v in self.values())

    def values(self) -> tuple[T, ...]:
        """The registered values, in order."""
        self._load()
        values = tuple(self._values.values())
        return values if self._order is None else tuple(sorted(values, key=self._order))

    def __iter__(self) -> Iterator[T]:
        return iter(self.values())

    def __len__(self) -> int:
        self._load()
        return len(self._values)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._values

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._values)})"

    def _message(self, which: str, name: str, existing: Any = None) -> str:
        names = self.names()
        return self._messages[which].format(
            kind=self.kind,
            Kind=self.kind[:1].upper() + self.kind[1:],
            name=name,
            names=", ".join(names),
            quoted=", ".join(repr(n) for n in names),
            existing=existing,
        )

    def _load(self) -> None:
        if self._loaded or self._builtins is None:
            return
        self._loaded = True
        try:
            package = importlib.import_module(self._builtins)
            for module in sorted(m.name for m in pkgutil.iter_modules(package.__path__)):
                importlib.import_module(f"{self._builtins}.{module}")
        except BaseException:
            self._loaded = False
            raise
