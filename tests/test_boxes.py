"""Tests for audit.data.boxes: the three box formats, bad data, and mapping boxes into the crop.

The mapping is checked against an independent reference: each box is drawn as a white rectangle
on a black image of the original size, the image goes through the real transform
(:meth:`EvalTransform.apply`, or :func:`decode_image` for the JPEG draft path), and the white
region's bounding box in the crop must be where :func:`map_box` says.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import pytest
from PIL import Image, ImageDraw

from audit.data.boxes import (
    Box,
    BoxesError,
    BoxProblem,
    BoxSet,
    box_mask,
    crop_geometry,
    jpeg_draft_scale,
    map_box,
    parse_devkit_xml,
    parse_kaggle_boxes,
    parse_plain_boxes,
    read_boxes,
    read_devkit_xml_boxes,
    read_kaggle_boxes,
    read_plain_boxes,
)
from audit.data.decode import decode_image, draft_size
from audit.errors import AuditError
from audit.models.transform import STANDARD, EvalTransform
from audit.storage_errors import TransientStorageError

MAX = 89_478_485
REAL_ROW = "ILSVRC2012_val_00008726,n02119789 255 142 454 329 n02119789 44 21 322 295"
FOX = "n02119789"


@pytest.fixture
def mem_root() -> Iterator[str]:
    """A fresh memory:// folder, removed afterwards."""
    fs = fsspec.filesystem("memory")
    path = f"/boxes-test-{uuid.uuid4().hex}"
    yield f"memory://{path}"
    if fs.exists(path):
        fs.rm(path, recursive=True)


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return str(path)


def voc(
    objects: list[tuple[str, object, object, object, object]],
    size: tuple[int, int] | None = (500, 375),
    filename: str = "ILSVRC2012_val_00000001",
) -> str:
    """A devkit annotation as ImageNet writes it (the fields it has, in its order)."""
    size_xml = (
        f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
        if size is not None
        else ""
    )
    objs = "".join(
        f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
        f"<difficult>0</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
        f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        for name, x0, y0, x1, y1 in objects
    )
    return (
        f"<annotation><folder>val</folder><filename>{filename}</filename>"
        f"<source><database>ILSVRC_2012</database></source>{size_xml}<segmented>0</segmented>"
        f"{objs}</annotation>\n"
    )


def kinds(problems: list[BoxProblem] | tuple[BoxProblem, ...]) -> list[str]:
    return [p.kind for p in problems]


# --------------------------------------------------------------------------- Box


def test_box_holds_floats_and_its_size() -> None:
    box = Box(FOX, 1, 2, 11, 7)
    assert (box.x0, box.y0, box.x1, box.y1) == (1.0, 2.0, 11.0, 7.0)
    assert all(type(v) is float for v in (box.x0, box.y0, box.x1, box.y1))
    assert (box.width, box.height, box.area) == (10.0, 5.0, 50.0)
    assert Box(FOX, np.int64(1), np.float32(2), 3, 4).x0 == 1.0  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ((5, 0, 5, 1), "x0 must be less than x1. Got x0=5, x1=5 instead."),
        ((0, 3, 1, 2), "y0 must be less than y1. Got y0=3, y1=2 instead."),
        ((-1, 0, 1, 1), "x0 must be finite and >= 0. Got -1 instead."),
        ((0, 0, float("inf"), 1), "x1 must be finite and >= 0. Got inf instead."),
        ((0, float("nan"), 1, 1), "y0 must be finite and >= 0. Got nan instead."),
        ((0, 0, "1", 1), "x1 must be a number. Got '1' instead."),
        ((0, 0, 1, True), "y1 must be a number. Got True instead."),
    ],
)
def test_box_refuses_what_is_not_a_box(values: tuple[object, ...], message: str) -> None:
    with pytest.raises(ValueError) as info:
        Box(FOX, *values)  # type: ignore[arg-type]
    assert str(info.value) == message


@pytest.mark.parametrize("wnid", ["", "n0 1", " n01"])
def test_box_class_id_is_one_word(wnid: str) -> None:
    with pytest.raises(ValueError, match="class id must be one word"):
        Box(wnid, 0, 0, 1, 1)


# --------------------------------------------------------------------------- Kaggle


def test_kaggle_real_format(tmp_path: Path) -> None:
    path = write(
        tmp_path / "LOC_val_solution.csv",
        "ImageId,PredictionString\n"
        f"{REAL_ROW}\n"
        "ILSVRC2012_val_00000001,n01751748 111 108 441 193 \n",
    )
    found, problems = read_kaggle_boxes(path)
    assert problems == []
    assert found == {
        "ILSVRC2012_val_00008726": [Box(FOX, 255, 142, 454, 329), Box(FOX, 44, 21, 322, 295)],
        "ILSVRC2012_val_00000001": [Box("n01751748", 111, 108, 441, 193)],
    }


