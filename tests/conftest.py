"""Shared fixtures: one local Ray instance for the whole session, photo fixtures, seeds."""

from __future__ import annotations

import io
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

# Keep Ray's own state inside the test session and quiet.
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

# Public ImageNet label data vendored for the tests (tests/data; sources, licenses and trimming
# in tests/data/README.md). AUDIT_SHARED_DATA may point at another copy of the same layout.
SHARED_DATA = Path(os.environ.get("AUDIT_SHARED_DATA", Path(__file__).resolve().parent / "data"))

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "hubble_deep_field")


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """One local Ray instance shared by every Ray test (Ray's test guide)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=True)
    yield
    ray.shutdown()


@pytest.fixture(params=[0, 1, 2])
def seed(request: pytest.FixtureRequest) -> int:
    return int(request.param)


def sample_photo(name: str) -> Image.Image:
    """A real photo shipped with scikit-image (no download)."""
    import skimage.data

    arr = getattr(skimage.data, name)()
    img = Image.fromarray(arr)
    return img.convert("RGB") if img.mode not in ("RGB", "L") else img


def encode(img: Image.Image, fmt: str = "JPEG", **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def write_odd_and_broken(folder: Path) -> dict[str, str]:
    """Write the odd-but-valid and broken inputs into ``folder``; return name -> kind.

    kind is ``ok`` (must be predicted) or ``error`` (must become an errors row).
    """
    folder.mkdir(parents=True, exist_ok=True)
    photo = sample_photo("chelsea")
    kinds: dict[str, str] = {}

    def put(name: str, data: bytes, kind: str) -> None:
        (folder / name).write_bytes(data)
        kinds[name] = kind

    put("ILSVRC2012_val_00000101.JPEG", encode(photo.convert("L")), "ok")  # grayscale
    put("ILSVRC2012_val_00000102.JPEG", encode(photo.convert("CMYK")), "ok")  # CMYK JPEG
    put("ILSVRC2012_val_00000103.JPEG", encode(photo.convert("RGBA"), "PNG"), "ok")  # RGBA PNG
    put("ILSVRC2012_val_00000104.JPEG", encode(photo, "PNG"), "ok")  # PNG under a .JPEG name
    put("ILSVRC2012_val_00000105.JPEG", encode(Image.new("RGB", (1, 1), (200, 10, 10))), "ok")
    put("ILSVRC2012_val_00000106.JPEG", encode(photo.convert("P"), "GIF"), "ok")  # palette GIF
    good = encode(photo)
    put("ILSVRC2012_val_00000201.JPEG", good[: len(good) // 3], "error")  # truncated
    put("ILSVRC2012_val_00000202.JPEG", b"this is not an image\n" * 10, "error")
    put("ILSVRC2012_val_00000203.JPEG", b"", "error")  # empty
    bomb = Image.new("1", (10000, 9000))  # 90M pixels > PIL's 89,478,485 threshold
    put("ILSVRC2012_val_00000204.JPEG", encode(bomb, "PNG"), "error")
    corrupt = bytearray(good)
    corrupt[200:4000] = os.urandom(3800)
    put("ILSVRC2012_val_00000205.JPEG", bytes(corrupt[:6000]), "error")
    return kinds


@pytest.fixture
def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def moto_s3(key: str, secret: str, bucket: str) -> Iterator[dict[str, Any]]:
    """A real S3-compatible server (moto's server mode, as s3fs's own tests use) on 127.0.0.1
    with one empty bucket; yields the fsspec storage options that reach it."""
    import fsspec
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    options = {
        "key": key,
        "secret": secret,
        "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"},
    }
    try:
        fsspec.filesystem("s3", **options).mkdir(bucket)
        yield options
    finally:
        server.stop()
