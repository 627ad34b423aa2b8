"""A model source is one new file: a module of ``audit.models`` that defines ``SOURCE`` is
registered by itself, after the shipped sources, with no other edit.

The test adds a folder to the package's ``__path__`` (instead of writing into the installed
package) holding one module with a source and one without, and starts from an empty registry.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import audit.models as models
from audit.models import registry

ZOO = """
from audit.models.registry import ModelEntry, ModelSource


class TinyEntry(ModelEntry):
    pass


class TinyZoo(ModelSource):
    name = "tinyzoo"
    prefix = "tinyzoo/"

    def names(self):
        return ["tinyzoo/one"]

    def entry(self, name):
        return "entry of " + name if name == "tinyzoo/one" else None


SOURCE = TinyZoo()
"""


@pytest.fixture
def extra_module_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "zz_tiny_zoo.py").write_text(textwrap.dedent(ZOO))
    (tmp_path / "zz_not_a_source.py").write_text("SOURCE = 'a string, not a ModelSource'\n")
    monkeypatch.setattr(models, "__path__", [*models.__path__, str(tmp_path)])
    monkeypatch.setattr(models, "_BUILTINS_REGISTERED", False)
    monkeypatch.setattr(registry, "_SOURCES", [])
    return tmp_path


def test_a_module_defining_source_is_registered_by_itself(extra_module_folder: Path) -> None:
    names = [s.name for s in registry.sources()]
    assert names[:3] == ["registered", "timm", "torchvision"]
    assert names.count("tinyzoo") == 1 and names.index("tinyzoo") >= 3
    assert registry.list_models("tinyzoo/*") == ["tinyzoo/one"]
    assert registry.find_entry("tinyzoo/one") == "entry of tinyzoo/one"
    assert "demo_digits" in registry.list_models()  # the shipped sources are all there


def test_without_the_file_there_is_no_such_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "_BUILTINS_REGISTERED", False)
    monkeypatch.setattr(registry, "_SOURCES", [])
    assert "tinyzoo" not in [s.name for s in registry.sources()]
    assert registry.list_models("tinyzoo/*") == []
