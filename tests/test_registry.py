"""The generic registry behind the selectors, the report sections and the judgment sources."""

from __future__ import annotations

import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from audit.registry import Registry


@dataclass(frozen=True)
class Thing:
    name: str
    order: int = 0


def test_registration_order_names_values_and_lookup() -> None:
    things = Registry[Thing]("thing")
    b = things.register(Thing("b"))
    a = things.register(Thing("a"))
    assert things.names() == ("b", "a")
    assert things.values() == (b, a) == tuple(things)
    assert things.get("a") is a and "a" in things and len(things) == 2
    assert things.unregister("b") is b
    assert things.names() == ("a",)


def test_register_is_a_decorator_keyed_by_name() -> None:
    kinds = Registry[type]("kind")

    @kinds.register
    class Widget:
        name = "widget"

    assert kinds.get("widget") is Widget


def test_sort_key_and_unique_attributes() -> None:
    things = Registry[Thing]("thing", order=lambda t: t.order, unique=("order",))
    things.register(Thing("late", 20))
    things.register(Thing("early", 10))
    assert things.names() == ("early", "late")
    with pytest.raises(ValueError) as err:
        things.register(Thing("other", 10))
    assert str(err.value) == "Thing 'other' has order 10, already taken by 'early'."
    with pytest.raises(ValueError, match="order 10"):
        things.check(Thing("other", 10))
    assert things.names() == ("early", "late")


def test_duplicate_and_unknown_names_list_the_valid_ones() -> None:
    things = Registry[Thing](
        "thing", unknown="No {kind} {name!r}; try {quoted}.", duplicate="{name} ({existing.order})"
    )
    things.register(Thing("a", 3))
    default = Registry[Thing]("thing")
    default.register(Thing("a"))
    for call, message in (
        (lambda: things.register(Thing("a")), "a (3)"),
        (lambda: things.get("z"), "No thing 'z'; try 'a'."),
        (lambda: things.unregister("z"), "No thing 'z'; try 'a'."),
        (lambda: default.get("z"), "Unknown thing 'z'; registered: a."),
        (lambda: default.register(Thing("a")), "A thing named 'a' is registered already."),
    ):
        with pytest.raises(ValueError) as err:
            call()
        assert str(err.value) == message


def test_builtin_modules_are_imported_on_first_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "reg_plugins"
    package.mkdir()
    (package / "__init__.py").write_text(
        textwrap.dedent(
            """
            from audit.registry import Registry
            THINGS = Registry("thing", builtins="reg_plugins")
            """
        )
    )
    for name in ("one", "two"):
        (package / f"{name}.py").write_text(
            "from types import SimpleNamespace\n"
            "from reg_plugins import THINGS\n"
            f"THINGS.register(SimpleNamespace(name={name!r}))\n"
        )
    monkeypatch.syspath_prepend(str(tmp_path))
    for module in ("reg_plugins", "reg_plugins.one", "reg_plugins.two"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    try:
        import reg_plugins  # type: ignore[import-not-found]

        assert "reg_plugins.one" not in sys.modules  # nothing imported before the first use
        assert reg_plugins.THINGS.names() == ("one", "two")
        assert "reg_plugins.two" in sys.modules
    finally:
        for module in ("reg_plugins", "reg_plugins.one", "reg_plugins.two"):
            sys.modules.pop(module, None)
