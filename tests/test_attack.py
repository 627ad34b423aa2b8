"""IFGSM step counting against a plain reference loop and against closed-form answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from audit.stages.attack import NEVER, ifgsm


def small_convnet(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(64, 5),
    )
    # non-trivial batch-norm statistics, then frozen by eval()
    net[1].running_mean.uniform_(-0.2, 0.2)
    net[1].running_var.uniform_(0.5, 1.5)
    return net.double().eval()


def reference_loop(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, m: int, norm: str
):
    """The formula, written out plainly: every image takes all M steps; first flip recorded."""
    n = len(x)
    steps: list[int | None] = [None] * n
    adv = x.clone()
    cls = torch.zeros(n, dtype=torch.int64)
    prob = torch.zeros(n, dtype=torch.float32)
    xt = x.clone()
    for t in range(m + 1):
        xt.requires_grad_(True)
        logits = model(xt)
        p = torch.softmax(logits.detach().float(), 1)
        for i in range(n):
            if steps[i] is None and (int(p[i].argmax()) != int(y[i]) or t == m):
                if int(p[i].argmax()) != int(y[i]):
                    steps[i] = t
                adv[i] = xt.detach()[i]
                cls[i] = p[i].argmax()
                prob[i] = p[i].max()
                if t == m and steps[i] is None:
                    steps[i] = NEVER
        if t == m:
            break
        g = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), xt)[0]
        d = g.sign() if norm == "linf" else g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        xt = (xt.detach() + eps * d).clamp(0, 1)
    return torch.tensor([NEVER if s is None else s for s in steps]), adv, cls, prob


def make_batch(seed: int, n: int = 24):
    model = small_convnet(seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 12, 12, generator=g, dtype=torch.float64)
    with torch.no_grad():
        pred = model(x).argmax(1)
    y = pred.clone()
    y[: n // 4] = (pred[: n // 4] + 1) % 5  # a quarter are wrong before the attack
    return model, x, y


def spread_eps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str) -> float:
    """The smallest step size (of a fixed ladder) at which some images flip after >= 2 steps."""
    for eps in (0.003, 0.01, 0.03, 0.1, 0.3):
        steps = reference_loop(model, x, y, eps, 10, norm)[0]
        if ((steps >= 2) & (steps != NEVER)).any():
            return eps
    raise AssertionError("no step size flips anything: the test model is degenerate")


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_matches_reference_loop(seed: int, norm: str) -> None:
    model, x, y = make_batch(seed)
    eps = spread_eps(model, x, y, norm)
    r = ifgsm(model, x, y, eps_step=eps, max_steps=10, norm=norm)
    steps, adv, cls, prob = reference_loop(model, x, y, eps, 10, norm)
    assert torch.equal(r.steps_to_flip, steps)
    assert torch.equal(r.adv_class, cls)
    if norm == "linf":  # sign steps: the same iterates to the bit, whatever the batch held
        assert torch.equal(r.adversarial, adv)
        torch.testing.assert_close(r.adv_prob, prob, rtol=0, atol=0)
    else:  # L2 steps carry the gradient's rounding, which depends on the batch's size
        torch.testing.assert_close(r.adversarial, adv, rtol=0, atol=1e-12)
        torch.testing.assert_close(r.adv_prob, prob, rtol=1e-6, atol=1e-7)
    delta = (r.adversarial - x).flatten(1)
    torch.testing.assert_close(r.linf, delta.abs().amax(1).float())
    torch.testing.assert_close(r.l2, delta.norm(dim=1).float())
    assert (steps == 0).any() and ((steps >= 2) & (steps != NEVER)).any()


def test_early_exit_equals_no_early_exit(seed: int) -> None:
    model, x, y = make_batch(seed)
    a = ifgsm(model, x, y, eps_step=0.01, early_exit=True)
    b = ifgsm(model, x, y, eps_step=0.01, early_exit=False)
    for field in ("steps_to_flip", "adv_class", "adv_prob", "linf", "l2", "adversarial"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field


@pytest.mark.parametrize("chunks", [[1] * 24, [5, 7, 12], [24], [3, 21]])
def test_results_do_not_depend_on_batching(seed: int, chunks: list[int]) -> None:
    model, x, y = make_batch(seed)
    whole = ifgsm(model, x, y, eps_step=0.01)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed + 7))
    parts, start = [], 0
    for size in chunks:
        sel = perm[start : start + size]
        parts.append((sel, ifgsm(model, x[sel], y[sel], eps_step=0.01)))
        start += size
    for sel, r in parts:
        assert torch.equal(r.steps_to_flip, whole.steps_to_flip[sel])
        assert torch.equal(r.adversarial, whole.adversarial[sel])


def test_iterates_stay_in_unit_box_and_model_untouched(seed: int) -> None:
    model, x, y = make_batch(seed)
    x = x.clamp(0.0, 1.0)
    x[:, :, :2] = 0.0  # pixels already on the boundary
    x[:, :, -2:] = 1.0
    before = {k: v.clone() for k, v in model.state_dict().items()}
    r = ifgsm(model, x, y, eps_step=0.2, max_steps=10)
    assert r.adversarial.min() >= 0.0 and r.adversarial.max() <= 1.0
    assert not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_wrong_before_attack_is_zero_and_unchanged(seed: int) -> None:
    model, x, y = make_batch(seed)
    r = ifgsm(model, x, y, eps_step=0.01)
    with torch.no_grad():
        wrong = model(x).argmax(1) != y
    assert torch.equal(r.steps_to_flip == 0, wrong)
    assert torch.equal(r.adversarial[wrong], x[wrong])
    assert (r.linf[wrong] == 0).all()


def test_never_flipped_is_never_and_ends_at_step_m() -> None:
    model, x, y = make_batch(0)
    with torch.no_grad():
        y = model(x).argmax(1)
    r = ifgsm(model, x, y, eps_step=1e-6, max_steps=3)
    assert (r.steps_to_flip == NEVER).all()
    assert torch.equal(r.adv_class, y)
    # three L-infinity steps of 1e-6 (fewer where a pixel sits at the box edge)
    assert (r.linf <= 3e-6 + 1e-12).all() and (r.linf > 2.9e-6).any()


def test_training_mode_is_refused() -> None:
    model, x, y = make_batch(0)
    model.train()
    with pytest.raises(ValueError, match="eval mode"):
        ifgsm(model, x, y)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_linear_classifier_matches_closed_form(seed: int, norm: str) -> None:
    """Two-class linear model: each step lowers the margin by eps*||d||_1 (linf) or eps*||d||_2."""
    rng = np.random.default_rng(seed)
    dim = 3 * 4 * 4
    w = rng.uniform(0.5, 1.5, size=(2, dim)) * rng.choice([-1.0, 1.0], size=(2, dim))
    b = rng.normal(size=2)
    lin = nn.Linear(dim, 2).double()
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w))
        lin.bias.copy_(torch.from_numpy(b))
    model = nn.Sequential(nn.Flatten(), lin).eval()
    n = 200
    x = torch.from_numpy(rng.uniform(0.45, 0.55, size=(n, 3, 4, 4)))
    y = torch.from_numpy(rng.integers(0, 2, size=n))
    eps = 0.0005 if norm == "linf" else 0.004
    seen: set[int] = set()
    # at most 40 * 0.0005 = 0.02 per pixel (L2: 0.16 in all): the box is never reached
    for max_steps in (40, 3):
        r = ifgsm(model, x, y, eps_step=eps, max_steps=max_steps, norm=norm)
        checked = 0
        for i in range(n):
            yi = int(y[i])
            d = w[yi] - w[1 - yi]
            margin = float(d @ x[i].numpy().ravel() + b[yi] - b[1 - yi])
            drop = eps * (np.abs(d).sum() if norm == "linf" else np.linalg.norm(d))
            ratio = margin / drop
            if margin < 0:
                expected = 0
            elif abs(ratio - round(ratio)) < 1e-6:
                continue  # lands exactly on the boundary: a tie, not a test of the count
            else:
                expected = math.floor(ratio) + 1
                expected = expected if expected <= max_steps else NEVER
            assert int(r.steps_to_flip[i]) == expected, (i, margin, ratio)
            checked += 1
        assert checked > 150
        seen |= set(r.steps_to_flip.tolist())
    assert {0, NEVER} <= seen and len(seen) > 6
