"""Model sources: plugins through entry points, class-list files, embedding layers, the
``model.*`` config fields, ``audit-cli models`` and the shipped configs."""

from __future__ import annotations

import json
import logging
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from audit.cli import app
from audit.config import ConfigError, ModelConfig, PreprocessConfig, build_config, load_config
from audit.data.classes import read_class_list
from audit.models import (
    EvalTransform,
    check_model_config,
    find_entry,
    list_models,
    load_model,
    unregister_source,
)
from audit.models.registry import load_plugins

REPO = Path(__file__).resolve().parents[1]

PLUGIN = """
from torch import nn

from audit.data.classes import ClassIndex
from audit.models import Built, EvalTransform, ModelEntry, ModelSource, Weights
from audit.models.weights import state_digest

CLASSES = ClassIndex("colours", ("red", "green", "blue"), ("Red", "Green", "Blue"))


class TinyEntry(ModelEntry):
    def transform(self, cfg):
        return EvalTransform(resize=(40,), crop=(32, 32), interpolation="bicubic")

    def check(self, cfg):
        pass

    def build(self, cfg):
        net = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(12, 3))
        return Built(net, CLASSES, Weights("plugin", state_digest(net), "state_dict"))


class TinySource(ModelSource):
    name = "tinyzoo"
    prefix = "tinyzoo/"

    def names(self):
        return ["tinyzoo/rgb"]

    def entry(self, name):
        return TinyEntry(name, self.name) if name == "tinyzoo/rgb" else None


SOURCE = TinySource()
"""


def _install_plugin(root: Path, entry_points: str) -> None:
    """A package with entry points, found by importlib.metadata on sys.path (as pip would lay
    it out)."""
    (root / "tiny_plugin.py").write_text(PLUGIN)
    dist = root / "tiny_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent(entry_points))


