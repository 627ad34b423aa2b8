"""The timm source: transforms bit-identical to timm's, random and file weights through timm's
own loading path, default weights from a fake Hugging Face cache (no network, no downloads)."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import timm
import torch
from conftest import sample_photo
from PIL import Image

import audit.models.timm as timm_source
from audit import models
from audit.config import ConfigError, ModelConfig, PreprocessConfig
from audit.models import AuditModel, check_model_config, check_model_name, load_model, resolve
from audit.models.timm import (
    TimmEntry,
    TimmSource,
    hf_hub_cache,
    timm_data_config,
    transform_from_data_config,
)
from audit.models.transform import EvalTransform

REV = "0123456789abcdef0123456789abcdef01234567"
TINY = "test_resnet"  # 0.5M parameters, hf_hub_id timm/test_resnet.r160_in1k


# --- fixtures -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    """Real photos: square, landscape, portrait (rotated), an odd size, one below the crop."""
    chelsea = sample_photo("chelsea")  # 451 x 300
    coffee = sample_photo("coffee")  # 600 x 400
    return {
        "astronaut": sample_photo("astronaut"),  # 512 x 512
        "chelsea": chelsea,
        "portrait": chelsea.transpose(Image.Transpose.ROTATE_90),  # 300 x 451
        "odd": coffee.resize((333, 177), Image.Resampling.BILINEAR),
        "small": coffee.resize((97, 61), Image.Resampling.BILINEAR),
    }


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection (or to download from the Hub) fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    monkeypatch.setattr(timm.models._hub, "hf_hub_download", refuse)


@pytest.fixture
def hf_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_network: None) -> Path:
    """An empty Hugging Face hub cache in tmp_path, named by HF_HUB_CACHE."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def _put_in_cache(cache: Path, repo: str, filename: str, data: bytes) -> Path:
    """Lay a file out as huggingface_hub does: snapshots/<rev>/<file> and refs/main."""
    folder = cache / ("models--" + repo.replace("/", "--"))
    snapshot = folder / "snapshots" / REV
    snapshot.mkdir(parents=True, exist_ok=True)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(REV)
    path = snapshot / filename
    path.write_bytes(data)
    return path


def _random_state(name: str = TINY, seed: int = 1, **kwargs: Any) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    net = timm.create_model(name, pretrained=False, **kwargs)
    return {k: v.clone().contiguous() for k, v in net.state_dict().items()}


def _safetensors_bytes(state: dict[str, torch.Tensor], tmp_path: Path) -> bytes:
    path = tmp_path / "tmp.safetensors"
    safetensors.torch.save_file(state, str(path))
    data = path.read_bytes()
    path.unlink()
    return data


