"""Tests for audit.data.layouts: every layout, auto-detection, listing errors and subsets.

Labels are checked against the independent reference in tests/data (filename order ground
truth built from cleanlab's ImageFolder files, and the official devkit ground-truth file).
"""

from __future__ import annotations

import csv
import itertools
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest
from conftest import SHARED_DATA

from audit.config import ConfigError, DataConfig, Layout, build_config
from audit.data.classes import ClassIndex, imagenet_classes
from audit.data.layouts import InputRecord, Listing, list_inputs, resolve_layout

SHARED = SHARED_DATA
REF_CSV = SHARED / "derived" / "val_ground_truth.csv"
DEVKIT_GT = SHARED / "ilsvrc2012-devkit" / "ILSVRC2012_validation_ground_truth.txt"
N_REF = 300
KAGGLE = "LOC_val_solution.csv"
DEVKIT = "ILSVRC2012_validation_ground_truth.txt"


# --------------------------------------------------------------------------- helpers, fixtures


def _reference(n: int = N_REF) -> list[tuple[str, int, str]]:
    """(image_id, torchvision class index, wnid) of the first ``n`` val images, filename order."""
    with REF_CSV.open(newline="") as f:
        rows = list(itertools.islice(csv.DictReader(f), n))
    return [(r["filename"].rsplit(".", 1)[0], int(r["class_index"]), r["wnid"]) for r in rows]


REF = _reference()


@pytest.fixture(scope="module")
def classes() -> ClassIndex:
    return imagenet_classes()


@pytest.fixture
def mem_root() -> Iterator[str]:
    """A fresh memory:// folder, removed afterwards."""
    fs = fsspec.filesystem("memory")
    path = f"/layouts-test-{uuid.uuid4().hex}"
    yield f"memory://{path}"
    if fs.exists(path):
        fs.rm(path, recursive=True)


def touch(root: Path, rel: str, data: bytes = b"") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def all_rows(listing: Listing) -> list[InputRecord]:
    return sorted(listing.records + listing.errors, key=lambda r: (r.image_id, r.uri))


def labels_of(listing: Listing) -> dict[str, int | None]:
    return {r.image_id: r.label for r in listing.records}


def errors_of(listing: Listing) -> dict[str, str | None]:
    return {r.image_id: r.error for r in listing.errors}


def check_invariants(listing: Listing) -> None:
    assert listing.layout not in (Layout.AUTO, Layout.DEMO)
    assert all(r.error is None for r in listing.records)
    assert all(r.error for r in listing.errors)
    assert [r.image_id for r in listing.records] == sorted(r.image_id for r in listing.records)
    assert [r.image_id for r in listing.errors] == sorted(r.image_id for r in listing.errors)


# --------------------------------------------------------------------------- devkit


def test_devkit_labels_match_reference(tmp_path: Path, classes: ClassIndex) -> None:
    for image_id, _, _ in REF:
        touch(tmp_path, f"{image_id}.JPEG")
    shutil.copy(DEVKIT_GT, tmp_path / DEVKIT)
    data = DataConfig(source=str(tmp_path))

    assert resolve_layout(data) is Layout.DEVKIT
    listing = list_inputs(data, classes)

    check_invariants(listing)
    assert listing.layout is Layout.DEVKIT
    assert listing.errors == ()
    assert labels_of(listing) == {image_id: index for image_id, index, _ in REF}
    assert listing.records[0] == InputRecord(
        "ILSVRC2012_val_00000001",
        (tmp_path / "ILSVRC2012_val_00000001.JPEG").resolve().as_uri(),
        65,
    )


def test_devkit_labels_file_outside_folder(tmp_path: Path, classes: ClassIndex) -> None:
    images = tmp_path / "images"
    for image_id, _, _ in REF[:20]:
        touch(images, f"nested/{image_id}.JPEG")
    touch(images, "ILSVRC2012_val_00099999.JPEG")  # beyond the ground truth
    gt = tmp_path / "gt.txt"
    gt.write_text("".join(f"{line}\n" for line in DEVKIT_GT.read_text().splitlines()[:20]) + "\n")
    cfg = build_config({"data": {"source": str(images), "labels_file": str(gt)}})

    listing = list_inputs(cfg.data, classes)

    assert listing.layout is Layout.DEVKIT
    assert labels_of(listing) == {image_id: index for image_id, index, _ in REF[:20]}
    assert errors_of(listing) == {
        "ILSVRC2012_val_00099999": "no label for ILSVRC2012_val_00099999 in gt.txt"
    }


