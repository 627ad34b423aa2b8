"""The constraints a config field is checked against, and the one message of a bad value.

The checks are declared as rules in scikit-learn's constraint style (:class:`Interval`,
:class:`Options`, :class:`Text`, :class:`Items`, :class:`InstanceOf`), one tuple of rules per
field in a class's ``RULES``; :func:`check` applies them and :func:`config_error` writes the
one message, e.g.::

    The 'predict.batch_size' field must be an int >= 1. Got 0 instead.

:class:`Checked` is the base of every config dataclass, here and in :mod:`audit.report.config`
and :mod:`audit.human.config`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar, Literal, cast

from audit.errors import AuditError


class ConfigError(AuditError, ValueError):
    """A configuration value is invalid. The message is a single line meant for the user."""


class Rule:
    """A constraint on one field's value.

    ``fits`` says whether the value is of the kind the rule is about (an int, a string, a list);
    ``holds`` whether such a value is allowed; ``convert`` normalises an allowed value (a string
    to its Enum member, a list to a tuple); ``str(rule)`` describes the allowed values.
    """

    def fits(self, value: Any) -> bool:
        raise NotImplementedError

    def holds(self, value: Any) -> bool:
        return True

    def convert(self, value: Any) -> Any:
        return value


@dataclass(frozen=True)
class Interval(Rule):
    """Numbers of ``type`` (``int`` or ``float``; bools are neither) between ``left`` and
    ``right`` (``None``: unbounded), ``closed`` on both ends, the ``left``, the ``right`` or
    ``neither``. Floats must be finite unless ``finite=False``; ints given for a float become
    floats."""

    type: type
    left: float | None
    right: float | None
    closed: Literal["both", "left", "right", "neither"] = "both"
    finite: bool = True

    def fits(self, value: Any) -> bool:
        kind = numbers.Integral if self.type is int else numbers.Real
        return isinstance(value, kind) and not isinstance(value, bool)

    def holds(self, value: Any) -> bool:
        if self.type is float and self.finite and not math.isfinite(value):
            return False
        low = self.left is None or (value >= self.left if self._closed_left else value > self.left)
        high = self.right is None or (
            value <= self.right if self._closed_right else value < self.right
        )
        return low and high

    def convert(self, value: Any) -> Any:
        return self.type(value)

    @property
    def _closed_left(self) -> bool:
        return self.closed in ("both", "left")

    @property
    def _closed_right(self) -> bool:
        return self.closed in ("both", "right")

    def __str__(self) -> str:
        kind = "an int" if self.type is int else "a float"
        if self.left is not None and self.right is not None:
            lo, hi = "[" if self._closed_left else "(", "]" if self._closed_right else ")"
            return f"{kind} in {lo}{self.left}, {self.right}{hi}"
        if self.left is not None:
            return f"{kind} {'>=' if self._closed_left else '>'} {self.left}"
        if self.right is not None:
            return f"{kind} {'<=' if self._closed_right else '<'} {self.right}"
        return "a finite float" if self.type is float and self.finite else kind


class Options(Rule):
    """One of the values of a ``str`` Enum (the value is converted to its member), of a tuple of
    strings, or of the strings a function returns.

    The function is called each time a value is checked or described, not when the rule is
    built: the valid names can come from a registry that the module declaring the rule must not
    import (the selectors import the config), and include whatever registered since.
    """

    def __init__(self, choices: type[Enum] | tuple[str, ...] | Callable[[], Iterable[str]]) -> None:
        self.enum = choices if isinstance(choices, type) and issubclass(choices, Enum) else None
        self._choices = choices

    @property
    def values(self) -> tuple[str, ...]:
        """The allowed strings, now."""
        if self.enum is not None:
            return tuple(m.value for m in self.enum)
        if isinstance(self._choices, tuple):
            return self._choices
        return tuple(cast(Callable[[], Iterable[str]], self._choices)())

    def fits(self, value: Any) -> bool:
        return isinstance(value, str)

    def holds(self, value: Any) -> bool:
        return value in self.values

    def convert(self, value: Any) -> Any:
        return self.enum(value) if self.enum is not None else str(value)

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)


@dataclass(frozen=True)
class Text(Rule):
    """A string that is not blank, or that matches ``pattern`` in full; ``description`` says
    what is allowed."""

    description: str = "a non-empty string"
    pattern: str | None = None

    def fits(self, value: Any) -> bool:
        return isinstance(value, str)

    def holds(self, value: Any) -> bool:
        if self.pattern is None:
            return bool(value.strip())
        return re.fullmatch(self.pattern, value) is not None

    def __str__(self) -> str:
        return self.description


@dataclass(frozen=True)
class Items(Rule):
    """A list (or tuple; it becomes a tuple) of ``min_len`` to ``max_len`` values that each
    satisfy ``item``, all distinct with ``unique``."""

    item: Rule
    description: str | None = None
    min_len: int = 0
    max_len: int | None = None
    unique: bool = False

    def fits(self, value: Any) -> bool:
        return isinstance(value, (list, tuple))

    def holds(self, value: Any) -> bool:
        n = len(value)
        return (
            n >= self.min_len
            and (self.max_len is None or n <= self.max_len)
            and all(self.item.fits(v) and self.item.holds(v) for v in value)
            and (not self.unique or len(set(value)) == n)
        )

    def convert(self, value: Any) -> Any:
        return tuple(self.item.convert(v) for v in value)

    def __str__(self) -> str:
        return self.description or f"a list of {self.item}"


@dataclass(frozen=True)
class InstanceOf(Rule):
    """Any instance of ``type``."""

    type: type
    description: str

    def fits(self, value: Any) -> bool:
        return isinstance(value, self.type)

    def __str__(self) -> str:
        return self.description


@dataclass(frozen=True)
class Amounts(Rule):
    """A mapping of names (``Text``-like: non-blank strings, none of ``reserved``) to finite
    numbers > 0 (Ray's custom resources: ``{"fake_gpu": 1}``); it becomes a dict of floats."""

    description: str
    reserved: tuple[str, ...] = ()

    def fits(self, value: Any) -> bool:
        return isinstance(value, Mapping)

    def holds(self, value: Any) -> bool:
        return all(
            isinstance(k, str)
            and k.strip() != ""
            and k not in self.reserved
            and isinstance(v, numbers.Real)
            and not isinstance(v, bool)
            and math.isfinite(v)
            and float(v) > 0
            for k, v in value.items()
        )

    def convert(self, value: Any) -> Any:
        return {k: float(v) for k, v in value.items()}

    def __str__(self) -> str:
        return self.description


FieldRules = Rule | None | tuple[Rule | None, ...]
"""A field's rules: one rule, or a tuple of rules any of which may hold; ``None`` allows null."""

BOOL = InstanceOf(bool, "a bool (true or false)")
STRING = InstanceOf(str, "a string")
MAPPING = InstanceOf(Mapping, "a mapping")
POSITIVE = Interval(int, 1, None)
NON_NEGATIVE = Interval(int, 0, None)
FINITE = Interval(float, None, None)

CLASS_IDS = Items(
    Text("a class id such as 'n01440764'", r"[A-Za-z0-9_.-]+"),
    "a list of class ids such as 'n01440764'",
)
# numpy's generators take only non-negative seeds
SEED = NON_NEGATIVE


def config_error(path: str, value: Any, allowed: str, owner: str | None = None) -> ConfigError:
    """The one message of a bad value: ``The '<path>' field must be <allowed>. Got <value>
    instead.`` (``The '<path>' parameter of <owner> ...`` for a class outside the run config)."""
    subject = f"'{path}' field" if owner is None else f"'{path}' parameter of {owner}"
    # storage options may hold credentials: never echo them
    if path.endswith("storage_options"):
        shown = "a value that is not shown"
    else:
        shown = repr(plain(value)).replace("\n", "\\n")
    return ConfigError(f"The {subject} must be {allowed}. Got {shown} instead.")


def check(path: str, value: Any, *rules: Rule | None, owner: str | None = None) -> Any:
    """``value`` normalised by the first rule that holds, or :class:`ConfigError` naming ``path``.

    ``None`` among the rules allows null. The message describes the rules about the value's
    kind (an int out of range is told the range), or all of them when none is.

    Example:
        >>> check("predict.batch_size", 0, Interval(int, 1, None))
        Traceback (most recent call last):
        ...
        audit.config.checks.ConfigError: The 'predict.batch_size' field must be an int >= 1. Got 0 instead.
    """
    if value is None and None in rules:
        return None
    real = [r for r in rules if r is not None]
    for rule in real:
        if rule.fits(value) and rule.holds(value):
            return rule.convert(value)
    about = [r for r in real if r.fits(value)]
    allowed = " or ".join(str(r) for r in about) if about else _or(rules)
    raise config_error(path, value, allowed, owner)


def _or(rules: Iterable[Rule | None]) -> str:
    return " or ".join("null" if r is None else str(r) for r in rules)


class Checked:
    """Base of the config dataclasses: ``__post_init__`` checks every field against ``RULES``
    and stores the normalised value (Enum members, tuples, floats).

    ``SECTION`` names the fields in messages: ``"predict"`` gives ``'predict.batch_size'``,
    ``""`` (the whole run config) the bare name; ``None`` (a class outside the run config, such
    as the report's) gives scikit-learn's ``'seed' parameter of ReportConfig``.
    """

    SECTION: ClassVar[str | None] = None
    RULES: ClassVar[Mapping[str, FieldRules]] = {}

    def __post_init__(self) -> None:
        for name, rules in self.RULES.items():
            self._check_field(name, *(rules if isinstance(rules, tuple) else (rules,)))

    def _check_field(self, name: str, *rules: Rule | None) -> None:
        section = type(self).SECTION
        path = f"{section}.{name}" if section else name
        owner = type(self).__name__ if section is None else None
        object.__setattr__(self, name, check(path, getattr(self, name), *rules, owner=owner))


def plain(value: Any) -> Any:
    """``value`` as YAML/JSON would write it: dataclasses as dicts, Enums as their values,
    tuples as lists, mappings as dicts."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return dict(value)
    return value
