"""Shared fixtures: one local Ray instance for the whole session, photo fixtures, seeds."""

from __future__ import annotations

import io
import os
import re
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cluster_fixtures import free_port, jobs_cluster  # noqa: F401  (a helper; a shared fixture)
from fixtures_demo import demo_cache, demo_run, empty_run  # noqa: F401  (shared fixtures)
from PIL import Image

# Keep Ray's own state inside the test session and quiet.
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

# Public ImageNet label data vendored for the tests (tests/data; sources, licenses and trimming
# in tests/data/README.md). AUDIT_SHARED_DATA may point at another copy of the same layout.
SHARED_DATA = Path(os.environ.get("AUDIT_SHARED_DATA", Path(__file__).resolve().parent / "data"))

AUDIT_CLI = str(Path(sys.executable).parent / "audit-cli")
"""The installed ``audit-cli`` of the venv running the tests."""


def loud_lines(stderr: str) -> list[str]:
    """The lines of a run's stderr at WARNING or above (Python's logging format, and Ray's
    C++ ``[... W|E|F pid tid]`` one)."""
    pattern = re.compile(r"\s(WARNING|ERROR|CRITICAL)\s|^\[[^]]* [WEF] \d+ \d+\]")
    return [line for line in stderr.splitlines() if pattern.search(line)]


PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "hubble_deep_field")


@pytest.fixture(autouse=True)
def _no_handler_on_a_closed_stream() -> None:
    """Point logging handlers whose stream is closed back at stderr. A library that sets up its
    logging during a ``CliRunner.invoke`` (Ray Data does on import) keeps that invocation's
    captured stderr, closed afterwards; a later test would see "--- Logging error ---" in its
    output."""
    import logging
    import sys

    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in getattr(logger, "handlers", []):
            stream = getattr(handler, "stream", None)
            if isinstance(handler, logging.StreamHandler) and getattr(stream, "closed", False):
                handler.stream = sys.stderr  # setStream would flush the closed one


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """One local Ray instance shared by every Ray test (Ray's test guide)."""
    import ray

    if not ray.is_initialized():
        # Ray kills idle workers beyond num_workers_soft_limit (default: the CPU count, 2),
        # and Ray Data's own actors count towards it: every run would start its decode and
        # criticism workers afresh (seconds of imports each). A long-lived cluster keeps them.
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=True,
            _system_config={"num_workers_soft_limit": 8},
        )
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


# ---------------------------------------------------------------- test tiers
#
# Markers (registered in pyproject.toml; docs/development.md has the commands):
#   cluster  the test uses a `ray start --head` cluster (tests/cluster_fixtures.py): automatic
#            when the test or one of its fixtures calls token_cluster/start_cluster, or
#            autoscaling_cluster (tests/autoscaling_fixtures.py).
#   browser  the test drives a real headless Chromium through Selenium: automatic when the test
#            or one of its fixtures uses webdriver or test_report's chromium() helper.
#   slow     end to end and long (a full demo run, a Ray job, a benchmark, a run over many
#            images): automatic for tests that use a fixture listed in SLOW_FIXTURES, explicit
#            (@pytest.mark.slow) on the others.
# `make test` runs everything; `make test-fast` runs -m "not slow and not cluster and not browser".

CLUSTER_NAMES = frozenset({"token_cluster", "start_cluster", "autoscaling_cluster"})
BROWSER_NAMES = frozenset({"webdriver", "chromium", "selenium"})
# (module, fixture) pairs whose setup is itself a long end-to-end run
SLOW_FIXTURES = frozenset(
    {
        ("fixtures_demo", "demo_run"),  # the shared demo run (about a minute on a quiet box)
        ("test_benchmarks", "cpu_benchmark"),  # benchmarks/gpu.sh --device cpu
        ("test_model_transforms_e2e", "inception_run"),  # inception_v3 on CPU, every stage
        ("test_resume", "reference"),  # an uninterrupted run to compare the resumed ones with
    }
)


def _names_used(func: Any, depth: int = 3) -> set[str]:
    """Global names a function's code refers to, following the functions of its own module
    that it calls (``depth`` levels): enough to see a test reach ``chromium()`` through a
    helper."""
    func = getattr(func, "__wrapped__", func)
    code = getattr(func, "__code__", None)
    if code is None:
        return set()
    names: set[str] = set()
    stack = [code]
    while stack:  # nested functions, lambdas and comprehensions have code objects of their own
        c = stack.pop()
        names.update(c.co_names)
        stack.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
    if depth > 0:
        module = getattr(func, "__module__", None)
        scope = getattr(func, "__globals__", {})
        for name in list(names):
            callee = scope.get(name)
            if isinstance(callee, types.FunctionType) and callee.__module__ == module:
                names |= _names_used(callee, depth - 1)
    return names


def _fixture_funcs(item: pytest.Item) -> list[Any]:
    """The functions of the fixtures the test gets (its whole closure; for an overridden
    name, the definition that wins: the last one)."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return []
    funcs = []
    for name in getattr(item, "fixturenames", ()):
        fixturedefs = info.name2fixturedefs.get(name, ())
        if fixturedefs:
            funcs.append(fixturedefs[-1].func)
    return funcs


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        funcs = [getattr(item, "function", None), *_fixture_funcs(item)]
        used: set[str] = set()
        for func in funcs:
            used |= _names_used(func)
        if used & CLUSTER_NAMES:
            item.add_marker(pytest.mark.cluster)
        if used & BROWSER_NAMES:
            item.add_marker(pytest.mark.browser)
        slow_fixtures = {
            (getattr(f, "__module__", ""), getattr(f, "__name__", "")) for f in funcs if f
        }
        if slow_fixtures & SLOW_FIXTURES:
            item.add_marker(pytest.mark.slow)