def _assert_state_equal(net: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    loaded = net.state_dict()
    assert set(loaded) == set(state)
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


def _timm_reference(name: str) -> Any:
    """timm's own eval transform for ``name``, resolved from a model built on the meta device
    (as timm's docs do: ``resolve_model_data_config(model)``)."""
    with torch.device("meta"):
        net = timm.create_model(name, pretrained=False)
    config = timm.data.resolve_model_data_config(net)
    return timm.data.create_transform(**config, is_training=False)


def _ours(transform: EvalTransform, img: Image.Image) -> torch.Tensor:
    crop = transform.apply(img)
    wrapper = AuditModel(torch.nn.Identity(), transform.mean, transform.std, models.Embedding())
    x = torch.from_numpy(crop).permute(2, 0, 1).float().div(255)
    return wrapper.normalise(x)


def _assert_same_pixels(transform: EvalTransform, reference: Any, photos: dict) -> None:
    for label, img in photos.items():
        want = reference(img)
        got = _ours(transform, img)
        assert got.shape == want.shape, label
        assert torch.equal(got, want), f"{label}: max diff {(got - want).abs().max()}"


# --- transforms ---------------------------------------------------------------------------
TRANSFORM_CASES = [
    ("resnet18.tv_in1k", "resize 256 (shorter side, bilinear), centre crop 224x224"),  # 0.875
    ("resnet18.a1_in1k", "resize 235 (shorter side, bicubic), centre crop 224x224"),  # 0.95
    ("test_mambaout", "resize 160 (shorter side, bicubic), centre crop 160x160"),  # 1.0
    ("test_vit", "resize 168 (shorter side, bicubic), centre crop 160x160, mean (0.5"),
    ("beit_base_patch16_384", "resize 384 (shorter side, bicubic), centre crop 384x384"),
    ("volo_d4_448", "resize 389 (shorter side, bicubic), centre crop 448x448"),  # 1.15: pads
    ("convnext_tiny.in12k_ft_in1k_384", "resize 384x384 (squash, bicubic), centre crop 384"),
]
"""(timm name, what its transform describes): crop_pct 0.875 bilinear, 0.95 bicubic, 1.0, a
non-224 size, 1.15 (the crop pads), squash."""


@pytest.mark.parametrize(
    ("name", "described"), TRANSFORM_CASES, ids=[name for name, _ in TRANSFORM_CASES]
)
def test_transform_matches_timm_bit_for_bit(name: str, described: str, photos: dict) -> None:
    transform = models.resolve_transform(ModelConfig(name=f"timm/{name}"))
    assert transform.describe().startswith(described)
    _assert_same_pixels(transform, _timm_reference(name), photos)


@pytest.mark.parametrize(
    "config",
    [
        # non-square input, centre crop: timm's ResizeKeepRatio
        {"input_size": (3, 192, 256), "crop_pct": 0.9, "interpolation": "bicubic"},
        {"input_size": (3, 256, 160), "crop_pct": 0.875, "interpolation": "bilinear"},
        {"input_size": (3, 224, 225), "crop_pct": 1.0, "interpolation": "lanczos"},
        # non-square squash
        {"input_size": (3, 200, 120), "crop_pct": 0.95, "crop_mode": "squash"},
        # crop_pct unset: timm takes 0.875
        {"input_size": (3, 96, 96), "crop_pct": None, "interpolation": "nearest"},
    ],
)
def test_transform_mapping_matches_timm_for_constructed_configs(
    config: dict[str, Any], photos: dict
) -> None:
    data = {"mean": (0.1, 0.2, 0.3), "std": (0.3, 0.2, 0.1), "crop_mode": "center", **config}
    reference = timm.data.create_transform(**data, is_training=False)
    transform = transform_from_data_config(data, "timm/constructed")
    assert transform.crop_hw == tuple(config["input_size"][1:])
    _assert_same_pixels(transform, reference, photos)


def test_transform_mapping_through_a_pretrained_cfg_overlay(photos: dict) -> None:
    """A non-square input size set the way a timm user sets it, on a model's config."""
    with torch.device("meta"):
        net = timm.create_model(
            TINY, pretrained_cfg_overlay={"input_size": (3, 176, 224), "crop_pct": 0.8}
        )
    data = timm.data.resolve_model_data_config(net)
    transform = transform_from_data_config(data, TINY)
    assert transform.resize_mode == "keep_ratio"
    assert transform.resize == (220, 280)
    _assert_same_pixels(transform, timm.data.create_transform(**data), photos)


def test_data_config_is_timms_resolution_of_the_pretrained_cfg() -> None:
    for name in ("resnet18", "resnet18.tv_in1k", "vit_base_patch16_sapiens2", "test_convnext"):
        with torch.device("meta"):
            net = timm.create_model(name, pretrained=False)
        assert timm_data_config(name) == timm.data.resolve_model_data_config(net), name


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"crop_mode": "border"}, "crop_mode 'border'"),
        ({"crop_border_pixels": 4}, "crop_border_pixels"),
        ({"interpolation": "random"}, "interpolation 'random'"),
        ({"input_size": (1, 224, 224)}, "3-channel"),
        ({"std": (0.5, 0.5)}, "makes no transform"),
    ],
)
def test_unsupported_data_configs_raise_one_line(change: dict[str, Any], match: str) -> None:
    data = {**timm_data_config("resnet18"), **change}
    with pytest.raises(ConfigError, match=match) as info:
        transform_from_data_config(data, "timm/resnet18")
    assert "\n" not in str(info.value)
    assert "timm/resnet18" in str(info.value)