def test_kaggle_bad_rows_and_boxes_are_skipped_and_described() -> None:
    text = (
        "\ufeffImageId,PredictionString\r\n"  # a BOM and Windows line ends, as Excel saves it
        f"{REAL_ROW}\r\n"
        "\r\n"  # blank: skipped silently
        "ILSVRC2012_val_00000002,n01 1 2 3 4 n02 5 x 7 8 n03 10 0 10 5\r\n"  # line 4
        "ILSVRC2012_val_00000003,\r\n"  # line 5: no PredictionString
        "ILSVRC2012_val_00000004\r\n"  # line 6: no second column
        "ILSVRC2012_val_00000005,n01 1 2 3\r\n"  # line 7: not groups of five
        "ILSVRC2012_val_00000006,n01 1 2 3 4,extra\r\n"  # line 8: three columns
        "ILSVRC2012_val_00000007,n01 -1 2 3 4\r\n"  # line 9: negative
        "ILSVRC2012_val_00000008,n01 0 9 4 9\r\n"  # line 10: y_min == y_max
        ",n01 1 2 3 4\r\n"  # line 11: no ImageId
    )
    found, problems = parse_kaggle_boxes(text, "sol.csv")
    assert found == {
        "ILSVRC2012_val_00008726": [Box(FOX, 255, 142, 454, 329), Box(FOX, 44, 21, 322, 295)],
        "ILSVRC2012_val_00000002": [Box("n01", 1, 2, 3, 4)],
    }
    assert [str(p) for p in problems] == [
        "sol.csv line 4: box 2 of ILSVRC2012_val_00000002 (n02): y_min must be a number. "
        "Got 'x' instead.",
        "sol.csv line 4: box 3 of ILSVRC2012_val_00000002 (n03): x_min must be less than "
        "x_max. Got x_min=10, x_max=10 instead.",
        "sol.csv line 5: must be 'ImageId,<wnid> <x_min> <y_min> <x_max> <y_max> ...'. "
        "Got 'ILSVRC2012_val_00000003,' instead.",
        "sol.csv line 6: must be 'ImageId,<wnid> <x_min> <y_min> <x_max> <y_max> ...'. "
        "Got 'ILSVRC2012_val_00000004' instead.",
        "sol.csv line 7: PredictionString must be groups of 5 values (wnid x_min y_min x_max "
        "y_max). Got 4 values instead.",
        "sol.csv line 8: must be 'ImageId,<wnid> <x_min> <y_min> <x_max> <y_max> ...'. "
        "Got 'ILSVRC2012_val_00000006,n01 1 2 3 4,extra' instead.",
        "sol.csv line 9: box 1 of ILSVRC2012_val_00000007 (n01): x_min must be finite and >= 0. "
        "Got -1 instead.",
        "sol.csv line 10: box 1 of ILSVRC2012_val_00000008 (n01): y_min must be less than "
        "y_max. Got y_min=9, y_max=9 instead.",
        "sol.csv line 11: must be 'ImageId,<wnid> <x_min> <y_min> <x_max> <y_max> ...'. "
        "Got ',n01 1 2 3 4' instead.",
    ]
    assert kinds(problems) == ["box", "box", "row", "row", "row", "row", "box", "box", "row"]


def test_kaggle_duplicate_image_ids_merge_their_boxes() -> None:
    text = (
        "ImageId,PredictionString\n"
        "ILSVRC2012_val_00000001,n01 1 2 3 4\n"
        "ILSVRC2012_val_00000002,n02 0 0 9 9\n"
        "ILSVRC2012_val_00000001,n01 5 6 7 8 n03 0 0 2 2\n"
    )
    found, problems = parse_kaggle_boxes(text, "sol.csv")
    assert problems == []
    assert found["ILSVRC2012_val_00000001"] == [
        Box("n01", 1, 2, 3, 4),
        Box("n01", 5, 6, 7, 8),
        Box("n03", 0, 0, 2, 2),
    ]
    assert found["ILSVRC2012_val_00000002"] == [Box("n02", 0, 0, 9, 9)]


def test_kaggle_coordinates_are_x_min_y_min_x_max_y_max() -> None:
    found, _ = parse_kaggle_boxes("ImageId,PredictionString\na,n01 1 2 30 40\n", "s.csv")
    assert found["a"][0] == Box("n01", x0=1, y0=2, x1=30, y1=40)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "line 1 must be the header 'ImageId,PredictionString'. Got '' instead."),
        (
            "image_id,wnid,x0,y0,x1,y1\n",
            "line 1 must be the header 'ImageId,PredictionString'. "
            "Got 'image_id,wnid,x0,y0,x1,y1' instead.",
        ),
        ("ImageId,PredictionString\n", "holds no valid box."),
        (
            "ImageId,PredictionString\na,n01 3 0 1 1\n",
            "holds no valid box (1 problems; first: s.csv line 2: box 1 of a (n01): x_min must "
            "be less than x_max. Got x_min=3, x_max=1 instead.).",
        ),
        (
            'ImageId,PredictionString\na,"n01 1 2 3 4\n',
            "line 2 is not CSV: unexpected end of data.",
        ),
    ],
)
def test_kaggle_file_that_cannot_be_read_at_all_raises(text: str, message: str) -> None:
    with pytest.raises(BoxesError) as info:
        parse_kaggle_boxes(text, "s.csv")
    assert str(info.value).endswith(message)
    assert "s.csv" in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, AuditError) and isinstance(info.value, ValueError)


def test_missing_or_binary_file_raises_naming_it(tmp_path: Path) -> None:
    with pytest.raises(BoxesError, match=r"'.*nope\.csv' must be an existing file"):
        read_kaggle_boxes(str(tmp_path / "nope.csv"))
    (tmp_path / "bin.csv").write_bytes(b"ImageId,PredictionString\n\xff\xfe\x00")
    with pytest.raises(BoxesError, match=r"bin\.csv' must be UTF-8 text \(byte 25 is not\)"):
        read_kaggle_boxes(str(tmp_path / "bin.csv"))


# --------------------------------------------------------------------------- plain CSV


def test_plain_csv(tmp_path: Path) -> None:
    path = write(
        tmp_path / "boxes.csv",
        "image_id,wnid,x0,y0,x1,y1\n"
        "img_a,digit_3,1,2,30.5,40\n"
        "img_a,digit_3,5,5,6,6\n"
        "img_b,n01751748,0,0,10,10\n",
    )
    found, problems = read_plain_boxes(path)
    assert problems == []
    assert found == {
        "img_a": [Box("digit_3", 1, 2, 30.5, 40), Box("digit_3", 5, 5, 6, 6)],
        "img_b": [Box("n01751748", 0, 0, 10, 10)],
    }