def test_devkit_label_outside_class_list(tmp_path: Path) -> None:
    for image_id, _, _ in REF[:3]:
        touch(tmp_path, f"{image_id}.JPEG")
    shutil.copy(DEVKIT_GT, tmp_path / DEVKIT)
    wnid = REF[0][2]
    few = ClassIndex("few", (wnid,), ("first",))

    listing = list_inputs(DataConfig(source=str(tmp_path)), few)

    assert labels_of(listing) == {REF[0][0]: 0}
    assert errors_of(listing) == {
        REF[1][0]: f"label {REF[1][2]} is not a class of few",
        REF[2][0]: f"label {REF[2][2]} is not a class of few",
    }


@pytest.mark.parametrize(
    ("text", "bad_line"),
    [
        ("490\n361\nabc\n", 3),
        ("490\n0\n", 2),
        ("1001\n", 1),
        ("490\n\n361\n", 2),
        ("490\n-5\n", 2),
    ],
)
def test_devkit_malformed_raises(
    tmp_path: Path, classes: ClassIndex, text: str, bad_line: int
) -> None:
    touch(tmp_path, "ILSVRC2012_val_00000001.JPEG")
    (tmp_path / DEVKIT).write_text(text)
    with pytest.raises(ConfigError, match=rf"{DEVKIT}.*line {bad_line}\b"):
        list_inputs(DataConfig(source=str(tmp_path)), classes)


def test_devkit_trailing_blank_lines_are_fine(tmp_path: Path, classes: ClassIndex) -> None:
    touch(tmp_path, "ILSVRC2012_val_00000001.JPEG")
    (tmp_path / DEVKIT).write_text("490\n\n\n")
    listing = list_inputs(DataConfig(source=str(tmp_path)), classes)
    assert labels_of(listing) == {"ILSVRC2012_val_00000001": 65}


# --------------------------------------------------------------------------- kaggle


