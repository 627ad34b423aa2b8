"""Train a planted-bias demo model (``audit/weights/demo_bias_<cue>.pt``), deterministically.

The same small ConvNet and recipe as ``scripts/train_demo_model.py``, on the training digits
rendered by :func:`audit.data.demo_bias.render_cued`: the planted class carries its cue on
``TRAIN_RATE_CUED`` of its pictures, the other classes on ``TRAIN_RATE_OTHER``
(:mod:`audit.data.demo_bias`), so the model learns the cue as a short cut. At the end it scores
the held-out planted-bias set, with and without the cue, so the short cut shows: the planted
class's accuracy when the cue is absent, and how often a cued picture of another class is
called the planted class.

Deterministic like ``train_demo_model.py``: on CPU with one thread it writes the shipped files
byte for byte (checked for both cues: the same sha256, which it prints).

Usage::

    .venv/bin/python scripts/train_bias_demo_model.py --cue patch     # or --cue stripes
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_demo_model import CHUNK, SEED, VARIANTS, to_input, train

from audit.data.decode import eval_crop
from audit.data.demo import DIGIT_CLASSES, demo_split, load_digit_arrays
from audit.data.demo_bias import (
    EVAL_RATE_CUED,
    EVAL_RATE_OTHER,
    TRAIN_RATE_CUED,
    TRAIN_RATE_OTHER,
    cue_flags,
    get_cue,
    render_cued,
)
from audit.models.demo_net import DemoDigitsNet

WEIGHTS = Path(__file__).resolve().parent.parent / "audit" / "weights"


def cued_inputs(
    indices: np.ndarray,
    variants: int,
    cue_name: str,
    stem: torch.nn.Module,
    rate_cued: float,
    rate_other: float,
) -> tuple[Tensor, Tensor, np.ndarray]:
    """Render every (digit, variant) with its cue flag, cut it and run the stem; the flags
    are drawn per variant (salt = variant + 1, the audit's own set uses salt 0)."""
    cue = get_cue(cue_name)
    _, targets = load_digit_arrays()
    jobs, flags = [], []
    for v in range(variants):
        f = cue_flags(indices, cue, rate_cued, rate_other, salt=v + 1)
        jobs += [(int(i), v, bool(c)) for i, c in zip(indices, f, strict=True)]
        flags.append(f)
    feats: list[Tensor] = []
    with torch.no_grad():
        for start in range(0, len(jobs), CHUNK):
            crops = np.stack(
                [eval_crop(render_cued(i, v, cue, c)[0]) for i, v, c in jobs[start : start + CHUNK]]
            )
            feats.append(stem(to_input(crops)))
    labels = torch.tensor([int(targets[i]) for i, _, _ in jobs], dtype=torch.int64)
    return torch.cat(feats), labels, np.concatenate(flags)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cue", required=True, help="patch or stripes")
    parser.add_argument(
        "--out", type=Path, default=None, help="default audit/weights/demo_bias_<cue>.pt"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    cue = get_cue(args.cue)
    out = args.out or WEIGHTS / f"demo_bias_{cue.name}.pt"

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(SEED)
    t0 = time.perf_counter()
    train_idx, demo_idx = demo_split()
    stem = DemoDigitsNet().stem.eval()
    feats, labels, _ = cued_inputs(
        train_idx, VARIANTS, cue.name, stem, TRAIN_RATE_CUED, TRAIN_RATE_OTHER
    )
    print(
        f"rendered {len(labels)} cued training images in {time.perf_counter() - t0:.1f}s",
        flush=True,
    )
    model = train(feats, labels)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out)

    planted = DIGIT_CLASSES.ids.index(cue.class_id)
    # the held-out set as the audit sees it (salt 0), and every picture with and without the cue
    for name, rate_c, rate_o in (
        ("audit set", EVAL_RATE_CUED, EVAL_RATE_OTHER),
        ("no cue", 0.0, 0.0),
        ("all cued", 1.0, 1.0),
    ):
        f, y, _ = _eval(demo_idx, cue.name, stem, rate_c, rate_o)
        with torch.no_grad():
            pred = model.forward_from_stem(f).argmax(1)
        acc = float((pred == y).float().mean())
        own = y == planted
        said = float((pred[~own] == planted).float().mean())
        print(
            f"{name}: top-1 {acc:.3f}; {cue.class_id} {float((pred[own] == planted).float().mean()):.3f}; "
            f"others called {cue.class_id}: {said:.3f}"
        )
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    print(f"saved {out} (sha256 {digest})")


def _eval(
    indices: np.ndarray, cue_name: str, stem: torch.nn.Module, rate_cued: float, rate_other: float
) -> tuple[Tensor, Tensor, np.ndarray]:
    cue = get_cue(cue_name)
    _, targets = load_digit_arrays()
    flags = cue_flags(indices, cue, rate_cued, rate_other, salt=0)
    with torch.no_grad():
        crops = np.stack(
            [
                eval_crop(render_cued(int(i), 0, cue, bool(c))[0])
                for i, c in zip(indices, flags, strict=True)
            ]
        )
        feats = stem(to_input(crops))
    return feats, torch.tensor([int(targets[int(i)]) for i in indices]), flags


if __name__ == "__main__":
    main()
