"""End-to-end tests of the Ray pass on small folders the tests write themselves."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pytest
import torch
import torchvision
from conftest import SHARED_DATA, encode, sample_photo, write_odd_and_broken
from PIL import Image
from torchvision import transforms

from audit.config import ConfigError, build_config
from audit.data.classes import imagenet_classes
from audit.data.decode import IMAGENET_MEAN, IMAGENET_STD
from audit.model_actor import decode_batch
from audit.models import load_model
from audit.run import run_audit
from audit.store import read_manifest, read_table

PHOTOS_BY_CLASS = {
    "n01440764": ["astronaut", "chelsea", "coffee"],
    "n01443537": ["rocket", "camera", "hubble_deep_field"],
}
REFERENCE = transforms.Compose(
    [
        transforms.Resize(256),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ]
)


def write_imagefolder(root: Path) -> dict[str, str]:
    """ImageNet class folders with real photos, odd and broken files, and an unknown class.

    Returns image_id -> expected outcome: ``ok``, ``error``, or ``list-error``.
    """
    expected: dict[str, str] = {}
    n = 1
    for wnid, names in PHOTOS_BY_CLASS.items():
        (root / wnid).mkdir(parents=True)
        for name in names:
            image_id = f"ILSVRC2012_val_{n:08d}"
            (root / wnid / f"{image_id}.JPEG").write_bytes(encode(sample_photo(name)))
            expected[image_id] = "ok"
            n += 1
    for name, kind in write_odd_and_broken(root / "n01484850").items():
        expected[name.rsplit(".", 1)[0]] = kind
    (root / "n99999999").mkdir()
    (root / "n99999999" / "ILSVRC2012_val_00000300.JPEG").write_bytes(
        encode(sample_photo("coffee"))
    )
    expected["ILSVRC2012_val_00000300"] = "list-error"
    return expected


def reference_predictions(state_dict: dict, paths: dict[str, Path], labels: dict[str, int]) -> dict:
    """A plain torchvision loop: PIL -> standard transform -> resnet18 -> softmax."""
    net = torchvision.models.resnet18()
    net.load_state_dict(state_dict)
    net.eval()
    feats: list[torch.Tensor] = []
    net.fc.register_forward_hook(lambda m, i, o: feats.append(i[0]))
    out = {}
    with torch.no_grad():
        for image_id, path in paths.items():
            with Image.open(path) as img:
                x = REFERENCE(img.convert("RGB")).unsqueeze(0)
            logits = net(x)
            p = torch.softmax(logits, 1)[0]
            top_p, top_c = p.topk(5)
            loss = torch.nn.functional.cross_entropy(logits, torch.tensor([labels[image_id]]))
            out[image_id] = (
                top_c.numpy(),
                top_p.numpy(),
                float(loss),
                feats[-1][0].numpy(),
                float(p[labels[image_id]]),
            )
    return out


@pytest.mark.slow  # a pipeline run on Ray (resnet18 on real photos)
def test_imagefolder_end_to_end_matches_plain_loop(tmp_path: Path, ray_local: None) -> None:
    expected = write_imagefolder(tmp_path / "val")
    cfg = build_config(
        {
            "data": {"source": str(tmp_path / "val")},
            "model": {"name": "resnet18", "weights": "random", "seed": 3},
            "predict": {"batch_size": 4},
            "explain": {"enabled": False},  # LIME on resnet18 is minutes on CPU; the demo tests it
            "output": {"root": str(tmp_path / "out"), "run_id": "e2e", "shard_size": 5},
        }
    )
    result = run_audit(cfg)
    run = str(tmp_path / "out" / "e2e")
    preds = read_table(run, "predictions").to_pylist()
    errors = read_table(run, "errors").to_pylist()
    metrics = read_table(run, "metrics").to_pylist()

    # every input exactly once, in the table its kind says
    seen = [r["image_id"] for r in preds] + [r["image_id"] for r in errors]
    assert sorted(seen) == sorted(expected)
    assert {r["image_id"] for r in preds} == {k for k, v in expected.items() if v == "ok"}
    stages = {r["image_id"]: r["stage"] for r in errors}
    assert stages["ILSVRC2012_val_00000300"] == "list"
    assert {k for k, v in stages.items() if v == "decode"} == {
        k for k, v in expected.items() if v == "error"
    }
    assert all(r["reason"] for r in errors)
    m = read_manifest(run)
    assert m["state"] == "succeeded" and m["data"]["layout"] == "imagefolder"
    assert (
        m["tables"]["predictions"]["rows"] == len(preds)
        and len(m["tables"]["predictions"]["files"]) >= 2
    )
    assert result.manifest["tables"]["errors"]["rows"] == len(errors)

    # predictions equal an independent plain loop over the same files and weights
    classes = imagenet_classes()
    state = load_model(cfg.model).module.net.state_dict()
    paths = {r["image_id"]: Path(r["uri"].removeprefix("file://")) for r in preds}
    labels = {r["image_id"]: r["label"] for r in preds}
    for image_id, path in paths.items():
        assert labels[image_id] == classes.index(path.parent.name)
    ref = reference_predictions(state, paths, labels)
    for r in preds:
        top_c, top_p, loss, emb, p_label = ref[r["image_id"]]
        assert r["label_prob"] == pytest.approx(p_label, rel=1e-4, abs=1e-7)
        np.testing.assert_array_equal(r["top5_classes"], top_c)
        np.testing.assert_allclose(r["top5_probs"], top_p, rtol=1e-4, atol=1e-6)
        assert r["loss"] == pytest.approx(loss, rel=1e-4, abs=1e-5)
        np.testing.assert_allclose(r["embedding"], emb, rtol=1e-4, atol=1e-5)
        assert r["correct_top1"] == (top_c[0] == r["label"])
        assert r["correct_top5"] == (r["label"] in top_c)
        assert r["model"] == "resnet18" and r["run_id"] == "e2e"

    # metrics equal a brute-force count over the predictions table
    got = {(m["name"], m["scope"]): m["value"] for m in metrics}
    top1 = sum(not r["correct_top1"] for r in preds) / len(preds)
    assert got[("top1_error", "all")] == pytest.approx(top1)
    for wnid in {classes.ids[r["label"]] for r in preds}:
        members = [r for r in preds if classes.ids[r["label"]] == wnid]
        e5 = sum(not r["correct_top5"] for r in members) / len(members)
        assert got[("top5_error", wnid)] == pytest.approx(e5)


def _flat_folder(root: Path, n: int) -> list[str]:
    root.mkdir(parents=True)
    names = ["astronaut", "chelsea", "coffee", "rocket", "camera"]
    ids = []
    for i in range(1, n + 1):
        image_id = f"ILSVRC2012_val_{i:08d}"
        (root / f"{image_id}.JPEG").write_bytes(encode(sample_photo(names[i % len(names)])))
        ids.append(image_id)
    return ids


@pytest.mark.slow  # a pipeline run on Ray per layout
@pytest.mark.parametrize("layout", ["kaggle", "devkit", "unlabeled"])
def test_flat_layouts_end_to_end(tmp_path: Path, ray_local: None, layout: str) -> None:
    shared = SHARED_DATA
    truth = (shared / "derived" / "val_ground_truth.csv").read_text().splitlines()[1:]
    ids = _flat_folder(tmp_path / "val", 4)
    expected_labels = {row.split(",")[0][:-5]: int(row.split(",")[1]) for row in truth[:4]}
    if layout == "kaggle":
        lines = ["ImageId,PredictionString"] + [
            f"{row.split(',')[0][:-5]},{row.split(',')[2]} 1 2 3 4" for row in truth[:4]
        ]
        (tmp_path / "val" / "LOC_val_solution.csv").write_text("\n".join(lines) + "\n")
    elif layout == "devkit":
        gt = (shared / "ilsvrc2012-devkit" / "ILSVRC2012_validation_ground_truth.txt").read_text()
        (tmp_path / "val" / "ILSVRC2012_validation_ground_truth.txt").write_text(gt)
    cfg = build_config(
        {
            "data": {"source": str(tmp_path / "val"), "layout": "auto"},
            "model": {"name": "resnet18", "weights": "random"},
            "predict": {"embeddings": False},
            "explain": {"enabled": False},
            "output": {"root": str(tmp_path / "out"), "run_id": layout},
        }
    )
    run_audit(cfg)
    run = str(tmp_path / "out" / layout)
    assert read_manifest(run)["data"]["layout"] == layout
    preds = read_table(run, "predictions")
    assert sorted(preds.column("image_id").to_pylist()) == ids
    assert preds.column("embedding").null_count == len(ids)
    got = dict(
        zip(preds.column("image_id").to_pylist(), preds.column("label").to_pylist(), strict=True)
    )
    if layout == "unlabeled":
        assert set(got.values()) == {None}
        assert preds.column("correct_top1").null_count == len(ids)
        assert preds.column("loss").null_count == len(ids)
        metrics = read_table(run, "metrics").to_pylist()
        assert not [m for m in metrics if m["name"] in ("top1_error", "adv_top1_accuracy")]
        hist = [m for m in metrics if m["name"].startswith("steps_to_flip_")]
        assert sum(m["count"] for m in hist) == len(ids)  # attacked against their prediction
        adversarial = read_table(run, "adversarial")
        assert adversarial.column("label").null_count == len(ids)
        assert 0 not in adversarial.column("steps_to_flip").to_pylist()
    else:
        assert got == expected_labels
        assert pc.sum(preds.column("loss").is_null()).as_py() == 0


def test_decode_batch_turns_vanished_file_into_read_error(tmp_path: Path) -> None:
    good = tmp_path / "a.JPEG"
    good.write_bytes(encode(sample_photo("rocket")))
    batch = {
        "image_id": np.array(["a", "gone"], dtype=object),
        "uri": np.array([str(good), str(tmp_path / "gone.JPEG")], dtype=object),
        "label": np.array([1, 2]),
    }
    out = decode_batch(batch, max_pixels=10**8)
    assert list(out["error"][:1]) == [""] and out["stage"][1] == "read"
    assert out["image"].shape == (2, 224, 224, 3) and out["image"][0].any()


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ('{"run_id": "r1", "state": "succeeded"}', "already finished"),
        ('{"run_id": "r1", "state": "running"}', "cannot be resumed"),  # not this version's
    ],
)
def test_existing_run_refused_before_any_work(
    tmp_path: Path, ray_local: None, manifest: str, message: str
) -> None:
    root = tmp_path / "out"
    (root / "r1").mkdir(parents=True)
    (root / "r1" / "manifest.json").write_text(manifest)
    cfg = build_config(
        {"data": {"source": str(tmp_path / "nope")}, "output": {"root": str(root), "run_id": "r1"}}
    )
    # the data folder does not exist either: the run must stop at the run check, before listing
    with pytest.raises(ConfigError, match=message):
        run_audit(cfg)


def test_demo_source_needs_demo_model(tmp_path: Path, ray_local: None) -> None:
    cfg = build_config(
        {"model": {"name": "resnet18", "weights": "random"}, "output": {"root": str(tmp_path)}}
    )
    with pytest.raises(ConfigError, match="demo_digits"):
        run_audit(cfg)


def test_image_bytes_roundtrip_helper() -> None:
    # guards the fixture itself: encode() really produces the format asked for
    with Image.open(io.BytesIO(encode(sample_photo("camera"), "PNG"))) as img:
        assert img.format == "PNG"


@pytest.mark.slow  # a pipeline run on Ray
def test_kept_adversarial_images_and_stored_flips(
    tmp_path: Path, ray_local: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUDIT_CACHE_DIR", str(tmp_path / "cache"))
    cfg = build_config(
        {
            "data": {"limit": 24},
            "attack": {"keep_images": True, "eps_step": 0.002},
            "explain": {"enabled": False},
            "output": {"root": str(tmp_path / "out"), "run_id": "keep"},
        }
    )
    run_audit(cfg)
    run = str(tmp_path / "out" / "keep")
    preds = {r["image_id"]: r for r in read_table(run, "predictions").to_pylist()}
    adv = read_table(run, "adversarial").to_pylist()
    assert sorted(r["image_id"] for r in adv) == sorted(preds)
    model = load_model(cfg.model).module
    for r in adv:
        with Image.open(io.BytesIO(r["image_png"])) as img:
            assert img.format == "PNG" and img.size == (224, 224) and img.mode == "RGB"
            stored = np.asarray(img)
        x = torch.from_numpy(stored).permute(2, 0, 1)[None].float() / 255.0
        with torch.no_grad():
            again = int(model(x).argmax(1))
        assert r["stored_flips"] == (again != r["target"])
        clean = np.asarray(
            Image.open(preds[r["image_id"]]["uri"].removeprefix("file://")).convert("RGB")
        )
        steps = r["steps_to_flip"]
        if steps is not None:  # the stored image is the rounded first flipped iterate
            bound = steps * 0.002 + 0.5 / 255 + 1e-6
            assert r["linf"] <= steps * 0.002 + 1e-6
            assert r["target"] == r["label"]
            assert np.abs(stored.astype(int) - _crop(clean).astype(int)).max() / 255 <= bound
    assert any(r["steps_to_flip"] not in (None, 0) for r in adv)


def _crop(img: np.ndarray) -> np.ndarray:
    from audit.data.decode import eval_crop

    return eval_crop(Image.fromarray(img))


@pytest.mark.parametrize(
    "which",
    [
        pytest.param("per_class", marks=pytest.mark.slow),  # LIME on 20 images
        "classes",
        pytest.param("all", marks=pytest.mark.slow),  # LIME on every image
        "misclassified",
        pytest.param("flipped", marks=pytest.mark.slow),  # LIME, clean and adversarial
    ],
)
def test_explain_which_images(
    which: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, demo_cache: str
) -> None:
    """explain.which picks exactly the images its rule says, checked row by row."""
    import json

    from audit.data.demo import ensure_demo_dataset
    from audit.data.layouts import list_inputs
    from audit.model_actor import ModelActor
    from audit.run import explain_flags

    monkeypatch.setenv("AUDIT_CACHE_DIR", demo_cache)  # the session's rendered demo set
    cfg = build_config(
        {
            "data": {"source": ensure_demo_dataset(), "layout": "imagefolder", "per_class": 3},
            "explain": {"which": which, "per_class": 2, "classes": ["digit_3"], "n_samples": 40},
        }
    )
    loaded = load_model(cfg.model)
    listing = list_inputs(cfg.data, loaded.classes)
    flags = explain_flags(cfg, listing, loaded)
    records = listing.records
    if which == "per_class":  # the 2 of each class with the smallest seeded draw
        from audit.run.plan import explain_draw

        def rank(r: Any) -> int:
            mine = explain_draw(cfg.explain.seed, r.image_id)
            return sum(
                1
                for q in records
                if q.label == r.label and explain_draw(cfg.explain.seed, q.image_id) < mine
            )

        assert flags == [rank(r) < 2 for r in records]
    elif which == "classes":
        assert flags == [r.label == 3 for r in records]
    else:
        assert all(flags)
    batch = decode_batch(
        {
            "image_id": np.array([r.image_id for r in records], dtype=object),
            "uri": np.array([r.uri for r in records], dtype=object),
            "label": np.array([r.label for r in records]),
            "explain": np.array(flags),
        },
        max_pixels=10**8,
        segmentation="slic",
    )
    actor = ModelActor(
        loaded.module,
        len(loaded.classes),
        loaded.embedding_dim,
        "cpu",
        sections={"attack": cfg.attack, "explain": cfg.explain},
    )
    out = actor.run_batch(batch)
    explained = 0
    for i, r in enumerate(records):
        variants = [e["variant"] for e in json.loads(out["explanations"][i] or "[]")]
        wrong = out["top5_classes"][i][0] != r.label
        flipped = out["steps_to_flip"][i] >= 1
        chosen = flags[i] and {"misclassified": wrong, "flipped": flipped}.get(which, True)
        expected = (["clean"] + (["adversarial"] if flipped else [])) if chosen else []
        assert variants == expected, (which, r.image_id)
        explained += bool(variants)
    if which != "misclassified":  # the demo model gets almost everything right
        assert explained > 0


@pytest.mark.slow  # a pipeline run on Ray
def test_demo_bytes_travel_with_the_rows(
    tmp_path: Path, ray_local: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The demo set is rendered into the driver's cache, which a cluster's other nodes do not
    # have: its bytes must travel with the rows. Moving the folder away as soon as the rows are
    # built leaves the decode tasks nothing to read from the URIs.
    from audit.run import RunPlan, graph

    monkeypatch.setenv("AUDIT_CACHE_DIR", str(tmp_path / "cache"))
    original = graph.input_rows
    moved: list[Path] = []

    def rows_then_move(plan: RunPlan, committed: set[int]) -> list:
        items = original(plan, committed)
        folder = Path(str(plan.cfg.data.source))
        folder.rename(folder.with_name(folder.name + ".away"))
        moved.append(folder)
        return items

    monkeypatch.setattr(graph, "input_rows", rows_then_move)
    cfg = build_config(
        {
            "data": {"limit": 40},
            "attack": {"enabled": False},
            "explain": {"enabled": False},
            "output": {"root": str(tmp_path / "out"), "run_id": "away"},
        }
    )
    run_audit(cfg)
    run = str(tmp_path / "out" / "away")
    assert moved and not moved[0].exists()
    assert read_table(run, "errors").num_rows == 0
    preds = read_table(run, "predictions")
    assert preds.num_rows == 40
    assert all(u.startswith(moved[0].as_uri()) for u in preds.column("uri").to_pylist())


def test_unknown_explain_class_stops_before_the_run_folder_is_touched(
    tmp_path: Path, ray_local: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # with output.overwrite=true a late check would already have deleted the earlier run
    monkeypatch.setenv("AUDIT_CACHE_DIR", str(tmp_path / "cache"))
    run = tmp_path / "out" / "r1"
    run.mkdir(parents=True)
    (run / "precious.txt").write_text("keep me")
    cfg = build_config(
        {
            "explain": {"which": "classes", "classes": ["digit_10"]},
            "output": {"root": str(tmp_path / "out"), "run_id": "r1", "overwrite": True},
        }
    )
    with pytest.raises(ConfigError, match=r"'explain\.classes' field lists 'digit_10'"):
        run_audit(cfg)
    assert sorted(p.name for p in run.iterdir()) == ["precious.txt"]


@pytest.mark.slow  # a pipeline run on Ray (resnet18)
def test_a_file_listed_twice_is_one_input(tmp_path: Path, ray_local: None) -> None:
    # it used to give two rows under one key, and the run failed after the whole pass
    paths = []
    for name in ("astronaut", "coffee"):
        path = tmp_path / "in" / f"{name}.JPEG"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(encode(sample_photo(name)))
        paths.append(str(path))
    cfg = build_config(
        {
            "data": {"source": [paths[0], paths[1], Path(paths[0]).as_uri()]},
            "model": {"name": "demo_digits"},
            "attack": {"enabled": False},
            "explain": {"enabled": False},
            "criticism": {"enabled": False},
            "output": {"root": str(tmp_path / "out"), "run_id": "twice", "shard_size": 2},
        }
    )
    result = run_audit(cfg)
    assert result.manifest["state"] == "succeeded"
    preds = read_table(result.url, "predictions").column("image_id").to_pylist()
    assert sorted(preds) == ["astronaut", "coffee"]
    assert read_table(result.url, "errors").num_rows == 0