def test_plain_csv_columns_in_any_order_with_more_and_bad_rows() -> None:
    text = (
        "score,y1,x1,y0,x0,wnid,image_id\n"
        "0.9,40,30,2,1,n01,a\n"
        "0.1,4,3,2,,n01,b\n"  # line 3: x0 missing
        "0.1,4,3,2,9,n01,c\n"  # line 4: x0 > x1
        "0.1,4,3,2,1e999,n01,d\n"  # line 5: infinite
        "0.1,4,3\n"  # line 6: short row
    )
    found, problems = parse_plain_boxes(text, "p.csv")
    assert found == {"a": [Box("n01", 1, 2, 30, 40)]}
    assert [str(p) for p in problems] == [
        "p.csv line 3: must give image_id,wnid,x0,y0,x1,y1. Got '0.1,4,3,2,,n01,b' instead.",
        "p.csv line 4: box of c (n01): x0 must be less than x1. Got x0=9, x1=3 instead.",
        "p.csv line 5: box of d (n01): x0 must be finite and >= 0. Got inf instead.",
        "p.csv line 6: must give image_id,wnid,x0,y0,x1,y1. Got '0.1,4,3' instead.",
    ]
    assert kinds(problems) == ["row", "box", "box", "row"]


def test_plain_csv_header_must_name_the_columns() -> None:
    with pytest.raises(BoxesError, match=r"must name the columns .* \(no x1, y1\)\.$"):
        parse_plain_boxes("image_id,wnid,x0,y0,w,h\na,n01,1,1,2,2\n", "p.csv")


# --------------------------------------------------------------------------- devkit XML


def test_xml_one_and_several_objects() -> None:
    one, problems = parse_devkit_xml(voc([("n01751748", 111, 108, 441, 193)]).encode(), "a.xml")
    assert (one, problems) == ([Box("n01751748", 111, 108, 441, 193)], [])
    several, problems = parse_devkit_xml(
        voc([(FOX, 0, 0, 500, 375), (FOX, 10, 20, 30, 40), ("n02", 1, 1, 2, 2)]).encode(),
        "b.xml",
    )
    assert problems == []
    assert several == [Box(FOX, 0, 0, 500, 375), Box(FOX, 10, 20, 30, 40), Box("n02", 1, 1, 2, 2)]


def test_xml_without_objects_is_a_file_problem() -> None:
    boxes, problems = parse_devkit_xml(voc([]).encode(), "e.xml")
    assert boxes == []
    assert [str(p) for p in problems] == ["e.xml: has no <object>; the image gets no boxes."]
    assert kinds(problems) == ["file"]


def test_xml_bad_objects_are_box_problems() -> None:
    xml = voc(
        [
            (FOX, 10, 10, 20, 20),
            (FOX, 10, 10, 501, 20),  # beyond the 500 px width
            (FOX, 10, 10, 20, 376),  # beyond the 375 px height
            (FOX, 10, "ten", 20, 20),
            (FOX, 30, 10, 20, 20),
            ("", 1, 1, 2, 2),
        ]
    ).replace("</annotation>", "<object><name>n03</name></object></annotation>")
    boxes, problems = parse_devkit_xml(xml.encode(), "v.xml")
    assert boxes == [Box(FOX, 10, 10, 20, 20)]
    assert [str(p) for p in problems] == [
        f"v.xml: object 2 ({FOX}): must lie inside the 500x375 image. Got xmax=501, ymax=20 "
        "instead.",
        f"v.xml: object 3 ({FOX}): must lie inside the 500x375 image. Got xmax=20, ymax=376 "
        "instead.",
        f"v.xml: object 4 ({FOX}): ymin must be a number. Got 'ten' instead.",
        f"v.xml: object 5 ({FOX}): xmin must be less than xmax. Got xmin=30, xmax=20 instead.",
        "v.xml: object 6 (no name): the class id must be one word. Got '' instead.",
        "v.xml: object 7 (n03): has no <bndbox>.",
    ]
    assert kinds(problems) == ["box"] * 6


def test_xml_box_on_the_image_edge_is_inside_and_no_size_means_no_check() -> None:
    boxes, problems = parse_devkit_xml(voc([(FOX, 0, 0, 500, 375)]).encode(), "a.xml")
    assert (boxes, problems) == ([Box(FOX, 0, 0, 500, 375)], [])
    boxes, problems = parse_devkit_xml(voc([(FOX, 0, 0, 900, 900)], size=None).encode(), "a.xml")
    assert (boxes, problems) == ([Box(FOX, 0, 0, 900, 900)], [])


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"<annotation><object>", "is not well-formed XML: no element found (line 1, column 20)"),
        (b"", "is not well-formed XML: no element found (line 1, column 0)"),
        (b"\x00\x01binary", "is not well-formed XML: not well-formed (invalid token) (line 1"),
        (
            b"<annotation>&nbsp;</annotation>",
            "is not well-formed XML: undefined entity (line 1, column 12)",
        ),
        (b"<root><object/></root>", "must have the root <annotation>. Got <root> instead."),
        (
            voc([(FOX, 1, 1, 2, 2)], size=(0, 375)).encode(),
            "<size> must give a positive width and height. Got width='0', height='375' instead.",
        ),
    ],
)
def test_malformed_xml_is_a_file_problem_not_fatal(data: bytes, reason: str) -> None:
    boxes, problems = parse_devkit_xml(data, "m.xml")
    assert boxes == []
    assert len(problems) == 1 and problems[0].kind == "file" and problems[0].where == "m.xml"
    assert problems[0].reason.startswith(reason)


