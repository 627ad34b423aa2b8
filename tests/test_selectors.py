"""Selectors: plain-Python references, determinism, and independence from row order."""

from __future__ import annotations

import numpy as np
import pytest

from audit.criticism.frame import ClassFrame
from audit.criticism.selectors.adversarial import AdversarialSelector
from audit.criticism.selectors.mmd_critic import MMDCriticSelector
from audit.criticism.selectors.probability import ProbabilitySelector
from audit.criticism.selectors.random_draw import RandomSelector


def rows(rng: np.random.Generator, n: int = 60):
    ids = [f"img{i:04d}" for i in rng.permutation(n)]
    steps = rng.choice([-1, 0, 1, 1, 2, 5, -1], size=n)
    margin = np.round(rng.uniform(-1, 1, size=n), 2)  # rounded: ties happen
    adv_prob = np.round(rng.uniform(0, 1, size=n), 2)
    p = np.round(rng.uniform(0, 1, size=n), 2)
    emb = rng.normal(size=(n, 8)) + rng.integers(0, 3, size=(n, 1))
    return ids, steps, margin, adv_prob, p, emb


def adversarial_frame(
    ids: list[str], steps: np.ndarray, p: np.ndarray, runner_up: np.ndarray, adv_prob: np.ndarray
) -> ClassFrame:
    """Class 0, every image correctly classified; ``steps`` -1 means null (never flipped)."""
    n = len(ids)
    return ClassFrame(
        0,
        ids,
        {
            "predictions.label_prob": p,
            "predictions.top5_classes": np.tile([0.0, 1.0], (n, 1)),
            "predictions.top5_probs": np.stack([p, runner_up], axis=1),
            "adversarial.steps_to_flip": np.where(steps < 0, np.nan, steps),
            "adversarial.adv_prob": adv_prob,
        },
    )


def emb_frame(ids: list[str], emb: np.ndarray) -> ClassFrame:
    return ClassFrame(0, ids, {"predictions.embedding": emb})


def test_adversarial_matches_plain_sort(rng: np.random.Generator) -> None:
    ids, steps, _, adv_prob, p, _ = rows(rng)
    runner_up = np.round(rng.uniform(0, 1, size=len(ids)), 2) * p  # ties happen
    margin = p - runner_up
    sel = AdversarialSelector(4, 5).fit(adversarial_frame(ids, steps, p, runner_up, adv_prob))
    protos = sorted(
        (i for i, s in zip(ids, steps, strict=True) if s == -1),
        key=lambda i: (-margin[ids.index(i)], i),
    )[:4]
    crits = sorted(
        (i for i, s in zip(ids, steps, strict=True) if s == 1),
        key=lambda i: (-adv_prob[ids.index(i)], i),
    )[:5]
    assert sel.prototypes_ == protos and sel.criticisms_ == crits
    assert sel.prototype_scores_ == [margin[ids.index(i)] for i in protos]


def test_probability_matches_plain_sort(rng: np.random.Generator) -> None:
    ids, _, _, _, p, _ = rows(rng)
    sel = ProbabilitySelector(3, 3, proto_threshold=0.8, crit_threshold=0.2).fit(
        ClassFrame(0, ids, {"predictions.label_prob": p})
    )
    by = dict(zip(ids, p, strict=True))
    assert sel.prototypes_ == sorted((i for i in ids if by[i] > 0.8), key=lambda i: (-by[i], i))[:3]
    assert sel.criticisms_ == sorted((i for i in ids if by[i] < 0.2), key=lambda i: (by[i], i))[:3]
    assert all(by[i] > 0.8 for i in sel.prototypes_)


def test_random_is_seeded_disjoint_and_order_free(rng: np.random.Generator) -> None:
    ids = rows(rng)[0]
    a = RandomSelector(3, 3, seed=5, stream=7).fit(ClassFrame(0, ids))
    b = RandomSelector(3, 3, seed=5, stream=7).fit(ClassFrame(0, list(reversed(ids))))
    c = RandomSelector(3, 3, seed=6, stream=7).fit(ClassFrame(0, ids))
    assert a.prototypes_ == b.prototypes_ and a.criticisms_ == b.criticisms_
    assert (a.prototypes_, a.criticisms_) != (c.prototypes_, c.criticisms_)
    assert not set(a.prototypes_) & set(a.criticisms_)
    assert len(a.prototypes_) == 3 and len(a.criticisms_) == 3


@pytest.mark.parametrize("solver", ["sieve", "greedy"])
def test_mmd_selector_is_deterministic_and_order_free(
    rng: np.random.Generator, solver: str
) -> None:
    ids, _, _, _, _, emb = rows(rng)
    a = MMDCriticSelector(3, 2, solver=solver, seed=1).fit(emb_frame(ids, emb))
    perm = np.random.default_rng(99).permutation(len(ids))
    b = MMDCriticSelector(3, 2, solver=solver, seed=1).fit(
        emb_frame([ids[i] for i in perm], emb[perm])
    )
    assert a.prototypes_ == b.prototypes_ and a.criticisms_ == b.criticisms_
    assert len(a.prototypes_) == 3 and len(a.criticisms_) == 2
    assert not set(a.prototypes_) & set(a.criticisms_)


