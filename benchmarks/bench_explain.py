"""LIME explanation time against lime 0.2's LimeImageExplainer and Captum's Lime, on CPU.

All of them explain the same model's softmax probability for the same class on the same image
(the first decoded demo crop), with the same quickshift segmentation (``segment(image,
"quickshift", seed=0)``, computed once outside every timing and handed to lime through
``segmentation_fn`` and to Captum as ``feature_mask``), the same mean-colour fill of hidden
super-pixels (lime's ``hide_color=None``; Captum gets the same fill image as ``baselines``) and
``n`` perturbed samples:

* ours: ``explain(model, image, segments, cls, n_samples=n, batch_size=10)`` (``--batch``; the
  pipeline's default on CPU, where batches of 250 crops of 224x224 run slower than small ones);
* lime, batch 10 / 100: ``LimeImageExplainer(kernel_width=0.25).explain_instance(...,
  top_labels=None, labels=(cls,), hide_color=None, num_samples=n, batch_size=...,
  num_features=8)``, whose ``classifier_fn`` runs the same model on lime's ``(b, H, W, 3)``
  numpy batch under ``torch.inference_mode`` and returns softmax probabilities;
* captum: ``Lime(forward_func).attribute(x, target=cls, feature_mask=segments,
  n_samples=n, perturbations_per_eval=100)`` with Captum's defaults (``SkLearnLasso(alpha=0.01)``,
  exponential cosine kernel on the inputs);
* ours, batch N: the same with ``batch_size=N`` for each N of ``--extra-batches`` (250 is the
  pipeline's default on GPU; not used for the targets);
* model alone: the ``AuditModel`` (which normalises each batch, then runs its network) on the
  ``n`` perturbed images ours explains, built once before the timings (batches of ``--batch``):
  the model's ``n`` forward passes alone, the floor the overhead ratio divides by;
* model alone, one batch repeated: the same number of passes on one fixed batch of the original
  image (this script's reference before 2026-11-29). It is optimistic: the demo model's max
  pooling runs about twice as fast on ten identical images as on ten perturbed ones
  (``torch.profiler``: 85 against 162 ms per 1000 images), so the model alone takes about 20 %
  less on it than on the images it really sees;
* network alone: the bare network on the same perturbed images, already normalised. ``explain``
  normalises the image and the fill once and runs the bare network on batches built from them
  (the same bits; ``AuditModel.normalise``), so this is the floor without the per-batch
  normalisation ours no longer pays, printed as a further ratio;

Each method's overhead ratio is its time over the model-alone time. Every repeat runs every
method once, interleaved (alternating the order), so drift and other users' load hit all of them
alike; the medians are reported. A breakdown of ours (building the perturbed images, the model,
the surrogate fit, timed batch by batch in one loop as ``explain`` runs them) follows. A forward
pre-hook records ``torch.get_num_threads()`` at every model call, to show every method ran with
the same thread count.

``--model demo_digits`` is the shipped demo model (cheap: the explainers' own overhead shows);
``--model resnet18`` is a randomly initialised ResNet-18 (no weights are downloaded) whose
forward passes dominate.

lime and Captum are benchmark-only dependencies (captum 0.9 installs without touching torch).

    .venv/bin/pip install lime captum
    .venv/bin/python benchmarks/bench_explain.py --model demo_digits --repeats 5
    .venv/bin/python benchmarks/bench_explain.py --model resnet18 --repeats 3
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit.config import ModelConfig
from audit.data.decode import ImageLoadError, load_image
from audit.data.demo import ensure_demo_dataset
from audit.models import load_model
from audit.stages.explain import explain, sample_masks, segment
from audit.stages.perturb import Perturber, fill_image
from audit.stages.predict import images_to_tensor
from audit.stages.surrogate import fit_surrogate, kernel_weights


def demo_image() -> np.ndarray:
    """The first decoded demo crop, ``(224, 224, 3) uint8``."""
    for path in sorted(Path(ensure_demo_dataset()).glob("digit_*/*")):
        try:
            return load_image(str(path), 10**8)
        except ImageLoadError:
            continue
    raise RuntimeError("no decodable demo image")


def timed(fn: Callable[[int], object], m: int) -> tuple[float, float, int, object]:
    """Wall-clock seconds, process CPU seconds and minor page faults of ``fn(m)``; its result."""
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(m)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return wall, cpu, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0, out


def keep_freed_memory() -> None:
    """Make glibc keep freed memory in the heap for every method alike.

    By default glibc gives a freed block of some MB back to the OS (heap trimming, mmap), so a
    model whose forward allocates large temporaries (``AuditModel``'s normalisation: two
    ``(b, 3, 224, 224)`` tensors) page-faults them in again on every batch, or not, depending on
    what else sits on the heap: the same forward passes then cost up to twice as much in one
    method as in another. ``M_TRIM_THRESHOLD`` 1 GiB and ``M_MMAP_THRESHOLD`` 32 MiB (glibc's
    maximum) take that artefact out of every timing.
    """
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3
    if not (libc.mallopt(m_trim_threshold, 1 << 30) and libc.mallopt(m_mmap_threshold, 1 << 25)):
        raise RuntimeError("mallopt refused M_TRIM_THRESHOLD / M_MMAP_THRESHOLD")


def fmt(values: list[float]) -> str:
    return " ".join(f"{v:.3f}" for v in values)


def top_k(values: np.ndarray, k: int) -> set[int]:
    order = np.lexsort((np.arange(len(values)), -np.abs(values)))
    return {int(i) for i in order[:k] if values[i] != 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo_digits", help="demo_digits or a torchvision name")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument(
        "--batch", type=int, default=10, help="ours and the model floor (explain's CPU default)"
    )
    parser.add_argument(
        "--extra-batches",
        default="250",
        help="comma-separated extra batch sizes for ours (250: the GPU default); '' for none",
    )
    parser.add_argument(
        "--malloc",
        choices=("default", "keep"),
        default="default",
        help="glibc's default, or keep freed memory in the heap (keep_freed_memory)",
    )
    args = parser.parse_args()
    if args.malloc == "keep":
        keep_freed_memory()
    from captum.attr import Lime
    from lime import lime_image

    lime_image.tqdm = lambda rows: rows  # silence data_labels' progress bar (no option for it)
    if args.threads:
        torch.set_num_threads(args.threads)
    n = args.samples
    if args.model == "demo_digits":
        model = load_model(ModelConfig(name="demo_digits")).module
    else:
        model = load_model(ModelConfig(name=args.model, weights="random")).module
    model.eval()
    seen_threads: set[int] = set()
    # on the bare network: ours runs it directly (explain folds AuditModel's normalisation)
    model.net.register_forward_pre_hook(lambda mod, inp: seen_threads.add(torch.get_num_threads()))
    image = demo_image()
    segments = segment(image, "quickshift", seed=0)  # once, outside every timing
    d = int(segments.max()) + 1
    x = images_to_tensor(image[None], torch.device("cpu"))  # (1, 3, 224, 224)
    with torch.inference_mode():
        cls = int(model(x).argmax(1).item())
    seg_t = torch.from_numpy(segments.astype(np.int64))
    fill = fill_image(x[0], seg_t, "mean").unsqueeze(0)
    bs = args.batch
    fixed = x.expand(bs, -1, -1, -1).contiguous()
    # The references see the very images ours builds: the n perturbed images (mask seed 0, as
    # explain's default), built once here outside every timing, in [0, 1] for the model and
    # normalised for the bare network. A max-pooling network costs more on these varied images
    # than on one repeated batch (see the module docstring).
    with torch.inference_mode():
        all_masks = torch.from_numpy(sample_masks(d, n, 0))
        build_once = Perturber(x[0], seg_t, fill[0], bs)
        prebuilt = [build_once(all_masks[s : s + bs]).clone() for s in range(0, n, bs)]
        prebuilt_normalised = [model.normalise(b) for b in prebuilt]
    seen_dtypes: set[str] = set()

    def classifier_fn(imgs: np.ndarray) -> np.ndarray:
        seen_dtypes.add(str(imgs.dtype))
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(imgs)).permute(0, 3, 1, 2).float() / 255.0
            return torch.softmax(model(t), dim=1).numpy()

    def forward_func(batch: torch.Tensor) -> torch.Tensor:
        return torch.softmax(model(batch), dim=1)

    captum_lime = Lime(forward_func)

    def ours(m: int, bs: int = bs) -> np.ndarray:
        e = explain(model, image, segments, cls, n_samples=m, batch_size=bs)
        return e.surrogate.weights

    def lime_run(m: int, bs: int) -> np.ndarray:
        exp = lime_image.LimeImageExplainer(kernel_width=0.25, random_state=0).explain_instance(
            image,
            classifier_fn,
            top_labels=None,
            labels=(cls,),
            hide_color=None,
            num_samples=m,
            batch_size=bs,
            segmentation_fn=lambda img: segments,
            num_features=8,
            random_seed=0,
        )
        w = np.zeros(d)
        for f, v in exp.local_exp[cls]:
            w[f] = v
        return w

    def captum_run(m: int) -> np.ndarray:
        torch.manual_seed(0)
        with torch.no_grad():
            attr = captum_lime.attribute(
                x,
                baselines=fill,
                target=cls,
                feature_mask=seg_t[None, None],
                n_samples=m,
                perturbations_per_eval=100,
            )
        w = np.zeros(d)
        flat = attr[0, 0].reshape(-1).numpy()
        w[segments.reshape(-1)] = flat  # constant within a super-pixel
        return w

    def forward_passes(module: torch.nn.Module, batches: list[torch.Tensor], m: int) -> None:
        with torch.inference_mode():
            for i, start in enumerate(range(0, m, bs)):
                torch.softmax(module(batches[i][: min(bs, m - start)]), dim=1)

    def model_alone(m: int) -> None:
        forward_passes(model, prebuilt, m)

    def model_fixed(m: int) -> None:
        forward_passes(model, [fixed] * len(prebuilt), m)

    def network_alone(m: int) -> None:
        forward_passes(model.net, prebuilt_normalised, m)

    methods: dict[str, Callable[[int], object]] = {"ours": lambda m: ours(m)}
    for extra in [int(v) for v in args.extra_batches.split(",") if v.strip()]:
        label = f"ours, batch {extra}" + (" (GPU default)" if extra == 250 else "")
        methods[label] = functools.partial(ours, bs=extra)
    methods |= {
        "lime, batch 10": lambda m: lime_run(m, 10),
        "lime, batch 100": lambda m: lime_run(m, 100),
        "captum Lime": lambda m: captum_run(m),
        "model alone": lambda m: model_alone(m),
        "model alone, one batch repeated": lambda m: model_fixed(m),
        "network alone (normalised input)": lambda m: network_alone(m),
    }
    # breakdown of ours: building the perturbed images, the model, the surrogate fit
    parts: dict[str, list[float]] = {"build images": [], "model + softmax": [], "surrogate": []}

    def breakdown(m: int) -> None:
        build_s = model_s = 0.0
        with torch.inference_mode():
            t0 = time.perf_counter()
            xi = x[0]
            fill_i = fill_image(xi, seg_t, "mean")
            masks = sample_masks(d, m, 0)
            masks_t = torch.from_numpy(masks)
            build = Perturber(model.normalise(xi), seg_t, model.normalise(fill_i), min(bs, m))
            build_s += time.perf_counter() - t0
            targets = []
            for s in range(0, m, bs):
                t1 = time.perf_counter()
                batch = build(masks_t[s : s + bs])
                t2 = time.perf_counter()
                targets.append(torch.softmax(model.net(batch), dim=1)[:, cls].numpy())
                t3 = time.perf_counter()
                build_s += t2 - t1
                model_s += t3 - t2
        t4 = time.perf_counter()
        target = np.concatenate(targets).astype(np.float64)
        fit_surrogate(masks, target, kernel_weights(masks, 0.25), 8, "wls")
        parts["build images"].append(build_s)
        parts["model + softmax"].append(model_s)
        parts["surrogate"].append(time.perf_counter() - t4)

    methods["ours, split in 3 timed parts"] = breakdown

    print(
        f"{args.model}, 1 image, {d} quickshift super-pixels, class {cls}, n {n}, "
        f"{torch.get_num_threads()} threads, malloc {args.malloc}"
    )
    for fn in methods.values():  # warm-up on a short run
        fn(min(n, 100))
    for v in parts.values():
        v.clear()
    print(f"lime hands classifier_fn numpy batches of dtype {sorted(seen_dtypes)}")
    times: dict[str, list[float]] = {k: [] for k in methods}
    cpu_times: dict[str, list[float]] = {k: [] for k in methods}
    faults: dict[str, list[int]] = {k: [] for k in methods}
    weights: dict[str, np.ndarray] = {}
    load = [os.getloadavg()]
    for r in range(args.repeats):
        order = list(methods) if r % 2 == 0 else list(reversed(methods))
        for name in order:
            s, cpu, flt, out = timed(methods[name], n)
            times[name].append(s)
            cpu_times[name].append(cpu)
            faults[name].append(flt)
            if isinstance(out, np.ndarray):
                weights[name] = out
    load.append(os.getloadavg())
    del times["ours, split in 3 timed parts"]

    med = {k: statistics.median(v) for k, v in times.items()}
    cpu_med = {k: statistics.median(cpu_times[k]) for k in med}
    floor = med["model alone"]
    print()
    print(
        f"| method | s / explanation (median of {args.repeats}) | overhead (time / model alone) "
        "| CPU s (all threads) | CPU overhead | minor page faults |"
    )
    print("|---|---|---|---|---|---|")
    for name, s in med.items():
        c = cpu_med[name]
        print(
            f"| {name} | {s:.3f} | {s / floor:.2f} | {c:.3f} | {c / cpu_med['model alone']:.2f} "
            f"| {int(statistics.median(faults[name]))} |"
        )
    print()
    print("every repeat, s: " + "; ".join(f"{k}: {fmt(v)}" for k, v in times.items()))
    print()
    for peer in ("lime, batch 10", "lime, batch 100", "captum Lime"):
        print(f"ratio time ours / {peer:16s}: {med['ours'] / med[peer]:.3f}")
    print()
    print(f"breakdown of ours (separate median of {args.repeats}):")
    for name, v in parts.items():
        print(f"  {name:16s}: {statistics.median(v):.3f} s")
    print()
    print(
        "load averages (1, 5, 15 min) before / after the repeats: "
        + " / ".join(", ".join(f"{v:.1f}" for v in avg) for avg in load)
    )
    print(f"torch threads seen at the model calls of every method: {sorted(seen_threads)}")
    print(
        "non-zero super-pixel weights: "
        + ", ".join(f"{k}: {int((w != 0).sum())}/{d}" for k, w in weights.items())
    )
    print("top-8 super-pixels shared with ours (last repeat): ", end="")
    ours_top = top_k(weights["ours"], 8)
    print(
        ", ".join(
            f"{p}: {len(ours_top & top_k(weights[p], 8))}/8"
            for p in ("lime, batch 10", "lime, batch 100", "captum Lime")
        )
    )
    print()
    fastest_lime = min(med["lime, batch 10"], med["lime, batch 100"])
    fastest_peer = min(fastest_lime, med["captum Lime"])
    if args.model == "demo_digits":
        a = med["ours"] / fastest_lime
        b = med["ours"] / floor
        print(
            f"target ours <= 1/3 of lime_image (fastest batch): {a:.3f} -> {'met' if a <= 1 / 3 else 'NOT met'}"
        )
        print(f"target ours overhead <= 1.2: {b:.2f} -> {'met' if b <= 1.2 else 'NOT met'}")
        for ref in ("model alone, one batch repeated", "network alone (normalised input)"):
            print(f"ours / {ref}: {med['ours'] / med[ref]:.2f}")
    else:
        c = med["ours"] / fastest_peer
        print(
            f"target ours no slower than the fastest peer: {c:.3f} -> {'met' if c <= 1.0 else 'NOT met'}"
        )


if __name__ == "__main__":
    main()
