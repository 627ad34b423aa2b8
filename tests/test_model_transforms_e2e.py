"""A model whose weights expect another crop than 224 (Inception v3: resize 342, crop 299) runs
end to end with its own transform: predictions equal a plain torchvision loop with
``Inception_V3_Weights.DEFAULT.transforms()``, and the attack, LIME, the report's crops and the
human-study images all use 299x299."""

from __future__ import annotations

import io
from pathlib import Path

import fsspec
import numpy as np
import pytest
import torch
import torchvision
from conftest import encode, sample_photo
from PIL import Image
from torchvision.models import Inception_V3_Weights

from audit.config import build_config
from audit.data.segments import decode_segments
from audit.human.config import ExportConfig, Study
from audit.human.export import export_study
from audit.human.storage import human_root
from audit.models.weights import seeded
from audit.report.build import make_report
from audit.report.data import load_run
from audit.report.images import ImageBudget, Pictures
from audit.run import run_audit
from audit.store import read_manifest, read_table

PHOTOS = [
    ("n01440764", "astronaut"),
    ("n01440764", "chelsea"),
    ("n01443537", "coffee"),
    ("n01443537", "rocket"),
]


@pytest.fixture(scope="module")
def inception_run(tmp_path_factory: pytest.TempPathFactory, ray_local: None) -> tuple[str, Path]:
    root = tmp_path_factory.mktemp("incv3")
    for i, (wnid, name) in enumerate(PHOTOS):
        img = sample_photo(name)
        if i == 1:  # one portrait
            img = img.transpose(Image.Transpose.ROTATE_90)
        (root / "val" / wnid).mkdir(parents=True, exist_ok=True)
        (root / "val" / wnid / f"ILSVRC2012_val_{i + 1:08d}.JPEG").write_bytes(encode(img))
    cfg = build_config(
        {
            "data": {"source": str(root / "val")},
            "model": {"name": "inception_v3", "weights": "random", "seed": 3},
            "predict": {"batch_size": 4},
            "attack": {"max_steps": 2, "eps_step": 0.01},
            "explain": {"per_class": 1, "n_samples": 16, "num_features": 3},
            "criticism": {"n_prototypes": 1, "n_criticisms": 1},
            "output": {"root": str(root / "out"), "run_id": "inc"},
        }
    )
    result = run_audit(cfg)
    return result.url, root


def test_predictions_equal_a_plain_torchvision_loop(inception_run: tuple[str, Path]) -> None:
    url, root = inception_run
    m = read_manifest(url)
    assert m["model"]["transform"]["resize"] == [342]
    assert m["model"]["transform"]["crop"] == [299, 299]
    assert m["model"]["source"] == "torchvision"
    preds = read_table(url, "predictions").sort_by("image_id").to_pylist()
    assert len(preds) == len(PHOTOS)

    net = seeded(lambda: torchvision.models.get_model("inception_v3", weights=None), 3).eval()
    transform = Inception_V3_Weights.DEFAULT.transforms()
    files = sorted((root / "val").glob("*/*.JPEG"), key=lambda p: p.stem)
    with Image.open(files[0]) as first:
        assert transform(first.convert("RGB")).shape == (3, 299, 299)
    x = torch.stack([transform(Image.open(p).convert("RGB")) for p in files])
    with torch.no_grad():
        probs = torch.softmax(net(x), dim=1)
    top_p, top_c = probs.topk(5, dim=1)
    for row, p, c in zip(preds, top_p, top_c, strict=True):
        assert row["top5_classes"] == c.tolist(), row["image_id"]
        np.testing.assert_allclose(row["top5_probs"], p.numpy(), rtol=1e-5, atol=1e-7)


def test_every_stage_uses_the_299_crop(inception_run: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = inception_run
    adversarial = read_table(url, "adversarial")
    assert adversarial.num_rows == len(PHOTOS)
    explanations = read_table(url, "explanations").to_pylist()
    assert explanations, "LIME explained nothing"
    for e in explanations:  # super-pixels of the model's own crop
        assert decode_segments(e["segments"]).shape == (299, 299)

    run = load_run(url)
    assert run.transform.crop_hw == (299, 299)
    pictures = Pictures(ImageBudget(10, 10**7), 128, 80)
    uri = read_table(url, "predictions").column("uri")[0].as_py()
    crop = pictures.crop(uri, run.max_pixels, run.jpeg_draft, run.transform)
    assert not isinstance(crop, str) and crop.shape == (299, 299, 3)
    make_report([url], output=str(tmp_path / "report.html"))
    assert "<img" in (tmp_path / "report.html").read_text()

    batches = export_study(url, ExportConfig(study=Study.MISCLASSIFIED, batch="b1"))
    assert batches and batches[0].images_written > 0
    fs, base = fsspec.core.url_to_fs(human_root(url))
    pngs = [p for p in fs.find(base + "/images/crop") if p.endswith(".png")]
    assert len(pngs) == batches[0].images_written
    for p in pngs:
        with fs.open(p, "rb") as f, Image.open(io.BytesIO(f.read())) as img:
            assert img.size == (299, 299), p
