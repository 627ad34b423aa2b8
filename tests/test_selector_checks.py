"""Common checks over every registered selector, in the manner of scikit-learn's check_estimator.

Each check is parametrised over the registry (and a few parameter variants), so a new selector
is checked as soon as its file exists. Frames are synthetic: one maker per declared column in
``COLUMN_MAKERS`` (a new column needs a maker here; ``test_every_required_column_has_a_maker``
says so). Values are rounded so that ties happen.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from audit.config import CriticismConfig
from audit.criticism.frame import ClassFrame, Column
from audit.criticism.selectors import (
    Selector,
    get_selector,
    register_selector,
    required_columns,
    runnable_methods,
    selector_names,
)

LABEL = 3
Maker = Callable[[np.random.Generator, int], np.ndarray]


def _top5_classes(rng: np.random.Generator, n: int) -> np.ndarray:
    top = rng.integers(0, 10, size=(n, 5)).astype(np.float64)
    top[:, 0] = np.where(rng.random(n) < 0.7, LABEL, (LABEL + 1) % 10)
    return top


def _top5_probs(rng: np.random.Generator, n: int) -> np.ndarray:
    return -np.sort(-np.round(rng.random((n, 5)), 1), axis=1)


def _steps(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.where(rng.random(n) < 0.4, np.nan, rng.integers(0, 4, size=n)).astype(np.float64)


def _embedding(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.normal(size=(n, 4)) + 3.0 * rng.integers(0, 2, size=(n, 1))


COLUMN_MAKERS: dict[str, Maker] = {
    "predictions.label_prob": lambda rng, n: np.round(rng.random(n), 1),
    "predictions.top5_classes": _top5_classes,
    "predictions.top5_probs": _top5_probs,
    "predictions.embedding": _embedding,
    "adversarial.steps_to_flip": _steps,
    "adversarial.adv_prob": lambda rng, n: np.round(rng.random(n), 1),
}

VARIANTS: dict[str, list[dict[str, Any]]] = {
    "mmd_critic": [{}, {"solver": "sieve"}, {"gamma": 0.5, "lam": 0.1}],
    "probability": [{}, {"proto_threshold": 0.3, "crit_threshold": 0.7}],
}


def cases() -> list[Any]:
    return [
        pytest.param(name, params, id=f"{name}-{i}")
        for name in selector_names()
        for i, params in enumerate(VARIANTS.get(name, [{}]))
    ]


def make_frame(kind: type[Selector], rng: np.random.Generator, n: int) -> ClassFrame:
    ids = [f"img{i:03d}" for i in rng.permutation(n)]
    cols = {str(c): COLUMN_MAKERS[str(c)](rng, n) for c in kind.requires}
    return ClassFrame(LABEL, ids, cols)


def shuffled(frame: ClassFrame, rng: np.random.Generator) -> ClassFrame:
    return frame.take(rng.permutation(len(frame)))


def result(sel: Selector) -> tuple[list[str], list[str], list[float], list[float]]:
    return sel.prototypes_, sel.criticisms_, sel.prototype_scores_, sel.criticism_scores_


def build(name: str, params: dict[str, Any], **more: Any) -> Selector:
    return get_selector(name)(**{**params, **more})


# -- the registry ----------------------------------------------------------------------------


def test_registry_holds_every_selection_method() -> None:
    assert selector_names() == ("adversarial", "mmd_critic", "probability", "random")
    assert CriticismConfig().methods == selector_names()  # the default: all, sorted
    for name in selector_names():
        assert get_selector(name).name == name


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="Unknown selection method 'nope'") as err:
        get_selector("nope")
    assert all(repr(n) in str(err.value) for n in selector_names())


def test_duplicate_registration_raises() -> None:
    @dataclasses.dataclass
    class Other(Selector):
        name = "random"

    with pytest.raises(ValueError, match="registered already"):
        register_selector(Other)
    assert get_selector("random").__name__ == "RandomSelector"


@pytest.mark.parametrize("name", selector_names())
def test_every_required_column_has_a_maker(name: str) -> None:
    for col in get_selector(name).requires:
        assert isinstance(col, Column)
        assert str(col) in COLUMN_MAKERS, f"add a maker for {col} to COLUMN_MAKERS"


@pytest.mark.parametrize("name", selector_names())
def test_skip_rules_follow_the_requirements(name: str) -> None:
    needs = required_columns([name])
    assert runnable_methods([name], needs) == ([name], {})
    for table, cols in needs.items():
        for col in cols:
            fewer = {t: [c for c in cs if (t, c) != (table, col)] for t, cs in needs.items()}
            run, skipped = runnable_methods([name], fewer)
            assert run == [] and skipped == {
                name: f"needs {table}.{col}, which this run did not write"
            }
            told = runnable_methods([name], fewer, {f"{table}.{col}": "off"})
            assert told == ([], {name: "off"})
        gone = {t: cs for t, cs in needs.items() if t != table}
        assert runnable_methods([name], gone, {table: "no table"}) == ([], {name: "no table"})


def test_skip_rules_of_today() -> None:
    # what the pipeline decides today: adversarial needs the attack, mmd_critic the embeddings
    every = required_columns(selector_names())
    no_attack = {t: c for t, c in every.items() if t != "adversarial"}
    reasons = {"adversarial": "attack.enabled is false"}
    methods = list(selector_names())
    assert runnable_methods(methods, no_attack, reasons) == (
        ["mmd_critic", "probability", "random"],
        {"adversarial": "attack.enabled is false"},
    )
    no_emb = {**every, "predictions": [c for c in every["predictions"] if c != "embedding"]}
    why = {"predictions.embedding": "predict.embeddings is false"}
    assert runnable_methods(methods, no_emb, why)[1] == {
        "mmd_critic": "predict.embeddings is false"
    }


def test_required_columns_are_one_union_per_table() -> None:
    needs = required_columns(["probability", "adversarial", "probability"])
    assert needs["predictions"].count("label_prob") == 1
    assert set(needs) == {"predictions", "adversarial"}
    assert required_columns(["random"]) == {}


# -- each selector ---------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "params"), cases())
def test_every_field_is_a_checked_parameter(name: str, params: dict[str, Any]) -> None:
    kind = get_selector(name)
    assert {f.name for f in dataclasses.fields(kind)} == set(kind.PARAMETERS)
    sel = build(name, params)
    assert sel.get_params() == {**build(name, {}).get_params(), **params}


@pytest.mark.parametrize(("name", "params"), cases())
def test_order_free(name: str, params: dict[str, Any], rng: np.random.Generator) -> None:
    frame = make_frame(get_selector(name), rng, 40)
    want = result(build(name, params).fit(frame))
    for _ in range(3):
        assert result(build(name, params).fit(shuffled(frame, rng))) == want


@pytest.mark.parametrize(("name", "params"), cases())
def test_deterministic(name: str, params: dict[str, Any], rng: np.random.Generator) -> None:
    frame = make_frame(get_selector(name), rng, 40)
    sel = build(name, params)
    first = result(sel.fit(frame))
    assert result(sel.fit(frame)) == first  # refitting the same instance
    assert result(type(sel)(**sel.get_params()).fit(frame)) == first  # a fresh one


@pytest.mark.parametrize(("name", "params"), cases())
def test_fit_sets_learned_attributes_only(
    name: str, params: dict[str, Any], rng: np.random.Generator
) -> None:
    sel = build(name, params)
    assert not hasattr(sel, "prototypes_") and not hasattr(sel, "criticisms_")
    before = sel.get_params()
    assert sel.fit(make_frame(type(sel), rng, 30)) is sel
    assert sel.get_params() == before


@pytest.mark.parametrize("n", [0, 1, 2, 5, 40])
@pytest.mark.parametrize(("name", "params"), cases())
def test_roles_are_well_formed(
    name: str, params: dict[str, Any], n: int, rng: np.random.Generator
) -> None:
    """Also the tiny classes: 0, 1 and 2 images give what they have, without error."""
    frame = make_frame(get_selector(name), rng, n)
    sel = build(name, params).fit(frame)
    ids = set(frame.image_ids.tolist())
    for picked, scores, k in (
        (sel.prototypes_, sel.prototype_scores_, sel.n_prototypes),
        (sel.criticisms_, sel.criticism_scores_, sel.n_criticisms),
    ):
        assert len(picked) == len(set(picked)) == len(scores) <= min(k, n)
        assert set(picked) <= ids
        assert all(isinstance(i, str) for i in picked)
        assert all(isinstance(s, float) for s in scores)
    if sel.disjoint_roles():
        assert not set(sel.prototypes_) & set(sel.criticisms_)
    if n == 0:
        assert result(sel) == ([], [], [], [])


@pytest.mark.parametrize(("name", "params"), cases())
@pytest.mark.parametrize("field", ["n_prototypes", "n_criticisms"])
@pytest.mark.parametrize("bad", [-1, 2.5, "3", True, None])
def test_counts_are_validated(name: str, params: dict[str, Any], field: str, bad: Any) -> None:
    kind = get_selector(name)
    with pytest.raises(ValueError) as err:
        build(name, params, **{field: bad})
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"The '{field}' parameter of {kind.__name__} must be an int >= 0.")


@pytest.mark.parametrize("name", selector_names())
def test_from_config(name: str) -> None:
    cfg = CriticismConfig(n_prototypes=2, n_criticisms=4)
    sel = get_selector(name).from_config(cfg, LABEL)
    assert type(sel) is get_selector(name)
    assert (sel.n_prototypes, sel.n_criticisms) == (2, 4)


# -- what each selector promises about its roles, as it behaves today -------------------------


def test_disjoint_roles_as_today() -> None:
    promises = {name: get_selector(name)().disjoint_roles() for name in selector_names()}
    assert promises == {
        "adversarial": True,  # never flipped vs flipped at step 1
        "mmd_critic": True,  # criticisms exclude the prototypes
        "probability": True,  # p > 0.9 vs p < 0.1
        "random": True,  # one draw without replacement
    }
    crossed = get_selector("probability")(proto_threshold=0.3, crit_threshold=0.7)
    assert not crossed.disjoint_roles()
    frame = ClassFrame(LABEL, ["a", "b"], {"predictions.label_prob": np.array([0.5, 0.9])})
    assert set(crossed.fit(frame).prototypes_) & set(crossed.criticisms_) == {"a"}
