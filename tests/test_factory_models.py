"""A user's own model through ``model.factory`` end to end: ``audit-cli run`` from the folder
that holds it, the report and a human-study export of that run, and the same model as a Ray job
on a real token-auth cluster (``--working-dir`` ships the module).

The model (tests/factory_models/my_digits.py) is the demo ConvNet with the shipped weights in a
class of the user's own, registered nowhere; its classes come from a class-list file with names
of its own (tests/factory_models/digit_names.txt), so every name the run, the report and the
export show must come from that file.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from cluster_fixtures import LocalCluster, jobs_cli
from conftest import AUDIT_CLI
from typer.testing import CliRunner

from audit.cli import app
from audit.data.decode import decode_image
from audit.data.demo import ensure_demo_dataset
from audit.models.weights import state_digest
from audit.store import read_manifest, read_table

FACTORY_DIR = Path(__file__).parent / "factory_models"
MEAN = STD = (0.5, 0.5, 0.5)
PER_CLASS = 5
MODEL_SETS = [
    "--set", "model.factory=my_digits:build",
    "--set", "model.classes=digit_names.txt",
    "--set", "model.preprocess.mean=[0.5,0.5,0.5]",
    "--set", "model.preprocess.std=[0.5,0.5,0.5]",
]  # fmt: skip
# small limits: 50 images; LIME on one image a class (and its adversarial image), 50 samples,
# on slic super-pixels (quickshift takes ~10x longer)
FAST_SETS = [
    "--set", f"data.per_class={PER_CLASS}",
    "--set", "explain.per_class=1",
    "--set", "explain.n_samples=50",
    "--set", "explain.segmentation=slic",
    "--set", "criticism.n_prototypes=2",
    "--set", "criticism.n_criticisms=2",
]  # fmt: skip

runner = CliRunner()


def class_list() -> list[tuple[str, str]]:
    """(class id, name) per output index, read straight from the class-list file."""
    rows = []
    for line in (FACTORY_DIR / "digit_names.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            class_id, name = line.split("\t")
            rows.append((class_id, name))
    return rows


def user_model() -> torch.nn.Module:
    """The factory's model, imported from its file (the test process's path stays as it is)."""
    spec = importlib.util.spec_from_file_location("user_my_digits", FACTORY_DIR / "my_digits.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net: torch.nn.Module = module.build()
    return net.eval()


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plain copy of the demo set's class folders (``digit_0`` .. ``digit_9``), so that the
    run reads an ordinary image folder and not the reserved ``demo`` source."""
    demo = Path(ensure_demo_dataset(str(tmp_path_factory.mktemp("cache"))))
    folder = tmp_path_factory.mktemp("digits")
    for class_id, _ in class_list():
        shutil.copytree(demo / class_id, folder / class_id)
    return folder


class Ref(NamedTuple):
    """One image's label (its folder's index in the class list) and the plain loop's top 5."""

    label: int
    classes: list[int]
    probs: list[float]


@pytest.fixture(scope="module")
def reference(digits: Path) -> dict[str, Ref]:
    """image_id -> :class:`Ref` from a plain torch loop: the same model,
    ``decode_image`` with the same transform, then ``(x / 255 - mean) / std``, one image at a
    time. Only the first ``PER_CLASS`` images of each class (by image id), as the runs take."""
    from audit.models.transform import EvalTransform

    transform = EvalTransform(resize=(256,), crop=(224, 224), mean=MEAN, std=STD)
    net = user_model()
    mean = torch.tensor(MEAN).view(3, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1)
    out = {}
    with torch.inference_mode():
        for label, (class_id, _) in enumerate(class_list()):
            for path in sorted((digits / class_id).iterdir(), key=lambda p: p.stem)[:PER_CLASS]:
                crop = decode_image(path.read_bytes(), 10**8, transform)
                x = torch.from_numpy(crop).permute(2, 0, 1).float() / 255.0
                probs = torch.softmax(net(((x - mean) / std)[None]), dim=1)[0]
                p, c = probs.topk(5)
                out[path.stem] = Ref(label, c.tolist(), p.tolist())
    assert len(out) == 10 * PER_CLASS
    return out


def check_predictions(run: str, reference: dict[str, Ref]) -> None:
    """The run's predictions are the plain loop's: the same top-5 classes in the same order,
    the same probabilities (to float tolerance)."""
    preds = read_table(run, "predictions").to_pylist()
    assert sorted(r["image_id"] for r in preds) == sorted(reference)
    for r in preds:
        want = reference[r["image_id"]]
        assert r["label"] == want.label, r["image_id"]
        assert r["top5_classes"][0] == want.classes[0], r["image_id"]
        assert list(r["top5_classes"]) == want.classes, r["image_id"]
        np.testing.assert_allclose(r["top5_probs"], want.probs, rtol=1e-4, atol=1e-6)


def check_classes_table(run: str) -> None:
    rows = read_table(run, "classes").sort_by("index").to_pylist()
    assert [(r["index"], r["class_id"], r["name"]) for r in rows] == [
        (i, cid, name) for i, (cid, name) in enumerate(class_list())
    ]


def clean_env() -> dict[str, str]:
    """This environment without a Ray address (the run starts its own local Ray) and without
    a path that would find the factory module other than through the working directory."""
    drop = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "PYTHONPATH")
    return {k: v for k, v in os.environ.items() if k not in drop}


