"""Train the shipped ``demo_digits`` weights (``audit/weights/demo_digits.pt``), deterministically.

On CPU with ``--threads 1`` (the default) it writes the shipped file byte for byte (checked with
torch 2.14 on x86-64, twice: the same sha256); it prints the sha256 and says whether it matches. The
bytes depend on the file's name too (``torch.save`` names the archive's folder after it), so the
output is named ``demo_digits.pt`` wherever it goes. Other thread counts, CPUs or torch versions
may round differently and give other weights of the same accuracy.

The training digits (the first part of ``demo_split()``; the 300 demo digits are never seen) are
rendered with :func:`audit.data.demo.render_demo_digit` in several variants each and cut with
:func:`audit.data.decode.eval_crop`, the same path the audit's decode stage uses. The model's
stem is parameter-free, so it is applied once up front and only the rest is trained.

At the end the saved file is loaded through :func:`audit.models.load_model` and scored on the
held-out demo set as the demo writes it (JPEG/PNG files decoded by
:func:`audit.data.decode.decode_image`).

Usage::

    .venv/bin/python scripts/train_demo_model.py [--out audit/weights/demo_digits.pt]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from audit.config import DEFAULT_MAX_PIXELS, ModelConfig
from audit.data.decode import decode_image, eval_crop
from audit.data.demo import (
    DIGIT_CLASSES,
    demo_split,
    ensure_demo_dataset,
    load_digit_arrays,
    render_demo_digit,
)
from audit.models import load_model
from audit.models.demo_net import DEMO_MEAN, DEMO_STD, DemoDigitsNet

SEED = 0
VARIANTS = 4  # renderings of each training digit
EPOCHS = 12
BATCH_SIZE = 64
LR = 3e-3
WEIGHT_DECAY = 1e-4
CHUNK = 256  # images rendered and cut per step of the stem precomputation
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "audit" / "weights" / "demo_digits.pt"


def to_input(crops: np.ndarray) -> Tensor:
    """``(n, 224, 224, 3) uint8`` -> ``(n, 3, 224, 224) float`` normalised as in AuditModel."""
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(DEMO_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(DEMO_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def stem_inputs(indices: np.ndarray, variants: int, stem: nn.Module) -> tuple[Tensor, Tensor]:
    """Render every (digit, variant), cut it and run the stem.

    Returns:
        ``(n * variants, 3, 28, 28) float`` stem outputs and ``(n * variants,) int64`` labels.
    """
    _, targets = load_digit_arrays()
    jobs = [(int(i), v) for v in range(variants) for i in indices]
    feats: list[Tensor] = []
    with torch.no_grad():
        for start in range(0, len(jobs), CHUNK):
            crops = np.stack(
                [eval_crop(render_demo_digit(i, v)) for i, v in jobs[start : start + CHUNK]]
            )
            feats.append(stem(to_input(crops)))
    labels = torch.tensor([int(targets[i]) for i, _ in jobs], dtype=torch.int64)
    return torch.cat(feats), labels


def train(feats: Tensor, labels: Tensor) -> DemoDigitsNet:
    """Fit everything after the stem with AdamW and a one-cycle schedule."""
    torch.manual_seed(SEED)
    model = DemoDigitsNet(len(DIGIT_CLASSES))
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    steps_per_epoch = (len(labels) + BATCH_SIZE - 1) // BATCH_SIZE
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=LR, epochs=EPOCHS, steps_per_epoch=steps_per_epoch
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    gen = torch.Generator().manual_seed(SEED)
    model.train()
    for epoch in range(EPOCHS):
        order = torch.randperm(len(labels), generator=gen)
        total, correct = 0.0, 0
        for start in range(0, len(order), BATCH_SIZE):
            idx = order[start : start + BATCH_SIZE]
            logits = model.forward_from_stem(feats[idx])
            loss = loss_fn(logits, labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == labels[idx]).sum())
        print(
            f"epoch {epoch + 1:2d}/{EPOCHS}  loss {total / len(labels):.4f}  "
            f"train acc {correct / len(labels):.4f}",
            flush=True,
        )
    return model.eval()


def held_out_accuracy(weights: str) -> tuple[float, int]:
    """Top-1 of ``weights`` on the demo set's decodable files, loaded as the audit loads them."""
    loaded = load_model(ModelConfig(name="demo_digits", weights=weights))
    with tempfile.TemporaryDirectory() as tmp:
        root = ensure_demo_dataset(tmp)
        crops, labels = [], []
        for class_id in sorted(os.listdir(root)):
            if class_id not in DIGIT_CLASSES:
                continue
            for name in sorted(os.listdir(os.path.join(root, class_id))):
                if name.startswith("DEMO_val_99999999"):
                    continue  # the deliberately broken file
                with open(os.path.join(root, class_id, name), "rb") as f:
                    crops.append(decode_image(f.read(), DEFAULT_MAX_PIXELS))
                labels.append(DIGIT_CLASSES.index(class_id))
    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        pred = loaded.module(x).argmax(1)
    return float((pred == torch.tensor(labels)).float().mean()), len(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="where to save the state dict (a folder, or a file named demo_digits.pt)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    if args.out.is_dir():
        args.out = args.out / DEFAULT_OUT.name
    if args.out.name != DEFAULT_OUT.name:
        parser.error(
            f"--out must be named {DEFAULT_OUT.name} (torch.save puts the name in the bytes)"
        )
    shipped = hashlib.sha256(DEFAULT_OUT.read_bytes()).hexdigest() if DEFAULT_OUT.exists() else None

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(SEED)
    t0 = time.perf_counter()
    train_idx, demo_idx = demo_split()
    stem = DemoDigitsNet().stem.eval()
    feats, labels = stem_inputs(train_idx, VARIANTS, stem)
    t1 = time.perf_counter()
    print(
        f"rendered {len(labels)} training images ({len(train_idx)} digits x {VARIANTS}) "
        f"in {t1 - t0:.1f}s",
        flush=True,
    )
    model = train(feats, labels)
    t2 = time.perf_counter()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out)
    acc, n = held_out_accuracy(str(args.out))
    size_kb = args.out.stat().st_size / 1024
    print(f"train time {t2 - t1:.1f}s (total with rendering {t2 - t0:.1f}s)")
    print(f"held-out top-1 {acc:.4f} on {n} demo images ({len(demo_idx)} held-out digits)")
    print(f"saved {args.out} ({size_kb:.0f} KiB)")
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    same = "the same bytes as" if digest == shipped else "differs from"
    print(f"sha256 {digest}: {same} the shipped weights")


if __name__ == "__main__":
    main()
