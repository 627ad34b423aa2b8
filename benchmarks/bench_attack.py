"""IFGSM step counting against torchattacks' BIM: time, images/s and the ratio, on CPU.

Both attack the same model with the same images, the same step (eps per step) and the same M.
The model is the shipped demo model and the images are the demo set's 300 held-out digits, so
the images really flip after a spread of step counts. BIM (torchattacks) runs all M steps on
every image and returns only the final adversarials. Ours exits early per image and also returns
each image's step count. "ours, no early exit" is the same code keeping every image for all M
steps, which shows how much of the gain comes from exiting early.

``--model resnet18`` attacks a randomly initialised ResNet-18 instead (no weights are
downloaded), with each image's clean prediction as the class to leave (``attack.target:
prediction``), on the first ``--images`` demo crops: a model whose forward and backward passes,
not BIM's element-wise projections, dominate the time.

torchattacks is a benchmark-only dependency. Install it without its dependencies: it pins an old
requests, which would break Ray's dashboard.

    .venv/bin/pip install --no-deps torchattacks
    .venv/bin/python benchmarks/bench_attack.py --repeats 5
    .venv/bin/python benchmarks/bench_attack.py --model resnet18 --images 64 --repeats 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit.config import ModelConfig
from audit.data.decode import ImageLoadError, load_image
from audit.data.demo import DIGIT_CLASSES, ensure_demo_dataset
from audit.models import load_model
from audit.stages.attack import NEVER, ifgsm


def demo_images() -> tuple[torch.Tensor, torch.Tensor]:
    """The decoded demo crops in [0, 1] ``(n, 3, 224, 224)`` and their labels."""
    root = Path(ensure_demo_dataset())
    images, labels = [], []
    for path in sorted(root.glob("digit_*/*")):
        try:
            images.append(load_image(str(path), 10**8))
        except ImageLoadError:
            continue  # the demo's one planted broken file
        labels.append(DIGIT_CLASSES.index(path.parent.name))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255.0)
    return x.contiguous(), torch.tensor(labels)


def timed(fn, *args) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--eps-step", type=float, default=0.001)
    parser.add_argument("--max-steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument("--model", default="demo_digits", help="demo_digits or a torchvision name")
    parser.add_argument("--images", type=int, default=0, help="use only the first N (0: all)")
    args = parser.parse_args()
    import torchattacks

    if args.threads:
        torch.set_num_threads(args.threads)
    x, y = demo_images()
    if args.images:
        x, y = x[: args.images], y[: args.images]
    if args.model == "demo_digits":
        model = load_model(ModelConfig(name="demo_digits")).module
    else:
        model = load_model(ModelConfig(name=args.model, weights="random")).module
        with torch.no_grad():
            y = torch.cat([model(x[i : i + 32]).argmax(1) for i in range(0, len(x), 32)])
    n, bs, eps, m = len(x), args.batch_size, args.eps_step, args.max_steps
    bim = torchattacks.BIM(model, eps=eps * m, alpha=eps, steps=m)

    def ours(early: bool) -> torch.Tensor:
        steps = [
            ifgsm(model, x[i : i + bs], y[i : i + bs], eps_step=eps, max_steps=m, early_exit=early)
            for i in range(0, n, bs)
        ]
        return torch.cat([s.steps_to_flip for s in steps])

    def theirs() -> torch.Tensor:
        return torch.cat([bim(x[i : i + bs], y[i : i + bs]) for i in range(0, n, bs)])

    print(
        f"{n} demo images, {args.model}, eps {eps}, M {m}, batch {bs}, {torch.get_num_threads()} threads"
    )
    ours(True), theirs()  # warm-up
    times: dict[str, list[float]] = {"ours": [], "ours, no early exit": [], "torchattacks BIM": []}
    steps = bim_adv = None
    for r in range(args.repeats):
        order = list(times) if r % 2 == 0 else list(reversed(times))
        for name in order:
            if name == "ours":
                s, steps = timed(ours, True)
            elif name == "ours, no early exit":
                s, _ = timed(ours, False)
            else:
                s, bim_adv = timed(theirs)
            times[name].append(s)
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, s in med.items():
        print(f"median {name:22s}: {s:7.2f} s  {n / s:7.1f} images/s")
    print(f"ratio time ours / BIM          : {med['ours'] / med['torchattacks BIM']:.3f}")
    print(
        f"ratio time no-early-exit / BIM : {med['ours, no early exit'] / med['torchattacks BIM']:.3f}"
    )
    assert isinstance(steps, torch.Tensor) and isinstance(bim_adv, torch.Tensor)
    hist = {k: int((steps == k).sum()) for k in [*range(m + 1), NEVER]}
    print("steps_to_flip histogram:", {("never" if k == NEVER else k): v for k, v in hist.items()})
    # sanity: on images that never flip, BIM's final image is our x_M (its projection is idle)
    with torch.no_grad():
        survive = model(bim_adv).argmax(1) == y
    print(
        f"BIM leaves {int(survive.sum())} images correct; ours says {hist[NEVER]} never flip "
        f"(adversarial accuracy {hist[NEVER] / n:.3f})"
    )


if __name__ == "__main__":
    main()