@pytest.mark.parametrize(
    "doctype",
    [
        '<!DOCTYPE annotation [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>',
        '<!DOCTYPE annotation [<!ENTITY x SYSTEM "file:///etc/passwd">]>',
        '<!DOCTYPE annotation SYSTEM "http://example.invalid/voc.dtd">',
        "<!DOCTYPE annotation>",
    ],
)
def test_doctype_is_refused(doctype: str) -> None:
    body = voc([("&b;", 1, 1, 2, 2)]) if "&a;" in doctype else voc([(FOX, 1, 1, 2, 2)])
    data = f'<?xml version="1.0"?>\n{doctype}\n{body}'.encode()
    boxes, problems = parse_devkit_xml(data, "d.xml")
    assert boxes == []
    assert [str(p) for p in problems] == [
        "d.xml: has a DOCTYPE, which is refused (entities are never expanded)."
    ]


def test_xml_folder_local(tmp_path: Path) -> None:
    val = tmp_path / "val"
    write(val / "ILSVRC2012_val_00000001.xml", voc([("n01751748", 111, 108, 441, 193)]))
    write(val / "sub" / "ILSVRC2012_val_00000002.xml", voc([(FOX, 1, 2, 3, 4), (FOX, 5, 6, 7, 8)]))
    write(val / "ILSVRC2012_val_00000003.XML", voc([(FOX, 9, 9, 10, 10)]))
    write(val / "ILSVRC2012_val_00000004.xml", "<annotation>")  # malformed
    write(val / "ILSVRC2012_val_00000005.xml", voc([]))  # no object
    write(val / "other" / "ILSVRC2012_val_00000001.xml", voc([(FOX, 0, 0, 1, 1)]))  # repeat
    write(val / "README.txt", "not an annotation")
    write(val / ".hidden" / "ILSVRC2012_val_00000009.xml", voc([(FOX, 0, 0, 1, 1)]))
    write(val / "._ILSVRC2012_val_00000010.xml", "\x00junk")  # macOS resource fork

    found, problems = read_devkit_xml_boxes(str(val))

    assert found == {
        "ILSVRC2012_val_00000001": [Box("n01751748", 111, 108, 441, 193)],
        "ILSVRC2012_val_00000002": [Box(FOX, 1, 2, 3, 4), Box(FOX, 5, 6, 7, 8)],
        "ILSVRC2012_val_00000003": [Box(FOX, 9, 9, 10, 10)],
    }
    assert [str(p) for p in problems] == [
        f"{val}/ILSVRC2012_val_00000004.xml: is not well-formed XML: no element found "
        "(line 1, column 12)",
        f"{val}/ILSVRC2012_val_00000005.xml: has no <object>; the image gets no boxes.",
        f"{val}/other/ILSVRC2012_val_00000001.xml: repeats image ILSVRC2012_val_00000001 "
        f"(also {val}/ILSVRC2012_val_00000001.xml).",
    ]
    assert kinds(problems) == ["file"] * 3


def test_xml_folder_over_fsspec(mem_root: str) -> None:
    fs = fsspec.filesystem("memory")
    root = mem_root.removeprefix("memory://")
    fs.pipe(f"{root}/val/ILSVRC2012_val_00000001.xml", voc([(FOX, 1, 2, 3, 4)]).encode())
    fs.pipe(f"{root}/val/ILSVRC2012_val_00000002.xml", b"<annotation><")
    found, problems = read_devkit_xml_boxes(f"{mem_root}/val")
    assert found == {"ILSVRC2012_val_00000001": [Box(FOX, 1, 2, 3, 4)]}
    assert [p.where for p in problems] == [f"{mem_root}/val/ILSVRC2012_val_00000002.xml"]

    boxes = read_boxes(f"{mem_root}/val/")
    assert boxes.format == "devkit_xml" and boxes.n_boxes == 1