def test_a_package_registers_a_source_through_entry_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _install_plugin(
        tmp_path,
        """\
        [imagenet_audit.models]
        tiny = tiny_plugin:SOURCE
        broken = tiny_plugin:NOT_THERE
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with caplog.at_level(logging.WARNING, logger="audit.models.registry"):
            load_plugins(again=True)
        assert "broken" in caplog.text and "not loaded" in caplog.text  # skipped, not fatal
        assert list_models("tinyzoo/*") == ["tinyzoo/rgb"]
        loaded = load_model(ModelConfig(name="tinyzoo/rgb", weights="default"))
        assert loaded.source == "tinyzoo" and loaded.classes.ids == ("red", "green", "blue")
        assert loaded.transform.crop_hw == (32, 32) and loaded.embedding_dim == 12
        result = CliRunner().invoke(app, ["models", "tinyzoo/*", "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == [
            {
                "name": "tinyzoo/rgb",
                "source": "tinyzoo",
                "weights_local": True,
                "transform": "resize 40 (shorter side, bicubic), centre crop 32x32",
            }
        ]
    finally:
        unregister_source("tinyzoo")
        sys.modules.pop("tiny_plugin", None)
    assert find_entry("tinyzoo/rgb") is None


def test_class_list_files(tmp_path: Path) -> None:
    f = tmp_path / "my_classes.txt"
    f.write_text("# my classes\ncat\tA cat\n\ndog, A dog\nbird\n")
    classes = read_class_list(str(f))
    assert classes.name == "my_classes"
    assert classes.ids == ("cat", "dog", "bird")
    assert classes.names == ("A cat", "A dog", "bird")
    (tmp_path / "dup.txt").write_text("cat\ncat\n")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    for name, message in (
        ("dup.txt", "not unique"),
        ("empty.txt", "lists no class"),
        ("missing.txt", "cannot be read"),
    ):
        with pytest.raises(ConfigError, match=message) as err:
            read_class_list(str(tmp_path / name))
        assert "'model.classes'" in str(err.value) and "\n" not in str(err.value)


def test_a_class_list_that_does_not_fit_the_model_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "ten.txt"
    f.write_text("\n".join(f"c{i}" for i in range(10)))
    with pytest.raises(ConfigError, match=r"gives \(1000,\) outputs .* has 10 classes"):
        load_model(ModelConfig(name="resnet18", weights="random", classes=str(f)))
    with pytest.raises(ConfigError, match="cannot be read"):
        check_model_config(ModelConfig(name="resnet18", weights="random", classes="nope.txt"))


def test_embedding_layer_takes_that_layers_output() -> None:
    loaded = load_model(ModelConfig(name="resnet18", weights="random", embedding_layer="layer4"))
    assert loaded.embedding_dim == 512 * 7 * 7
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        logits, emb = loaded.module.forward_with_embedding(x)
        net = loaded.module.net
        h = net.maxpool(net.relu(net.bn1(net.conv1(loaded.module.normalise(x)))))
        expected = net.layer4(net.layer3(net.layer2(net.layer1(h)))).flatten(1)
    torch.testing.assert_close(emb, expected)
    assert logits.shape == (2, 1000)
    with pytest.raises(ConfigError, match="no layer named 'nope'"):
        load_model(ModelConfig(name="resnet18", weights="random", embedding_layer="nope"))


def test_preprocess_overrides_and_their_validation() -> None:
    cfg = build_config(
        {"model": {"name": "resnet50", "weights": "random"}},
        ["model.preprocess.crop=[240, 200]", "model.preprocess.interpolation=bicubic"],
    )
    assert cfg.model.preprocess == PreprocessConfig(crop=(240, 200), interpolation="bicubic")
    loaded = load_model(cfg.model)
    assert loaded.transform == EvalTransform(
        resize=(232,), crop=(240, 200), interpolation="bicubic"
    )
    assert cfg.to_dict()["model"]["preprocess"]["crop"] == [240, 200]
    for override, message in (
        ("model.preprocess.crop=0", "model.preprocess.crop"),
        ("model.preprocess.interpolation=cubic", "model.preprocess.interpolation"),
        ("model.preprocess.std=[1, 0, 1]", "model.preprocess.std"),
        ("model.preprocess.mean=[0.5]", "model.preprocess.mean"),
        ("model.preprocess.sharpen=1", "Unknown field 'model.preprocess.sharpen'"),
        ("model.factory=no-colon", "model.factory"),
    ):
        with pytest.raises(ConfigError, match=message) as err:
            build_config({}, [override])
        assert "\n" not in str(err.value)


def test_a_factory_names_the_model_unless_a_name_is_given() -> None:
    assert build_config({}, ["model.factory=pkg.mod:build"]).model.name == "pkg.mod.build"
    named = build_config({}, ["model.factory=pkg.mod:build", "model.name=mine"])
    assert named.model.name == "mine"
    with pytest.raises(ConfigError, match="cannot be imported"):
        check_model_config(ModelConfig(name="x", factory="no_such_module_here:build"))


def test_torchvision_weights_names() -> None:
    for weights, resize in (("IMAGENET1K_V1", 256), ("ResNet50_Weights.IMAGENET1K_V2", 232)):
        entry = find_entry("resnet50")
        assert entry is not None
        assert entry.transform(ModelConfig(name="resnet50", weights=weights)).resize == (resize,)
    with pytest.raises(ConfigError, match="IMAGENET1K_V1, IMAGENET1K_V2"):
        check_model_config(ModelConfig(name="resnet50", weights="IMAGENET1K_V3"))


def test_models_command_filters_and_shows_transforms() -> None:
    result = CliRunner().invoke(app, ["models", "inception*"])
    assert result.exit_code == 0, result.output
    words = result.stdout.split()
    assert words[:3] == ["inception_v3", "torchvision", "local:"]
    assert words[3] in ("yes", "no")  # whether this machine's torch cache has the weights
    assert words[4:] == [
        *["resize", "342", "(shorter", "side,", "bilinear),", "centre", "crop", "299x299"],
    ]
    listed = json.loads(CliRunner().invoke(app, ["models", "--json", "--source", "demo"]).stdout)
    assert [r["name"] for r in listed] == ["demo_bias_patch", "demo_bias_stripes", "demo_digits"]


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_resolve(path: Path) -> None:
    cfg = load_config(path)
    entry = find_entry(cfg.model.name)
    assert entry is not None
    entry.transform(cfg.model)  # the weights they name exist for the architecture
    if path.name.startswith("imagenet-") and path.name != "imagenet-subset.yaml":
        assert cfg.model.weights == "IMAGENET1K_V1", "the paper's settings pin the original weights"


def test_feature_only_torchvision_weights_are_refused() -> None:
    with pytest.raises(ConfigError, match="no classifier") as err:
        check_model_config(ModelConfig(name="vgg16", weights="IMAGENET1K_FEATURES"))
    assert "\n" not in str(err.value)
