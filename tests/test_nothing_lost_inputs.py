"""Listing loses no input: class folders and image files that are symbolic links are followed
(a link to an ancestor does not loop), and a folder that cannot be listed is an ``errors`` row.

Real folders, files and symlinks under tmp_path; the permission error is injected at the
filesystem layer (a LocalFileSystem subclass registered under a test protocol), since the tests
run as root, where mode 000 is still readable.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import fsspec
import pytest
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem
from fsspec.spec import AbstractFileSystem
from PIL import Image

from audit.config import ConfigError, DataConfig, Layout
from audit.data.classes import ClassIndex, imagenet_classes
from audit.data.layouts import Listing, list_inputs, resolve_layout

TENCH, GOLDFISH, SHARK = "n01440764", "n01443537", "n01484850"


@pytest.fixture(scope="module")
def classes() -> ClassIndex:
    return imagenet_classes()


def image(path: Path, fmt: str = "JPEG") -> Path:
    """A small real image file at ``path`` (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), (200, 30, 60)).save(path, format=fmt)
    return path


def labels(listing: Listing, classes: ClassIndex) -> dict[str, str | None]:
    return {r.image_id: None if r.label is None else classes.ids[r.label] for r in listing.records}


def errors(listing: Listing) -> dict[str, str]:
    return {r.image_id: str(r.error) for r in listing.errors}


# --------------------------------------------------------------------------- symbolic links


def test_class_folders_that_are_links_are_followed(tmp_path: Path, classes: ClassIndex) -> None:
    image(tmp_path / "src" / TENCH / "a.JPEG")
    image(tmp_path / "elsewhere" / "fish" / "b.JPEG")
    image(tmp_path / "elsewhere" / "fish" / "c.png", "PNG")
    (tmp_path / "src" / GOLDFISH).symlink_to(tmp_path / "elsewhere" / "fish")
    listing = list_inputs(DataConfig(source=str(tmp_path / "src")), classes)
    assert listing.layout is Layout.IMAGEFOLDER
    assert labels(listing, classes) == {"a": TENCH, "b": GOLDFISH, "c": GOLDFISH}
    assert errors(listing) == {}


def test_every_class_folder_a_link_is_still_imagefolder(
    tmp_path: Path, classes: ClassIndex
) -> None:
    for class_id, name in ((TENCH, "a"), (GOLDFISH, "b")):
        image(tmp_path / "store" / class_id / f"{name}.JPEG")
        (tmp_path / "src").mkdir(exist_ok=True)
        (tmp_path / "src" / class_id).symlink_to(tmp_path / "store" / class_id)
    data = DataConfig(source=str(tmp_path / "src"))
    assert resolve_layout(data, classes) is Layout.IMAGEFOLDER
    listing = list_inputs(data, classes)
    assert listing.layout is Layout.IMAGEFOLDER
    assert labels(listing, classes) == {"a": TENCH, "b": GOLDFISH}
    assert errors(listing) == {}


def test_image_files_that_are_links_are_listed(tmp_path: Path, classes: ClassIndex) -> None:
    image(tmp_path / "src" / TENCH / "a.JPEG")
    target = image(tmp_path / "elsewhere" / "real.JPEG")
    (tmp_path / "src" / TENCH / "linked.JPEG").symlink_to(target)
    listing = list_inputs(DataConfig(source=str(tmp_path / "src")), classes)
    assert labels(listing, classes) == {"a": TENCH, "linked": TENCH}
    linked = next(r for r in listing.records if r.image_id == "linked")
    assert linked.uri == f"file://{tmp_path}/src/{TENCH}/linked.JPEG"


def test_a_link_to_an_ancestor_does_not_loop(tmp_path: Path, classes: ClassIndex) -> None:
    src = tmp_path / "src"
    image(src / TENCH / "a.JPEG")
    (src / TENCH / "up").symlink_to(src)  # src/TENCH/up/TENCH/up/... forever if followed
    listing = list_inputs(DataConfig(source=str(src)), classes)
    assert labels(listing, classes) == {"a": TENCH}
    assert list(errors(listing)) == [f"{TENCH}/up"]
    assert "symbolic link loop" in errors(listing)[f"{TENCH}/up"]


