"""The model registry, weight loading and the AuditModel wrapper (random weights, no downloads)."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from importlib import resources

import fsspec
import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torchvision.models import ResNet18_Weights

from audit import models
from audit.config import DEFAULT_MAX_PIXELS, ConfigError, ModelConfig
from audit.data.classes import imagenet_classes
from audit.data.decode import IMAGENET_MEAN, IMAGENET_STD, decode_image
from audit.data.demo import DIGIT_CLASSES, ensure_demo_dataset
from audit.models import (
    AuditModel,
    EvalTransform,
    check_model_config,
    find_classifier_layer,
    list_models,
    load_model,
    register_model,
)
from audit.models.demo_net import DEMO_MEAN, DEMO_STD

RESNET18_FILE = "resnet18-f37072fd.pth"


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """A private copy of the code-registered models, so registrations made by a test do not
    leak."""
    from audit.models.demo import REGISTERED

    copy = dict(REGISTERED.models)
    monkeypatch.setattr(REGISTERED, "models", copy)
    yield copy


@pytest.fixture
def torch_home(monkeypatch: pytest.MonkeyPatch, tmp_path) -> str:
    """An empty torch cache, and a torch hub that fails loudly if asked to download."""
    home = str(tmp_path / "torch-home")
    monkeypatch.setenv("TORCH_HOME", home)

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch hub was asked to download weights")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return home


def _tiny(num_classes: int) -> nn.Module:
    return nn.Sequential(nn.AvgPool2d(8), nn.Flatten(), nn.Linear(3 * 4 * 4, num_classes))


def _inputs(n: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _random(name: str, seed: int = 0) -> models.LoadedModel:
    return load_model(ModelConfig(name=name, weights="random", seed=seed))


def test_register_model_then_duplicates_raise(registry: dict) -> None:
    small = EvalTransform(resize=(32,), crop=(32, 32), mean=DEMO_MEAN, std=DEMO_STD)
    register_model("tiny_test", classes=lambda: DIGIT_CLASSES, transform=small)(_tiny)
    assert "tiny_test" in list_models()
    loaded = _random("tiny_test")
    assert loaded.transform == small and loaded.source == "registered"
    assert loaded.classes is DIGIT_CLASSES
    assert loaded.embedding_dim == 48
    assert loaded.module(_inputs(size=32)).shape == (2, 10)
    for taken in ("tiny_test", "demo_digits", "resnet18"):
        with pytest.raises(ValueError, match=taken):
            register_model(taken, classes=lambda: DIGIT_CLASSES)(_tiny)
    assert registry["tiny_test"].builder is _tiny


def test_registered_model_without_default_weights(registry: dict) -> None:
    register_model("tiny_test", classes=lambda: DIGIT_CLASSES)(_tiny)
    with pytest.raises(ConfigError, match="no default weights"):
        check_model_config(ModelConfig(name="tiny_test"))


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ConfigError) as err:
        check_model_config(ModelConfig(name="resnet19", weights="random"))
    msg = str(err.value)
    assert "\n" not in msg
    assert "'model.name'" in msg
    assert "did you mean 'resnet18'" in msg or "or 'resnet18'" in msg
    assert f"{len(list_models())} models are available ('audit-cli models' lists them)" in msg
    with pytest.raises(ConfigError, match="resnet19"):
        load_model(ModelConfig(name="resnet19", weights="random"))


def test_list_models() -> None:
    names = list_models()
    for name in ("resnet18", "resnet101", "densenet121", "densenet161", "demo_digits"):
        assert name in names
    assert names == sorted(set(names))
    tv = set(torchvision.models.list_models(module=torchvision.models))
    assert tv - set(names) == {"squeezenet1_0", "squeezenet1_1"}
    timm_names = [n for n in names if n.startswith("timm/")]
    assert "timm/resnet18" in timm_names and len(timm_names) > 500
    assert list_models("resnet1*") == ["resnet101", "resnet152", "resnet18"]
    assert list_models("TIMM/CONVNEXT_TINY") == ["timm/convnext_tiny"]


@pytest.mark.parametrize("name", sorted(models.EXCLUDED_TORCHVISION))
def test_excluded_models_have_no_linear_layer(name: str) -> None:
    with torch.device("meta"):
        net = torchvision.models.get_model(name)
    with pytest.raises(ValueError, match=r"no nn\.Linear"):
        AuditModel(net, IMAGENET_MEAN, IMAGENET_STD)


@pytest.mark.filterwarnings("ignore:The default weight initialization:FutureWarning")
@pytest.mark.parametrize(
    ("name", "layer", "dim"),
    [
        ("alexnet", "classifier.6", 4096),
        ("convnext_tiny", "classifier.2", 768),
        ("densenet161", "classifier", 2208),
        ("efficientnet_b0", "classifier.1", 1280),
        ("googlenet", "fc", 1024),
        ("inception_v3", "fc", 2048),
        ("maxvit_t", "classifier.5", 512),
        ("mobilenet_v3_small", "classifier.3", 1024),
        ("resnet101", "fc", 2048),
        ("swin_t", "head", 768),
        ("vgg11", "classifier.6", 4096),
        ("vit_b_16", "heads.head", 768),
    ],
)
def test_classifier_layer_is_the_last_linear(name: str, layer: str, dim: int) -> None:
    with torch.device("meta"):
        net = torchvision.models.get_model(name)
    found, head = find_classifier_layer(net)
    assert found == layer
    assert (head.in_features, head.out_features) == (dim, 1000)


def test_random_weights_are_seeded_and_leave_global_rng_alone() -> None:
    a = _random("resnet18", seed=0).module.state_dict()
    b = _random("resnet18", seed=0).module.state_dict()
    c = _random("resnet18", seed=1).module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["net.fc.weight"], c["net.fc.weight"])
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _random("demo_digits", seed=5)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize(
    ("name", "head", "dim"),
    [
        ("resnet18", "fc", 512),
        # a DenseNet build and forward: about 15 s on 2 cores
        pytest.param("densenet121", "classifier", 1024, marks=pytest.mark.slow),
    ],
)
def test_forward_with_embedding(name: str, head: str, dim: int) -> None:
    loaded = _random(name, seed=2)
    assert loaded.classes is imagenet_classes()
    assert loaded.weights == "random (seed=2)"
    assert loaded.embedding_dim == dim
    assert not loaded.module.training
    assert not any(p.requires_grad for p in loaded.module.parameters())
    x = _inputs(n=3)
    with torch.no_grad():
        logits, emb = loaded.module.forward_with_embedding(x)
        plain = loaded.module(x)
    assert logits.shape == (3, 1000)
    assert emb.shape == (3, dim)
    linear = getattr(loaded.module.net, head)
    torch.testing.assert_close(emb @ linear.weight.T + linear.bias, logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(plain, logits)


def test_normalisation_happens_inside() -> None:
    loaded = _random("resnet18", seed=4)
    raw = torchvision.models.resnet18()
    raw.load_state_dict(loaded.module.net.state_dict())
    raw.eval()
    x = _inputs()
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        ours = loaded.module(x)
        torch.testing.assert_close(ours, raw((x - mean) / std), rtol=1e-4, atol=1e-4)
        assert not torch.allclose(ours, raw(x), atol=1e-3)


def test_demo_model_uses_its_own_normalisation() -> None:
    module = _random("demo_digits").module
    assert module.mean.flatten().tolist() == list(DEMO_MEAN)
    assert module.std.flatten().tolist() == list(DEMO_STD)


def test_forward_rejects_wrong_shape() -> None:
    module = _random("demo_digits").module
    with pytest.raises(ValueError, match=r"\(n, 3, H, W\)"):
        module(torch.rand(2, 64, 64))
    with pytest.raises(ValueError, match="std > 0"):
        AuditModel(_tiny(10), (0.5, 0.5, 0.5), (0.5, 0.0, 0.5))


def test_state_dict_path_and_url_round_trip(tmp_path) -> None:
    src = _random("resnet18", seed=3)
    state = src.module.net.state_dict()
    path = str(tmp_path / "r18.pt")
    torch.save(state, path)
    url = "memory://audit-test-models/r18.pt"
    with fsspec.open(url, "wb") as f:
        torch.save(state, f)
    x = _inputs()
    with torch.no_grad():
        expected = src.module(x)
        for weights in (path, url):
            loaded = load_model(ModelConfig(name="resnet18", weights=weights))
            assert loaded.weights == weights
            assert torch.equal(loaded.module(x), expected)
    fsspec.filesystem("memory").rm("/audit-test-models", recursive=True)


def test_checkpoint_wrappers_are_unwrapped(tmp_path) -> None:
    src = _random("demo_digits", seed=6)
    wrapped = {"state_dict": {f"module.{k}": v for k, v in src.module.net.state_dict().items()}}
    path = str(tmp_path / "ckpt.pt")
    torch.save(wrapped, path)
    loaded = load_model(ModelConfig(name="demo_digits", weights=path))
    x = _inputs(size=224)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), src.module(x))


def test_mismatched_state_dict_is_one_line_error(tmp_path) -> None:
    path = str(tmp_path / "demo.pt")
    torch.save(_random("demo_digits").module.net.state_dict(), path)
    with pytest.raises(ConfigError) as err:
        load_model(ModelConfig(name="resnet18", weights=path))
    msg = str(err.value)
    assert "\n" not in msg
    assert "does not fit model 'resnet18'" in msg
    assert "missing keys" in msg and "unexpected keys" in msg


def test_unreadable_weights_files(tmp_path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="weights_only=True"):
        load_model(ModelConfig(name="demo_digits", weights=str(junk)))
    listed = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], str(listed))
    with pytest.raises(ConfigError, match="must hold a state dict"):
        load_model(ModelConfig(name="demo_digits", weights=str(listed)))


@pytest.mark.parametrize("where", ["local", "memory"])
def test_missing_weights_path(where: str, tmp_path) -> None:
    uri = str(tmp_path / "nope.pt") if where == "local" else "memory://audit-test-models/nope.pt"
    with pytest.raises(ConfigError) as err:
        check_model_config(ModelConfig(name="resnet18", weights=uri))
    assert "'model.weights'" in str(err.value)
    assert "does not exist" in str(err.value)


def test_default_weights_missing_from_cache(torch_home: str) -> None:
    expected = os.path.join(torch_home, "hub", "checkpoints", RESNET18_FILE)
    for call in (check_model_config, load_model):
        with pytest.raises(ConfigError) as err:
            call(ModelConfig(name="resnet18"))
        msg = str(err.value)
        assert "\n" not in msg
        assert expected in msg
        assert "model.allow_download=true" in msg
        assert "model.weights=<path>" in msg


def test_default_weights_are_read_from_the_cache(torch_home: str) -> None:
    src = _random("resnet18", seed=7)
    path = os.path.join(torch_home, "hub", "checkpoints", RESNET18_FILE)
    os.makedirs(os.path.dirname(path))
    torch.save(src.module.net.state_dict(), path)
    check_model_config(ModelConfig(name="resnet18"))
    loaded = load_model(ModelConfig(name="resnet18"))
    assert loaded.weights == f"torchvision ResNet18_Weights.IMAGENET1K_V1 ({path})"
    with open(path, "rb") as f:
        assert loaded.weights_sha256 == hashlib.sha256(f.read()).hexdigest()
    x = _inputs()
    with torch.no_grad():
        assert torch.equal(loaded.module(x), src.module(x))


@pytest.mark.slow  # builds and saves a DenseNet-121: about 15 s on 2 cores
def test_default_densenet_weights_with_legacy_key_names(torch_home: str) -> None:
    """torchvision's DenseNet files use old key names (``norm.1``); its builder renames them."""
    src = _random("densenet121", seed=9)
    legacy = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))([12])\.(weight|bias|running_\w+)$")
    state = {
        legacy.sub(r"\1.\2.\3", k): v
        for k, v in src.module.net.state_dict().items()
        if not k.endswith("num_batches_tracked")  # absent from torchvision's old files
    }
    assert "features.denseblock1.denselayer1.norm.1.weight" in state
    weights = torchvision.models.get_model_weights("densenet121").DEFAULT
    path = os.path.join(torch_home, "hub", "checkpoints", os.path.basename(weights.url))
    os.makedirs(os.path.dirname(path))
    torch.save(state, path)
    loaded = load_model(ModelConfig(name="densenet121"))
    x = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), src.module(x))


