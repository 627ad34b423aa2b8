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


def test_wide_integer_grayscale_does_not_depend_on_the_content() -> None:
    # PIL opens a 16-bit PGM as mode "I": a uniform 25 % grey must stay 25 % grey, as the same
    # pixels in a 16-bit PNG (mode "I;16"), not become white by scaling with its own maximum
    pgm = b"P5\n40 30\n65535\n" + np.full(1200, 16384, ">u2").tobytes()
    with Image.open(io.BytesIO(pgm)) as img:
        assert img.mode == "I"
    png = encode(Image.fromarray(np.full((30, 40), 16384, dtype=np.uint16)), "PNG")
    expected = round(16384 / 65535 * 255)
    assert (decode_image(pgm, MAX) == expected).all()
    assert (decode_image(png, MAX) == expected).all()
    # 8-bit values in a 32-bit container are taken as they are
    eight = Image.fromarray(np.full((30, 40), 100, dtype=np.int32))
    assert eight.mode == "I" and (eval_crop(eight) == 100).all()


@pytest.mark.parametrize("size", [(20, 401), (401, 20), (3, 61), (61, 3)])
def test_cut_of_an_extreme_aspect_ratio_keeps_the_centre(
    size: tuple[int, int], rng: np.random.Generator
) -> None:
    # beyond MAX_ASPECT the long side is cut before resizing; with an odd leftover the cut
    # used to shift by half a pixel (differences up to 120 from torchvision)
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    diff = np.abs(eval_crop(img).astype(int) - np.asarray(REFERENCE(img)).astype(int))
    assert diff.max() <= 2


def test_max_pixels_above_pils_own_limit_takes_effect() -> None:
    # A PNG header claiming 10000 x 9500 = 95,000,000 pixels (more than PIL's default limit of
    # 89,478,485) and no pixel data: with a larger max_pixels it gets past the bomb check and
    # fails as truncated; with a smaller one it is refused as a bomb.
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        return struct.pack(">I", len(body)) + kind + body + crc

    header = struct.pack(">IIBBBBB", 10_000, 9_500, 8, 0, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")
    with pytest.raises(ImageLoadError, match="corrupt or truncated"):
        decode_image(png, 200_000_000)
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        decode_image(png, 90_000_000)
    assert Image.MAX_IMAGE_PIXELS == MAX  # PIL's global is left as it was


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


# --- JPEG draft mode (DCT-domain downscaling before the exact resize) ----------------------


def _upscaled_jpeg(name: str, factor: int) -> bytes:
    """A real photo enlarged ``factor`` times and saved as a quality-90 JPEG."""
    img = sample_photo(name)
    return encode(
        img.resize((img.width * factor, img.height * factor), Image.Resampling.BICUBIC), quality=90
    )


@pytest.mark.parametrize(
    ("size", "scale"),
    [
        ((500, 375), 1),  # ImageNet's typical size: short side < 512, nothing to gain
        ((511, 600), 1),
        ((512, 600), 2),  # 256 / 300 at 1/2
        ((1024, 768), 2),  # 1/4 would give 192 < 256
        ((1024, 1024), 4),  # 256 x 256 at 1/4
        ((2048, 1536), 4),
        ((4000, 3000), 8),  # 500 x 375 at 1/8
        ((3000, 4000), 8),
    ],
)
def test_draft_picks_smallest_dct_scale_keeping_short_side_256(
    size: tuple[int, int], scale: int, rng: np.random.Generator
) -> None:
    """Hand-computed scales: the draft result is the reference transform applied to the JPEG
    decoded at exactly that scale (PIL's own scaled decoder, asked for that size directly)."""
    w, h = size
    base = rng.integers(0, 256, size=(h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
    data = encode(Image.fromarray(base).resize((w, h), Image.Resampling.BILINEAR), quality=90)
    with Image.open(io.BytesIO(data)) as img:
        img.draft("RGB", (w // scale, h // scale))
        assert img.size == (-(-w // scale), -(-h // scale))
        expected = np.asarray(REFERENCE(img.convert("RGB")))
    out = decode_image(data, MAX, draft=True)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)
    if scale == 1:
        np.testing.assert_array_equal(out, decode_image(data, MAX))


@pytest.mark.parametrize("name", PHOTOS)
@pytest.mark.parametrize("factor", [1, 2, 4])
def test_draft_is_close_to_exact_transform_on_real_photos(name: str, factor: int) -> None:
    data = _upscaled_jpeg(name, factor)
    exact = decode_image(data, MAX)
    drafted = decode_image(data, MAX, draft=True)
    assert drafted.shape == exact.shape == (224, 224, 3) and drafted.dtype == np.uint8
    diff = np.abs(drafted.astype(np.int16) - exact.astype(np.int16))
    assert diff.mean() < 3.0, f"mean abs diff {diff.mean():.2f} of 255"
    with Image.open(io.BytesIO(data)) as img:
        short = min(img.size)
    if short < 512:
        np.testing.assert_array_equal(drafted, exact)
    else:  # the DCT-domain path really ran: not the exact result
        assert diff.max() > 0


def test_draft_leaves_png_and_other_formats_alone() -> None:
    big = sample_photo("astronaut").resize((1536, 1536))
    for fmt in ("PNG", "WEBP", "BMP"):
        data = encode(big, fmt)
        np.testing.assert_array_equal(
            decode_image(data, MAX, draft=True), decode_image(data, MAX), err_msg=fmt
        )
        with Image.open(io.BytesIO(data)) as reloaded:  # WEBP is lossy
            ref = np.asarray(REFERENCE(reloaded.convert("RGB")))
        np.testing.assert_array_equal(decode_image(data, MAX, draft=True), ref, err_msg=fmt)


def test_draft_decodes_odd_jpeg_modes() -> None:
    photo = sample_photo("coffee").resize((1200, 800))
    for mode in ("L", "CMYK"):
        data = encode(photo.convert(mode), quality=90)
        exact = decode_image(data, MAX)
        drafted = decode_image(data, MAX, draft=True)
        assert drafted.shape == (224, 224, 3) and drafted.dtype == np.uint8
        assert np.abs(drafted.astype(np.int16) - exact.astype(np.int16)).mean() < 3.0, mode


def test_draft_still_refuses_bombs_and_truncated_files() -> None:
    data = _upscaled_jpeg("chelsea", 4)
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        decode_image(data, max_pixels=1000 * 1000, draft=True)
    with pytest.raises(ImageLoadError, match="truncated"):
        decode_image(data[: len(data) // 2], MAX, draft=True)


def test_decode_batch_passes_jpeg_draft_through(tmp_path: Path) -> None:
    from audit.model_actor import decode_batch

    data = _upscaled_jpeg("rocket", 2)
    path = tmp_path / "ILSVRC2012_val_00000001.JPEG"
    path.write_bytes(data)
    batch = {
        "image_id": np.array(["ILSVRC2012_val_00000001"], dtype=object),
        "uri": np.array([str(path)], dtype=object),
        "label": np.array([3]),
    }
    on = decode_batch(batch, MAX, jpeg_draft=True)
    off = decode_batch(batch, MAX)
    np.testing.assert_array_equal(on["image"][0], decode_image(data, MAX, draft=True))
    np.testing.assert_array_equal(off["image"][0], decode_image(data, MAX))
    assert not np.array_equal(on["image"][0], off["image"][0])
