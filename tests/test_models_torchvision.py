"""torchvision's classifiers: transforms, the explicit build, the weights cache (no downloads).

* Every weights enum member of every torchvision classification model: ``weights_transform``
  plus :meth:`AuditModel.normalise` is bit-identical to ``weights.transforms()`` on real photos
  (``weights.transforms()`` is metadata; nothing is downloaded).
* The explicit build (:func:`build_for_weights`) equals torchvision's own builder for the same
  checkpoint, for every model and every distinct builder set-up of its weights. torchvision's
  builder reads ``$TORCH_HOME/hub/checkpoints/<basename(url)>`` when it is there (no hash check
  on a cache hit), so the tests write their checkpoints into a private torch home: no network,
  no mocking. The structural check runs on the ``meta`` device with checkpoints of stride-0
  tensors (a few hundred bytes per entry); a few small models are also compared numerically.
"""

from __future__ import annotations

import ast
import hashlib
import math
import os
import re
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision
from conftest import sample_photo
from PIL import Image
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torchvision.models import WeightsEnum
from torchvision.transforms._presets import ImageClassification

from audit.config import ConfigError, ModelConfig, PreprocessConfig
from audit.models import AuditModel, load_model
from audit.models.torchvision import (
    EXCLUDED,
    build_for_weights,
    builder_kwargs,
    cache_path,
    classification_names,
    weights_transform,
)
from audit.models.transform import INTERPOLATIONS, EvalTransform
from audit.models.weights import load_state_bytes
from audit.stages.predict import images_to_tensor

REPO = Path(__file__).resolve().parents[1]
ALL_NAMES = sorted(torchvision.models.list_models(module=torchvision.models))
ALL_PAIRS = [(n, w) for n in ALL_NAMES for w in torchvision.models.get_model_weights(n)]
PRESET_FIELDS = {"crop_size", "resize_size", "mean", "std", "interpolation", "antialias"}
LEGACY_DENSENET = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))([12])\.(\w+)$")


def _label(name: str, weights: WeightsEnum) -> str:
    return f"{name}.{weights.name}"


# --- transforms -------------------------------------------------------------------------------
def _preset_key(weights: WeightsEnum) -> tuple[Any, ...]:
    p: Any = weights.transforms()
    return (
        type(p).__name__,
        tuple(p.resize_size),
        tuple(p.crop_size),
        p.interpolation.value,
        tuple(p.mean),
        tuple(p.std),
        p.antialias,
    )


def _preset_id(key: tuple[Any, ...]) -> str:
    kind, resize, crop, interp, mean, std, antialias = key
    text = f"r{'x'.join(map(str, resize))}-c{'x'.join(map(str, crop))}-{interp}"
    if mean != (0.485, 0.456, 0.406) or std != (0.229, 0.224, 0.225):
        text += f"-mean{mean[0]:.4g}-std{std[0]:.4g}"
    if antialias is not True:
        text += f"-antialias{antialias}"
    return text if kind == "ImageClassification" else f"{kind}-{text}"


PRESETS: dict[tuple[Any, ...], tuple[str, WeightsEnum]] = {}
for _name, _weights in ALL_PAIRS:
    PRESETS.setdefault(_preset_key(_weights), (_name, _weights))


def _preset_state(weights: WeightsEnum) -> tuple[type, dict[str, Any]]:
    """Everything the preset holds: its class and public attributes."""
    p = weights.transforms()
    return type(p), {k: v for k, v in vars(p).items() if not k.startswith("_") and k != "training"}


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    astronaut = sample_photo("astronaut")
    chelsea = sample_photo("chelsea")
    return {
        "astronaut-512x512": astronaut,
        "chelsea-451x300": chelsea,
        "chelsea-portrait-300x451": chelsea.transpose(Image.Transpose.ROTATE_90),
        "astronaut-odd-333x517": astronaut.resize((333, 517), Image.Resampling.LANCZOS),
        "coffee-small-181x120": sample_photo("coffee").resize((181, 120), Image.Resampling.BOX),
        "camera-gray-as-rgb": sample_photo("camera").convert("RGB"),
    }


