from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from conftest import PHOTOS, encode, sample_photo, write_odd_and_broken
from PIL import Image
from torchvision import transforms

from audit.data.decode import (
    ImageLoadError,
    decode_image,
    eval_crop,
    load_image,
)

MAX = 89_478_485
REFERENCE = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224)])


@pytest.mark.parametrize("name", PHOTOS)
def test_eval_crop_equals_torchvision_standard_transform(name: str) -> None:
    img = sample_photo(name)
    ours = eval_crop(img)
    ref = np.asarray(REFERENCE(img.convert("RGB")))
    assert ours.shape == (224, 224, 3) and ours.dtype == np.uint8
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("size", [(1, 1), (3, 47), (47, 3), (224, 224), (257, 256)])
def test_small_and_odd_sizes(size: tuple[int, int], rng: np.random.Generator) -> None:
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    out = decode_image(encode(img, "PNG"), MAX)
    np.testing.assert_array_equal(out, np.asarray(REFERENCE(img)))


def test_extreme_aspect_ratio_is_cut_not_exploded() -> None:
    img = Image.new("RGB", (1, 100_000), (10, 20, 30))
    out = decode_image(encode(img, "PNG"), MAX)
    assert out.shape == (224, 224, 3)
    assert (out == np.array([10, 20, 30], dtype=np.uint8)).all()


def test_modes_decode_like_imagefolder_loader() -> None:
    photo = sample_photo("coffee")
    for mode, fmt in [
        ("L", "JPEG"),
        ("CMYK", "JPEG"),
        ("RGBA", "PNG"),
        ("P", "GIF"),
        ("LA", "PNG"),
    ]:
        img = photo.convert(mode)
        data = encode(img, fmt)
        with Image.open(io.BytesIO(data)) as reloaded:
            ref = np.asarray(REFERENCE(reloaded.convert("RGB")))
        np.testing.assert_array_equal(decode_image(data, MAX), ref, err_msg=mode)


def test_sixteen_bit_grayscale_is_scaled_not_clipped() -> None:
    arr = np.full((50, 60), 40000, dtype=np.uint16)
    img = Image.fromarray(arr)
    out = decode_image(encode(img, "PNG"), MAX)
    expected = round(40000 / 65535 * 255)
    assert (out == expected).all()


def test_odd_and_broken_files(tmp_path: Path) -> None:
    kinds = write_odd_and_broken(tmp_path)
    for name, kind in kinds.items():
        path = str(tmp_path / name)
        if kind == "ok":
            assert load_image(path, MAX).shape == (224, 224, 3), name
        else:
            with pytest.raises(ImageLoadError) as info:
                load_image(path, MAX)
            assert info.value.stage == "decode", name
            assert info.value.reason and "\n" not in info.value.reason


def test_specific_reasons(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match="empty file"):
        decode_image(b"", MAX)
    with pytest.raises(ImageLoadError, match="not an image"):
        decode_image(b"hello world" * 20, MAX)
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        decode_image(encode(Image.new("RGB", (100, 100)), "PNG"), max_pixels=9999)
    good = encode(sample_photo("astronaut"))
    with pytest.raises(ImageLoadError, match="truncated"):
        decode_image(good[: len(good) // 2], MAX)


def test_read_errors(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError) as info:
        load_image(str(tmp_path / "gone.JPEG"), MAX)
    assert info.value.stage == "read" and "not found" in info.value.reason
    with pytest.raises(ImageLoadError) as info:
        load_image(str(tmp_path), MAX)
    assert info.value.stage == "read"


def test_memory_filesystem_url() -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    data = encode(sample_photo("rocket"))
    fs.pipe("/decode-test/a.JPEG", data)
    try:
        out = load_image("memory://decode-test/a.JPEG", MAX)
        np.testing.assert_array_equal(out, decode_image(data, MAX))
    finally:
        fs.rm("/decode-test", recursive=True)
