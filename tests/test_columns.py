"""Column declarations against the documented contract, and the stage registry's ordering."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pytest
import torch
from torch import nn

from audit.columns import Column, Null, Table
from audit.config import AttackConfig, ExplainConfig
from audit.stages.registry import STAGES, StageContext, StageRegistry, dependency_order
from audit.store import SCHEMAS, TABLES

STAGES.classes()  # the stages' tables (image_stats among them) join TABLES when they register

DOCS = Path(__file__).resolve().parents[1] / "docs" / "tables.md"


def documented_tables() -> dict[str, list[tuple[str, str]]]:
    """``{table: [(column, type), ...]}`` from the ``| column | type | meaning |`` tables of
    docs/tables.md, each under its ``## <table>`` heading."""
    found: dict[str, list[tuple[str, str]]] = {}
    section = None
    for line in DOCS.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"^## (\S+)\s*$", line)
        if heading:
            section = heading.group(1)
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if section is None or not line.startswith("|") or len(cells) < 2:
            continue
        if cells[0] == "column" or set(cells[0]) <= {"-"}:
            continue
        found.setdefault(section, []).append((cells[0], cells[1]))
    return found


def test_docs_document_every_table() -> None:
    assert set(documented_tables()) == set(TABLES)


@pytest.mark.parametrize("name", list(TABLES))
def test_docs_match_the_declared_columns(name: str) -> None:
    declared = [(c.name, c.doc_type) for c in TABLES[name].columns]
    assert documented_tables()[name] == declared


@pytest.mark.parametrize("name", list(TABLES))
def test_store_schemas_are_the_declarations(name: str) -> None:
    assert SCHEMAS[name].equals(TABLES[name].schema())
    assert [f.nullable for f in SCHEMAS[name]] == [c.nullable for c in TABLES[name].columns]


def test_doc_type_names_float_widths() -> None:
    assert Column("x", pa.float64()).doc_type == "float64"
    assert Column("x", pa.list_(pa.float32()), nullable=True).doc_type == "list<float32>, null"


def test_a_table_refuses_a_column_twice() -> None:
    with pytest.raises(ValueError, match="'x' twice"):
        Table("t", (Column("x", pa.int32()), Column("x", pa.int64())))


def test_batch_to_arrow_follows_the_declarations() -> None:
    table = Table(
        "t",
        (
            Column("run_id", pa.string()),
            Column("label", pa.int32(), np.int64, nullable=True, null_if=Null.NEGATIVE),
            Column("p", pa.float32(), np.float32, nullable=True, null_if=Null.NAN),
            Column("ok", pa.bool_(), np.bool_, nullable=True, null_if=Null.UNLABELED),
            Column("top", pa.list_(pa.int32()), np.int32, ("k",)),
            Column("png", pa.binary(), object, nullable=True, optional=True),
        ),
    )
    b = {
        "image_id": np.array(["a", "b"], dtype=object),
        "label": np.array([3, -1]),
        "p": np.array([0.5, np.nan], dtype=np.float32),
        "ok": np.array([True, True]),
        "top": np.array([[1, 2], [3, 4]], dtype=np.int32),
    }
    t = table.from_batch(b, {"run_id": "r", "model": "m"})
    assert t.to_pydict() == {
        "run_id": ["r", "r"],
        "label": [3, None],
        "p": [0.5, None],
        "ok": [True, None],
        "top": [[1, 2], [3, 4]],
        "png": [None, None],
    }


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))