def test_transform_presets_cover_every_model_and_weights() -> None:
    """The parametrised presets stand for every (model, weights) pair: each pair's preset holds
    exactly the tested fields, with the values of one tested preset."""
    assert set(classification_names()) == set(ALL_NAMES)
    assert len(ALL_PAIRS) > len(ALL_NAMES) > 70  # every member, not just DEFAULT
    tested = [_preset_state(w) for _, w in PRESETS.values()]
    for name, weights in ALL_PAIRS:
        kind, state = _preset_state(weights)
        assert kind is ImageClassification, _label(name, weights)
        assert set(state) == PRESET_FIELDS, _label(name, weights)
        assert (kind, state) in tested, _label(name, weights)
        assert _preset_key(weights) in PRESETS
    assert any(name.startswith("squeezenet") for name, _ in ALL_PAIRS)


@pytest.mark.parametrize("key", list(PRESETS), ids=[_preset_id(k) for k in PRESETS])
def test_weights_transform_is_bit_identical_to_torchvision(
    key: tuple[Any, ...], photos: dict[str, Image.Image]
) -> None:
    name, weights = PRESETS[key]
    reference = weights.transforms()
    ours = weights_transform(weights)
    norm = AuditModel(nn.Sequential(nn.Flatten(), nn.Linear(3, 2)), ours.mean, ours.std)
    for label, img in photos.items():
        crop = ours.apply(img)
        assert crop.dtype == np.uint8 and crop.shape == (*ours.crop_hw, 3), label
        got = norm.normalise(images_to_tensor(crop[None], torch.device("cpu"))[0])
        want = reference(img)
        assert got.dtype == want.dtype and got.shape == want.shape, label
        assert torch.equal(got, want), (
            f"{_label(name, weights)} on {label}: {ours.describe()} differs from {reference}; "
            f"max |diff| {(got - want).abs().max().item():.3g}"
        )


@pytest.mark.parametrize("interpolation", list(INTERPOLATIONS))
def test_pil_transform_equals_torchvision_functional_at_the_edges(interpolation: str) -> None:
    """The transform runs on PIL alone (the decode tasks never import torchvision); it must
    equal torchvision's functional resize and centre crop of a PIL image where they branch: an
    image already at the resized size (returned as is), a crop larger than the image on one or
    both sides (zero padding, odd margins), a crop offset that rounds half to even."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as tvf

    photo = sample_photo("chelsea")
    mode = InterpolationMode(interpolation)
    cases = [  # (image w, h), resize, crop (h, w), resize_mode
        ((256, 300), (256,), (224, 224), "shorter"),  # already at size: no resize
        ((300, 451), (200,), (224, 224), "shorter"),  # crop wider than the resized image
        ((451, 300), (180,), (225, 301), "shorter"),  # taller and wider, odd margins
        ((97, 61), (45,), (50, 71), "shorter"),  # padded on both sides
        ((120, 181), (103, 78), (100, 75), "squash"),  # offsets 1.5: rounded up to 2
        ((120, 181), (105, 80), (100, 75), "squash"),  # offsets 2.5: rounded down to 2
        ((300, 200), (300, 200), (299, 199), "squash"),  # squash to its own size: no resize
    ]
    for (w, h), resize, crop, resize_mode in cases:
        img = photo.resize((w, h), Image.Resampling.LANCZOS)
        t = EvalTransform(
            resize=resize, crop=crop, interpolation=interpolation, resize_mode=resize_mode
        )
        size = list(resize)
        want = tvf.center_crop(tvf.resize(img, size, interpolation=mode), list(crop))
        got = t.apply(img)
        label = f"{w}x{h} {resize_mode} {resize} crop {crop}"
        assert got.shape == (*crop, 3), label
        assert np.array_equal(got, np.asarray(want)), label


# --- a private torch home ---------------------------------------------------------------------
@contextmanager
def _private_torch_home(mp: pytest.MonkeyPatch, home: Path) -> Iterator[Path]:
    """``$TORCH_HOME`` and ``torch.hub``'s directory in ``home``; yields the checkpoints folder.
    Both are restored by ``mp`` (the hub directory through its module attribute, since
    ``torch.hub.set_dir`` cannot unset it)."""
    mp.setenv("TORCH_HOME", str(home))
    mp.setattr(torch.hub, "_hub_dir", torch.hub._hub_dir)  # restored on undo
    torch.hub.set_dir(str(home / "hub"))
    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    yield checkpoints


@pytest.fixture(scope="module")
def module_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with (
        pytest.MonkeyPatch.context() as mp,
        _private_torch_home(mp, tmp_path_factory.mktemp("torch-home")) as checkpoints,
    ):
        yield checkpoints


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    with _private_torch_home(monkeypatch, tmp_path / "torch-home") as checkpoints:
        yield checkpoints


def _cached(checkpoints: Path, weights: WeightsEnum) -> Path:
    """Where torchvision looks for ``weights`` (and where the product looks, too)."""
    path = checkpoints / os.path.basename(weights.url)
    assert str(path) == cache_path(weights)
    return path


def _write(checkpoints: Path, weights: WeightsEnum, state: dict[str, Tensor]) -> Path:
    path = _cached(checkpoints, weights)
    torch.save(state, path)
    return path


def _torchvision_build(name: str, weights: WeightsEnum, checkpoints: Path) -> nn.Module:
    """torchvision's own builder; its checkpoint must be in the cache, or it would download."""
    assert _cached(checkpoints, weights).is_file()
    net: nn.Module = torchvision.models.get_model(name, weights=weights)
    return net


