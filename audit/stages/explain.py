"""LIME on super-pixels, batched on the device (no Ray here).

Ribeiro, Singh & Guestrin (2016) explain one prediction ``f(x)`` by a sparse linear model ``g``
fitted on perturbed copies of ``x``: the image is cut into ``d`` super-pixels, a binary vector
``z' in {0, 1}^d`` says which of them stay visible (the hidden ones are replaced by a fill
image), and ``g(z') = w . z' + b`` is fitted to ``f(z)`` by weighted least squares. This module
reproduces what lime 0.2's ``LimeImageExplainer`` + ``LimeBase`` compute, but builds the perturbed
images with one gather on the device and runs the model on whole batches:

1. **Segmentation** (:func:`segment`): lime's default ``quickshift(kernel_size=4, max_dist=200,
   ratio=0.2, random_seed=seed)``, relabelled to consecutive ids ``0..d-1``. scikit-image >= 0.23
   calls the seed ``rng`` and lime's wrapper silently drops ``random_seed`` there, so lime itself
   then always segments with quickshift's default ``rng=42``; ``segment(image, seed=42)``
   reproduces that.
2. **Sampling** (:func:`sample_masks`): as ``LimeImageExplainer.data_labels``, every entry of the
   ``(n, d)`` mask is an independent fair coin (lime draws ``randint(0, 2, n * d)``) and row 0 is
   all ones (the original image). The masks come only from ``(d, n, seed)``, so the explanation
   does not depend on the batch size.
3. **Proximity** (:func:`kernel_weights`): lime measures the cosine distance ``D`` of each mask to
   row 0 (the all-ones vector; ``D = 1 - sqrt(k / d)`` for a mask with ``k`` ones) and weights it
   by ``sqrt(exp(-D^2 / sigma^2))`` with ``sigma = kernel_width = 0.25``. The paper's eq. 5 is
   ``pi_x(z) = exp(-D(x, z)^2 / sigma^2)``; lime's weight is its square root, i.e.
   ``exp(-D^2 / (sqrt(2) sigma)^2)``: the paper's kernel with width ``sigma * sqrt(2)``. That
   weight is passed as ``sample_weight`` to the least-squares fit, so it multiplies the squared
   residuals (eq. 2's locality-aware loss ``sum_z pi_x(z) (f(z) - g(z'))^2``).
4. **Feature selection** (:func:`fit_surrogate`): lime's ``'lasso_path'``: centre the masks and
   targets with the weighted means, scale rows by ``sqrt(weight)``, run
   ``sklearn.linear_model.lars_path(method='lasso')``, then walk the path from its least
   regularised end towards the start (never reaching point 0) and keep the first point with at
   most ``K`` non-zero coefficients.
5. **Surrogate**: a regressor fitted on the ``K`` chosen columns with ``sample_weight``: ``"wls"``
   (``LinearRegression``, plain weighted least squares as in the paper) or ``"ridge"``
   (``Ridge(alpha=1)``, lime's default). ``score`` is the regressor's weighted R^2 and
   ``local_pred`` its prediction at row 0, as lime returns them.

Differences from lime: the "mean" fill keeps exact float means (lime writes them into a copy of a
``uint8`` image, truncating them), every seed is explicit, and the explained quantity can be the
logit instead of the softmax probability (``output="logit"``).

Example:
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2)).eval()
    >>> img = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    >>> seg = np.repeat(np.repeat(np.arange(4).reshape(2, 2), 4, 0), 4, 1).astype(np.int32)
    >>> exp = explain(net, img, seg, 0, n_samples=50, num_features=2)
    >>> exp.surrogate.top_features.shape
    (2,)
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import torch
from skimage.segmentation import quickshift, slic
from torch import nn

from audit.columns import IMAGE_ID, MODEL, RUN_ID, Column, Table
from audit.config import ExplainConfig, ExplainWhich, Variant
from audit.data.segments import decode_segments
from audit.stages import explain_table
from audit.stages.perturb import FILLS, Perturber, fill_image, fold_normalisation
from audit.stages.predict import images_to_tensor
from audit.stages.registry import StageBase, StageContext, register_stage
from audit.stages.surrogate import REGRESSORS, Surrogate, fit_surrogate, kernel_weights

SEGMENTERS = ("quickshift", "slic")
OUTPUTS = ("prob", "logit")
"""Standard deviation in pixels of the Gaussian used by the ``"blur"`` fill."""


def _check_choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"{name} must be one of {list(valid)}. Got {value!r} instead.")


def segment(image: np.ndarray, method: str = "quickshift", seed: int = 0) -> np.ndarray:
    """Cut an image into super-pixels.

    Args:
        image: ``(H, W, 3) uint8``.
        method: ``"quickshift"`` with lime's defaults (``kernel_size=4, max_dist=200, ratio=0.2``,
            ``random_seed=seed``) or ``"slic"`` (``n_segments=50, compactness=10``).
        seed: Random seed of quickshift (slic is deterministic).

    Returns:
        ``(H, W) int32`` labels, consecutive ``0..d-1``.

    Raises:
        ValueError: On an unknown method or an image that is not ``(H, W, 3)``.
    """
    _check_choice("method", method, SEGMENTERS)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must have shape (H, W, 3). Got {image.shape} instead.")
    if method == "quickshift":
        # scikit-image 0.23 renamed quickshift's ``random_seed`` to ``rng``.
        seed_arg = "rng" if "rng" in inspect.signature(quickshift).parameters else "random_seed"
        labels = quickshift(image, kernel_size=4, max_dist=200, ratio=0.2, **{seed_arg: seed})
    else:
        labels = slic(image, n_segments=50, compactness=10, start_label=0)
    _, consecutive = np.unique(labels, return_inverse=True)
    return consecutive.reshape(labels.shape).astype(np.int32)


def sample_masks(n_features: int, n_samples: int, seed: int) -> np.ndarray:
    """Draw lime's binary perturbation masks.

    Args:
        n_features: Number of super-pixels ``d``.
        n_samples: Number of masks ``n`` (including the all-ones row 0).
        seed: Seed of ``np.random.default_rng``.

    Returns:
        ``(n, d) uint8`` in {0, 1}: row 0 all ones, every other entry a fair coin.

    Raises:
        ValueError: If ``n_features`` or ``n_samples`` is below 1.
    """
    if n_features < 1 or n_samples < 1:
        raise ValueError(
            f"n_features and n_samples must be >= 1. Got {n_features} and {n_samples} instead."
        )
    rng = np.random.default_rng(seed)
    masks = rng.integers(0, 2, size=(n_samples, n_features), dtype=np.uint8)
    masks[0] = 1
    return masks


@dataclass(frozen=True)
class Explanation:
    """LIME explanation of one image and class.

    Attributes:
        segments: ``(H, W) int32`` the super-pixel map the masks refer to.
        surrogate: The fitted :class:`Surrogate`.
        explained_class: Class whose output was explained.
        n_samples: Number of masks (including the original).
        kernel_width: Width of the proximity kernel.
        seed: Seed of the masks.
    """

    segments: np.ndarray
    surrogate: Surrogate
    explained_class: int
    n_samples: int
    kernel_width: float
    seed: int


def explain(
    model: nn.Module,
    image: np.ndarray,
    segments: np.ndarray,
    explained_class: int,
    *,
    n_samples: int = 1000,
    kernel_width: float = 0.25,
    num_features: int = 8,
    fill: str = "mean",
    regressor: str = "wls",
    batch_size: int = 250,
    seed: int = 0,
    device: torch.device | str = "cpu",
    bf16: bool = False,
    output: str = "prob",
) -> Explanation:
    """Explain ``model``'s output for ``explained_class`` on one image with LIME.

    Args:
        model: Maps ``(b, 3, H, W)`` floats in [0, 1] to ``(b, n_classes)`` logits (normalising
            inside, like :class:`audit.models.AuditModel`). In eval mode, on ``device``. For an
            ``AuditModel`` the image and fill are normalised once and its bare ``net`` runs on
            the batches (the same numbers, without normalising every batch).
        image: ``(H, W, 3) uint8``, or float in [0, 1] (an unrounded adversarial image).
        segments: ``(H, W)`` integer super-pixel ids ``0..d-1`` (:func:`segment`).
        explained_class: Class index to explain.
        n_samples: Number of perturbed images, the original included.
        kernel_width: Width of the proximity kernel (:func:`kernel_weights`).
        num_features: Number of super-pixels ``K`` in the surrogate.
        fill: What hidden super-pixels show (:func:`fill_image`).
        regressor: ``"wls"`` or ``"ridge"`` (:func:`fit_surrogate`).
        batch_size: Perturbed images per forward pass; the result does not depend on it.
        seed: Seed of the masks (:func:`sample_masks`).
        device: Where the images are built and the model runs.
        bf16: Run the model under bfloat16 autocast on CUDA (targets are still float32).
        output: ``"prob"`` explains the softmax probability (lime), ``"logit"`` the raw logit.

    Returns:
        The :class:`Explanation`.

    Raises:
        ValueError: On bad shapes, an unknown option, a model in training mode, a float image
            with a non-finite value or ``batch_size < 1``.
    """
    _check_explain(model, fill, regressor, output, batch_size)
    seg_np = _checked_segments(image, segments)
    d = int(seg_np.max()) + 1
    dev = torch.device(device)
    masks = sample_masks(d, n_samples, seed)
    autocast = (
        torch.autocast("cuda", torch.bfloat16) if bf16 and dev.type == "cuda" else nullcontext()
    )
    targets = []
    with torch.inference_mode():
        if np.issubdtype(image.dtype, np.floating):  # an adversarial image, already in [0, 1]
            x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)
            x = x.to(dev)
        else:
            x = images_to_tensor(image[None], dev)[0]
        seg_t = torch.from_numpy(seg_np).to(dev)
        net, x_in, fill_in = fold_normalisation(model, x, fill_image(x, seg_t, fill))
        masks_t = torch.from_numpy(masks).to(dev)
        build = Perturber(x_in, seg_t, fill_in, min(batch_size, n_samples))
        for start in range(0, n_samples, batch_size):
            batch = build(masks_t[start : start + batch_size])
            with autocast:
                logits = net(batch).float()
            out = torch.softmax(logits, dim=1) if output == "prob" else logits
            targets.append(out[:, explained_class].cpu().numpy())
    target = np.concatenate(targets).astype(np.float64)
    surrogate = fit_surrogate(
        masks, target, kernel_weights(masks, kernel_width), num_features, regressor
    )
    return Explanation(
        segments=seg_np.astype(np.int32),
        surrogate=surrogate,
        explained_class=int(explained_class),
        n_samples=n_samples,
        kernel_width=kernel_width,
        seed=seed,
    )


def _check_explain(
    model: nn.Module, fill: str, regressor: str, output: str, batch_size: int
) -> None:
    """:func:`explain`'s argument checks (one ``ValueError`` line each)."""
    _check_choice("fill", fill, FILLS)
    _check_choice("regressor", regressor, REGRESSORS)
    _check_choice("output", output, OUTPUTS)
    if model.training:
        raise ValueError("explain needs the model in eval mode (batch-norm statistics frozen).")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1. Got {batch_size} instead.")