def test_a_file_reached_twice_through_links_is_one_input(
    tmp_path: Path, classes: ClassIndex
) -> None:
    # as torchvision's ImageFolder (os.walk(followlinks=True)) both paths are listed; the image
    # id is the key of every table, so the second is an error row saying why
    src = tmp_path / "src"
    image(src / TENCH / "a.JPEG")
    (src / GOLDFISH).symlink_to(src / TENCH)
    listing = list_inputs(DataConfig(source=str(src)), classes)
    assert [r.image_id for r in listing.records] == ["a"]
    assert [r.uri for r in listing.records] == [f"file://{src}/{TENCH}/a.JPEG"]
    assert [r.uri for r in listing.errors] == [f"file://{src}/{GOLDFISH}/a.JPEG"]
    assert errors(listing) == {"a": f"duplicate image_id (also at file://{src}/{TENCH}/a.JPEG)"}


def test_a_broken_link_is_an_input_not_a_silent_gap(tmp_path: Path, classes: ClassIndex) -> None:
    src = tmp_path / "src"
    image(src / TENCH / "a.JPEG")
    (src / TENCH / "gone.JPEG").symlink_to(tmp_path / "nowhere.JPEG")
    listing = list_inputs(DataConfig(source=str(src)), classes)
    assert labels(listing, classes) == {"a": TENCH, "gone": TENCH}  # decode reports it


# --------------------------------------------------------------------------- unlistable folders


class DenyingFileSystem(LocalFileSystem):
    """The local disk, but listing a folder in ``denied`` raises PermissionError (what a
    non-root user gets for a folder of mode 000)."""

    protocol = ("denying",)
    denied: ClassVar[set[str]] = set()

    @classmethod
    def _strip_protocol(cls, path: Any) -> str:
        path = str(path)
        if path.startswith("denying://"):
            path = path[len("denying://") :]
        return str(super()._strip_protocol(path))

    def ls(self, path: str, detail: bool = False, **kwargs: Any) -> Any:
        stripped = self._strip_protocol(path)
        if stripped in type(self).denied:
            raise PermissionError(13, "Permission denied", stripped)
        return super().ls(path, detail=detail, **kwargs)


@pytest.fixture
def denying() -> Iterator[type[DenyingFileSystem]]:
    fsspec.register_implementation("denying", DenyingFileSystem, clobber=True)
    DenyingFileSystem.denied = set()
    yield DenyingFileSystem
    DenyingFileSystem.denied = set()


def test_an_unreadable_class_folder_is_an_error_row(
    tmp_path: Path, classes: ClassIndex, denying: type[DenyingFileSystem]
) -> None:
    src = tmp_path / "src"
    image(src / TENCH / "a.JPEG")
    image(src / GOLDFISH / "b.JPEG")
    denying.denied = {str(src / GOLDFISH)}
    listing = list_inputs(DataConfig(source=f"denying://{src}"), classes)
    assert labels(listing, classes) == {"a": TENCH}
    [row] = listing.errors
    assert row.image_id == GOLDFISH
    assert row.uri == f"denying://{src}/{GOLDFISH}"
    assert row.label == classes.index(GOLDFISH)  # kept by data.classes=[GOLDFISH] too
    assert row.error == (
        f"PermissionError: cannot list folder denying://{src}/{GOLDFISH}: Permission denied"
    )


def test_an_unreadable_nested_folder_is_an_error_row(
    tmp_path: Path, classes: ClassIndex, denying: type[DenyingFileSystem]
) -> None:
    src = tmp_path / "src"
    image(src / "a.JPEG")
    image(src / "deeper" / "more" / "b.JPEG")
    denying.denied = {str(src / "deeper" / "more")}
    listing = list_inputs(DataConfig(source=f"denying://{src}", layout="unlabeled"), classes)
    assert [r.image_id for r in listing.records] == ["a"]
    assert errors(listing) == {
        "deeper/more": f"PermissionError: cannot list folder denying://{src}/deeper/more: "
        "Permission denied"
    }


