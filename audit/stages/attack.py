"""Iterative FGSM step counting with per-image early exit (no Ray here).

Stock & Cisse (2018, eq. 2 with p = infinity) perturb an image in [0, 1] pixel space with

    x_{t+1} = clip_[0,1](x_t + eps * sign(grad_x loss(f(x_t), y)))

and count, per image, how many steps it takes until the top-1 class differs from ``y``: 0 when
the clean image is already wrong, 1..M when step t is the first wrong one, never (None) when it
survives M steps. Libraries report only the final adversarial (torchattacks, ART, foolbox) or
reduce a batch with ``all()`` (Captum); this returns one count per image.

**Early exit.** Each iteration runs one forward pass on the images still in play; the logits both
decide which images have flipped at x_t and give the loss for the next step. Flipped images are
recorded and dropped before the next step, so an image costs exactly ``steps_to_flip + 1``
forward passes and ``steps_to_flip`` backward passes (``M + 1`` and ``M`` if it never flips).
Per-image gradients do not interact (the model is in eval mode and the loss is a sum over images),
so results do not depend on which images share a batch: L-infinity iterates are identical to the
bit (the step is the gradient's sign); L2 iterates agree up to the rounding of the gradient, which
the batch's size can change in the last bit.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from audit.columns import Column, Table
from audit.config import AttackConfig, AttackTarget
from audit.stages import attack_table
from audit.stages.predict import images_to_tensor
from audit.stages.registry import StageBase, register_stage

NEVER = -1
"""``steps_to_flip`` value for an image that is still not flipped after ``max_steps``."""


@dataclass(frozen=True)
class AttackResult:
    """Per-image attack results for ``n`` images, in input order.

    Attributes:
        steps_to_flip: ``(n,) int64``: 0 = wrong before the attack, 1..M = first flipped step,
            :data:`NEVER` (-1) = not flipped within M steps.
        adv_class: ``(n,) int64`` top-1 class of the adversarial image (the first flipped iterate,
            or x_M when never flipped; the clean image when ``steps_to_flip`` is 0).
        adv_prob: ``(n,) float32`` softmax probability of ``adv_class`` there.
        linf: ``(n,) float32`` L-infinity norm of ``adversarial - clean``.
        l2: ``(n,) float32`` L2 norm of ``adversarial - clean`` (over all 3*H*W values).
        adversarial: ``(n, 3, H, W)`` the adversarial images in [0, 1], on the input's device.
    """

    steps_to_flip: Tensor
    adv_class: Tensor
    adv_prob: Tensor
    linf: Tensor
    l2: Tensor
    adversarial: Tensor


def _step(x: Tensor, grad: Tensor, eps: float, norm: str) -> Tensor:
    if norm == "linf":
        direction = grad.sign()
    elif norm == "l2":
        flat = grad.flatten(1).norm(dim=1).clamp_min(torch.finfo(grad.dtype).tiny)
        direction = grad / flat.view(-1, *([1] * (grad.dim() - 1)))
    else:
        raise ValueError(f"norm must be 'linf' or 'l2'. Got {norm!r} instead.")
    return (x + eps * direction).clamp_(0.0, 1.0)


def ifgsm(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps_step: float = 0.001,
    max_steps: int = 10,
    norm: str = "linf",
    early_exit: bool = True,
) -> AttackResult:
    """Untargeted iterative FGSM; returns how many steps flip each image.

    Args:
        model: Maps ``(n, 3, H, W)`` images in [0, 1] to logits ``(n, C)`` (normalisation inside,
            as :class:`audit.models.AuditModel`). Must be in eval mode; its parameters are not
            differentiated (gradients are taken with respect to the images only).
        x: ``(n, 3, H, W)`` float images in [0, 1]. Not modified.
        y: ``(n,) int64`` the class each image must leave (its label, or its clean prediction).
        eps_step: Step size in pixel space.
        max_steps: M, the most steps.
        norm: ``linf`` (sign of the gradient) or ``l2`` (gradient divided by its L2 norm).
        early_exit: Drop flipped images from the working batch (the default). ``False`` keeps
            every image for all M steps, as a plain reference loop would; the results are the
            same.

    Returns:
        An :class:`AttackResult`.

    Raises:
        ValueError: the model is in training mode, or an argument is out of range.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).eval()
        >>> r = ifgsm(net, torch.rand(4, 3, 2, 2), torch.tensor([0, 1, 2, 0]), eps_step=0.05)
        >>> r.steps_to_flip.shape
        torch.Size([4])
    """
    _check_attack(model, eps_step, max_steps)
    n = x.shape[0]
    device = x.device
    steps = torch.full((n,), NEVER, dtype=torch.int64, device=device)
    adv_class = torch.zeros(n, dtype=torch.int64, device=device)
    adv_prob = torch.zeros(n, dtype=torch.float32, device=device)
    adversarial = x.detach().clone()
    done = torch.zeros(n, dtype=torch.bool, device=device)

    idx = torch.arange(n, device=device)  # original positions of the working batch
    x_t = x.detach().clone()
    y_t = y.to(device=device, dtype=torch.int64)
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        for t in range(max_steps + 1):
            last = t == max_steps
            with torch.enable_grad():
                x_t.requires_grad_(not last)
                logits = model(x_t)
                top_p, top_c = torch.softmax(logits.detach().float(), dim=1).max(dim=1)
                # newly flipped at x_t, plus (at x_M) every image still in play
                new = (top_c != y_t) & ~done[idx]
                record = new | ~done[idx] if last else new
                pos = idx[record]
                adversarial[pos] = x_t.detach()[record].to(adversarial.dtype)
                adv_class[pos] = top_c[record]
                adv_prob[pos] = top_p[record]
                steps[idx[new]] = t
                done[pos] = True
                if last or bool(done.all()):
                    break
                keep = ~done[idx] if early_exit else torch.ones_like(record)
                loss = F.cross_entropy(logits[keep], y_t[keep], reduction="sum")
                (grad,) = torch.autograd.grad(loss, x_t)
            x_t = _step(x_t.detach()[keep], grad[keep], eps_step, norm)
            idx, y_t = idx[keep], y_t[keep]
    finally:
        for p in params:
            p.requires_grad_(True)
    delta = (adversarial - x.detach()).flatten(1).float()
    return AttackResult(
        steps, adv_class, adv_prob, delta.abs().amax(dim=1), delta.norm(dim=1), adversarial
    )


def _check_attack(model: nn.Module, eps_step: float, max_steps: int) -> None:
    """Raise ``ValueError`` for a model in training mode or an argument out of range."""
    if model.training:
        raise ValueError("ifgsm needs the model in eval mode (batch-norm statistics frozen).")
    if not 0.0 < eps_step <= 1.0:
        raise ValueError(f"eps_step must be in (0, 1]. Got {eps_step!r} instead.")
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1. Got {max_steps!r} instead.")


def attack_columns(
    model: nn.Module,
    images: np.ndarray,
    targets: np.ndarray,
    *,
    eps_step: float,
    max_steps: int,
    norm: str,
    device: torch.device,
    bf16: bool = False,
    keep_images: bool = False,
) -> tuple[dict[str, np.ndarray], Tensor]:
    """Attack decoded images; return the ``adversarial`` table's per-image columns and images.

    Args:
        model: As for :func:`ifgsm`, on ``device``.
        images: ``(n, 224, 224, 3) uint8``, the crops the prediction stage already decoded.
        targets: ``(n,) int`` the class each image must leave.
        bf16: Autocast forward and backward passes to bfloat16 (CUDA only).
        keep_images: Also return each adversarial image as a lossless 8-bit PNG
            (``image_png``) and whether that rounded image still flips (``stored_flips``):
            rounding to 8 bits can undo a flip of 0.001.

    Returns:
        Columns ``steps_to_flip`` (int16, -1 = never), ``adv_class`` (int32), ``adv_prob``,
        ``linf``, ``l2`` (float32), and with ``keep_images`` ``image_png`` (object, bytes) and
        ``stored_flips`` (bool); and the adversarial images ``(n, 3, H, W)`` in [0, 1] on
        ``device`` (unrounded, for explaining them).
    """
    x = images_to_tensor(images, device, channels_last=device.type == "cuda")
    y = torch.as_tensor(np.asarray(targets, dtype=np.int64), device=device)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if bf16 and device.type == "cuda"
        else nullcontext()
    )
    with autocast:
        r = ifgsm(model, x, y, eps_step=eps_step, max_steps=max_steps, norm=norm)
    out = {
        "steps_to_flip": r.steps_to_flip.to(torch.int16).cpu().numpy(),
        "adv_class": r.adv_class.to(torch.int32).cpu().numpy(),
        "adv_prob": r.adv_prob.cpu().numpy(),
        "linf": r.linf.cpu().numpy(),
        "l2": r.l2.cpu().numpy(),
    }
    if keep_images:
        stored = (r.adversarial.detach() * 255.0).round_().clamp_(0, 255).to(torch.uint8)
        with torch.inference_mode(), autocast:
            again = model(stored.float().div_(255.0)).argmax(dim=1)
        out["stored_flips"] = (again != y).cpu().numpy()
        pngs = np.empty(len(images), dtype=object)
        for i, img in enumerate(stored.permute(0, 2, 3, 1).cpu().numpy()):
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG")
            pngs[i] = buf.getvalue()
        out["image_png"] = pngs
    return out, r.adversarial


@register_stage
class AttackStage(StageBase):
    """The attack stage of the model actor: :func:`attack_columns` on the decoded crops.

    Adds ``target`` (the label, or with ``attack.target: prediction`` or an unknown label the
    clean top-1) and the attack's columns (:data:`audit.stages.attack_table.COLUMNS`; the last
    two only with ``attack.keep_images``), and hands the unrounded adversarial images on in
    ``state["adversarial"]``.
    """

    name: ClassVar[str] = "attack"
    section: ClassVar[str] = "attack"
    config_type: ClassVar[type] = AttackConfig
    needs: ClassVar[tuple[str, ...]] = ("image", "label", "predict")
    columns: ClassVar[tuple[Column, ...]] = attack_table.COLUMNS
    table: ClassVar[Table | None] = attack_table.ADVERSARIAL_TABLE

    def outputs(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if self.config.keep_images or not c.optional)

    def run(self, batch: Mapping[str, np.ndarray], state: dict[str, Any]) -> dict[str, np.ndarray]:
        a = self.config
        labels = np.asarray(batch["label"], dtype=np.int64)
        clean = batch["top5_classes"][:, 0].astype(np.int64)
        use_label = (labels >= 0) & (a.target is AttackTarget.LABEL)
        targets = np.where(use_label, labels, clean)
        cols: dict[str, np.ndarray] = {"target": targets.astype(np.int32)}
        attacked, state["adversarial"] = attack_columns(
            self.context.model,
            batch["image"],
            targets,
            eps_step=a.eps_step,
            max_steps=a.max_steps,
            norm=a.norm.value,
            device=self.context.device,
            bf16=self.context.bf16,
            keep_images=a.keep_images,
        )
        cols.update(attacked)
        return cols