def test_xml_folder_listed_by_an_object_store(
    mem_root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An object store lists every key under the folder at once (``fs.find``), hidden ones
    included, and a folder that could not be listed comes back as a reason."""
    fs = fsspec.filesystem("memory")
    root = mem_root.removeprefix("memory://")
    fs.pipe(f"{root}/a/ILSVRC2012_val_00000001.xml", voc([(FOX, 1, 2, 3, 4)]).encode())
    fs.pipe(f"{root}/.cache/ILSVRC2012_val_00000002.xml", voc([(FOX, 1, 2, 3, 4)]).encode())
    fs.pipe(f"{root}/a/._ILSVRC2012_val_00000003.xml", b"\x00junk")

    def find_once(fs: object, path: str) -> tuple[list[str], list[tuple[str, str]]]:
        keys = [str(p) for p in fsspec.filesystem("memory").find(path)]
        return keys, [(f"{path}/b", "PermissionError: cannot list folder b: denied")]

    monkeypatch.setattr("audit.data.boxes.find_files", find_once)
    found, problems = read_devkit_xml_boxes(mem_root)
    assert list(found) == ["ILSVRC2012_val_00000001"]
    assert [str(p) for p in problems] == [
        f"memory://{root}/b: PermissionError: cannot list folder b: denied"
    ]
    assert kinds(problems) == ["file"]


def test_xml_folder_without_usable_files_raises(tmp_path: Path) -> None:
    write(tmp_path / "empty" / "README", "x")
    with pytest.raises(BoxesError, match=r"'.*empty' holds no \.xml file\.$"):
        read_devkit_xml_boxes(str(tmp_path / "empty"))
    write(tmp_path / "bad" / "a.xml", "<annotation>")
    with pytest.raises(BoxesError, match=r"'.*bad' holds no valid box \(1 problems; first: "):
        read_devkit_xml_boxes(str(tmp_path / "bad"))
    with pytest.raises(BoxesError, match="must be an existing file or folder"):
        read_devkit_xml_boxes(str(tmp_path / "missing"))


def test_xml_folder_storage_errors(mem_root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that may not be read is a problem; a storage that keeps failing transiently is
    not a property of the file and fails the read."""
    fs = fsspec.filesystem("memory")
    root = mem_root.removeprefix("memory://")
    for n in (1, 2):
        fs.pipe(f"{root}/ILSVRC2012_val_0000000{n}.xml", voc([(FOX, 1, 2, 3, 4)]).encode())
    opened = type(fs)._open
    failure: list[OSError] = [PermissionError(13, "Permission denied")]

    def flaky(self: object, path: str, *args: object, **kw: object) -> object:
        if path.endswith("2.xml"):
            raise failure[0]
        return opened(self, path, *args, **kw)

    monkeypatch.setattr(type(fs), "_open", flaky)
    monkeypatch.setattr("audit.data.boxes.READ_BACKOFF_S", 0.0)
    found, problems = read_devkit_xml_boxes(mem_root)
    assert list(found) == ["ILSVRC2012_val_00000001"]
    assert [str(p) for p in problems] == [
        f"{mem_root}/ILSVRC2012_val_00000002.xml: cannot be read: PermissionError: [Errno 13] "
        "Permission denied"
    ]
    failure[0] = ConnectionResetError(104, "Connection reset by peer")
    with pytest.raises(TransientStorageError, match="failed 4 times"):
        read_devkit_xml_boxes(mem_root)


# --------------------------------------------------------------------------- read_boxes


def test_read_boxes_picks_the_format(tmp_path: Path) -> None:
    kaggle = write(tmp_path / "k" / "solution.csv", f"ImageId,PredictionString\n{REAL_ROW}\n")
    plain = write(tmp_path / "p.csv", "image_id,wnid,x0,y0,x1,y1\na,n01,0,0,1,1\na,n01,2,2,3,3\n")
    write(tmp_path / "x" / "ILSVRC2012_val_00000001.xml", voc([(FOX, 1, 2, 3, 4)]))
    write(tmp_path / "layout" / "LOC_val_solution.csv", f"ImageId,PredictionString\n{REAL_ROW}\n")
    write(tmp_path / "layout" / "ILSVRC2012_val_00008726.JPEG", "")

    k = read_boxes(kaggle)
    assert (k.format, k.source, k.n_images, k.n_boxes) == ("kaggle", kaggle, 1, 2)
    assert k.get("ILSVRC2012_val_00008726") == (
        Box(FOX, 255, 142, 454, 329),
        Box(FOX, 44, 21, 322, 295),
    )
    assert k.get("ILSVRC2012_val_00000001") == ()
    assert "ILSVRC2012_val_00008726" in k and "other" not in k

    p = read_boxes(plain)
    assert (p.format, p.n_images, p.n_boxes) == ("plain", 1, 2)

    x = read_boxes(str(tmp_path / "x"))
    assert x.format == "devkit_xml"
    assert dict(x.boxes) == {"ILSVRC2012_val_00000001": (Box(FOX, 1, 2, 3, 4),)}
    one = read_boxes(str(tmp_path / "x" / "ILSVRC2012_val_00000001.xml"))
    assert one.format == "devkit_xml" and dict(one.boxes) == dict(x.boxes)

    layout = read_boxes(str(tmp_path / "layout"))
    assert layout.format == "kaggle"
    assert layout.source == f"{tmp_path / 'layout'}/LOC_val_solution.csv"
    assert layout.n_boxes == 2


def test_read_boxes_counts_and_summary(tmp_path: Path) -> None:
    path = write(
        tmp_path / "LOC_val_solution.csv",
        "ImageId,PredictionString\n"
        f"{REAL_ROW}\n"
        "ILSVRC2012_val_00000002,n01 1 2 3 4 n01 3 2 1 4\n"
        "ILSVRC2012_val_00000003,\n"
        "ILSVRC2012_val_00000001,n01 9 9 10 10\n",
    )
    boxes = read_boxes(path)
    assert isinstance(boxes, BoxSet)
    assert list(boxes.boxes) == [  # sorted by image id
        "ILSVRC2012_val_00000001",
        "ILSVRC2012_val_00000002",
        "ILSVRC2012_val_00008726",
    ]
    assert boxes.counts == {
        "images": 3,
        "boxes": 4,
        "skipped_boxes": 1,
        "skipped_rows": 1,
        "skipped_files": 0,
    }
    assert boxes.summary() == (
        f"3 images, 4 boxes (kaggle, {path}); skipped 1 boxes, 1 rows (first: {path} line 3: "
        "box 2 of ILSVRC2012_val_00000002 (n01): x_min must be less than x_max. Got x_min=3, "
        "x_max=1 instead.)"
    )
    clean = read_boxes(write(tmp_path / "c.csv", f"ImageId,PredictionString\n{REAL_ROW}\n"))
    assert clean.summary().endswith("; no problem") and clean.problems == ()


def test_read_boxes_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    with pytest.raises(BoxesError, match=r"'.*nowhere' must be an existing file or folder\.$"):
        read_boxes(str(tmp_path / "nowhere"))
    other = write(tmp_path / "o.csv", "filename,label\na.jpg,3\n")
    with pytest.raises(BoxesError) as info:
        read_boxes(other)
    assert str(info.value) == (
        f"The boxes file {other!r} line 1 must be the header 'ImageId,PredictionString' "
        "(Kaggle) or name the columns image_id,wnid,x0,y0,x1,y1. Got 'filename,label' instead."
    )
    write(tmp_path / "imgs" / "a.JPEG", "")
    with pytest.raises(BoxesError, match=r"must hold the devkit's \.xml files or LOC_val_solution"):
        read_boxes(str(tmp_path / "imgs"))


# --------------------------------------------------------------------------- the crop geometry


def reference_bbox(
    size: tuple[int, int], box: Box, transform: EvalTransform
) -> tuple[int, int, int, int] | None:
    """The white region's bounding box after the real transform, or None when all black."""
    img = Image.new("RGB", size, (0, 0, 0))
    draw = ImageDraw.Draw(img)
    draw.rectangle([box.x0, box.y0, box.x1 - 1, box.y1 - 1], fill=(255, 255, 255))
    return white_bbox(transform.apply(img))


def white_bbox(crop: np.ndarray) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero(crop[..., 0] > 127)
    if not len(xs):
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def assert_close(mapped: Box | None, ref: tuple[int, int, int, int] | None, tol: float) -> None:
    assert mapped is not None and ref is not None, (mapped, ref)
    got = (mapped.x0, mapped.y0, mapped.x1, mapped.y1)
    assert max(abs(a - b) for a, b in zip(got, ref, strict=True)) <= tol, (got, ref)


TOLERANCE = {"nearest": 0.5, "bilinear": 1.0, "bicubic": 1.0, "lanczos": 1.5}
"""Nearest samples each crop pixel's centre, so the white region is exactly the pixels whose
centre lies in the mapped box (0.5 px: a centre exactly on an edge may go either way); the
antialiased filters blur the edge by less than a pixel at the 50 % threshold."""

# (original (w, h), box (x0, y0, x1, y1), transform); every one runs with each filter above
CASES = [
    # ImageNet's typical landscape 500x375 and portrait 375x500, the standard transform
    ((500, 375), (111, 108, 441, 193), STANDARD),
    ((375, 500), (40, 60, 300, 420), STANDARD),
    # odd sizes: the crop offset is a rounded half (half to even)
    ((341, 257), (0, 0, 200, 257), STANDARD),
    ((257, 341), (13, 7, 256, 340), EvalTransform(resize=(233,), crop=(201, 199))),
    # a box partly outside the crop: clipped to it
    ((500, 375), (0, 50, 120, 300), STANDARD),
    # keep_ratio (timm) and squash, landscape and portrait, non-square crops
    (
        (640, 427),
        (100, 50, 600, 400),
        EvalTransform((288, 320), (256, 288), resize_mode="keep_ratio"),
    ),
    (
        (427, 640),
        (20, 100, 400, 600),
        EvalTransform((235, 235), (224, 224), resize_mode="keep_ratio"),
    ),
    ((500, 333), (150, 30, 480, 300), EvalTransform((224, 300), (224, 256), resize_mode="squash")),
    ((333, 500), (10, 10, 320, 170), EvalTransform((300, 224), (257, 224), resize_mode="squash")),
    # crops larger than the resized image: zero padding, the smaller half before
    ((101, 77), (10, 10, 90, 70), EvalTransform(resize=(64,), crop=(99, 120))),
    ((77, 101), (0, 0, 77, 101), EvalTransform(resize=(64,), crop=(99, 120))),
    ((120, 90), (30, 20, 100, 80), EvalTransform((50, 61), (75, 80), resize_mode="squash")),
    ((90, 120), (5, 5, 85, 115), EvalTransform((48, 48), (49, 63), resize_mode="keep_ratio")),
    # padded along one axis, cropped along the other
    ((300, 100), (40, 10, 290, 95), EvalTransform(resize=(60,), crop=(81, 100))),
    # upscaling a small image
    ((31, 23), (3, 4, 28, 20), EvalTransform(resize=(256,), crop=(224, 224))),
    # more elongated than MAX_ASPECT: centre-cut first
    ((20, 401), (2, 150, 18, 260), EvalTransform(resize=(64,), crop=(64, 64))),
    ((1700, 100), (700, 20, 1000, 90), STANDARD),
    ((1700, 100), (820, 20, 880, 90), STANDARD),
    # ... with a crop larger than what is left: boxes clipped at the cut, not at the image
    ((20, 401), (2, 0, 18, 200), EvalTransform(resize=(16,), crop=(300, 40))),
    ((401, 20), (0, 2, 200, 18), EvalTransform(resize=(16,), crop=(40, 300))),
]


@pytest.mark.parametrize("interpolation", list(TOLERANCE))
@pytest.mark.parametrize(("size", "edges", "transform"), CASES)
def test_map_box_matches_the_real_transform(
    size: tuple[int, int],
    edges: tuple[int, int, int, int],
    transform: EvalTransform,
    interpolation: str,
) -> None:
    t = EvalTransform(
        resize=transform.resize,
        crop=transform.crop,
        interpolation=interpolation,
        resize_mode=transform.resize_mode,
    )
    box = Box(FOX, *edges)
    mapped = map_box(box, size, t)
    assert_close(mapped, reference_bbox(size, box, t), TOLERANCE[interpolation])
    assert mapped is not None and mapped.wnid == FOX


@pytest.mark.parametrize(("size", "edges", "transform"), CASES)
def test_box_mask_is_the_nearest_neighbour_image(
    size: tuple[int, int], edges: tuple[int, int, int, int], transform: EvalTransform
) -> None:
    """With nearest, the white pixels are those whose centre falls in the mapped box: exactly
    :func:`box_mask`, up to a centre lying exactly on an edge."""
    t = EvalTransform(
        transform.resize, transform.crop, "nearest", resize_mode=transform.resize_mode
    )
    box = Box(FOX, *edges)
    img = Image.new("RGB", size, (0, 0, 0))
    ImageDraw.Draw(img).rectangle([box.x0, box.y0, box.x1 - 1, box.y1 - 1], fill=(255, 255, 255))
    white = t.apply(img)[..., 0] > 127
    mapped = map_box(box, size, t)
    assert mapped is not None
    mask = box_mask([mapped], t.crop_hw)
    assert mask.shape == t.crop_hw and mask.any()
    rows, cols = np.nonzero(white != mask)
    tie_cols = _ties(mapped.x0, mapped.x1)
    tie_rows = _ties(mapped.y0, mapped.y1)
    assert all(c in tie_cols or r in tie_rows for r, c in zip(rows, cols, strict=True)), (
        mapped,
        white_bbox(t.apply(img)),
    )


def _ties(*edges: float) -> set[int]:
    """The pixels whose centre lies on one of ``edges`` (PIL's fixed-point sampling may put such
    a pixel on either side)."""
    return {round(e - 0.5) for e in edges if abs(e - 0.5 - round(e - 0.5)) < 1e-4}


@pytest.mark.parametrize(("size", "transform"), [(c[0], c[2]) for c in CASES])
def test_geometry_is_where_each_crop_pixel_samples_the_image(
    size: tuple[int, int], transform: EvalTransform
) -> None:
    """An image whose pixels hold their own column and row (plus one: 0 is the padding) goes
    through the real transform with nearest sampling; each crop pixel then says which original
    pixel it took. It must be the one under its centre by :func:`crop_geometry`, and padding
    exactly outside ``visible``."""
    t = EvalTransform(
        transform.resize, transform.crop, "nearest", resize_mode=transform.resize_mode
    )
    w, h = size
    g = crop_geometry(size, t)
    lines = []  # per axis (x, then y): the source pixel wanted per crop line, ties, visible
    for n, scale, offset, lo, hi in (
        (t.crop_hw[1], g.scale_x, g.offset_x, g.visible[0], g.visible[2]),
        (t.crop_hw[0], g.scale_y, g.offset_y, g.visible[1], g.visible[3]),
    ):
        centres = np.arange(n) + 0.5
        u = (centres - offset) / scale  # the original coordinate under each centre
        tie = np.abs(u - np.round(u)) < 1e-6  # on a pixel edge: either side may be taken
        lines.append((np.floor(u + 1e-9).astype(np.int64), tie, (centres >= lo) & (centres < hi)))
    (want_x, tie_x, in_x), (want_y, tie_y, in_y) = lines
    inside = in_y[:, None] & in_x[None, :]
    for axis, want, tie in (
        (1, want_x[None, :], tie_x[None, :]),
        (0, want_y[:, None], tie_y[:, None]),
    ):
        coords = np.indices((h, w))[axis] + 1
        img = np.stack([coords % 256, coords // 256, np.zeros_like(coords)], axis=-1)
        crop = t.apply(Image.fromarray(img.astype(np.uint8), "RGB")).astype(np.int64)
        sampled = crop[..., 0] + 256 * crop[..., 1] - 1  # -1: padding
        assert (sampled[~inside] == -1).all(), ("padding", axis, g)
        got = sampled[inside]
        exp = np.broadcast_to(want, t.crop_hw)[inside]
        edge = np.broadcast_to(tie, t.crop_hw)[inside]
        assert ((got == exp) | (edge & (got == exp - 1))).all(), ("sampled", axis, g)
        assert got.min() >= 0 and got.max() < (w if axis == 1 else h)


def test_map_box_random_sweep(rng: np.random.Generator) -> None:
    """Random sizes, modes, crops and boxes, bilinear; boxes of at least a few pixels."""
    checked = 0
    for _ in range(150):
        w, h = (int(v) for v in rng.integers(16, 720, size=2))
        mode = str(rng.choice(["shorter", "keep_ratio", "squash"]))
        resize = (int(rng.integers(32, 400)),) * (1 if mode == "shorter" else 2)
        if mode != "shorter":
            resize = (resize[0], int(rng.integers(32, 400)))
        crop = (int(rng.integers(16, 420)), int(rng.integers(16, 420)))
        t = EvalTransform(resize=resize, crop=crop, resize_mode=mode)
        x0, x1 = sorted(int(v) for v in rng.choice(w + 1, 2, replace=False))
        y0, y1 = sorted(int(v) for v in rng.choice(h + 1, 2, replace=False))
        if min(x1 - x0, y1 - y0) < 4:
            continue
        box = Box(FOX, x0, y0, x1, y1)
        mapped = map_box(box, (w, h), t)
        ref = reference_bbox((w, h), box, t)
        if mapped is None:
            assert ref is None, (w, h, box, t)
            continue
        if min(mapped.width, mapped.height) < 2:
            continue  # a sliver may stay under the threshold
        assert_close(mapped, ref, 1.0)
        checked += 1
    assert checked > 50


def test_box_outside_the_crop_maps_to_none() -> None:
    size = (500, 300)  # 500x300 -> 426x256 -> crop starts at x = 101
    box = Box(FOX, 0, 50, 100, 250)  # 0..85 after the resize, all left of the crop
    assert map_box(box, size, STANDARD) is None
    assert reference_bbox(size, box, STANDARD) is None
    touching = Box(FOX, 0, 50, 119, 250)  # up to x = 101.4: just into the crop
    mapped = map_box(touching, size, STANDARD)
    assert mapped is not None and mapped.x0 == 0 and 0 < mapped.x1 < 1
    padded = EvalTransform(resize=(50,), crop=(80, 80))  # the image fills 15..65 of each axis
    inside = map_box(Box(FOX, 0, 0, 100, 100), (100, 100), padded)
    assert inside == Box(FOX, 15, 15, 65, 65)  # clipped to the image, not to the padding


def test_crop_geometry_of_the_standard_transform() -> None:
    # 500x375 -> resize the shorter side to 256: 341x256; crop 224 at round(58.5) = 58 (half
    # to even), round(16.0) = 16
    g = crop_geometry((500, 375), STANDARD)
    assert (g.scale_x, g.scale_y) == (341 / 500, 256 / 375)
    assert (g.offset_x, g.offset_y) == (-58, -16)
    assert g.visible == (0, 0, 224, 224) and g.crop_hw == (224, 224)
    # portrait 375x500: 256x341, crop at (16, 58)
    g = crop_geometry((375, 500), STANDARD)
    assert (g.offset_x, g.offset_y) == (-16, -58)
    # a non-square crop (h, w) = (100, 150) of a 300x300 squash to 200x200 (h, w)
    g = crop_geometry((300, 300), EvalTransform((200, 200), (100, 150), resize_mode="squash"))
    assert (g.offset_x, g.offset_y) == (-25, -50)
    assert g.map(Box(FOX, 0, 0, 300, 300)) == Box(FOX, 0, 0, 150, 100)
    # padding: 20x10 -> resize 10: 20x10, crop (h, w) = (15, 25): pad 2 left, 2 top
    g = crop_geometry((20, 10), EvalTransform(resize=(10,), crop=(15, 25)))
    assert (g.offset_x, g.offset_y) == (2, 2) and g.visible == (2, 2, 22, 12)


def test_map_all_drops_what_the_crop_does_not_show() -> None:
    g = crop_geometry((500, 300), STANDARD)
    boxes = [Box(FOX, 0, 0, 50, 50), Box("n02", 200, 100, 300, 200)]
    mapped = g.map_all(boxes)
    assert len(mapped) == 1 and mapped[0].wnid == "n02"
    assert mapped[0] == map_box(boxes[1], (500, 300), STANDARD)


@pytest.mark.parametrize(
    ("size", "draft_scale", "message"),
    [
        ((0, 10), 1, "image_size must be (width, height) >= 1"),
        ((10, 10), 3, "draft_scale must be one of (1, 2, 4, 8)"),
    ],
)
def test_crop_geometry_refuses_bad_arguments(
    size: tuple[int, int], draft_scale: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        crop_geometry(size, STANDARD, draft_scale=draft_scale)


def test_box_mask() -> None:
    mask = box_mask([Box(FOX, 1, 2, 4, 3)], (5, 6))
    expected = np.zeros((5, 6), dtype=bool)
    expected[2, 1:4] = True
    np.testing.assert_array_equal(mask, expected)
    # a pixel is in when its centre is: [0.5, 2.5) covers the centres 0.5 and 1.5 only
    mask = box_mask([Box(FOX, 0.5, 0.5, 2.5, 1.6), Box(FOX, 4, 3, 100, 100)], (5, 6))
    expected = np.zeros((5, 6), dtype=bool)
    expected[0:2, 0:2] = True
    expected[3:, 4:] = True  # clipped to the crop
    np.testing.assert_array_equal(mask, expected)
    assert not box_mask([], (3, 4)).any() and box_mask([], (3, 4)).shape == (3, 4)
    assert not box_mask([Box(FOX, 1.6, 1.6, 2.4, 2.4)], (5, 5)).any()  # no centre inside


# --------------------------------------------------------------------------- the JPEG draft path


def draft_jpeg(size: tuple[int, int], box: Box) -> bytes:
    img = Image.new("RGB", size, (0, 0, 0))
    ImageDraw.Draw(img).rectangle([box.x0, box.y0, box.x1 - 1, box.y1 - 1], fill=(255, 255, 255))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("size", "transform", "scale"),
    [
        ((500, 375), STANDARD, 1),  # shorter side under twice the resize: never drafted
        ((1201, 1001), STANDARD, 2),
        ((1001, 1201), STANDARD, 2),
        ((2401, 2099), STANDARD, 8),
        ((2000, 1100), STANDARD, 4),
        ((1300, 1100), EvalTransform((160, 200), (150, 150), resize_mode="keep_ratio"), 4),
    ],
)
def test_jpeg_draft_scale_is_what_pil_does(
    size: tuple[int, int], transform: EvalTransform, scale: int
) -> None:
    assert jpeg_draft_scale(size, transform) == scale
    data = draft_jpeg(size, Box(FOX, 0, 0, 1, 1))
    with Image.open(io.BytesIO(data)) as img:
        resize = min(transform.resized_size(*size))
        if min(size) >= 2 * resize:
            img.draft(img.mode, draft_size(*size, resize))
        drafted = img.size
    assert drafted == (-(-size[0] // scale), -(-size[1] // scale))  # libjpeg: ceil(size / s)
    g = crop_geometry(size, transform, draft_scale=scale)
    rh, rw = transform.resized_size(*drafted)
    assert (g.scale_x, g.scale_y) == (rw / drafted[0] / scale, rh / drafted[1] / scale)


@pytest.mark.parametrize(
    ("size", "edges", "transform"),
    [
        ((1201, 1001), (100, 200, 1100, 900), STANDARD),
        ((1001, 1201), (300, 150, 900, 1000), STANDARD),
        ((2401, 2099), (500, 400, 2000, 1900), STANDARD),
        (
            (2000, 1100),
            (0, 0, 1500, 700),
            EvalTransform((300, 300), (256, 256), "bicubic", resize_mode="keep_ratio"),
        ),
    ],
)
def test_map_box_matches_the_decode_path_with_jpeg_draft(
    size: tuple[int, int], edges: tuple[int, int, int, int], transform: EvalTransform
) -> None:
    box = Box(FOX, *edges)
    data = draft_jpeg(size, box)
    scale = jpeg_draft_scale(size, transform)
    assert scale > 1
    drafted = white_bbox(decode_image(data, MAX, transform, draft=True))
    assert_close(map_box(box, size, transform, draft_scale=scale), drafted, 1.5)
    exact = white_bbox(decode_image(data, MAX, transform))  # without draft mode: scale 1
    assert_close(map_box(box, size, transform), exact, 1.0)
