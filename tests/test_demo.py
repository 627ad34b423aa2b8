"""The embedded digits demo set: split, rendering and the on-disk ImageFolder copy."""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from audit.config import DEFAULT_MAX_PIXELS
from audit.data import demo
from audit.data.decode import CROP, ImageLoadError, decode_image

BROKEN = os.path.join("digit_0", "DEMO_val_99999999.JPEG")
NAME = re.compile(r"^DEMO_val_(\d{8})\.(JPEG|png)$")


def _files(root: str) -> list[str]:
    """Relative paths of every file under ``root`` except the marker."""
    out = []
    for dirpath, _, names in os.walk(root):
        out += [os.path.relpath(os.path.join(dirpath, n), root) for n in names if n != demo.MARKER]
    return sorted(out)


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    return demo.ensure_demo_dataset(str(tmp_path_factory.mktemp("cache")))


def test_digit_classes() -> None:
    assert len(demo.DIGIT_CLASSES) == 10
    assert demo.DIGIT_CLASSES.name == "digits"
    assert demo.DIGIT_CLASSES.ids[3] == "digit_3"
    assert demo.DIGIT_CLASSES.names[3] == "three"
    assert demo.DIGIT_CLASSES.index("digit_9") == 9


def test_demo_split_is_disjoint_complete_and_balanced() -> None:
    train, held = demo.demo_split()
    _, targets = demo.load_digit_arrays()
    assert len(held) == 300
    assert len(train) == 1797 - 300
    assert np.intersect1d(train, held).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, held])), np.arange(1797))
    assert np.bincount(targets[held], minlength=10).tolist() == [30] * 10


def test_demo_split_is_deterministic_per_seed() -> None:
    a_train, a_held = demo.demo_split(0)
    b_train, b_held = demo.demo_split(0)
    assert np.array_equal(a_held, b_held)
    assert np.array_equal(a_train, b_train)
    _, c_held = demo.demo_split(1)
    assert not np.array_equal(a_held, c_held)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_render_digit_is_deterministic_given_rng(seed: int) -> None:
    images, _ = demo.load_digit_arrays()
    a = demo.render_digit(images[seed], np.random.default_rng(seed))
    b = demo.render_digit(images[seed], np.random.default_rng(seed))
    c = demo.render_digit(images[seed], np.random.default_rng(seed + 100))
    assert a.mode == "RGB"
    assert min(a.size) >= 48 and max(a.size) <= 96
    assert max(a.size) <= 1.25 * min(a.size) + 1
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert a.size != c.size or not np.array_equal(np.asarray(a), np.asarray(c))


def test_render_digit_draws_the_digit() -> None:
    """A blank digit gives a near-uniform picture; a real one has a strongly contrasting glyph."""
    images, _ = demo.load_digit_arrays()
    blank = np.asarray(demo.render_digit(np.zeros((8, 8)), np.random.default_rng(3)), float)
    digit = np.asarray(demo.render_digit(images[0], np.random.default_rng(3)), float)
    lum = np.array([0.299, 0.587, 0.114])
    blank_spread = np.percentile(blank @ lum, 99) - np.percentile(blank @ lum, 1)
    digit_spread = np.percentile(digit @ lum, 99) - np.percentile(digit @ lum, 1)
    assert blank_spread < 60
    assert digit_spread > 80


def test_render_digit_rejects_wrong_size() -> None:
    with pytest.raises(ValueError, match="64 values"):
        demo.render_digit(np.zeros((7, 7)), np.random.default_rng(0))


def test_render_demo_digit_does_not_depend_on_order() -> None:
    first = np.asarray(demo.render_demo_digit(5))
    for i in range(3):
        demo.render_demo_digit(i)
    assert np.array_equal(first, np.asarray(demo.render_demo_digit(5)))
    other = demo.render_demo_digit(5, variant=1)
    assert other.size != (first.shape[1], first.shape[0]) or not np.array_equal(
        first, np.asarray(other)
    )
    with pytest.raises(IndexError):
        demo.render_demo_digit(1797)