# --- checkpoints in torchvision's format ------------------------------------------------------
def _checkpoint_kwargs(name: str, weights: WeightsEnum) -> dict[str, Any]:
    """How the network behind ``weights``' checkpoint is set up (for writing checkpoints that
    torchvision's builder accepts; its strict ``load_state_dict`` checks this)."""
    categories = weights.meta["categories"]
    kwargs: dict[str, Any] = {"num_classes": 1000 if categories is None else len(categories)}
    if name in ("inception_v3", "googlenet"):  # the files hold the auxiliary heads
        kwargs.update(aux_logits=True, init_weights=False)
    if name.startswith("vit_"):
        kwargs["image_size"] = weights.meta["min_size"][0]
    if name.startswith("maxvit_"):
        kwargs["input_size"] = weights.meta["min_size"]
    return kwargs


def _in_file_format(name: str, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A state dict as torchvision's file for ``name`` has it: DenseNet's files use the old key
    names (``denselayer1.norm.1.weight``) and have no ``num_batches_tracked`` (nor the version
    metadata that would ask for it)."""
    if not name.startswith("densenet"):
        return state
    legacy = {
        LEGACY_DENSENET.sub(r"\1.\2.\3", k): v
        for k, v in state.items()
        if not k.endswith("num_batches_tracked")
    }
    assert "features.denseblock1.denselayer1.norm.1.weight" in legacy
    assert not any(".norm1." in k or ".conv2." in k for k in legacy)
    return legacy


def _tiny_state(template: nn.Module, fill: float = 0.0) -> dict[str, Tensor]:
    """``template``'s state dict as stride-0 views of one-element tensors: torch.save keeps the
    one-element storage, so the file is a few hundred bytes per entry whatever the shapes."""
    full = template.state_dict()
    state: dict[str, Tensor] = OrderedDict(
        (k, torch.full((), fill if v.is_floating_point() else 0, dtype=v.dtype).expand(v.shape))
        for k, v in full.items()
    )
    state._metadata = full._metadata  # type: ignore[attr-defined]
    return state


class _MetaAllocations(TorchFunctionMode):
    """Tensor allocations (``empty``/``zeros``/``ones``/``full``/``rand``/``randn``) on ``meta``,
    everything else where it would be. RegNet works out its stage widths at construction with
    ``torch.arange``/``pow``/``round`` and reads them with ``.tolist()``, which fails under
    ``torch.device("meta")`` ("Cannot copy out of meta tensor"); here that arithmetic runs on the
    CPU while the parameters and buffers are still meta (BatchNorm's ``num_batches_tracked``,
    made by ``torch.tensor``, is a CPU scalar)."""

    ALLOCATIONS = frozenset(
        {torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn}
    )

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: Any = (), kwargs: Any = None
    ) -> Any:
        kwargs = dict(kwargs or {})
        if func in self.ALLOCATIONS and kwargs.get("device") is None:
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


def _on_meta(name: str) -> AbstractContextManager[Any]:
    return _MetaAllocations() if name.startswith("regnet_") else torch.device("meta")


# --- what is compared -------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """A comparable form of a plain attribute (a partial or a class by what it names)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return type(value).__name__, [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, partial):
        return "partial", _plain(value.func), _plain(value.args), _plain(value.keywords)
    if isinstance(value, type) or callable(value):
        return f"{value.__module__}.{value.__qualname__}"
    if hasattr(value, "__dict__"):
        return type(value).__qualname__, _plain(vars(value))
    return type(value).__qualname__, repr(value)


def _module_summary(module: nn.Module) -> dict[str, Any]:
    return {
        "type": f"{type(module).__module__}.{type(module).__qualname__}",
        "attributes": {
            k: _plain(v)
            for k, v in vars(module).items()
            if not k.startswith("_") and not isinstance(v, (Tensor, nn.Module))
        },
        # None entries too: Inception's AuxLogits, GoogLeNet's aux1/aux2, a conv without bias
        "children": {
            k: None if v is None else type(v).__qualname__ for k, v in module._modules.items()
        },
        "parameters": {k: v is None for k, v in module._parameters.items()},
        "buffers": {k: v is None for k, v in module._buffers.items()},
        "non_persistent": sorted(module._non_persistent_buffers_set),
    }


def _assert_same_network(ours: nn.Module, theirs: nn.Module, label: str) -> None:
    a = [(q, _module_summary(m)) for q, m in ours.named_modules(remove_duplicate=False)]
    b = [(q, _module_summary(m)) for q, m in theirs.named_modules(remove_duplicate=False)]
    assert [q for q, _ in a] == [q for q, _ in b], f"{label}: other submodules"
    for (q, mine), (_, ref) in zip(a, b, strict=True):
        assert mine == ref, f"{label}: submodule {q or '<root>'!r} differs"
    sa, sb = ours.state_dict(), theirs.state_dict()
    assert list(sa) == list(sb), f"{label}: other state-dict keys"
    for k in sa:
        assert (sa[k].shape, sa[k].dtype) == (sb[k].shape, sb[k].dtype), f"{label}: {k}"


# --- the build contract, every model on meta --------------------------------------------------
def _builder_key(name: str, weights: WeightsEnum) -> tuple[Any, ...]:
    """What torchvision's builders read from a weights member: its categories and min_size."""
    categories = weights.meta["categories"]
    return name, None if categories is None else len(categories), tuple(weights.meta["min_size"])


CONTRACT: dict[tuple[Any, ...], tuple[str, WeightsEnum]] = {}
for _name, _weights in ALL_PAIRS:
    if _name not in EXCLUDED:
        CONTRACT.setdefault(_builder_key(_name, _weights), (_name, _weights))


def test_contract_cases_cover_every_model_and_weights() -> None:
    assert set(EXCLUDED) == {"squeezenet1_0", "squeezenet1_1"}
    assert {name for name, _ in CONTRACT.values()} == set(ALL_NAMES) - EXCLUDED
    for name, weights in ALL_PAIRS:
        if name in EXCLUDED:
            continue
        rep_name, rep = CONTRACT[_builder_key(name, weights)]
        assert builder_kwargs(name, weights) == builder_kwargs(rep_name, rep)


@pytest.mark.parametrize(
    "name,weights", list(CONTRACT.values()), ids=[_label(n, w) for n, w in CONTRACT.values()]
)
def test_explicit_build_equals_torchvision_builder(
    name: str, weights: WeightsEnum, module_hub: Path
) -> None:
    with _on_meta(name), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # GoogLeNet/Inception init notices
        template = torchvision.models.get_model(
            name, weights=None, **_checkpoint_kwargs(name, weights)
        )
    state = _in_file_format(name, _tiny_state(template))
    path = _write(module_hub, weights, state)
    assert path.stat().st_size < 1 << 20  # stride-0 tensors: no full-size storage written
    with _on_meta(name), warnings.catch_warnings():
        # loading CPU tensors into meta parameters checks names and shapes, and copies nothing
        warnings.filterwarnings("ignore", "for .*: copying from a non-meta parameter", UserWarning)
        theirs = _torchvision_build(name, weights, module_hub)
        ours = build_for_weights(name, weights, load_state_bytes(path.read_bytes(), str(path)))
    for net in (ours, theirs):
        assert all(p.is_meta for p in net.parameters())
    _assert_same_network(ours, theirs, _label(name, weights))


def test_contract_compares_the_set_up_torchvision_derives_from_weights() -> None:
    """What the structural comparison relies on: Inception's ``transform_input`` and
    ``aux_logits``, a dropped head (None) and a class given by partial are all compared."""
    with torch.device("meta"):
        net = torchvision.models.get_model("googlenet", weights=None, init_weights=False)
        vit = torchvision.models.get_model("vit_b_16", weights=None)
    summary = _module_summary(net)
    assert summary["attributes"]["transform_input"] is False
    assert summary["attributes"]["aux_logits"] is True
    assert summary["children"]["aux1"] == "InceptionAux"
    net.aux1 = None
    assert _module_summary(net)["children"]["aux1"] is None
    assert _module_summary(vit)["attributes"]["norm_layer"] == (
        "partial",
        "torch.nn.modules.normalization.LayerNorm",
        ("tuple", []),
        {"eps": 1e-06},
    )


# --- numeric check, small models --------------------------------------------------------------
def _random_state(template: nn.Module, seed: int) -> dict[str, Tensor]:
    """A random state dict of ``template``'s names, shapes and dtypes (``template`` may be on
    meta): weights ``N(0, 1/fan_in)``, BatchNorm statistics and 1-D weights and biases around
    their neutral values, so that every entry matters and activations stay finite."""
    gen = torch.Generator().manual_seed(seed)
    full = template.state_dict()
    state: dict[str, Tensor] = OrderedDict()
    for key, spec in full.items():
        shape, dtype = spec.shape, spec.dtype
        if not dtype.is_floating_point:
            state[key] = torch.zeros(shape, dtype=dtype)
            continue
        noise = torch.randn(shape, generator=gen, dtype=dtype)
        if key.endswith("running_var"):
            value = 0.75 + 0.5 * torch.rand(shape, generator=gen, dtype=dtype)
        elif key.endswith("running_mean") or (len(shape) == 1 and not key.endswith("weight")):
            value = 0.05 * noise
        elif len(shape) == 1:  # a norm layer's scale
            value = 1.0 + 0.05 * noise
        else:
            value = noise / max(1, math.prod(shape[1:])) ** 0.5
        state[key] = value
    state._metadata = full._metadata  # type: ignore[attr-defined]
    return state


NUMERIC = ["resnet18", "densenet121", "inception_v3", "googlenet", "mobilenet_v3_small"]
"""Small models (ViT-B/16 is left out: 86M parameters, about 10 s; the meta contract covers its
``image_size``)."""


@pytest.mark.parametrize(
    "name",
    # the three largest builds (10-16 s each on 2 cores) run in the full suite only
    [
        pytest.param(n, marks=pytest.mark.slow)
        if n in ("densenet121", "inception_v3", "googlenet")
        else n
        for n in NUMERIC
    ],
)
def test_explicit_build_computes_what_torchvision_builds(name: str, hub: Path) -> None:
    weights = torchvision.models.get_model_weights(name).DEFAULT
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        template = torchvision.models.get_model(
            name, weights=None, **_checkpoint_kwargs(name, weights)
        )
    state = _random_state(template, seed=1)
    path = _write(hub, weights, _in_file_format(name, state))
    theirs = _torchvision_build(name, weights, hub).eval()
    ours = build_for_weights(name, weights, load_state_bytes(path.read_bytes(), str(path))).eval()
    _assert_same_network(ours, theirs, name)
    theirs_state = theirs.state_dict()
    for key, value in ours.state_dict().items():
        assert torch.equal(value, theirs_state[key]), key
    h, w = weights_transform(weights).crop_hw
    x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        got, want = ours(x), theirs(x)
    assert got.shape == (1, len(weights.meta["categories"]))
    assert torch.isfinite(want).all() and want.std() > 0
    assert torch.equal(got, want)


# --- load_model and the cache -----------------------------------------------------------------
def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _weights(name: str, member: str) -> WeightsEnum:
    weights: WeightsEnum = torchvision.models.get_model_weights(name)[member]
    return weights


def test_load_model_reads_named_and_default_weights_from_the_cache(hub: Path) -> None:
    weights = _weights("resnet18", "IMAGENET1K_V1")
    with torch.device("meta"):
        template = torchvision.models.resnet18()
    state = _random_state(template, seed=4)
    path = _write(hub, weights, state)
    for text in ("IMAGENET1K_V1", "ResNet18_Weights.IMAGENET1K_V1", "default"):
        loaded = load_model(ModelConfig(name="resnet18", weights=text))
        assert loaded.weights == f"torchvision ResNet18_Weights.IMAGENET1K_V1 ({path})", text
        assert loaded.weights_sha256 == _sha256(path), text
        assert (
            loaded.transform.describe()
            == "resize 256 (shorter side, bilinear), centre crop 224x224"
        )
        got = loaded.module.net.state_dict()
        assert all(torch.equal(got[k], v) for k, v in state.items()), text


def test_load_model_transform_follows_the_named_weights(hub: Path) -> None:
    v1, v2 = _weights("resnet50", "IMAGENET1K_V1"), _weights("resnet50", "IMAGENET1K_V2")
    with torch.device("meta"):
        template = torchvision.models.resnet50()
    paths = {
        "IMAGENET1K_V1": _write(hub, v1, _tiny_state(template, 0.0)),
        "IMAGENET1K_V2": _write(hub, v2, _tiny_state(template, 1e-3)),
    }
    assert _sha256(paths["IMAGENET1K_V1"]) != _sha256(paths["IMAGENET1K_V2"])
    expected = {
        "IMAGENET1K_V1": ("IMAGENET1K_V1", (256,), 0.0),
        "IMAGENET1K_V2": ("IMAGENET1K_V2", (232,), 1e-3),
        "default": ("IMAGENET1K_V2", (232,), 1e-3),
    }
    for text, (member, resize, fill) in expected.items():  # no probe forward: slow, not the point
        loaded = load_model(ModelConfig(name="resnet50", weights=text), probe=False)
        assert loaded.weights == f"torchvision ResNet50_Weights.{member} ({paths[member]})"
        assert loaded.weights_sha256 == _sha256(paths[member])
        t = loaded.transform
        assert (t.resize, t.crop, t.interpolation) == (resize, (224, 224), "bilinear"), text
        fc = loaded.module.net.fc.weight
        assert torch.equal(fc, torch.full_like(fc, fill)), text

    inception = _weights("inception_v3", "IMAGENET1K_V1")
    with torch.device("meta"):
        template = torchvision.models.inception_v3(aux_logits=True, init_weights=False)
    path = _write(hub, inception, _tiny_state(template))
    for text in ("IMAGENET1K_V1", "default"):
        loaded = load_model(ModelConfig(name="inception_v3", weights=text), probe=False)
        assert loaded.weights_sha256 == _sha256(path)
        assert (loaded.transform.resize, loaded.transform.crop) == ((342,), (299, 299))
        assert loaded.module.net.transform_input is True
        assert loaded.module.head_name == "fc"


def test_unknown_weights_name_lists_the_available_ones(hub: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_model(ModelConfig(name="resnet50", weights="IMAGENET1K_V9"))
    msg = str(err.value)
    assert "\n" not in msg
    assert "IMAGENET1K_V9" in msg and "'resnet50'" in msg
    assert "IMAGENET1K_V1" in msg and "IMAGENET1K_V2" in msg


def test_weights_missing_from_the_cache_are_refused(hub: Path) -> None:
    files = {
        "IMAGENET1K_V1": _weights("resnet50", "IMAGENET1K_V1").url,
        "default": _weights("resnet50", "IMAGENET1K_V2").url,
    }
    for text in files:
        with pytest.raises(ConfigError) as err:
            load_model(ModelConfig(name="resnet50", weights=text))
        msg = str(err.value)
        assert "\n" not in msg
        assert "allow_download" in msg
        assert os.path.basename(files[text]) in msg  # where it was looked for
    assert list(hub.iterdir()) == []  # nothing was downloaded


# --- the product does not mock ----------------------------------------------------------------
def _product_sources() -> list[Path]:
    files = sorted((REPO / "audit").rglob("*.py")) + sorted((REPO / "ray_jobs").rglob("*.py"))
    return files  # audit/cli/ is under audit/


def _is_mock_module(module: str) -> bool:
    return module in ("unittest.mock", "mock") or module.startswith(("unittest.mock.", "mock."))


def _imports_mock(tree: ast.AST) -> bool:
    """``unittest.mock`` (or the ``mock`` backport) imported or reached in any way."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(_is_mock_module(a.name) for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (
            _is_mock_module(node.module or "")
            or (node.module == "unittest" and any(a.name == "mock" for a in node.names))
        ):
            return True
        if (
            isinstance(node, ast.Attribute)
            and node.attr == "mock"
            and isinstance(node.value, ast.Name)
            and node.value.id == "unittest"
        ):
            return True
        if isinstance(node, ast.Constant) and node.value == "unittest.mock":
            return True  # importlib.import_module("unittest.mock")
    return False


def test_no_product_module_uses_unittest_mock() -> None:
    sources = _product_sources()
    assert len(sources) > 20 and (REPO / "audit" / "models" / "torchvision.py") in sources
    offending = [
        str(p.relative_to(REPO)) for p in sources if _imports_mock(ast.parse(p.read_text(), str(p)))
    ]
    assert offending == []
    assert _imports_mock(ast.parse("from unittest import mock"))
    assert _imports_mock(ast.parse("import unittest.mock as m"))
    assert _imports_mock(ast.parse("from unittest.mock import patch"))
    assert _imports_mock(ast.parse("import unittest\nunittest.mock.patch('x')"))
    assert _imports_mock(ast.parse("importlib.import_module('unittest.mock')"))
    assert not _imports_mock(ast.parse("import unittest\nimport mockito\nx = {'mock': 1}"))


# --- a model that cannot run at its crop ------------------------------------------------------
def test_model_that_cannot_run_at_its_crop_is_refused() -> None:
    cfg = ModelConfig(name="vit_b_16", weights="random", preprocess=PreprocessConfig(crop=160))
    with pytest.raises(ConfigError) as err:
        load_model(cfg)
    msg = str(err.value)
    assert "\n" not in msg
    assert "'vit_b_16'" in msg
    assert "centre crop 160x160" in msg


def test_a_weights_name_with_a_trailing_newline_is_not_a_weights_name() -> None:
    from audit.models.torchvision import named_weights

    assert named_weights("resnet18", "IMAGENET1K_V1") is not None
    assert named_weights("resnet18", "IMAGENET1K_V1\n") is None
    assert named_weights("resnet18", "ResNet18_Weights.IMAGENET1K_V1\n") is None