def test_a_border_model_is_refused_with_its_name() -> None:
    with pytest.raises(ConfigError, match=r"timm/deepseek_vit_412m.*border"):
        check_model_config(ModelConfig(name="timm/deepseek_vit_412m", weights="random"))


def test_preprocess_overrides_apply_to_timm_transforms() -> None:
    base = models.resolve_transform(ModelConfig(name="timm/resnet18"))
    changed = models.resolve_transform(
        ModelConfig(name="timm/resnet18", preprocess=PreprocessConfig(resize=256, crop=200))
    )
    assert base.resize == (235,) and base.crop == (224, 224)
    assert changed.resize == (256,) and changed.crop == (200, 200)
    assert changed.interpolation == "bicubic"


# --- names ----------------------------------------------------------------------------------
def test_names_entries_and_tags() -> None:
    names = TimmSource().names()
    assert names == ["timm/" + n for n in timm.list_models()]
    assert "timm/resnet18" in models.list_models("timm/resnet1*")
    entry = resolve(ModelConfig(name="timm/resnet18.tv_in1k"))
    assert isinstance(entry, TimmEntry)
    assert entry.source == "timm" and entry.model_name == "resnet18.tv_in1k"
    assert entry.transform(ModelConfig(name=entry.name)).resize == (256,)
    assert TimmSource().entry("resnet18") is None  # the prefix is required
    assert "centre crop 224x224" in entry.describe()


@pytest.mark.parametrize(
    "name", ["timm/nonexistent_model", "timm/resnet18.no_such_tag", "timm/resnet18.", "timm/"]
)
def test_unknown_timm_names_raise(name: str) -> None:
    with pytest.raises(ConfigError, match=r"model\.name") as info:
        check_model_name(name)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError):
        resolve(ModelConfig(name=name))


def test_without_timm_the_source_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    caches = (timm_source._missing, timm_source.architectures, timm_source._architecture_set)
    for cache in caches:
        cache.cache_clear()
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    try:
        source = TimmSource()
        assert source.unavailable() == "timm is not installed (pip install 'imagenet-audit[timm]')"
        assert source.names() == []
        assert source.entry("timm/resnet18") is None
        with pytest.raises(ConfigError, match="timm is not installed"):
            check_model_name("timm/resnet18")
    finally:
        monkeypatch.undo()
        for cache in caches:
            cache.cache_clear()
    assert TimmSource().unavailable() is None


