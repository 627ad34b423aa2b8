"""Prediction on a batch of decoded images: top-5, probabilities, loss, embedding (no Ray here).

The model is an :class:`audit.models.AuditModel`: it takes float images in [0, 1] and normalises
inside, so the same tensors serve prediction and, later, attacks in pixel space.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from audit.columns import Column, Table
from audit.config import PredictConfig
from audit.models import AuditModel
from audit.stages import predict_table
from audit.stages.registry import StageBase, StageContext, register_stage


@dataclass(frozen=True)
class Predictions:
    """Per-image results for a batch of ``n`` images (``k = min(5, n_classes)``).

    Attributes:
        top5_classes: ``(n, k) int32`` class indices, most probable first.
        top5_probs: ``(n, k) float32`` softmax probabilities of those classes.
        correct_top1: ``(n,) bool``; meaningless where the label is unknown (``labels < 0``).
        correct_top5: ``(n,) bool``; likewise.
        loss: ``(n,) float32`` cross-entropy against the label; NaN where it is unknown.
        label_prob: ``(n,) float32`` softmax probability of the label; NaN where it is unknown.
        embedding: ``(n, d) float32`` penultimate-layer features, or None if not asked for.
    """

    top5_classes: np.ndarray
    top5_probs: np.ndarray
    correct_top1: np.ndarray
    correct_top5: np.ndarray
    loss: np.ndarray
    label_prob: np.ndarray
    embedding: np.ndarray | None


def images_to_tensor(
    images: np.ndarray, device: torch.device, channels_last: bool = False
) -> torch.Tensor:
    """``(n, h, w, 3) uint8`` -> ``(n, 3, h, w) float32`` in [0, 1] on ``device``.

    The uint8 array is copied to the device first (4x fewer bytes than float) and converted there.
    """
    t = torch.from_numpy(np.ascontiguousarray(images)).to(device, non_blocking=True)
    x = t.permute(0, 3, 1, 2).float().div_(255.0)
    if channels_last:
        return x.contiguous(memory_format=torch.channels_last)
    return x.contiguous()


def predict(
    model: AuditModel,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    device: torch.device | str = "cpu",
    bf16: bool = False,
    embeddings: bool = True,
) -> Predictions:
    """Run ``model`` on a batch and summarise each image.

    Args:
        model: In eval mode, on ``device``.
        images: ``(n, 224, 224, 3) uint8`` decoded crops.
        labels: ``(n,) int`` class indices, ``-1`` where unknown.
        bf16: Autocast the forward pass to bfloat16 (CUDA only; ignored on CPU). Softmax and loss
            are computed in float32 either way.
        embeddings: Also return the penultimate-layer embedding.

    Returns:
        :class:`Predictions` with one entry per input image, in input order.
    """
    dev = torch.device(device)
    n = len(images)
    with torch.inference_mode():
        x = images_to_tensor(images, dev, channels_last=dev.type == "cuda")
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if bf16 and dev.type == "cuda"
            else nullcontext()
        )
        with autocast:
            if embeddings:
                logits, emb = model.forward_with_embedding(x)
            else:
                logits, emb = model(x), None
        logits = logits.float()
        probs = torch.softmax(logits, dim=1)
        k = min(5, probs.shape[1])
        top_p, top_c = probs.topk(k, dim=1)
        y = torch.as_tensor(np.asarray(labels, dtype=np.int64), device=dev).reshape(n)
        known = y >= 0
        safe_y = torch.where(known, y, torch.zeros_like(y))
        loss = F.cross_entropy(logits, safe_y, reduction="none")
        loss = torch.where(known, loss, torch.full_like(loss, float("nan")))
        correct1 = (top_c[:, 0] == safe_y) & known
        correct5 = (top_c == safe_y[:, None]).any(dim=1) & known
        p_label = probs.gather(1, safe_y[:, None])[:, 0]
        p_label = torch.where(known, p_label, torch.full_like(p_label, float("nan")))
        return Predictions(
            top5_classes=top_c.to(torch.int32).cpu().numpy(),
            top5_probs=top_p.cpu().numpy().astype(np.float32),
            correct_top1=correct1.cpu().numpy(),
            correct_top5=correct5.cpu().numpy(),
            loss=loss.cpu().numpy().astype(np.float32),
            label_prob=p_label.cpu().numpy().astype(np.float32),
            embedding=None if emb is None else emb.float().reshape(n, -1).cpu().numpy(),
        )


@register_stage
class PredictStage(StageBase):
    """The prediction stage of the model actor: :func:`predict` on the decoded crops.

    Adds :data:`audit.stages.predict_table.COLUMNS` (``embedding`` only when
    ``predict.embeddings`` is set and the context's ``dim`` is not 0).
    """

    name: ClassVar[str] = "predict"
    section: ClassVar[str] = "predict"
    config_type: ClassVar[type] = PredictConfig
    needs: ClassVar[tuple[str, ...]] = ("image", "label")
    columns: ClassVar[tuple[Column, ...]] = predict_table.COLUMNS
    table: ClassVar[Table | None] = predict_table.PREDICTIONS_TABLE

    def __init__(self, config: PredictConfig, context: StageContext) -> None:
        super().__init__(config, context)
        self.keep_embedding = config.embeddings and bool(context.sizes.get("dim"))

    def outputs(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.name != "embedding" or self.keep_embedding)

    def run(self, batch: Mapping[str, np.ndarray], state: dict[str, Any]) -> dict[str, np.ndarray]:
        p = predict(
            self.context.model,
            batch["image"],
            batch["label"],
            device=self.context.device,
            bf16=self.context.bf16,
            embeddings=self.config.embeddings,
        )
        cols = {c.name: getattr(p, c.name) for c in self.columns if c.name != "embedding"}
        if p.embedding is not None and self.keep_embedding:
            cols["embedding"] = p.embedding
        return cols