def _checked_segments(image: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """``segments`` as int64 once the image and its map agree (see :func:`explain`'s errors)."""
    if image.ndim != 3 or image.shape[2] != 3 or segments.shape != image.shape[:2]:
        raise ValueError(
            f"image must be (H, W, 3) and segments (H, W). Got {image.shape} and "
            f"{segments.shape} instead."
        )
    seg_np = np.asarray(segments, dtype=np.int64)
    d = int(seg_np.max()) + 1
    if seg_np.min() != 0 or len(np.unique(seg_np)) != d:
        raise ValueError("segments must hold consecutive ids 0..d-1.")
    if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        raise ValueError("a float image must be finite (values in [0, 1]).")
    return seg_np


def attention_image(
    image: np.ndarray, segments: np.ndarray, top_features: np.ndarray, k: int = 8, fill: int = 0
) -> np.ndarray:
    """The "image with attention": only the top-``k`` super-pixels visible.

    Args:
        image: ``(H, W, 3) uint8``.
        segments: ``(H, W)`` super-pixel ids.
        top_features: ``(K,)`` super-pixel ids, most important first.
        k: How many of them to show.
        fill: Grey level of the hidden pixels.

    Returns:
        ``(H, W, 3) uint8``.
    """
    visible = np.isin(segments, np.asarray(top_features)[:k])
    out = np.full_like(image, fill)
    out[visible] = image[visible]
    return out


def explanation_path(
    image: np.ndarray, segments: np.ndarray, top_features: np.ndarray
) -> list[np.ndarray]:
    """Frames uncovering the top super-pixels one at a time.

    Args:
        image: ``(H, W, 3) uint8``.
        segments: ``(H, W)`` super-pixel ids.
        top_features: ``(K,)`` super-pixel ids, most important first.

    Returns:
        ``K`` frames ``(H, W, 3) uint8``; frame ``i`` shows the first ``i + 1`` super-pixels.
    """
    return [
        attention_image(image, segments, top_features, k=i + 1) for i in range(len(top_features))
    ]


@register_stage
class ExplainStage(StageBase):
    """The explain stage of the model actor: :func:`explain` for the rows ``explain.which`` picks.

    A row is explained when the decode tasks segmented it (its ``segments`` are not empty: it is
    flagged ``explain``) and, with ``which: misclassified``, its label is known and differs from
    the top-1 class, or with ``which: flipped``, the attack flipped it. ``clean`` explains the
    clean crop for its top-1 class; ``adversarial`` (flipped rows) the attack's unrounded image
    for its adversarial class, on the clean crop's super-pixels.

    Adds ``explanations``: per row a JSON list with one object per explained variant, keyed by
    :data:`audit.stages.explain_table.SURROGATE_KEYS` (``""`` for rows not explained).
    """

    name: ClassVar[str] = "explain"
    section: ClassVar[str] = "explain"
    config_type: ClassVar[type] = ExplainConfig
    needs: ClassVar[tuple[str, ...]] = ("image", "label", "segments", "predict")
    uses: ClassVar[tuple[str, ...]] = ("attack",)
    columns: ClassVar[tuple[Column, ...]] = explain_table.COLUMNS
    table: ClassVar[Table | None] = explain_table.EXPLANATIONS_TABLE
    unit_rows: int | None = 1
    """Heavy: n_samples forward passes per image; the actor runs it on units of
    ``explain.images_per_unit`` images."""

    def __init__(self, config: ExplainConfig, context: StageContext) -> None:
        super().__init__(config, context)
        self.unit_rows = config.images_per_unit

    @staticmethod
    def forwards_per_row(config: ExplainConfig) -> float:
        """Model forward passes of one heavy row at most: every sample of every variant (the
        estimate behind ``data.flush_units: auto``, :mod:`audit.run.units`)."""
        return float(config.n_samples * len(config.variants))

    def heavy_rows(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """The rows the decode tasks segmented (flagged ``explain``); the others are skipped."""
        return np.array([len(s) > 0 for s in batch["segments"]], dtype=bool)

    @classmethod
    def table_rows(
        cls, batch: Mapping[str, np.ndarray], constants: Mapping[str, object], config: Any
    ) -> pa.Table | None:
        """``explanations`` rows, one per explained variant of an image (the image's super-pixel
        map and the section's settings repeated on each), or None when no image was explained."""
        e: ExplainConfig = config
        rows = []
        for image_id, found, seg in zip(
            batch[IMAGE_ID.name], batch["explanations"], batch["segments"], strict=True
        ):
            for ex in json.loads(found) if found else ():
                rows.append(
                    {
                        RUN_ID.name: constants[RUN_ID.name],
                        MODEL.name: constants[MODEL.name],
                        IMAGE_ID.name: str(image_id),
                        "n_segments": len(ex["weights"]),
                        "segments": bytes(seg),
                        "n_samples": e.n_samples,
                        "kernel_width": e.kernel_width,
                        "seed": e.seed,
                        **ex,
                    }
                )
        schema = explain_table.EXPLANATIONS_TABLE.schema()
        return pa.Table.from_pylist(rows, schema=schema) if rows else None

    def run(self, batch: Mapping[str, np.ndarray], state: dict[str, Any]) -> dict[str, np.ndarray]:
        e = self.config
        ctx = self.context
        images, segments = batch["image"], batch["segments"]
        adversarial = state.get("adversarial")
        out = np.full(len(images), "", dtype=object)
        labels = np.asarray(batch["label"], dtype=np.int64)
        top1 = batch["top5_classes"][:, 0].astype(np.int64)
        steps = batch.get("steps_to_flip")
        for i in range(len(images)):
            if not segments[i]:
                continue
            flipped = steps is not None and steps[i] >= 1
            if e.which is ExplainWhich.MISCLASSIFIED and not (
                labels[i] >= 0 and top1[i] != labels[i]
            ):
                continue
            if e.which is ExplainWhich.FLIPPED and not flipped:
                continue
            seg = decode_segments(segments[i])
            found = []
            jobs: list[tuple[str, Any, int]] = []
            if Variant.CLEAN in e.variants:
                jobs.append(("clean", images[i], int(top1[i])))
            if Variant.ADVERSARIAL in e.variants and flipped and adversarial is not None:
                adv = adversarial[i].detach().float().permute(1, 2, 0).cpu().numpy()
                jobs.append(("adversarial", adv, int(batch["adv_class"][i])))
            for variant, image, cls in jobs:
                ex = explain(
                    ctx.model,
                    image,
                    seg,
                    cls,
                    n_samples=e.n_samples,
                    kernel_width=e.kernel_width,
                    num_features=e.num_features,
                    fill=e.fill.value,
                    regressor=e.regressor.value,
                    batch_size=e.batch_size or (250 if ctx.device.type == "cuda" else 10),
                    seed=e.seed,
                    device=ctx.device,
                    bf16=ctx.bf16,
                )
                sur = ex.surrogate
                found.append(
                    {
                        "variant": variant,
                        "explained_class": cls,
                        "weights": [float(w) for w in sur.weights],
                        "intercept": float(sur.intercept),
                        "score": float(sur.score),
                        "local_pred": float(sur.local_pred),
                        "top_features": [int(f) for f in sur.top_features],
                    }
                )
            out[i] = json.dumps(found)
        return {"explanations": out}