def test_module_imports_without_timm(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh copy of the module, imported while ``import timm`` fails."""
    monkeypatch.setitem(sys.modules, "timm", None)
    spec = importlib.util.spec_from_file_location("timm_source_copy", timm_source.__file__)
    assert spec is not None and spec.loader is not None
    copy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(copy)
    assert copy.TimmSource().names() == []
    assert "timm is not installed" in str(copy.TimmSource().unavailable())


# --- random weights ---------------------------------------------------------------------------
def test_random_resnet18_through_load_model(photos: dict) -> None:
    loaded = load_model(ModelConfig(name="timm/resnet18", weights="random", seed=3))
    assert loaded.source == "timm"
    assert loaded.weights == "random (seed=3)"
    assert loaded.weights_digest_of == "state_dict"
    assert loaded.embedding_dim == 512
    assert len(loaded.classes) == 1000 and loaded.classes.name == "imagenet"
    assert loaded.module.embedding.kind == "timm"
    assert loaded.manifest()["embedding"] == "timm forward_head(pre_logits=True)"
    # the transform is timm's
    _assert_same_pixels(loaded.transform, _timm_reference("resnet18"), photos)

    torch.manual_seed(3)
    reference = timm.create_model("resnet18", pretrained=False).eval()
    _assert_state_equal(loaded.module.net, reference.state_dict())

    x = torch.stack([_ours(loaded.transform, photos[k]) for k in ("chelsea", "portrait")])
    x01 = torch.stack(
        [
            torch.from_numpy(loaded.transform.apply(photos[k])).permute(2, 0, 1).float().div(255)
            for k in ("chelsea", "portrait")
        ]
    )
    with torch.inference_mode():
        logits, emb = loaded.module.forward_with_embedding(x01)
        want_logits = reference(x)
        want_emb = reference.forward_head(reference.forward_features(x), pre_logits=True)
        assert torch.equal(loaded.module(x01), want_logits)
    assert logits.shape == (2, 1000)
    assert torch.equal(logits, want_logits)
    assert torch.equal(emb, want_emb)


def test_random_digest_is_deterministic_per_seed() -> None:
    def digest(seed: int) -> str:
        return load_model(
            ModelConfig(name=f"timm/{TINY}", weights="random", seed=seed)
        ).weights_sha256

    assert digest(0) == digest(0)
    assert digest(0) != digest(1)


def test_a_tagged_name_builds_its_tag() -> None:
    loaded = load_model(ModelConfig(name="timm/test_vit.r160_in1k", weights="random"))
    assert loaded.transform.crop == (160, 160)
    assert loaded.embedding_dim == 64


# --- classes ----------------------------------------------------------------------------------
def test_a_21k_model_needs_model_classes(tmp_path: Path) -> None:
    name = "timm/vit_tiny_patch16_224.augreg_in21k"
    assert timm.models.get_pretrained_cfg(name[5:]).num_classes == 21843
    for call in (check_model_config, load_model):
        with pytest.raises(ConfigError, match=r"21843 classes.*model\.classes") as info:
            call(ModelConfig(name=name, weights="random"))
        assert "\n" not in str(info.value)
    classes = tmp_path / "in21k.txt"
    classes.write_text("".join(f"c{i:05d}\n" for i in range(21843)))
    loaded = load_model(ModelConfig(name=name, weights="random", classes=str(classes)))
    assert len(loaded.classes) == 21843 and loaded.classes.name == "in21k"
    assert loaded.embedding_dim == 192


def test_a_feature_extractor_is_refused() -> None:
    with pytest.raises(ConfigError, match="no classification head"):
        check_model_config(ModelConfig(name="timm/resnet50_clip_gap", weights="random"))


# --- default weights from the Hugging Face cache ----------------------------------------------
def test_default_weights_from_a_fake_hf_cache(hf_cache: Path, tmp_path: Path) -> None:
    state = _random_state()
    data = _safetensors_bytes(state, tmp_path)
    path = _put_in_cache(hf_cache, "timm/test_resnet.r160_in1k", "model.safetensors", data)
    cfg = ModelConfig(name=f"timm/{TINY}")
    check_model_config(cfg)
    loaded = load_model(cfg)
    assert loaded.weights_sha256 == hashlib.sha256(data).hexdigest()
    assert loaded.weights_digest_of == "file"
    assert str(path) in loaded.weights and "timm/test_resnet.r160_in1k" in loaded.weights
    _assert_state_equal(loaded.module.net, state)
    assert "state_dict" not in loaded.module.net.pretrained_cfg  # not carried twice

    other = tmp_path / "other-cache"
    shutil.copytree(hf_cache, other)
    shutil.rmtree(hf_cache)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_CACHE", str(other))
        again = load_model(cfg)
    assert again.weights_sha256 == loaded.weights_sha256
    assert str(other) in again.weights


def test_hf_home_and_pytorch_model_bin(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_network: None
) -> None:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    assert hf_hub_cache() == str(tmp_path / "hf-home" / "hub")
    state = _random_state(seed=2)
    torch.save(state, tmp_path / "w.bin")
    data = (tmp_path / "w.bin").read_bytes()
    _put_in_cache(
        tmp_path / "hf-home" / "hub", "timm/test_resnet.r160_in1k", "pytorch_model.bin", data
    )
    loaded = load_model(ModelConfig(name=f"timm/{TINY}"))
    assert loaded.weights_sha256 == hashlib.sha256(data).hexdigest()
    assert "pytorch_model.bin" in loaded.weights
    _assert_state_equal(loaded.module.net, state)


def test_missing_from_the_cache_raises_one_line(hf_cache: Path) -> None:
    cfg = ModelConfig(name=f"timm/{TINY}")
    for call in (check_model_config, load_model):
        with pytest.raises(ConfigError, match="allow_download") as info:
            call(cfg)
        text = str(info.value)
        assert "\n" not in text
        assert "timm/test_resnet.r160_in1k" in text and str(hf_cache) in text
        assert "model.safetensors" in text and "model.weights=<path>" in text


def test_a_model_without_hub_weights_says_so(hf_cache: Path) -> None:
    with pytest.raises(ConfigError, match="no Hugging Face Hub weights") as info:
        check_model_config(ModelConfig(name="timm/test_mambaout"))
    assert "\n" not in str(info.value)


def test_allow_download_fetches_into_the_cache(
    hf_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The download path with a stand-in for hf_hub_download (there is no network here)."""
    state = _random_state(seed=4)
    data = _safetensors_bytes(state, tmp_path)
    calls: list[tuple[str, str, str]] = []

    def fake_download(repo_id: str, filename: str, revision: Any, cache_dir: str) -> str:
        calls.append((repo_id, filename, cache_dir))
        return str(_put_in_cache(Path(cache_dir), repo_id, filename, data))

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    loaded = load_model(ModelConfig(name=f"timm/{TINY}", allow_download=True))
    assert calls == [("timm/test_resnet.r160_in1k", "model.safetensors", str(hf_cache))]
    assert loaded.weights_sha256 == hashlib.sha256(data).hexdigest()
    _assert_state_equal(loaded.module.net, state)
    load_model(ModelConfig(name=f"timm/{TINY}", allow_download=True))
    assert len(calls) == 1  # cached now


# --- state-dict files -------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_a_state_dict_file(fmt: str, tmp_path: Path, no_network: None) -> None:
    state = _random_state(seed=5)
    path = tmp_path / f"w.{fmt}"
    if fmt == "pth":
        torch.save(state, path)
    else:
        safetensors.torch.save_file(state, str(path))
    cfg = ModelConfig(name=f"timm/{TINY}", weights=str(path))
    check_model_config(cfg)
    loaded = load_model(cfg)
    assert loaded.weights == str(path)
    assert loaded.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    _assert_state_equal(loaded.module.net, state)


def test_timms_checkpoint_filter_applies(tmp_path: Path, no_network: None) -> None:
    """A ViT state dict at 224 (14x14 position embeddings) loads into test_vit at 160 (10x10):
    timm's filter resamples them, as when timm loads its own weights."""
    state = _random_state("test_vit", seed=6, img_size=224)
    assert state["pos_embed"].shape[1] == 197
    torch.save(state, tmp_path / "vit224.pth")
    loaded = load_model(ModelConfig(name="timm/test_vit", weights=str(tmp_path / "vit224.pth")))
    net = loaded.module.net
    assert net.pos_embed.shape[1] == 101
    assert torch.equal(net.state_dict()["head.weight"], state["head.weight"])


def test_a_state_dict_of_another_architecture_raises_one_line(tmp_path: Path) -> None:
    torch.save(_random_state("test_efficientnet"), tmp_path / "other.pth")
    with pytest.raises(ConfigError, match="does not fit model 'timm/test_resnet'") as info:
        load_model(ModelConfig(name=f"timm/{TINY}", weights=str(tmp_path / "other.pth")))
    assert "\n" not in str(info.value)


def test_missing_file_and_a_tag_as_weights(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        check_model_config(ModelConfig(name=f"timm/{TINY}", weights=str(tmp_path / "nope.pth")))
    with pytest.raises(ConfigError, match=r"model\.name=timm/resnet18\.a1_in1k"):
        check_model_config(ModelConfig(name="timm/resnet18", weights="a1_in1k"))


@pytest.fixture(autouse=True)
def _restore_rng() -> Iterator[None]:
    """Tests seed torch's global RNG to build references; leave it as found."""
    with torch.random.fork_rng(devices=[]):
        yield
