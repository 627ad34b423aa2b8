"""Tests for the batched LIME stage, checked against lime's own LimeBase."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lime.lime_base import LimeBase
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.metrics import pairwise_distances
from torch import nn

from audit.models import AuditModel
from audit.stages.explain import (
    attention_image,
    explain,
    explanation_path,
    sample_masks,
    segment,
)
from audit.stages.perturb import Perturber, _gather_keep, fill_image, perturb
from audit.stages.surrogate import fit_surrogate, kernel_weights


def grid_segments(rows: int, cols: int, cell: int) -> np.ndarray:
    """``(rows * cell, cols * cell) int32`` map of ``rows * cols`` square super-pixels."""
    ids = np.arange(rows * cols, dtype=np.int32).reshape(rows, cols)
    return np.repeat(np.repeat(ids, cell, axis=0), cell, axis=1)


class RegionLinear(nn.Module):
    """Logit 0 = sum_j c_j * mean of channel 0 over region j; logit 1 = 0."""

    region_mean: torch.Tensor
    coef: torch.Tensor

    def __init__(self, segments: np.ndarray, coef: np.ndarray) -> None:
        super().__init__()
        seg = torch.from_numpy(segments.astype(np.int64))
        d = int(seg.max()) + 1
        onehot = torch.nn.functional.one_hot(seg.reshape(-1), d).double()
        self.register_buffer("region_mean", onehot / onehot.sum(0, keepdim=True))
        self.register_buffer("coef", torch.as_tensor(coef, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        means = x[:, 0].reshape(len(x), -1).double() @ self.region_mean  # (b, d)
        logit0 = means @ self.coef
        return torch.stack([logit0, torch.zeros_like(logit0)], dim=1)


class TinyNet(nn.Module):
    """A small nonlinear classifier of (b, 3, H, W) images (per-image computation only)."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w1 = nn.Parameter(torch.randn(3 * 12 * 12, 16, generator=g) * 0.2)
        self.w2 = nn.Parameter(torch.randn(16, 4, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(len(x), -1)
        h = torch.tanh(torch.stack([flat[i] @ self.w1 for i in range(len(x))]))
        return h @ self.w2


def photo_like(seed: int, size: int = 12) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 256, (size, size, 3), dtype=np.uint8)


def test_known_answer_linear_logit(seed: int) -> None:
    seg = grid_segments(3, 3, 4)
    coef = np.zeros(9)
    coef[[1, 4, 6]] = [2.0, -3.0, 0.5]
    model = RegionLinear(seg, coef).eval()
    image = np.full((12, 12, 3), 255, dtype=np.uint8)
    exp = explain(
        model,
        image,
        seg,
        0,
        n_samples=300,
        num_features=4,
        fill="zero",
        output="logit",
        seed=seed,
    )
    s = exp.surrogate
    np.testing.assert_array_equal(s.top_features, [4, 1, 6])
    np.testing.assert_allclose(s.weights, coef, atol=1e-8)
    assert abs(s.intercept) < 1e-8
    assert s.score == pytest.approx(1.0, abs=1e-10)
    assert s.local_pred == pytest.approx(coef.sum(), abs=1e-8)
    # Independent weighted least squares on the chosen columns.
    masks = sample_masks(9, 300, seed).astype(np.float64)
    y = masks @ coef
    w = kernel_weights(masks)
    design = np.column_stack([np.ones(len(masks)), masks[:, [1, 4, 6]]]) * np.sqrt(w)[:, None]
    sol = np.linalg.lstsq(design, y * np.sqrt(w), rcond=None)[0]
    np.testing.assert_allclose(s.weights[[1, 4, 6]], sol[1:], atol=1e-8)
    np.testing.assert_allclose(s.intercept, sol[0], atol=1e-8)


@pytest.mark.parametrize("regressor", ["wls", "ridge"])
@pytest.mark.parametrize("num_features", [1, 3, 6, 20])
def test_fit_surrogate_matches_lime_base(seed: int, regressor: str, num_features: int) -> None:
    rng = np.random.default_rng(seed)
    d, n = 10, 200
    masks = sample_masks(d, n, seed)
    coef = rng.normal(size=d) * (rng.random(d) < 0.6)
    target = 1 / (1 + np.exp(-(masks @ coef - 1))) + 0.05 * rng.normal(size=n)
    labels = np.column_stack([1 - target, target])
    distances = pairwise_distances(masks, masks[:1], metric="cosine").ravel()

    def kernel_fn(dist: np.ndarray) -> np.ndarray:
        return np.sqrt(np.exp(-(dist**2) / 0.25**2))

    reg = LinearRegression() if regressor == "wls" else Ridge(alpha=1.0)
    base = LimeBase(kernel_fn, verbose=False, random_state=0)
    intercept, exp, score, local_pred = base.explain_instance_with_data(
        masks,
        labels,
        distances,
        1,
        num_features,
        feature_selection="lasso_path",
        model_regressor=reg,
    )
    s = fit_surrogate(masks, target, kernel_weights(masks), num_features, regressor)
    assert s.intercept == pytest.approx(intercept, abs=1e-8)
    assert s.score == pytest.approx(score, abs=1e-8)
    assert s.local_pred == pytest.approx(float(local_pred[0]), abs=1e-8)
    assert len(s.top_features) <= num_features
    assert [int(f) for f, _ in exp] == s.top_features.tolist()
    expected = np.zeros(d)
    for f, v in exp:
        expected[f] = v
    np.testing.assert_allclose(s.weights, expected, atol=1e-8)


def test_kernel_weights_match_lime_formula(seed: int) -> None:
    masks = sample_masks(15, 400, seed)
    masks[5] = 0  # an all-hidden sample: cosine distance 1
    dist = pairwise_distances(masks, masks[0].reshape(1, -1), metric="cosine").ravel()
    for width in (0.25, 0.7):
        expected = np.sqrt(np.exp(-(dist**2) / width**2))
        got = kernel_weights(masks, width)
        assert got.dtype == np.float64 and got.shape == (400,)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert kernel_weights(masks)[0] == pytest.approx(1.0)


def test_sample_masks_deterministic(seed: int) -> None:
    a = sample_masks(7, 50, seed)
    assert a.dtype == np.uint8 and a.shape == (50, 7)
    assert (a[0] == 1).all()
    assert set(np.unique(a[1:])) == {0, 1}
    np.testing.assert_array_equal(a, sample_masks(7, 50, seed))
    assert not np.array_equal(a, sample_masks(7, 50, seed + 10))
    # Prefix-stable in the sense that matters: the masks depend only on (d, n, seed).
    assert 0.4 < a[1:].mean() < 0.6


@pytest.mark.parametrize("mode", ["zero", "mean", "blur"])
def test_perturb_equals_loop(seed: int, mode: str) -> None:
    rng = np.random.default_rng(seed)
    seg = np.array([[0, 0, 1, 1], [0, 2, 2, 1], [3, 3, 2, 1]], dtype=np.int64)
    image = torch.from_numpy(rng.random((3, 3, 4)))
    seg_t = torch.from_numpy(seg)
    fill = fill_image(image, seg_t, mode)
    masks = torch.from_numpy(sample_masks(4, 9, seed))
    got = perturb(image, seg_t, masks, fill)
    expected = torch.empty(9, 3, 3, 4, dtype=image.dtype)
    for b in range(9):
        for i in range(3):
            for j in range(4):
                src = image if masks[b, seg[i, j]] == 1 else fill
                expected[b, :, i, j] = src[:, i, j]
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", ["zero", "mean", "blur"])
def test_perturber_reused_buffer_equals_perturb(seed: int, mode: str, dtype: torch.dtype) -> None:
    # Quickshift super-pixels of a noisy image holding exact 0s and 1s; 23 masks, so every batch
    # size but 1 and 23 ends on a partial batch. Compared bit for bit with perturb's torch.where.
    img = photo_like(seed, 24)
    img[0, :5], img[1, :5] = 0, 255
    seg = segment(img, "quickshift", seed=seed)
    d = int(seg.max()) + 1
    x = torch.from_numpy(img).permute(2, 0, 1).to(dtype) / 255
    seg_t = torch.from_numpy(seg.astype(np.int64))
    fill = fill_image(x, seg_t, mode)
    masks = torch.from_numpy(sample_masks(d, 23, seed))
    bits = torch.int32 if dtype == torch.float32 else torch.int64
    for bs in (1, 4, 10, 23, 50):
        build = Perturber(x, seg_t, fill, min(bs, 23))
        pointers = set()
        for start in range(0, 23, bs):
            got = build(masks[start : start + bs])
            expected = perturb(x, seg_t, masks[start : start + bs], fill)
            assert got.shape == expected.shape and got.dtype == dtype
            assert torch.equal(got.view(bits), expected.view(bits))
            pointers.add(got.data_ptr())
        assert len(pointers) == 1  # every batch is written into the same buffer


def test_gather_keep_per_row_equals_dim1(seed: int) -> None:
    # per_row=False is the CUDA path; both must give masks[:, segments] exactly.
    rng = np.random.default_rng(seed)
    seg = torch.from_numpy(rng.integers(0, 6, 40))
    weights = torch.from_numpy(sample_masks(6, 5, seed)).float()
    expected = torch.stack([weights[i][seg] for i in range(5)])
    for per_row in (True, False):
        out = torch.full((5, 40), -1.0)
        _gather_keep(weights, seg, out, per_row)
        assert torch.equal(out, expected)


def test_perturber_validates() -> None:
    x = torch.rand(3, 4, 4)
    seg = torch.zeros(4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="max_batch must be >= 1"):
        Perturber(x, seg, x, 0)
    with pytest.raises(ValueError, match="segments"):
        Perturber(x, torch.zeros(4, 5, dtype=torch.long), x, 2)
    with pytest.raises(ValueError, match=r"at most 2 masks per call\. Got 3"):
        Perturber(x, seg, x, 2)(torch.ones(3, 1))


def test_explain_rejects_non_finite_float_image() -> None:
    image = photo_like(0).astype(np.float32) / 255
    image[3, 4, 1] = np.nan
    model = TinyNet(0).eval()
    with pytest.raises(ValueError, match="float image must be finite"):
        explain(model, image, grid_segments(3, 3, 4), 0, n_samples=8)


def test_fill_image_modes() -> None:
    seg = torch.tensor([[0, 0, 1], [0, 1, 1]])
    image = torch.arange(18, dtype=torch.float32).reshape(3, 2, 3) / 17
    mean = fill_image(image, seg, "mean")
    for s in range(2):
        where = seg == s
        for c in range(3):
            vals = mean[c][where]
            torch.testing.assert_close(vals, torch.full_like(vals, image[c][where].mean().item()))
    assert (fill_image(image, seg, "zero") == 0).all()
    blur = fill_image(image, seg, "blur")
    assert blur.shape == image.shape
    flat = torch.full((3, 20, 20), 0.3)
    torch.testing.assert_close(
        fill_image(flat, torch.zeros(20, 20, dtype=torch.long), "blur"), flat
    )
    with pytest.raises(ValueError, match="mode must be one of"):
        fill_image(image, seg, "noise")


@pytest.mark.parametrize("fill", ["mean", "blur"])
def test_explain_independent_of_batch_size(fill: str) -> None:
    seed = 3
    image = photo_like(seed)
    seg = grid_segments(3, 3, 4)
    model = TinyNet(seed).eval()
    runs = [
        explain(model, image, seg, 2, n_samples=120, num_features=4, batch_size=bs, fill=fill)
        for bs in (7, 100, 1000, 7)
    ]
    first = runs[0].surrogate
    for r in runs[1:]:
        s = r.surrogate
        np.testing.assert_array_equal(s.weights, first.weights)
        np.testing.assert_array_equal(s.top_features, first.top_features)
        assert (s.intercept, s.score, s.local_pred) == (
            first.intercept,
            first.score,
            first.local_pred,
        )
    assert runs[0].n_samples == 120 and runs[0].explained_class == 2
    assert runs[0].segments.dtype == np.int32
    other = explain(model, image, seg, 2, n_samples=120, num_features=4, seed=1, fill=fill)
    assert not np.array_equal(other.surrogate.weights, first.weights)


class CallThrough(nn.Module):
    """Runs an AuditModel through its own forward (so explain cannot fold its normalisation)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(x)
        return out


def small_audit_model(seed: int) -> AuditModel:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 12 * 12, 16), nn.Tanh(), nn.Linear(16, 4))
    return AuditModel(net, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)).eval()


@pytest.mark.parametrize("fill", ["zero", "mean", "blur"])
def test_folded_normalisation_gives_the_same_bits(seed: int, fill: str) -> None:
    # explain normalises an AuditModel's image and fill once and runs the bare net: the net must
    # see exactly the batches AuditModel.forward would have normalised, for uint8 and float images.
    model = small_audit_model(seed)
    seg = grid_segments(3, 3, 4)
    rng = np.random.default_rng(seed)
    float_image = rng.random((12, 12, 3))
    for image in (photo_like(seed), float_image):
        folded = explain(
            model, image, seg, 1, n_samples=90, num_features=4, batch_size=8, fill=fill
        )
        plain = explain(
            CallThrough(model).eval(),
            image,
            seg,
            1,
            n_samples=90,
            num_features=4,
            batch_size=8,
            fill=fill,
        )
        a, b = folded.surrogate, plain.surrogate
        np.testing.assert_array_equal(a.weights, b.weights)
        np.testing.assert_array_equal(a.top_features, b.top_features)
        assert (a.intercept, a.score, a.local_pred) == (b.intercept, b.score, b.local_pred)
    x = torch.from_numpy(float_image).float().permute(2, 0, 1).contiguous()
    seg_t = torch.from_numpy(seg.astype(np.int64))
    fill_t = fill_image(x, seg_t, fill)
    masks = torch.from_numpy(sample_masks(9, 20, seed))
    after = model.normalise(Perturber(x, seg_t, fill_t, 20)(masks))
    before = Perturber(model.normalise(x), seg_t, model.normalise(fill_t), 20)(masks)
    assert torch.equal(before, after)


def test_explain_prob_target_is_softmax() -> None:
    # Logit 1 is 0, so the explained probability is sigmoid(logit 0) on every sample.
    seg = grid_segments(2, 2, 6)
    coef = np.array([1.0, -0.5, 0.25, 0.0])
    model = RegionLinear(seg, coef).eval()
    image = np.full((12, 12, 3), 255, dtype=np.uint8)
    exp = explain(model, image, seg, 0, n_samples=64, num_features=4, fill="zero")
    masks = sample_masks(4, 64, 0).astype(np.float64)
    prob = 1 / (1 + np.exp(-(masks @ coef)))
    ref = fit_surrogate(masks, prob, kernel_weights(masks), 4, "wls")
    np.testing.assert_allclose(exp.surrogate.weights, ref.weights, atol=1e-6)
    with pytest.raises(ValueError, match="output must be one of"):
        explain(model, image, seg, 0, n_samples=8, output="odds")
    with pytest.raises(ValueError, match="eval mode"):
        explain(model.train(), image, seg, 0, n_samples=8)


def test_explanation_path_frames(seed: int) -> None:
    image = photo_like(seed)  # no zero pixels, so a visible pixel is never all zero
    seg = grid_segments(3, 3, 4)
    model = TinyNet(seed).eval()
    exp = explain(model, image, seg, 1, n_samples=100, num_features=5)
    top = exp.surrogate.top_features
    frames = explanation_path(image, exp.segments, top)
    assert len(frames) == len(top) >= 1
    for i, frame in enumerate(frames):
        assert frame.dtype == np.uint8 and frame.shape == image.shape
        np.testing.assert_array_equal(frame, attention_image(image, exp.segments, top, k=i + 1))
        shown = np.unique(exp.segments[frame.any(axis=-1)])
        np.testing.assert_array_equal(shown, np.sort(top[: i + 1]))
        visible = np.isin(exp.segments, top[: i + 1])
        np.testing.assert_array_equal(frame[visible], image[visible])
        assert (frame[~visible] == 0).all()


@pytest.mark.parametrize("method", ["quickshift", "slic"])
def test_segment_consecutive_and_seeded(method: str) -> None:
    from skimage import data
    from skimage.transform import resize

    img = (resize(data.astronaut(), (64, 64), anti_aliasing=True) * 255).astype(np.uint8)
    seg = segment(img, method, seed=0)
    assert seg.dtype == np.int32 and seg.shape == (64, 64)
    d = int(seg.max()) + 1
    assert d > 1
    np.testing.assert_array_equal(np.unique(seg), np.arange(d))
    np.testing.assert_array_equal(seg, segment(img, method, seed=0))
    with pytest.raises(ValueError, match="method must be one of"):
        segment(img, "watershed")


def test_segment_matches_lime_default_quickshift() -> None:
    from lime.wrappers.scikit_image import SegmentationAlgorithm
    from skimage import data
    from skimage.transform import resize

    img = (resize(data.chelsea(), (48, 64), anti_aliasing=True) * 255).astype(np.uint8)
    lime_seg = SegmentationAlgorithm(
        "quickshift", kernel_size=4, max_dist=200, ratio=0.2, random_seed=42
    )(img)
    _, expected = np.unique(lime_seg, return_inverse=True)
    np.testing.assert_array_equal(segment(img, "quickshift", seed=42), expected.reshape(48, 64))


def test_fit_surrogate_validates() -> None:
    masks = sample_masks(4, 10, 0)
    with pytest.raises(ValueError, match="regressor must be one of"):
        fit_surrogate(masks, np.zeros(10), np.ones(10), 2, "lasso")
    with pytest.raises(ValueError, match="target and sample_weight"):
        fit_surrogate(masks, np.zeros(9), np.ones(10), 2)