def test_mmd_greedy_selector_equals_direct_greedy(rng: np.random.Generator) -> None:
    from audit.criticism import mmd

    ids, _, _, _, _, emb = rows(rng, n=30)
    sel = MMDCriticSelector(2, 2, solver="greedy", gamma=0.05).fit(emb_frame(ids, emb))
    order = np.argsort(ids)
    x = emb[order]
    protos = mmd.greedy_prototypes(x, 2, 0.05)
    crits = mmd.greedy_criticisms(x, protos, 2, 0.05, lam=1e-5)
    assert sel.prototypes_ == [ids[order[i]] for i in protos]
    assert sel.criticisms_ == [ids[order[i]] for i in crits]


def test_small_classes_give_what_they_have() -> None:
    frame = adversarial_frame(["a", "b"], np.array([-1, 0]), np.ones(2), np.zeros(2), np.zeros(2))
    sel = AdversarialSelector(3, 3).fit(frame)
    assert sel.prototypes_ == ["a"] and sel.criticisms_ == []
    r = RandomSelector(3, 3).fit(ClassFrame(0, ["a", "b", "c", "d"]))
    assert len(r.prototypes_) == 3 and len(r.criticisms_) == 1


def test_completion_from_empty_is_the_greedy(rng: np.random.Generator) -> None:
    from audit.criticism import mmd

    x = rng.normal(size=(40, 6))
    assert mmd.greedy_prototypes(x, 4, 0.1, start=[]) == mmd.greedy_prototypes(x, 4, 0.1)
    start = mmd.greedy_prototypes(x, 2, 0.1)
    assert mmd.greedy_prototypes(x, 4, 0.1, start=start) == mmd.greedy_prototypes(x, 4, 0.1)


def test_sieve_selector_always_fills_the_count(rng: np.random.Generator) -> None:
    ids, _, _, _, _, emb = rows(rng, n=30)
    sel = MMDCriticSelector(3, 3, solver="sieve").fit(emb_frame(ids, emb))
    assert len(sel.prototypes_) == 3 and len(sel.criticisms_) == 3


def test_greedy_from_an_arbitrary_start_follows_the_objective(rng: np.random.Generator) -> None:
    from audit.criticism import mmd

    x = rng.normal(size=(25, 5))
    got = mmd.greedy_prototypes(x, 3, 0.2, start=[7])
    chosen = [7]
    while len(chosen) < 3:  # plain greedy on the objective itself, one full evaluation each
        rest = [j for j in range(25) if j not in chosen]
        chosen.append(max(rest, key=lambda j: (mmd.prototype_objective(x, [*chosen, j], 0.2), -j)))
    assert got == chosen
    with pytest.raises(ValueError, match="distinct"):
        mmd.greedy_prototypes(x, 3, 0.2, start=[1, 1])


def test_sieve_ranks_best_first(rng: np.random.Generator) -> None:
    # the sieve keeps stream order; the ranks must still be best first, as greedy's are
    from audit.criticism import mmd

    ids, _, _, _, _, emb = rows(rng, n=40)
    sel = MMDCriticSelector(4, 4, solver="sieve", seed=3).fit(emb_frame(ids, emb))
    order = np.argsort(ids)
    x, sorted_ids = emb[order].astype(np.float64), [ids[i] for i in order]
    protos = [sorted_ids.index(i) for i in sel.prototypes_]
    chosen: list[int] = []
    left = list(protos)
    while left:  # plain greedy among the sieve's own prototypes
        best = max(left, key=lambda j: mmd.prototype_objective(x, [*chosen, j], sel.gamma_))
        chosen.append(best)
        left.remove(best)
    assert protos == chosen
    assert sel.criticism_scores_ == sorted(sel.criticism_scores_, reverse=True)


def test_adversarial_selection_takes_correctly_classified_images_only(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # with attack.target 'prediction', a misclassified image that never flips kept its wrong
    # prediction: it is no prototype of its class, and one flipped onto the label no criticism
    from audit.config import CriticismConfig
    from audit.criticism.tasks import select_class
    from audit.store import RunStore

    store = RunStore(str(tmp_path), "r")
    store.prepare(overwrite=False)
    n = 6  # all labelled 3; images 0-2 predicted 3 (correct), 3-5 predicted 2 (wrong)
    ids = [f"img{i}" for i in range(n)]
    top1 = [3, 3, 3, 2, 2, 2]
    common = {"run_id": ["r"] * n, "model": ["m"] * n, "image_id": ids, "label": [3] * n}
    store.write(
        "predictions",
        {
            **common,
            "uri": ids,
            "top5_classes": [[c, 1 if c != 1 else 0] for c in top1],
            "top5_probs": [[0.6, 0.3]] * n,
            "correct_top1": [c == 3 for c in top1],
            "correct_top5": [True] * n,
            "loss": [1.0] * n,
            "label_prob": [0.6, 0.6, 0.6, 0.3, 0.3, 0.3],
            "embedding": [None] * n,
        },
    )
    store.write(
        "adversarial",
        {
            **common,
            "target": top1,  # the clean prediction
            "steps_to_flip": [None, 1, None, None, 1, None],
            "adv_class": [3, 5, 3, 2, 3, 2],
            "stored_flips": [None] * n,
            "image_png": [None] * n,
            "adv_prob": [0.5] * n,
            "linf": [0.0] * n,
            "l2": [0.0] * n,
        },
    )
    rows_ = select_class(store.url, store.files, 3, CriticismConfig(), ["adversarial"], None)
    picked = {(role, image_id) for _, role, _, image_id, _ in rows_}
    assert picked == {("prototype", "img0"), ("prototype", "img2"), ("criticism", "img1")}