@pytest.mark.slow  # audit-cli run, report and human export end to end
@pytest.mark.timeout(600)  # end to end; a shared 2-core machine can be slow
def test_factory_model_runs_reports_and_exports(
    digits: Path, reference: dict[str, Ref], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            AUDIT_CLI, "run", "--no-progress", "--set", f"data.source={digits}",
            *MODEL_SETS, *FAST_SETS, "--output", str(out), "--run-id", "mine",
        ],
        cwd=FACTORY_DIR, env=clean_env(), capture_output=True, text=True, timeout=540,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "run mine: succeeded" in proc.stdout
    run = str(out / "mine")

    manifest = read_manifest(run)
    model = manifest["model"]
    assert model["source"] == "factory" and model["name"] == "my_digits.build"
    assert re.fullmatch(r"[0-9a-f]{64}", model["weights_sha256"])
    assert model["weights_sha256"] == state_digest(user_model())  # what the factory returned
    assert model["classes"] == "digit_names" and model["num_classes"] == 10
    assert model["transform"] == {
        "resize": [256], "crop": [224, 224], "interpolation": "bilinear",
        "mean": list(MEAN), "std": list(STD), "resize_mode": "shorter",
    }  # fmt: skip
    assert "mean (0.5, 0.5, 0.5)" in model["transform_text"]
    check_predictions(run, reference)
    check_classes_table(run)
    assert read_table(run, "errors").num_rows == 0
    # the shipped demo weights: the first 5 digits of each class are mostly right
    top1_error = manifest["metrics"]["top1_error"]
    assert top1_error <= 0.2, manifest["metrics"]
    wrong = [i for i, ref in reference.items() if ref.classes[0] != ref.label]
    assert top1_error == pytest.approx(len(wrong) / len(reference))

    # the report names the classes as the class-list file does
    report = runner.invoke(app, ["report", run])
    assert report.exit_code == 0, report.output
    html = (out / "mine" / "report" / "index.html").read_text(encoding="utf-8")
    text = re.sub(r"data:[\w/+.-]+;base64,[\w+/=]+", "", html)  # not inside embedded images
    names = [name for _, name in class_list()]
    missing = [n for n in names if not re.search(rf"\b{n}\b", text)]
    assert not missing, f"class names not in the report: {missing}"

    # a human-study batch asks about the custom names, and its key maps back to the class ids
    export = runner.invoke(app, ["human", "export", run, "misclassified", "--batch", "b1"])
    assert export.exit_code == 0, export.output
    batch = out / "mine" / "human" / "batches" / "misclassified-b1"
    items = list(csv.DictReader(io.StringIO((batch / "mturk_input.csv").read_text())))
    key = {k["item_id"]: k for k in json.loads((batch / "key.json").read_text())}
    assert sorted(k["image_id"] for k in key.values()) == sorted(wrong) and items
    uris = {r["image_id"]: r["uri"] for r in read_table(run, "predictions").to_pylist()}
    ids = [cid for cid, _ in class_list()]
    for item in items:
        k = key[item["item_id"]]
        assert item["classes"] == names[k["predicted"]]
        assert f"'{names[k['predicted']]}'" in item["question"]
        assert k["predicted"] == reference[k["image_id"]].classes[0] != k["label"]
        assert f"/{ids[k['label']]}/" in uris[k["image_id"]]  # the label is the folder's class


def test_a_factory_that_cannot_be_imported_is_one_line_before_ray(tmp_path: Path) -> None:
    # a local Ray would put its session under $RAY_TMPDIR/ray (a short path: Ray's sockets)
    ray_tmp = Path(tempfile.mkdtemp(prefix="fm-ray-", dir="/tmp"))
    try:
        t0 = time.monotonic()
        proc = subprocess.run(
            [
                AUDIT_CLI, "run", "--no-progress", "--set", f"data.source={tmp_path}",
                "--set", "model.factory=nope_module:build", "--output", str(tmp_path / "out"),
            ],
            cwd=FACTORY_DIR, env={**clean_env(), "RAY_TMPDIR": str(ray_tmp)},
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        seconds = time.monotonic() - t0
        assert proc.returncode == 1
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith("error: The 'model.factory' field names 'nope_module:build'")
        assert "No module named 'nope_module'" in lines[0]
        assert not list(ray_tmp.iterdir())  # Ray never started
        assert not (tmp_path / "out").exists()
        assert seconds < 120
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


# --- the same model as a Ray job ---------------------------------------------------------------


@pytest.mark.slow  # a Ray job
@pytest.mark.timeout(900)  # a cluster start and a job; a shared 2-core machine can be slow
def test_factory_model_as_a_ray_job(
    jobs_cluster: LocalCluster,
    digits: Path,
    reference: dict[str, Ref],
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    # submitted from elsewhere: only the job's working dir holds my_digits.py
    result = jobs_cli(
        jobs_cluster,
        "submit", "--working-dir", str(FACTORY_DIR),
        "--set", f"data.source={digits}", *MODEL_SETS, *FAST_SETS,
        "--set", "explain.enabled=false", "--set", "criticism.enabled=false",
        "--run-id", "fm-job", "-o", str(out), "--num-cpus", "0", "--wait", "--timeout", "600",
    )  # fmt: skip
    if result.exit_code != 0:  # say why: the job's own error is in its driver log
        logs = jobs_cli(jobs_cluster, "logs", "fm-job").output
        raise AssertionError(f"{result.output}\n--- job logs ---\n{logs[-3000:]}")
    assert "job audit-fm-job: SUCCEEDED" in result.output, result.output
    run = str(out / "fm-job")
    manifest = read_manifest(run)
    assert manifest["state"] == "succeeded"
    assert manifest["model"]["source"] == "factory"
    assert manifest["model"]["name"] == "my_digits.build"
    assert manifest["tables"]["predictions"]["rows"] == 10 * PER_CLASS
    assert read_table(run, "predictions").num_rows == 10 * PER_CLASS
    check_predictions(run, reference)  # the workers ran the user's model
    check_classes_table(run)