def test_allow_download_goes_through_torch_hub(
    torch_home: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With allow_download, a missing file is fetched by torch hub into the cache (checking its
    hash), then read from there like a cached one."""
    src = _random("resnet18", seed=8)
    calls: list[tuple[str, str, object]] = []

    def fake_download(url: str, dst: str, hash_prefix: object = None, **kwargs: object) -> None:
        calls.append((url, dst, hash_prefix))
        torch.save(src.module.net.state_dict(), dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    loaded = load_model(ModelConfig(name="resnet18", allow_download=True))
    assert len(calls) == 1
    assert calls[0][0] == ResNet18_Weights.IMAGENET1K_V1.url
    assert calls[0][2] == "f37072fd"  # torch hub checks the file's sha256 prefix
    assert os.path.isfile(os.path.join(torch_home, "hub", "checkpoints", RESNET18_FILE))
    x = _inputs()
    with torch.no_grad():
        assert torch.equal(loaded.module(x), src.module(x))


def test_shipped_demo_weights_reach_95_percent(tmp_path) -> None:
    weights_file = resources.files("audit").joinpath("weights").joinpath("demo_digits.pt")
    assert weights_file.is_file()
    assert len(weights_file.read_bytes()) < 1_000_000
    loaded = load_model(ModelConfig())
    assert loaded.name == "demo_digits"
    assert loaded.weights == "package audit/weights/demo_digits.pt"
    assert loaded.weights_sha256 == hashlib.sha256(weights_file.read_bytes()).hexdigest()
    assert loaded.classes is DIGIT_CLASSES
    root = ensure_demo_dataset(str(tmp_path))
    crops, labels = [], []
    for class_id in DIGIT_CLASSES.ids:
        for name in sorted(os.listdir(os.path.join(root, class_id))):
            if name == "DEMO_val_99999999.JPEG":
                continue
            with open(os.path.join(root, class_id, name), "rb") as f:
                crops.append(decode_image(f.read(), DEFAULT_MAX_PIXELS))
            labels.append(DIGIT_CLASSES.index(class_id))
    assert len(crops) == 300
    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        logits, emb = loaded.module.forward_with_embedding(x)
    assert emb.shape == (300, loaded.embedding_dim)
    accuracy = float((logits.argmax(1) == torch.tensor(labels)).float().mean())
    assert accuracy >= 0.95