def test_an_unreadable_class_folder_is_kept_by_its_class_subset(
    tmp_path: Path, classes: ClassIndex, denying: type[DenyingFileSystem]
) -> None:
    src = tmp_path / "src"
    image(src / TENCH / "a.JPEG")
    image(src / GOLDFISH / "b.JPEG")
    denying.denied = {str(src / GOLDFISH)}
    listing = list_inputs(DataConfig(source=f"denying://{src}", classes=[GOLDFISH]), classes)
    assert listing.records == ()
    assert [r.image_id for r in listing.errors] == [GOLDFISH]


def test_an_unreadable_source_is_one_config_error(
    tmp_path: Path, classes: ClassIndex, denying: type[DenyingFileSystem]
) -> None:
    src = tmp_path / "src"
    image(src / TENCH / "a.JPEG")
    denying.denied = {str(src)}
    with pytest.raises(ConfigError, match=r"'data\.source'.*PermissionError") as info:
        list_inputs(DataConfig(source=f"denying://{src}", layout="imagefolder"), classes)
    assert "\n" not in str(info.value)


def test_only_unreadable_folders_is_one_config_error(
    tmp_path: Path, classes: ClassIndex, denying: type[DenyingFileSystem]
) -> None:
    src = tmp_path / "src"
    image(src / TENCH / "a.JPEG")
    denying.denied = {str(src / TENCH)}
    with pytest.raises(ConfigError, match=r"cannot list folder .*n01440764") as info:
        list_inputs(DataConfig(source=f"denying://{src}"), classes)
    assert "\n" not in str(info.value)


class WalkedMemoryFileSystem(MemoryFileSystem):
    """memory://, but with fsspec's generic ``find`` (a walk that drops a folder it cannot
    list, as sftp's or ftp's does), and listing a folder in ``denied`` fails."""

    protocol = ("walkedmem",)
    denied: ClassVar[set[str]] = set()
    find = AbstractFileSystem.find

    @classmethod
    def _strip_protocol(cls, path: Any) -> str:
        path = str(path)
        if path.startswith("walkedmem://"):
            path = path[len("walkedmem://") :]
        return str(super()._strip_protocol(path))

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> Any:
        if self._strip_protocol(path) in type(self).denied:
            raise PermissionError(13, "Permission denied", path)
        return super().ls(path, detail=detail, **kwargs)


def test_a_walked_filesystem_reports_an_unlistable_folder(classes: ClassIndex) -> None:
    fsspec.register_implementation("walkedmem", WalkedMemoryFileSystem, clobber=True)
    fs = WalkedMemoryFileSystem()
    base = f"/walked-{uuid.uuid4().hex}"
    for class_id, name in ((TENCH, "a"), (GOLDFISH, "b")):
        fs.pipe_file(f"{base}/{class_id}/{name}.JPEG", b"not decoded here")
    WalkedMemoryFileSystem.denied = {f"{base}/{GOLDFISH}"}
    try:
        listing = list_inputs(DataConfig(source=f"walkedmem://{base}"), classes)
    finally:
        WalkedMemoryFileSystem.denied = set()
        fs.rm(base, recursive=True)
    assert labels(listing, classes) == {"a": TENCH}
    assert errors(listing) == {
        GOLDFISH: f"PermissionError: cannot list folder walkedmem://{base}/{GOLDFISH}: "
        "Permission denied"
    }


@pytest.mark.skipif(os.geteuid() == 0, reason="root can list a folder of mode 000")
def test_a_mode_000_folder_is_an_error_row(tmp_path: Path, classes: ClassIndex) -> None:
    src = tmp_path / "src"
    image(src / TENCH / "a.JPEG")
    image(src / GOLDFISH / "b.JPEG")
    (src / GOLDFISH).chmod(0)
    try:
        listing = list_inputs(DataConfig(source=str(src)), classes)
    finally:
        (src / GOLDFISH).chmod(0o755)
    assert labels(listing, classes) == {"a": TENCH}
    assert errors(listing)[GOLDFISH].startswith("PermissionError: cannot list folder")
