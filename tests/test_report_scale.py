"""The report of a 50,000-image run (ImageNet's validation size, 1000 classes) stays within
its stated size: hand-made tables written with RunStore, real photos as the images."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import PHOTOS, sample_photo
from test_report import dom, table_rows

from audit.data.segments import encode_segments
from audit.report.build import make_report
from audit.report.config import ReportConfig
from audit.store import RunStore

N_CLASSES, PER_CLASS, M = 1000, 50, 10
N = N_CLASSES * PER_CLASS


def make_run(root: Path) -> str:
    rng = np.random.default_rng(0)
    photos = []
    for name in PHOTOS:
        path = root / "images" / f"{name}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        sample_photo(name).convert("RGB").save(path, quality=90)
        photos.append(path.as_uri())
    ids = [f"ILSVRC2012_val_{i + 1:08d}" for i in range(N)]
    labels = np.repeat(np.arange(N_CLASSES), PER_CLASS).astype(np.int32)
    top5 = np.stack([(labels + k) % N_CLASSES for k in range(5)], axis=1)
    wrong = rng.random(N) < 0.25
    top5[wrong, 0] = (labels[wrong] + 7) % N_CLASSES
    probs = np.tile(np.array([0.6, 0.2, 0.1, 0.06, 0.04], dtype=np.float32), (N, 1))
    store = RunStore(str(root / "runs"), "big")
    store.prepare(overwrite=False)
    store.write(
        "predictions",
        {
            "run_id": ["big"] * N,
            "model": ["resnet101"] * N,
            "image_id": ids,
            "uri": [photos[i % len(photos)] for i in range(N)],
            "label": labels,
            "top5_classes": top5.tolist(),
            "top5_probs": probs.tolist(),
            "correct_top1": ~wrong,
            "correct_top5": np.ones(N, dtype=bool),
            "loss": np.ones(N, dtype=np.float32),
            "label_prob": np.full(N, 0.6, dtype=np.float32),
            "embedding": [None] * N,
        },
    )
    steps = rng.integers(0, M + 2, N)
    store.write(
        "adversarial",
        {
            "run_id": ["big"] * N,
            "model": ["resnet101"] * N,
            "image_id": ids,
            "label": labels,
            "target": labels,
            "steps_to_flip": [None if s > M else int(s) for s in steps],
            "adv_class": (labels + 1) % N_CLASSES,
            "adv_prob": np.full(N, 0.5, dtype=np.float32),
            "linf": np.full(N, 0.003, dtype=np.float32),
            "l2": np.full(N, 1.0, dtype=np.float32),
            "stored_flips": [None] * N,
            "image_png": [None] * N,
        },
    )
    grid = np.repeat(np.repeat(np.arange(49).reshape(7, 7), 32, 0), 32, 1)
    seg = encode_segments(grid)
    explained = [i * PER_CLASS for i in range(N_CLASSES)]
    rows = [(ids[i], v) for i in explained for v in ("clean", "adversarial")]
    store.write(
        "explanations",
        {
            "run_id": ["big"] * len(rows),
            "model": ["resnet101"] * len(rows),
            "image_id": [r[0] for r in rows],
            "variant": [r[1] for r in rows],
            "explained_class": [0] * len(rows),
            "segments": [seg] * len(rows),
            "n_segments": [49] * len(rows),
            "weights": [[0.0] * 49] * len(rows),
            "intercept": [0.0] * len(rows),
            "score": [0.5] * len(rows),
            "local_pred": [0.5] * len(rows),
            "top_features": [list(range(8))] * len(rows),
            "n_samples": [1000] * len(rows),
            "kernel_width": [0.25] * len(rows),
            "seed": [0] * len(rows),
        },
    )
    sel = [
        (c, m, role, r)
        for c in range(N_CLASSES)
        for m in ("adversarial", "mmd_critic", "probability", "random")
        for role in ("prototype", "criticism")
        for r in range(3)
    ]
    store.write(
        "selections",
        {
            "run_id": ["big"] * len(sel),
            "model": ["resnet101"] * len(sel),
            "class": [s[0] for s in sel],
            "class_id": [f"c{s[0]}" for s in sel],
            "method": [s[1] for s in sel],
            "role": [s[2] for s in sel],
            "rank": [s[3] + 1 for s in sel],
            "image_id": [
                ids[s[0] * PER_CLASS + s[3] + (3 if s[2] == "criticism" else 0)] for s in sel
            ],
            "score": [0.5] * len(sel),
        },
    )
    # 20 images with one reason and 80 with a reason each: the summary shows 50 reasons
    reasons = ["empty file"] * 20 + [f"corrupt or truncated image: case {k:02d}" for k in range(80)]
    store.write(
        "errors",
        {
            "run_id": ["big"] * len(reasons),
            "image_id": [f"broken_{k:03d}" for k in range(len(reasons))],
            "uri": [f"file:///nowhere/broken_{k:03d}.JPEG" for k in range(len(reasons))],
            "stage": ["decode"] * len(reasons),
            "reason": reasons,
        },
    )
    store.ensure_tables()
    store.write_manifest(
        {
            "run_id": "big",
            "state": "succeeded",
            "config": {"attack": {"max_steps": M, "keep_images": False}},
            "model": {"name": "resnet101", "classes": "imagenet", "num_classes": N_CLASSES},
            "data": {"source": "synthetic", "layout": "imagefolder", "inputs": N},
            "stages": {},
            "tables": {t: {"rows": store.rows[t], "files": store.files[t]} for t in store.files},
        }
    )
    return store.url


@pytest.mark.slow  # a report over a 50,000-image run
@pytest.mark.timeout(900)
def test_report_of_50000_images_stays_within_bound(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    cfg = ReportConfig()
    start = time.perf_counter()
    url, report = make_report([run], str(tmp_path / "r.html"), cfg)
    seconds = time.perf_counter() - start
    size = Path(url.removeprefix("file://")).stat().st_size
    # what the defaults show: 24 misclassified, 12 adversarial examples x (image, 2 LIME
    # attention images, adversarial), 6 paths x (image + 8 frames), 50 classes x 4 methods
    # x 6 selections, the histogram and the reliability diagram
    expected = cfg.examples + cfg.adversarial_examples * 4 + cfg.paths * 9 + 50 * 4 * 6 + 2
    assert report.images == expected and report.refused_images == 0
    # the stated bound (docs/report.md): base64 images plus at most 1 KB of text per image
    # plus 300 KB of tables
    assert size <= report.image_bytes * 4 / 3 + 1000 * report.images + 300_000
    assert size < 12_000_000

    errors = table_rows(dom(report.html).one("section", id="summary").all("table")[1])
    assert len(errors) == 51
    assert errors[0] == ["resnet101 (big)", "decode", "empty file", "20", "broken_000"]
    assert errors[1][2] == "corrupt or truncated image: case 00"
    assert errors[-1] == ["resnet101 (big)", "", "31 other reasons", "31", ""]
    print(f"\n50,000-image run: {size / 1e6:.1f} MB, {report.images} images, {seconds:.0f} s")


def test_report_of_an_empty_failed_run(empty_run: Callable[..., str]) -> None:
    run = empty_run("failed", error="RuntimeError: out of memory")
    url, report = make_report([run])
    assert url == run + "/report/index.html"
    assert report.sections == ("summary", "accuracy") and report.images == 0
    summary = dom(report.html).one("section", id="summary")
    assert ["error", "RuntimeError: out of memory"] in table_rows(summary.all("table")[0])
    assert "No input failed." in summary.text()
    for absent in ("Misclassified images", "Adversarial images", "Explanation paths"):
        assert absent in summary.text()