def _write_kaggle(path: Path, rows: list[tuple[str, int, str]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ImageId", "PredictionString"])
        for image_id, _, wnid in reversed(rows):  # any order
            w.writerow([image_id, f"{wnid} 56 2 493 344 {wnid} 1 2 30 40 "])


def test_kaggle_labels_match_reference(tmp_path: Path, classes: ClassIndex) -> None:
    for image_id, _, _ in REF:
        touch(tmp_path, f"{image_id}.JPEG")
    _write_kaggle(tmp_path / KAGGLE, REF)
    data = DataConfig(source=str(tmp_path))

    assert resolve_layout(data) is Layout.KAGGLE
    listing = list_inputs(data, classes)

    check_invariants(listing)
    assert listing.layout is Layout.KAGGLE
    assert listing.errors == ()
    assert labels_of(listing) == {image_id: index for image_id, index, _ in REF}


def test_kaggle_missing_and_unknown_labels(mem_root: str, classes: ClassIndex) -> None:
    fs = fsspec.filesystem("memory")
    base = mem_root.removeprefix("memory://")
    for image_id, _, _ in REF[:5]:
        fs.pipe(f"{base}/imgs/{image_id}.JPEG", b"")
    fs.pipe(
        f"{base}/labels.csv",
        (
            "ImageId,PredictionString\n"
            f"{REF[0][0]},{REF[0][2]} 1 2 3 4\n"
            f"{REF[1][0]},n99999999 1 2 3 4\n"
            f"{REF[2][0]},{REF[2][2]} 1 2 3 4\n"
            "\n"
            f"{REF[3][0]},{REF[3][2]} 1 2 3 4\n"
        ).encode(),
    )
    data = DataConfig(source=f"{mem_root}/imgs", labels_file=f"{mem_root}/labels.csv")

    assert resolve_layout(data) is Layout.KAGGLE
    listing = list_inputs(data, classes)

    check_invariants(listing)
    assert labels_of(listing) == {REF[i][0]: REF[i][1] for i in (0, 2, 3)}
    assert errors_of(listing) == {
        REF[1][0]: "label n99999999 is not a class of imagenet",
        REF[4][0]: f"no label for {REF[4][0]} in labels.csv",
    }
    assert all(r.uri.startswith("memory://") for r in all_rows(listing))


@pytest.mark.parametrize(
    ("text", "bad_line"),
    [
        ("image,label\nILSVRC2012_val_00000001,n01751748\n", 1),
        ("", 1),
        ("ImageId,PredictionString\nILSVRC2012_val_00000001\n", 2),
        ("ImageId,PredictionString\nILSVRC2012_val_00000001,n01751748 1 2 3 4\nX,\n", 3),
        ("ImageId,PredictionString\n,n01751748 1 2 3 4\n", 2),
        ("ImageId,PredictionString\nA,n01751748 1\nB,n01751748 1\nA,n01751748 1\n", 4),
    ],
)
def test_kaggle_malformed_raises(
    tmp_path: Path, classes: ClassIndex, text: str, bad_line: int
) -> None:
    touch(tmp_path, "ILSVRC2012_val_00000001.JPEG")
    (tmp_path / KAGGLE).write_text(text)
    with pytest.raises(ConfigError, match=rf"{KAGGLE}.*line {bad_line}\b"):
        list_inputs(DataConfig(source=str(tmp_path)), classes)


# --------------------------------------------------------------------------- imagefolder


def test_imagefolder_labels_match_reference(tmp_path: Path, classes: ClassIndex) -> None:
    for k, (image_id, _, wnid) in enumerate(REF):
        sub = "extra/" if k % 7 == 0 else ""  # deeper folders inside a class folder are fine
        touch(tmp_path, f"{wnid}/{sub}{image_id}.JPEG")
    touch(tmp_path, ".DS_Store")  # hidden files do not count against the imagefolder shape
    data = DataConfig(source=str(tmp_path))

    assert resolve_layout(data) is Layout.IMAGEFOLDER
    listing = list_inputs(data, classes)

    check_invariants(listing)
    assert listing.errors == ()
    assert labels_of(listing) == {image_id: index for image_id, index, _ in REF}


def test_imagefolder_unknown_class_and_root_file(tmp_path: Path, classes: ClassIndex) -> None:
    touch(tmp_path, "n01440764/a.JPEG")
    touch(tmp_path, "xyz/b.JPEG")
    touch(tmp_path, "xyz/deeper/c.png")
    touch(tmp_path, "d.JPEG")
    data = DataConfig(source=str(tmp_path), layout=Layout.IMAGEFOLDER)

    listing = list_inputs(data, classes)

    check_invariants(listing)
    assert labels_of(listing) == {"a": 0}
    assert errors_of(listing) == {
        "b": "class folder 'xyz' is not a class of imagenet",
        "c": "class folder 'xyz' is not a class of imagenet",
        "d": "no label: file is not inside a class folder",
    }
    assert all(r.label is None for r in listing.errors)


def test_imagefolder_on_memory_filesystem(mem_root: str, classes: ClassIndex) -> None:
    fs = fsspec.filesystem("memory")
    base = mem_root.removeprefix("memory://")
    fs.pipe(f"{base}/n01443537/x1.JPEG", b"")
    fs.pipe(f"{base}/n01440764/x2.JPEG", b"")
    data = DataConfig(source=mem_root + "/")

    listing = list_inputs(data, classes)

    assert listing.layout is Layout.IMAGEFOLDER
    assert [(r.image_id, r.uri, r.label) for r in listing.records] == [
        ("x1", f"memory://{base}/n01443537/x1.JPEG", 1),
        ("x2", f"memory://{base}/n01440764/x2.JPEG", 0),
    ]
    with fsspec.open(listing.records[0].uri, "rb") as f:  # workers can open the URI as is
        assert f.read() == b""


# --------------------------------------------------------------------------- unlabeled


def test_unlabeled_folder_recursive_keeps_every_extension(
    tmp_path: Path, classes: ClassIndex
) -> None:
    touch(tmp_path, "a.JPEG")
    touch(tmp_path, "sub/b.png")
    touch(tmp_path, "sub/deeper/notes.txt")
    touch(tmp_path, "sub/no_extension")
    touch(tmp_path, "archive.tar.gz")
    data = DataConfig(source=str(tmp_path))

    assert resolve_layout(data) is Layout.UNLABELED
    listing = list_inputs(data, classes)

    assert listing.layout is Layout.UNLABELED
    assert labels_of(listing) == {
        "a": None,
        "b": None,
        "notes": None,
        "no_extension": None,
        "archive.tar": None,
    }
    assert listing.errors == ()


def test_tuple_source(tmp_path: Path, mem_root: str, classes: ClassIndex) -> None:
    local = touch(tmp_path, "one.JPEG")
    fsspec.filesystem("memory").pipe(mem_root.removeprefix("memory://") + "/two.png", b"")
    source = (f"{mem_root}/two.png", str(local), str(tmp_path / "never_written.JPEG"))
    cfg = build_config({"data": {"source": list(source)}})

    assert resolve_layout(cfg.data) is Layout.UNLABELED
    listing = list_inputs(cfg.data, classes)

    assert listing.layout is Layout.UNLABELED
    assert [(r.image_id, r.uri, r.label) for r in listing.records] == [
        ("never_written", (tmp_path / "never_written.JPEG").as_uri(), None),  # decode says so
        ("one", local.as_uri(), None),
        ("two", f"{mem_root}/two.png", None),
    ]


def test_tuple_source_needs_unlabeled_layout(tmp_path: Path, classes: ClassIndex) -> None:
    data = DataConfig(source=(str(tmp_path / "a.JPEG"),), layout=Layout.KAGGLE)
    with pytest.raises(ConfigError, match=r"data\.source"):
        list_inputs(data, classes)


# --------------------------------------------------------------------------- what is an input


def test_hidden_files_and_folders_are_not_inputs(tmp_path: Path, classes: ClassIndex) -> None:
    root = tmp_path / ".cache" / "val"  # a hidden folder above the source does not matter
    touch(root, "n01440764/a.JPEG")
    touch(root, "n01440764/.b.JPEG")
    touch(root, "n01440764/.ipynb_checkpoints/c.JPEG")
    touch(root, ".git/objects/d")
    touch(root, ".DS_Store")

    listing = list_inputs(DataConfig(source=str(root)), classes)

    assert listing.layout is Layout.IMAGEFOLDER
    assert [r.image_id for r in all_rows(listing)] == ["a"]


@pytest.mark.parametrize("inside_name", [KAGGLE, "my_labels.csv"])
def test_labels_file_inside_folder_is_not_an_input(
    tmp_path: Path, classes: ClassIndex, inside_name: str
) -> None:
    for image_id, _, _ in REF[:4]:
        touch(tmp_path, f"{image_id}.JPEG")
    _write_kaggle(tmp_path / inside_name, REF[:4])
    labels_file = None if inside_name == KAGGLE else str(tmp_path / inside_name)

    listing = list_inputs(DataConfig(source=str(tmp_path), labels_file=labels_file), classes)

    assert listing.layout is Layout.KAGGLE
    assert listing.errors == ()
    assert sorted(labels_of(listing)) == [r[0] for r in REF[:4]]


def test_other_labels_file_is_an_input(tmp_path: Path, classes: ClassIndex) -> None:
    """Only the labels file in use is skipped; anything else becomes an (errored) input."""
    touch(tmp_path, "ILSVRC2012_val_00000001.JPEG")
    (tmp_path / DEVKIT).write_text("490\n")
    _write_kaggle(tmp_path / KAGGLE, REF[:1])
    data = DataConfig(source=str(tmp_path), layout=Layout.DEVKIT)

    listing = list_inputs(data, classes)

    assert labels_of(listing) == {"ILSVRC2012_val_00000001": 65}
    assert errors_of(listing) == {"LOC_val_solution": f"no label for LOC_val_solution in {DEVKIT}"}


def test_duplicate_image_ids(tmp_path: Path, classes: ClassIndex) -> None:
    first = touch(tmp_path, "n01440764/x.JPEG")
    touch(tmp_path, "n01440764/x.png")
    touch(tmp_path, "n01443537/x.JPEG")
    touch(tmp_path, "n01443537/y.JPEG")

    listing = list_inputs(DataConfig(source=str(tmp_path)), classes)

    check_invariants(listing)
    assert [(r.image_id, r.uri, r.label) for r in listing.records] == [
        ("x", first.as_uri(), 0),
        ("y", (tmp_path / "n01443537/y.JPEG").as_uri(), 1),
    ]
    assert [(r.uri, r.label, r.error) for r in listing.errors] == [
        (
            (tmp_path / "n01440764/x.png").as_uri(),
            0,
            f"duplicate image_id (also at {first.as_uri()})",
        ),
        (
            (tmp_path / "n01443537/x.JPEG").as_uri(),
            1,
            f"duplicate image_id (also at {first.as_uri()})",
        ),
    ]


def test_duplicate_in_tuple_source(tmp_path: Path, classes: ClassIndex) -> None:
    a = str(tmp_path / "b" / "img.JPEG")
    b = str(tmp_path / "a" / "img.JPEG")
    # the same file named twice (however spelled) is one input; another file of the same name
    # is a duplicate image id
    listing = list_inputs(DataConfig(source=(a, b, Path(a).as_uri())), classes)
    assert [r.uri for r in listing.records] == [Path(b).as_uri()]
    assert [(r.uri, r.error) for r in listing.errors] == [
        (Path(a).as_uri(), f"duplicate image_id (also at {Path(b).as_uri()})")
    ]


# --------------------------------------------------------------------------- layout detection


@pytest.mark.parametrize(
    ("files", "labels_file", "expected"),
    [
        (["a.JPEG", KAGGLE], None, Layout.KAGGLE),
        (["a.JPEG", DEVKIT], None, Layout.DEVKIT),
        (["a.JPEG", KAGGLE, DEVKIT], None, Layout.KAGGLE),
        (["n01440764/a.JPEG", "n01443537/b.JPEG"], None, Layout.IMAGEFOLDER),
        (["n01440764/a.JPEG", ".hidden/b.JPEG", ".DS_Store"], None, Layout.IMAGEFOLDER),
        (["n01440764/a.JPEG", "b.JPEG"], None, Layout.UNLABELED),
        (["a.JPEG", "b.png"], None, Layout.UNLABELED),
        (["a.JPEG"], "/elsewhere/solution.CSV", Layout.KAGGLE),
        (["a.JPEG"], "/elsewhere/gt.txt", Layout.DEVKIT),
        (["n01440764/a.JPEG"], "/elsewhere/gt", Layout.DEVKIT),
    ],
)
def test_auto_detection(
    tmp_path: Path, files: list[str], labels_file: str | None, expected: Layout
) -> None:
    for rel in files:
        touch(tmp_path, rel)
    assert resolve_layout(DataConfig(source=str(tmp_path), labels_file=labels_file)) is expected


@pytest.mark.parametrize(
    "layout", [Layout.IMAGEFOLDER, Layout.KAGGLE, Layout.DEVKIT, Layout.UNLABELED]
)
def test_explicit_layout_is_kept(tmp_path: Path, layout: Layout) -> None:
    touch(tmp_path, "a.JPEG")
    assert resolve_layout(DataConfig(source=str(tmp_path), layout=layout)) is layout


def test_demo_is_refused(classes: ClassIndex) -> None:
    with pytest.raises(ValueError, match="demo"):
        list_inputs(DataConfig(), classes)
    with pytest.raises(ValueError, match="demo"):
        resolve_layout(DataConfig(source="/x", layout=Layout.DEMO))


# --------------------------------------------------------------------------- config errors


def test_missing_source(tmp_path: Path, classes: ClassIndex) -> None:
    missing = str(tmp_path / "nope")
    for call in (lambda d: list_inputs(d, classes), resolve_layout):
        with pytest.raises(ConfigError, match=r"'data\.source'.*nope"):
            call(DataConfig(source=missing))
    with pytest.raises(ConfigError, match=r"'data\.source'"):
        list_inputs(DataConfig(source="memory://layouts-test-never-created"), classes)


def test_source_is_a_file(tmp_path: Path, classes: ClassIndex) -> None:
    f = touch(tmp_path, "a.JPEG")
    with pytest.raises(ConfigError, match=r"'data\.source'.*folder"):
        list_inputs(DataConfig(source=str(f)), classes)


@pytest.mark.parametrize("files", [[], [".DS_Store", ".x/y.JPEG"], [KAGGLE]])
def test_source_without_inputs(tmp_path: Path, classes: ClassIndex, files: list[str]) -> None:
    for rel in files:
        touch(tmp_path, rel, b"ImageId,PredictionString\n")
    with pytest.raises(ConfigError, match=r"'data\.source'.*no input"):
        list_inputs(DataConfig(source=str(tmp_path)), classes)


def test_missing_labels_file(tmp_path: Path, classes: ClassIndex) -> None:
    touch(tmp_path, "a.JPEG")
    with pytest.raises(ConfigError, match=rf"'data\.labels_file'.*{DEVKIT}"):
        list_inputs(DataConfig(source=str(tmp_path), layout=Layout.DEVKIT), classes)
    with pytest.raises(ConfigError, match=rf"'data\.labels_file'.*{KAGGLE}"):
        list_inputs(DataConfig(source=str(tmp_path), layout=Layout.KAGGLE), classes)
    missing = str(tmp_path / "nowhere.csv")
    with pytest.raises(ConfigError, match=r"'data\.labels_file'.*nowhere\.csv"):
        list_inputs(DataConfig(source=str(tmp_path), labels_file=missing), classes)


def test_unknown_class_in_data_classes(tmp_path: Path, classes: ClassIndex) -> None:
    touch(tmp_path, "n01440764/a.JPEG")
    data = DataConfig(source=str(tmp_path), classes=("n01440764", "n00000000"))
    with pytest.raises(ConfigError, match=r"'data\.classes'.*n00000000"):
        list_inputs(data, classes)


def test_class_subsets_need_labels(tmp_path: Path, classes: ClassIndex) -> None:
    touch(tmp_path, "a.JPEG")  # auto -> unlabeled
    for data in (
        DataConfig(source=str(tmp_path), per_class=1),
        DataConfig(source=str(tmp_path), classes=("n01440764",)),
    ):
        with pytest.raises(ConfigError, match=r"data\.(per_class|classes)"):
            list_inputs(data, classes)


def test_subset_that_selects_nothing(tmp_path: Path, classes: ClassIndex) -> None:
    touch(tmp_path, "n01440764/a.JPEG")
    with pytest.raises(ConfigError, match="left after"):
        list_inputs(DataConfig(source=str(tmp_path), classes=("n01443537",)), classes)


# --------------------------------------------------------------------------- subsets


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    """An imagefolder with several classes, unknown-class and root files, and duplicates.

    The file at the top level makes auto-detection say 'unlabeled', so tests name the layout.
    """
    wnids = ["n01440764", "n01443537", "n01484850", "n01491361"]
    k = 0
    for c, wnid in enumerate(wnids):
        for _ in range(3 + 2 * c):
            touch(tmp_path, f"{wnid}/img_{(k * 37) % 101:04d}.JPEG")
            k += 1
    for j in range(3):
        touch(tmp_path, f"bogus/img_{(k + j) * 37 % 101:04d}.JPEG")
    touch(tmp_path, "img_0000.JPEG")  # no class folder
    touch(tmp_path, "n01491361/img_0000.png")  # a duplicate of img_0000 inside a class
    touch(tmp_path, "n01443537/img_0037.JPEG")  # a duplicate of img_0037 (first in n01440764)
    return tmp_path


def brute_force(
    rows: list[InputRecord],
    classes: ClassIndex,
    wanted: tuple[str, ...],
    per_class: int | None,
    limit: int | None,
) -> list[InputRecord]:
    """The subset rules written out plainly (and quadratically) for checking."""
    order = sorted(rows, key=lambda r: (r.image_id, r.uri))
    if wanted or per_class is not None:
        order = [r for r in order if r.label is not None]
    if wanted:
        order = [r for r in order if classes.ids[r.label] in wanted]  # type: ignore[index]
    if per_class is not None:
        # readable images fill a class's quota; an error record comes along while its class
        # has room or when it duplicates a chosen image
        kept: list[InputRecord] = []
        for r in order:
            filled = sum(1 for s in kept if s.label == r.label and s.error is None)
            twin = any(s.image_id == r.image_id and s.error is None for s in kept)
            if filled < per_class or (r.error is not None and twin):
                kept.append(r)
        order = kept
    if limit is not None:
        order = order[:limit]
    return order


@pytest.mark.parametrize("wanted", [(), ("n01443537",), ("n01491361", "n01440764")])
@pytest.mark.parametrize("per_class", [None, 1, 2, 100])
@pytest.mark.parametrize("limit", [None, 1, 4, 1000])
def test_subsets_match_brute_force(
    mixed_folder: Path,
    classes: ClassIndex,
    wanted: tuple[str, ...],
    per_class: int | None,
    limit: int | None,
) -> None:
    full = list_inputs(DataConfig(source=str(mixed_folder), layout=Layout.IMAGEFOLDER), classes)
    everything = all_rows(full)
    assert len(everything) == 3 + 5 + 7 + 9 + 3 + 1 + 2  # every file is in exactly one table
    assert len({r.uri for r in everything}) == len(everything)

    data = DataConfig(
        source=str(mixed_folder),
        layout=Layout.IMAGEFOLDER,
        classes=wanted,
        per_class=per_class,
        limit=limit,
    )
    listing = list_inputs(data, classes)

    check_invariants(listing)
    assert all_rows(listing) == brute_force(everything, classes, wanted, per_class, limit)


def test_limit_counts_error_rows(mixed_folder: Path, classes: ClassIndex) -> None:
    data = DataConfig(source=str(mixed_folder), layout=Layout.IMAGEFOLDER, limit=2)
    listing = list_inputs(data, classes)
    # img_0000 sorts first: the file outside any class folder wins (an error row), and its
    # namesake in n01440764 is a duplicate (another error row)
    assert [(r.image_id, r.error is None) for r in all_rows(listing)] == [
        ("img_0000", False),
        ("img_0000", False),
    ]


def test_per_class_counts_only_readable_images(tmp_path: Path, classes: ClassIndex) -> None:
    # a duplicate (an error row) must not take the place of an image of its class
    for name in ("a.JPEG", "a.png", "b.JPEG"):
        touch(tmp_path, f"n01440764/{name}")
    data = DataConfig(source=str(tmp_path), layout=Layout.IMAGEFOLDER, per_class=2)
    listing = list_inputs(data, classes)
    assert [(r.image_id, r.error is None) for r in all_rows(listing)] == [
        ("a", True),
        ("a", False),
        ("b", True),
    ]


def test_a_stray_file_beside_class_folders_keeps_the_labels(
    tmp_path: Path, classes: ClassIndex
) -> None:
    # auto-detection with the model's classes: class folders plus a README is still an
    # imagefolder (the README becomes an errors row); other folders plus a file stay unlabeled
    touch(tmp_path, "n01440764/a.JPEG")
    touch(tmp_path, "n01443537/b.JPEG")
    touch(tmp_path, "README.txt")
    data = DataConfig(source=str(tmp_path))
    assert resolve_layout(data) is Layout.UNLABELED  # without classes: the documented rule
    assert resolve_layout(data, classes) is Layout.IMAGEFOLDER
    listing = list_inputs(data, classes)
    assert listing.layout is Layout.IMAGEFOLDER
    assert [(r.image_id, r.label) for r in listing.records] == [
        ("a", classes.index("n01440764")),
        ("b", classes.index("n01443537")),
    ]
    assert [(r.image_id, r.error) for r in listing.errors] == [
        ("README", "no label: file is not inside a class folder")
    ]
    other = tmp_path / "other"
    touch(other, "2024-01/a.JPEG")
    touch(other, "notes.txt")
    assert resolve_layout(DataConfig(source=str(other)), classes) is Layout.UNLABELED
