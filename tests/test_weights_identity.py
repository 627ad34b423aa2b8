"""Weights are known by their bytes: a resumed run compares the sha256 of the weights it loads
with the one its manifest recorded, not the path they came from."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from conftest import encode, sample_photo

from audit.config import ConfigError, build_config
from audit.models.torchvision import cache_path
from audit.run import run_audit
from audit.store import read_manifest, read_table

MODEL = "mobilenet_v3_small"  # small and fast on CPU
QUICK = {
    "attack": {"enabled": False},
    "explain": {"enabled": False},
    "criticism": {"enabled": False},
    "predict": {"batch_size": 4},
}


def _photos(root: Path) -> str:
    """Four real photos in two ImageNet class folders."""
    for i, (wnid, name) in enumerate(
        [
            ("n01440764", "astronaut"),
            ("n01440764", "chelsea"),
            ("n01443537", "coffee"),
            ("n01443537", "rocket"),
        ]
    ):
        folder = root / wnid
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"ILSVRC2012_val_{i + 1:08d}.JPEG").write_bytes(encode(sample_photo(name)))
    return str(root)


def _config(data: str, out: Path, run_id: str, **model: Any) -> dict[str, Any]:
    return {
        "data": {"source": data},
        "model": {"name": MODEL, **model},
        "output": {"root": str(out), "run_id": run_id, "shard_size": 2},
        **QUICK,
    }


def _state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return torchvision.models.get_model(MODEL, weights=None).state_dict()


def _as_unfinished(run: Path) -> None:
    """Mark a finished run as an interrupted one: its rerun resumes."""
    m = json.loads((run / "manifest.json").read_text())
    m["state"] = "failed"
    (run / "manifest.json").write_text(json.dumps(m))


def _cache_file(home: Path) -> Path:
    weights = torchvision.models.get_model_weights(MODEL).DEFAULT
    old = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(home)
    try:
        return Path(cache_path(weights))
    finally:
        if old is None:
            os.environ.pop("TORCH_HOME")
        else:
            os.environ["TORCH_HOME"] = old


@pytest.mark.slow  # three pipeline runs on Ray (resnet18)
def test_same_weights_under_another_torch_home_resume_replaced_ones_do_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ray_local: None
) -> None:
    data = _photos(tmp_path / "val")
    first = _cache_file(tmp_path / "home-a")
    first.parent.mkdir(parents=True)
    torch.save(_state(0), first)
    digest = hashlib.sha256(first.read_bytes()).hexdigest()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home-a"))
    out = tmp_path / "out"
    run_audit(build_config(_config(data, out, "r")))
    m = read_manifest(str(out / "r"))
    assert m["model"]["weights_sha256"] == digest and m["model"]["weights_digest_of"] == "file"
    assert str(first) in m["model"]["weights"]
    expected = read_table(str(out / "r"), "predictions").sort_by("image_id")

    # the same file under another TORCH_HOME: another path, the same bytes -> resumes
    second = _cache_file(tmp_path / "home-b")
    second.parent.mkdir(parents=True)
    shutil.copyfile(first, second)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home-b"))
    _as_unfinished(out / "r")
    result = run_audit(build_config(_config(data, out, "r")))
    assert result.manifest["state"] == "succeeded"
    assert result.manifest["model"]["weights_sha256"] == digest
    assert len(result.manifest["attempts"]) == 1  # it resumed, it did not start over
    got = read_table(str(out / "r"), "predictions").sort_by("image_id")
    assert got.drop_columns(["run_id"]).equals(expected.drop_columns(["run_id"]))

    # other weights at that same path -> refused, naming the change
    torch.save(_state(1), second)
    _as_unfinished(out / "r")
    with pytest.raises(ConfigError, match=r"weights of run .* changed since it started") as err:
        run_audit(build_config(_config(data, out, "r")))
    assert digest[:12] in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow  # pipeline runs on Ray (resnet18)
def test_a_checkpoint_replaced_at_the_same_path_is_refused(tmp_path: Path, ray_local: None) -> None:
    data = _photos(tmp_path / "val")
    path = tmp_path / "ckpt.pth"
    torch.save(_state(0), path)
    out = tmp_path / "out"
    run_audit(build_config(_config(data, out, "c", weights=str(path))))
    assert read_manifest(str(out / "c"))["model"]["weights_sha256"] == (
        hashlib.sha256(path.read_bytes()).hexdigest()
    )
    torch.save(_state(2), path)  # fine-tuned again, saved over the old file
    _as_unfinished(out / "c")
    with pytest.raises(ConfigError, match=r"weights of run .* changed since it started"):
        run_audit(build_config(_config(data, out, "c", weights=str(path))))
    # a changed transform is refused too, even with the same weights: the crops would differ
    torch.save(_state(0), path)
    with pytest.raises(ConfigError, match=r"model\.preprocess changed"):
        run_audit(
            build_config(_config(data, out, "c", weights=str(path), preprocess={"resize": 240}))
        )