def test_cache_root_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("AUDIT_CACHE_DIR", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert demo.cache_root() == str(tmp_path / "a")
    monkeypatch.delenv("AUDIT_CACHE_DIR")
    assert demo.cache_root() == str(tmp_path / "x" / "imagenet-audit")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert demo.cache_root() == str(tmp_path / "home" / ".cache" / "imagenet-audit")


def test_dataset_layout(demo_root: str) -> None:
    assert os.path.basename(demo_root) == "demo-digits-v1"
    assert os.path.isfile(os.path.join(demo_root, demo.MARKER))
    assert sorted(os.listdir(demo_root)) == sorted([*demo.DIGIT_CLASSES.ids, demo.MARKER])
    files = _files(demo_root)
    assert len(files) == 301
    assert BROKEN in files
    _, targets = demo.load_digit_arrays()
    indices = []
    for rel in files:
        class_id, name = rel.split(os.sep)
        match = NAME.match(name)
        assert match is not None, rel
        index = int(match.group(1))
        if rel != BROKEN:
            assert demo.DIGIT_CLASSES.ids[int(targets[index])] == class_id
            indices.append(index)
    assert sorted(indices) == demo.demo_split()[1].tolist()


def test_dataset_decodes_except_the_broken_file(demo_root: str) -> None:
    for rel in _files(demo_root):
        with open(os.path.join(demo_root, rel), "rb") as f:
            data = f.read()
        if rel == BROKEN:
            with pytest.raises(ImageLoadError) as err:
                decode_image(data, DEFAULT_MAX_PIXELS)
            assert err.value.stage == "decode"
        else:
            crop = decode_image(data, DEFAULT_MAX_PIXELS)
            assert crop.shape == (CROP, CROP, 3)
            assert crop.dtype == np.uint8


def test_dataset_mixes_formats_and_odd_files(demo_root: str) -> None:
    kinds: list[tuple[str, str, str]] = []
    for rel in _files(demo_root):
        if rel == BROKEN:
            continue
        with Image.open(os.path.join(demo_root, rel)) as img:
            kinds.append((str(img.format), img.mode, os.path.splitext(rel)[1]))
    assert kinds.count(("JPEG", "L", ".JPEG")) == 1
    assert kinds.count(("PNG", "RGBA", ".png")) == 1
    assert kinds.count(("PNG", "RGB", ".JPEG")) == 1
    assert kinds.count(("JPEG", "CMYK", ".JPEG")) == 1
    assert kinds.count(("JPEG", "RGB", ".JPEG")) > 150
    assert kinds.count(("PNG", "RGB", ".png")) > 30


def test_dataset_is_reused(demo_root: str) -> None:
    before = {rel: os.stat(os.path.join(demo_root, rel)).st_mtime_ns for rel in _files(demo_root)}
    again = demo.ensure_demo_dataset(os.path.dirname(demo_root))
    assert again == demo_root
    after = {rel: os.stat(os.path.join(demo_root, rel)).st_mtime_ns for rel in _files(demo_root)}
    assert after == before


def test_incomplete_dataset_is_replaced_with_identical_files(demo_root: str, tmp_path) -> None:
    partial = tmp_path / "demo-digits-v1" / "digit_0"
    partial.mkdir(parents=True)
    (partial / "junk.JPEG").write_bytes(b"half written")
    root = demo.ensure_demo_dataset(str(tmp_path))
    assert root == str(tmp_path / "demo-digits-v1")
    assert sorted(os.listdir(tmp_path)) == ["demo-digits-v1"]  # no temporary folders left
    files = _files(root)
    assert files == _files(demo_root)
    for rel in files:
        with (
            open(os.path.join(root, rel), "rb") as a,
            open(os.path.join(demo_root, rel), "rb") as b,
        ):
            assert a.read() == b.read(), rel


def test_concurrent_callers_get_one_complete_dataset(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setenv("AUDIT_CACHE_DIR", str(tmp_path))
    with ThreadPoolExecutor(max_workers=2) as pool:
        roots = list(pool.map(lambda _: demo.ensure_demo_dataset(), range(2)))
    assert roots == [str(tmp_path / "demo-digits-v1")] * 2
    assert sorted(os.listdir(tmp_path)) == ["demo-digits-v1"]
    assert len(_files(roots[0])) == 301