@pytest.mark.parametrize(
    ("attack", "explain"),
    [
        (AttackConfig(enabled=False), ExplainConfig(enabled=False)),
        (AttackConfig(keep_images=True), ExplainConfig()),
    ],
)
def test_actor_fills_every_declared_column_for_skipped_images(
    attack: AttackConfig, explain: ExplainConfig
) -> None:
    from audit.model_actor import ModelActor
    from audit.models import AuditModel

    model = AuditModel(_Net(), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    actor = ModelActor(model, 10, 3, "cpu", sections={"attack": attack, "explain": explain})
    n = 2
    batch = {
        "image_id": np.array(["a", "b"], dtype=object),
        "uri": np.array(["u", "v"], dtype=object),
        "label": np.array([1, -1]),
        "image": np.zeros((n, 8, 8, 3), dtype=np.uint8),
        "segments": np.full(n, b"", dtype=object),
        "error": np.array(["bad", "bad"], dtype=object),
        "stage": np.array(["decode", "decode"], dtype=object),
    }
    out = actor.run_batch(batch)
    expected = [c for s in actor.stages for c in s.outputs()]
    assert [k for k in out if k in actor.columns] == [c.name for c in expected]
    for c in expected:
        assert out[c.name].dtype == np.dtype(c.dtype), c.name
        assert out[c.name].shape == (n, *c.row_shape({"k": 5, "dim": 3})), c.name
    if explain.enabled:
        assert list(out["explanations"]) == ["", ""]
        assert list(out["image_png"]) == [b"", b""]


# --- the stage registry ------------------------------------------------------------------------


def stage(name: str, needs: tuple[str, ...] = (), uses: tuple[str, ...] = ()) -> Any:
    """A stage class that records its name in ``state["ran"]``."""

    class Fake:
        section: ClassVar[str] = name
        columns: ClassVar[tuple[Column, ...]] = ()

        def __init__(self, config: Any, context: StageContext) -> None:
            pass

        def outputs(self) -> tuple[Column, ...]:
            return ()

        def run(self, batch: Any, state: dict[str, Any]) -> dict[str, np.ndarray]:
            state.setdefault("ran", []).append(name)
            return {}

    Fake.name = name  # type: ignore[attr-defined]
    Fake.needs = needs  # type: ignore[attr-defined]
    Fake.uses = uses  # type: ignore[attr-defined]
    return Fake


def names(stages: list[Any]) -> list[str]:
    return [s.name for s in stages]


def test_dependencies_run_first_whatever_the_registration_order() -> None:
    c = stage("c", needs=("image", "b"))
    b = stage("b", needs=("a",))
    a = stage("a", needs=("label",))
    assert names(dependency_order([c, b, a])) == ["a", "b", "c"]
    assert names(dependency_order([a, b, c])) == ["a", "b", "c"]


def test_independent_stages_keep_their_order() -> None:
    assert names(dependency_order([stage("y"), stage("x")])) == ["y", "x"]


def test_uses_orders_only_enabled_stages() -> None:
    late = stage("late", uses=("early",))
    assert names(dependency_order([late, stage("early")])) == ["early", "late"]
    assert names(dependency_order([late])) == ["late"]


def test_a_missing_dependency_is_a_one_line_error() -> None:
    with pytest.raises(ValueError, match="'b' needs 'nope'") as info:
        dependency_order([stage("a"), stage("b", needs=("nope",))])
    assert "\n" not in str(info.value)


def test_a_cycle_is_a_one_line_error() -> None:
    stages = [stage("a", needs=("c",)), stage("b", needs=("a",)), stage("c", needs=("b",))]
    with pytest.raises(ValueError, match="cycle: a -> c -> b -> a") as info:
        dependency_order(stages)
    assert "\n" not in str(info.value)


def test_registry_refuses_duplicates_and_names_the_valid_stages() -> None:
    reg = StageRegistry()
    reg.register(stage("a"))
    with pytest.raises(ValueError, match="already registered"):
        reg.register(stage("a"))
    with pytest.raises(ValueError, match=r"Unknown stage 'z'\. Valid stages: a"):
        reg.get("z")


def test_build_skips_disabled_sections_and_runs_in_order() -> None:
    class Off:
        enabled = False

    reg = StageRegistry()
    for cls in (stage("late", needs=("early",)), stage("early"), stage("off")):
        reg.register(cls)
    ctx = StageContext(model=None, device=torch.device("cpu"), bf16=False, sizes={})  # type: ignore[arg-type]
    built = reg.build({"late": object(), "early": object(), "off": Off()}, ctx)
    state: dict[str, Any] = {}
    for s in built:
        s.run({}, state)
    assert state["ran"] == ["early", "late"]
    with pytest.raises(ValueError, match="config section 'off'"):
        reg.build({"late": object(), "early": object()}, ctx)


def test_shipped_stages() -> None:
    assert STAGES.names() == ("predict", "attack", "explain", "image_stats")
    order = dependency_order([STAGES.get(n) for n in ("explain", "attack", "predict")])
    assert names(order) == ["predict", "attack", "explain"]
    for name in STAGES.names():  # every stage's columns are declared in order
        cls = STAGES.get(name)
        assert len({c.name for c in cls.columns}) == len(cls.columns)
        assert all(c.dtype is not None for c in cls.columns)
