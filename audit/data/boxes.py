"""Object boxes of the input images: reading them, and mapping them into the crop a model sees.

Three formats are read (docs/boxes.md), each into ``image_id -> [Box, ...]`` plus the problems
met on the way:

* Kaggle's ``LOC_val_solution.csv`` (:func:`read_kaggle_boxes`): header
  ``ImageId,PredictionString``, the string being ``wnid x_min y_min x_max y_max`` repeated;
* the devkit's per-image PASCAL-VOC XML files (:func:`read_devkit_xml_boxes`), a folder of
  ``ILSVRC2012_val_00000001.xml`` ...;
* a plain CSV (:func:`read_plain_boxes`) with the columns ``image_id,wnid,x0,y0,x1,y1``.

:func:`read_boxes` picks the format from what it finds and returns a :class:`BoxSet`.

**Bad data is skipped and reported, never fatal.** A box that is not a box (a value that is not
a number, ``x0 >= x1``, a negative or infinite value, an edge outside the image when the XML
gives its size) is left out; so is a row that cannot be read (no ``PredictionString``, a count
of values that is not a multiple of five) and an XML file that is not well-formed or has a
``DOCTYPE``. Each becomes a :class:`BoxProblem` naming the file and line. Only a source that
cannot be read as any of the formats at all (a missing file, a wrong header, not UTF-8, no XML
file, not one valid box) raises :class:`BoxesError`; a storage that keeps failing transiently
raises :class:`~audit.storage_errors.TransientStorageError` (a missing box is not a bad box).

XML is parsed with expat into an ``xml.etree`` tree, and a document type declaration is refused
before any of it is read: no entity is ever declared, so none can be expanded (the "billion
laughs") or fetched.

**Mapping into the crop.** Boxes are in the pixels of the original image: ``(x0, y0)`` its
top-left and ``(x1, y1)`` its bottom-right edge, as the file writes them. :func:`crop_geometry`
follows an image through exactly what :func:`audit.data.decode.decode_image` does to it: JPEG
draft decoding at 1/2, 1/4 or 1/8 scale (only with ``data.jpeg_draft``;
:func:`jpeg_draft_scale`), the centre cut of images more elongated than
:data:`~audit.models.transform.MAX_ASPECT`, the transform's resize (``shorter``, ``keep_ratio``
or ``squash``), and its centre crop, padding included when the crop is larger than the image.
``data.max_pixels`` never shrinks an image (a larger one is refused), and EXIF orientation is
not applied, so nothing else changes the geometry. :func:`map_box` maps one box and clips it to
the part of the image the crop shows; :func:`box_mask` rasterises boxes in crop pixels.

Example::

    boxes = read_boxes("/data/LOC_val_solution.csv")
    log.info("boxes: %s", boxes.summary())  # '<n> images, <m> boxes (kaggle, ...); no problem'
    geometry = crop_geometry((500, 375), transform)  # (width, height) of the original
    in_crop = geometry.map_all(boxes.get("ILSVRC2012_val_00000001"))  # crop pixels, clipped
    mask = box_mask(in_crop, transform.crop_hw)  # (crop_h, crop_w) bool
"""

from __future__ import annotations

import csv
import io
import math
import numbers
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree
from xml.parsers import expat

import fsspec
import numpy as np
from fsspec.spec import AbstractFileSystem

from audit.data.decode import READ_ATTEMPTS, READ_BACKOFF_S, draft_size
from audit.data.walk import find_files
from audit.errors import AuditError
from audit.models.transform import MAX_ASPECT, EvalTransform
from audit.storage_errors import TransientStorageError, describe, retry, secret_values

KAGGLE_BOXES = "LOC_val_solution.csv"
KAGGLE_HEADER = ("ImageId", "PredictionString")
PLAIN_HEADER = ("image_id", "wnid", "x0", "y0", "x1", "y1")
FORMATS = ("kaggle", "devkit_xml", "plain")
"""What :attr:`BoxSet.format` may be: the three readers, in this order."""

PROBLEM_KINDS = ("box", "row", "file")
"""What was skipped: one box, one CSV row (all its boxes), one XML file (all its boxes)."""
COUNT_KEYS = ("skipped_boxes", "skipped_rows", "skipped_files")
""":attr:`BoxSet.counts`' key of each of :data:`PROBLEM_KINDS`."""

DRAFT_SCALES = (1, 2, 4, 8)
XML_READ_THREADS = 16
"""XML files read at once (an object store serves one request per file)."""

SHOWN_CHARS = 80
"""Longest piece of a bad row a problem quotes."""

BoxesByImage = dict[str, list["Box"]]


class BoxesError(AuditError, ValueError):
    """A boxes source cannot be read at all; the message is one line naming the file."""


@dataclass(frozen=True)
class Box:
    """One object's box, ``[x0, x1) x [y0, y1)`` in pixels of some image.

    Attributes:
        wnid: The object's class id (a WordNet id for ImageNet; any id without spaces).
        x0: Left edge.
        y0: Top edge.
        x1: Right edge, greater than ``x0``.
        y1: Bottom edge, greater than ``y0``.

    Raises:
        ValueError: (when built) an empty or spaced ``wnid``, an edge that is not a finite number
            >= 0, ``x0 >= x1`` or ``y0 >= y1``; the message is one line.
    """

    wnid: str
    x0: float
    y0: float
    x1: float
    y1: float

    def __post_init__(self) -> None:
        if (
            not isinstance(self.wnid, str)
            or not self.wnid
            or self.wnid != "".join(self.wnid.split())
        ):
            raise ValueError(f"the class id must be one word. Got {self.wnid!r} instead.")
        for name in ("x0", "y0", "x1", "y1"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(f"{name} must be a number. Got {value!r} instead.")
            value = float(value)
            object.__setattr__(self, name, value)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be finite and >= 0. Got {_num(value)} instead.")
        if self.x0 >= self.x1:
            raise ValueError(
                f"x0 must be less than x1. Got x0={_num(self.x0)}, x1={_num(self.x1)} instead."
            )
        if self.y0 >= self.y1:
            raise ValueError(
                f"y0 must be less than y1. Got y0={_num(self.y0)}, y1={_num(self.y1)} instead."
            )

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def area(self) -> float:
        return self.width * self.height


@dataclass(frozen=True)
class BoxProblem:
    """Something skipped while reading boxes.

    Attributes:
        kind: One of :data:`PROBLEM_KINDS`.
        where: The file, and the line for a CSV (``/data/LOC_val_solution.csv line 7``).
        reason: One line: what is wrong, and which box when it is one box of several.
    """

    kind: str
    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass(frozen=True)
class BoxSet:
    """The boxes read from one source.

    Attributes:
        source: The path or URL they were read from, as given.
        format: One of :data:`FORMATS`.
        boxes: ``image_id -> boxes`` in original-image pixels, sorted by image id; an image id is
            the file name without its last extension (``ILSVRC2012_val_00000001``), as in every
            output table. An image without a valid box is not in it.
        problems: What was skipped, in the order met.
    """

    source: str
    format: str
    boxes: Mapping[str, tuple[Box, ...]]
    problems: tuple[BoxProblem, ...] = field(default=())

    def get(self, image_id: str) -> tuple[Box, ...]:
        """The boxes of ``image_id``; ``()`` when the source has none for it."""
        return self.boxes.get(image_id, ())

    def __contains__(self, image_id: object) -> bool:
        return image_id in self.boxes

    @property
    def n_images(self) -> int:
        return len(self.boxes)

    @property
    def n_boxes(self) -> int:
        return sum(len(b) for b in self.boxes.values())

    @property
    def counts(self) -> dict[str, int]:
        """``images`` and ``boxes`` kept, and the problems of each kind: ``skipped_boxes`` (single
        bad boxes; an image all of whose boxes are bad is left out), ``skipped_rows`` (CSV rows
        that could not be split into boxes), ``skipped_files`` (XML files, unlisted folders)."""
        out = {"images": self.n_images, "boxes": self.n_boxes}
        for kind, key in zip(PROBLEM_KINDS, COUNT_KEYS, strict=True):
            out[key] = sum(p.kind == kind for p in self.problems)
        return out

    def summary(self) -> str:
        """One line for the log: how much was read, from where, and what was skipped."""
        counts = self.counts
        text = (
            f"{counts['images']:,} images, {counts['boxes']:,} boxes ({self.format}, {self.source})"
        )
        skipped = [f"{counts[k]:,} {k.removeprefix('skipped_')}" for k in COUNT_KEYS if counts[k]]
        if not skipped:
            return text + "; no problem"
        return f"{text}; skipped {', '.join(skipped)} (first: {self.problems[0]})"


# --------------------------------------------------------------------------- reading


def read_boxes(source: str, storage_options: Mapping[str, Any] | None = None) -> BoxSet:
    """Read the boxes at ``source`` (local path or fsspec URL), whichever format they are in.

    A folder holding ``.xml`` files (at any depth; hidden ones left out) is read as the devkit's
    XML files; a folder without any but with ``LOC_val_solution.csv`` at its top (the ``kaggle``
    layout's folder) as that file; a single ``.xml`` file as one devkit file; any other file by
    its first line: Kaggle's header ``ImageId,PredictionString`` or one naming the plain
    columns ``image_id,wnid,x0,y0,x1,y1`` (more columns, in any order, are ignored).

    Raises:
        BoxesError: the source does not exist, is none of the formats, or cannot be read at all
            (see the readers).
        TransientStorageError: the storage kept failing transiently.
    """
    options = dict(storage_options or {})
    fs, path = fsspec.core.url_to_fs(source, **options)
    if _isdir(fs, path, source):
        root = path.rstrip("/") or "/"
        paths, unlisted = _xml_files(fs, root, source)
        if paths:
            found, problems = _read_xml_files(
                fs, root, source, paths, unlisted, secret_values(options)
            )
            return _box_set(source, "devkit_xml", found, problems)
        kaggle = f"{path.rstrip('/')}/{KAGGLE_BOXES}"
        if fs.isfile(kaggle):
            shown = f"{source.rstrip('/')}/{KAGGLE_BOXES}"
            return _box_set(
                shown, "kaggle", *parse_kaggle_boxes(_read_text(fs, kaggle, shown), shown)
            )
        raise BoxesError(
            f"The boxes folder {source!r} must hold the devkit's .xml files or {KAGGLE_BOXES}; "
            "it holds neither."
        )
    if path.lower().endswith(".xml"):
        boxes, problems = parse_devkit_xml(_read_bytes(fs, path, source), source)
        one = {_image_id(path): boxes} if boxes else {}
        return _box_set(source, "devkit_xml", *_require_boxes(one, problems, source))
    text = _read_text(fs, path, source)
    header = _header(text, source)
    if header == KAGGLE_HEADER:
        return _box_set(source, "kaggle", *parse_kaggle_boxes(text, source))
    if set(PLAIN_HEADER) <= set(header):
        return _box_set(source, "plain", *parse_plain_boxes(text, source))
    raise BoxesError(
        f"The boxes file {source!r} line 1 must be the header 'ImageId,PredictionString' "
        f"(Kaggle) or name the columns {','.join(PLAIN_HEADER)}. Got {_shown(','.join(header))} "
        "instead."
    )


def read_kaggle_boxes(
    source: str, storage_options: Mapping[str, Any] | None = None
) -> tuple[BoxesByImage, list[BoxProblem]]:
    """Read Kaggle's ``LOC_val_solution.csv`` at ``source``: see :func:`parse_kaggle_boxes`.

    Raises:
        BoxesError: the file is missing or unreadable, or :func:`parse_kaggle_boxes` raises.
        TransientStorageError: the storage kept failing transiently.
    """
    fs, path = fsspec.core.url_to_fs(source, **dict(storage_options or {}))
    return parse_kaggle_boxes(_read_text(fs, path, source), source)


def read_plain_boxes(
    source: str, storage_options: Mapping[str, Any] | None = None
) -> tuple[BoxesByImage, list[BoxProblem]]:
    """Read a plain ``image_id,wnid,x0,y0,x1,y1`` CSV at ``source``: see :func:`parse_plain_boxes`.

    Raises:
        BoxesError: the file is missing or unreadable, or :func:`parse_plain_boxes` raises.
        TransientStorageError: the storage kept failing transiently.
    """
    fs, path = fsspec.core.url_to_fs(source, **dict(storage_options or {}))
    return parse_plain_boxes(_read_text(fs, path, source), source)


def read_devkit_xml_boxes(
    folder: str, storage_options: Mapping[str, Any] | None = None
) -> tuple[BoxesByImage, list[BoxProblem]]:
    """Read every ``*.xml`` file under ``folder`` (local path or fsspec URL) as one image's
    devkit annotation (:func:`parse_devkit_xml`); the image id is the file's name without
    ``.xml``.

    Files whose names do not end in ``.xml`` and hidden files or folders (a name starting with
    ``.``) are left out. A file that cannot be read, is not well-formed, has a ``DOCTYPE`` or no
    ``<object>``, a second file of the same image id (in another subfolder), and a subfolder that
    cannot be listed are problems of kind ``file``.

    Raises:
        BoxesError: the folder does not exist or holds no ``.xml`` file, or no file gave a box.
        TransientStorageError: the storage kept failing transiently.
    """
    options = dict(storage_options or {})
    fs, path = fsspec.core.url_to_fs(folder, **options)
    if not _isdir(fs, path, folder):
        raise BoxesError(f"The boxes folder {folder!r} must be an existing folder.")
    root = path.rstrip("/") or "/"
    paths, problems = _xml_files(fs, root, folder)
    return _read_xml_files(fs, root, folder, paths, problems, secret_values(options))


def parse_kaggle_boxes(text: str, shown: str) -> tuple[BoxesByImage, list[BoxProblem]]:
    """``ImageId -> boxes`` from the text of Kaggle's ``LOC_val_solution.csv``.

    Each row is ``ImageId,<wnid> <x_min> <y_min> <x_max> <y_max> ...`` (one group of five per
    box). An ImageId listed on several rows gets the boxes of all of them; blank lines are
    skipped. A row without a PredictionString, or whose value count is not a multiple of five,
    is a ``row`` problem; a group that is not a valid box a ``box`` problem.

    Raises:
        BoxesError: line 1 is not the header ``ImageId,PredictionString``, the text is not CSV,
            or not one valid box was found.
    """
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")), strict=True)
    header = _csv_header(reader, shown)
    if header != KAGGLE_HEADER:
        raise BoxesError(
            f"The boxes file {shown!r} line 1 must be the header 'ImageId,PredictionString'. "
            f"Got {_shown(','.join(header))} instead."
        )
    found: BoxesByImage = {}
    problems: list[BoxProblem] = []
    for line, row in _rows(reader, shown):
        where = f"{shown} line {line}"
        image_id = row[0].strip() if row else ""
        tokens = row[1].split() if len(row) == 2 else []
        if not image_id or not tokens:
            problems.append(
                BoxProblem(
                    "row",
                    where,
                    "must be 'ImageId,<wnid> <x_min> <y_min> <x_max> <y_max> ...'. "
                    f"Got {_shown(','.join(row))} instead.",
                )
            )
            continue
        if len(tokens) % 5:
            problems.append(
                BoxProblem(
                    "row",
                    where,
                    f"PredictionString must be groups of 5 values (wnid x_min y_min x_max "
                    f"y_max). Got {len(tokens)} values instead.",
                )
            )
            continue
        for start in range(0, len(tokens), 5):
            wnid, *values = tokens[start : start + 5]
            box = _box(wnid, values, ("x_min", "y_min", "x_max", "y_max"))
            if isinstance(box, Box):
                found.setdefault(image_id, []).append(box)
            else:
                problems.append(
                    BoxProblem("box", where, f"box {start // 5 + 1} of {image_id} ({wnid}): {box}")
                )
    return _require_boxes(found, problems, shown)


def parse_plain_boxes(text: str, shown: str) -> tuple[BoxesByImage, list[BoxProblem]]:
    """``image_id -> boxes`` from a CSV with the columns ``image_id,wnid,x0,y0,x1,y1``.

    One box per row; the columns may come in any order, and more columns are ignored. Blank
    lines are skipped. A row without an image id or with a missing value is a ``row`` problem;
    a row whose values are not a valid box a ``box`` problem.

    Raises:
        BoxesError: line 1 does not name the six columns, the text is not CSV, or not one valid
            box was found.
    """
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")), strict=True)
    header = _csv_header(reader, shown)
    missing = [c for c in PLAIN_HEADER if c not in header]
    if missing:
        raise BoxesError(
            f"The boxes file {shown!r} line 1 must name the columns {','.join(PLAIN_HEADER)}. "
            f"Got {_shown(','.join(header))} instead (no {', '.join(missing)})."
        )
    at = [header.index(c) for c in PLAIN_HEADER]
    found: BoxesByImage = {}
    problems: list[BoxProblem] = []
    for line, row in _rows(reader, shown):
        where = f"{shown} line {line}"
        cells = [row[i].strip() if i < len(row) else "" for i in at]
        image_id, wnid = cells[0], cells[1]
        if not all(cells):
            problems.append(
                BoxProblem(
                    "row",
                    where,
                    f"must give {','.join(PLAIN_HEADER)}. Got {_shown(','.join(row))} instead.",
                )
            )
            continue
        box = _box(wnid, cells[2:], PLAIN_HEADER[2:])
        if isinstance(box, Box):
            found.setdefault(image_id, []).append(box)
        else:
            problems.append(BoxProblem("box", where, f"box of {image_id} ({wnid}): {box}"))
    return _require_boxes(found, problems, shown)


def parse_devkit_xml(data: bytes, shown: str) -> tuple[list[Box], list[BoxProblem]]:
    """The boxes of one devkit (PASCAL-VOC) annotation file.

    The root is ``<annotation>``; each ``<object>`` directly under it holds ``<name>`` (the
    wnid) and ``<bndbox>`` with ``<xmin> <ymin> <xmax> <ymax>``. When ``<size>`` gives
    ``<width>`` and ``<height>``, a box reaching beyond them is invalid.

    Returns:
        ``(boxes, problems)``: an object that is not a valid box is a ``box`` problem; a file
        that is not well-formed XML, has a ``DOCTYPE``, another root or an unusable ``<size>`` is
        one ``file`` problem, and none of its boxes are kept; so is one without any ``<object>``.
    """
    try:
        root = _parse_xml(data)
    except _RefusedXml as exc:
        return [], [BoxProblem("file", shown, str(exc))]
    except expat.ExpatError as exc:
        reason = expat.ErrorString(exc.code) if exc.code else str(exc)
        return [], [
            BoxProblem(
                "file",
                shown,
                f"is not well-formed XML: {reason} (line {exc.lineno}, column {exc.offset})",
            )
        ]
    if root.tag != "annotation":
        return [], [
            BoxProblem("file", shown, f"must have the root <annotation>. Got <{root.tag}> instead.")
        ]
    size = root.find("size")
    limit: tuple[float, float] | None = None
    if size is not None:
        width, height = _text(size, "width"), _text(size, "height")
        if width or height:
            w, h = _number(width), _number(height)
            if w is None or h is None or w <= 0 or h <= 0:
                return [], [
                    BoxProblem(
                        "file",
                        shown,
                        f"<size> must give a positive width and height. Got width={width!r}, "
                        f"height={height!r} instead.",
                    )
                ]
            limit = (w, h)
    boxes: list[Box] = []
    problems: list[BoxProblem] = []
    objects = root.findall("object")
    for n, obj in enumerate(objects, start=1):
        wnid = _text(obj, "name")
        what = f"object {n} ({wnid or 'no name'})"
        bndbox = obj.find("bndbox")
        if bndbox is None:
            problems.append(BoxProblem("box", shown, f"{what}: has no <bndbox>."))
            continue
        names = ("xmin", "ymin", "xmax", "ymax")
        box = _box(wnid, [_text(bndbox, k) for k in names], names)
        if isinstance(box, Box) and limit is not None and (box.x1 > limit[0] or box.y1 > limit[1]):
            box = (
                f"must lie inside the {_num(limit[0])}x{_num(limit[1])} image. Got xmax="
                f"{_num(box.x1)}, ymax={_num(box.y1)} instead."
            )
        if isinstance(box, Box):
            boxes.append(box)
        else:
            problems.append(BoxProblem("box", shown, f"{what}: {box}"))
    if not objects:
        problems.append(BoxProblem("file", shown, "has no <object>; the image gets no boxes."))
    return boxes, problems


# --------------------------------------------------------------------------- mapping into the crop


@dataclass(frozen=True)
class CropGeometry:
    """Where an original image's pixels land in a model's crop: an axis-aligned scale and
    shift, and the part of the crop the image covers.

    ``x_crop = x * scale_x + offset_x`` (likewise ``y``) for ``x`` in original-image pixels.

    Attributes:
        scale_x: Crop pixels per original pixel, horizontally.
        scale_y: The same, vertically (it differs from ``scale_x`` after ``squash``, and by a
            rounding otherwise).
        offset_x: Where the original's left edge lands (negative when the crop cuts it off).
        offset_y: Where its top edge lands.
        visible: ``(x0, y0, x1, y1)`` in crop pixels of what the crop shows of the image (not
            of its padding); boxes are clipped to it.
        crop_hw: ``(h, w)`` of the crop.
    """

    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float
    visible: tuple[float, float, float, float]
    crop_hw: tuple[int, int]

    def map(self, box: Box) -> Box | None:
        """``box`` (original pixels) in crop pixels, clipped to :attr:`visible`; None when no
        part of it is visible."""
        vx0, vy0, vx1, vy1 = self.visible
        x0 = max(box.x0 * self.scale_x + self.offset_x, vx0)
        x1 = min(box.x1 * self.scale_x + self.offset_x, vx1)
        y0 = max(box.y0 * self.scale_y + self.offset_y, vy0)
        y1 = min(box.y1 * self.scale_y + self.offset_y, vy1)
        if x0 >= x1 or y0 >= y1:
            return None
        return Box(box.wnid, x0, y0, x1, y1)

    def map_all(self, boxes: Iterable[Box]) -> tuple[Box, ...]:
        """:meth:`map` of each box, leaving out those the crop does not show."""
        return tuple(b for b in (self.map(box) for box in boxes) if b is not None)


def crop_geometry(
    image_size: tuple[int, int], transform: EvalTransform, *, draft_scale: int = 1
) -> CropGeometry:
    """The geometry of ``transform`` on an original image of ``image_size`` (module docstring).

    Args:
        image_size: ``(width, height)`` of the original image, as PIL's ``Image.size`` (not
            ``(h, w)``).
        transform: The model's evaluation transform.
        draft_scale: The JPEG draft scale the image was decoded at (:func:`jpeg_draft_scale`
            with ``data.jpeg_draft``; 1 otherwise).

    Raises:
        ValueError: a size < 1 or a draft scale not in :data:`DRAFT_SCALES`.
    """
    width, height = (int(v) for v in image_size)
    if width < 1 or height < 1:
        raise ValueError(f"image_size must be (width, height) >= 1. Got {image_size!r} instead.")
    if draft_scale not in DRAFT_SCALES:
        raise ValueError(f"draft_scale must be one of {DRAFT_SCALES}. Got {draft_scale!r} instead.")
    s = draft_scale
    w, h = -(-width // s), -(-height // s)  # libjpeg's scaled size: ceil(size / s)
    cut_x = cut_y = 0  # transform._cut_extreme
    short, long_ = min(w, h), max(w, h)
    if long_ > MAX_ASPECT * short:
        keep = int(MAX_ASPECT * short)
        keep += (long_ - keep) % 2
        if w > h:
            cut_x, w = (w - keep) // 2, keep
        else:
            cut_y, h = (h - keep) // 2, keep
    rh, rw = transform.resized_size(w, h)
    crop_h, crop_w = transform.crop_hw
    pad_x, left = _centre(rw, crop_w)
    pad_y, top = _centre(rh, crop_h)
    sx, sy = rw / w, rh / h
    offset_x = -cut_x * sx + pad_x - left
    offset_y = -cut_y * sy + pad_y - top
    scale_x, scale_y = sx / s, sy / s
    visible = (
        max(0.0, offset_x + cut_x * sx),
        max(0.0, offset_y + cut_y * sy),
        min(float(crop_w), offset_x + (cut_x + w) * sx, width * scale_x + offset_x),
        min(float(crop_h), offset_y + (cut_y + h) * sy, height * scale_y + offset_y),
    )
    return CropGeometry(scale_x, scale_y, offset_x, offset_y, visible, (crop_h, crop_w))


def map_box(
    box: Box, image_size: tuple[int, int], transform: EvalTransform, *, draft_scale: int = 1
) -> Box | None:
    """``box`` (pixels of the original ``(width, height)`` image) in pixels of the crop the
    model sees, clipped to the part of the image the crop shows; None when it shows none of the
    box. Many boxes of one image: :func:`crop_geometry` once, then :meth:`CropGeometry.map`.

    Raises:
        ValueError: see :func:`crop_geometry`.
    """
    return crop_geometry(image_size, transform, draft_scale=draft_scale).map(box)


def jpeg_draft_scale(image_size: tuple[int, int], transform: EvalTransform) -> int:
    """The DCT scale (1, 2, 4 or 8) :func:`~audit.data.decode.decode_image` with ``draft=True``
    decodes a JPEG of ``(width, height)`` at: 1 when its shorter side is under twice the size
    the resize makes of it, else the largest scale PIL's ``draft`` allows. A JPEG PIL cannot
    draft (several tiles) and any other format decode at 1 whatever this says."""
    width, height = image_size
    resize = min(transform.resized_size(width, height))
    if min(width, height) < 2 * resize:
        return 1
    want_w, want_h = draft_size(width, height, resize)
    ratio = min(width // want_w, height // want_h)
    return next((s for s in sorted(DRAFT_SCALES, reverse=True) if ratio >= s), 1)


def box_mask(boxes: Iterable[Box], crop_hw: tuple[int, int]) -> np.ndarray:
    """``(h, w)`` bool: the pixels whose centre lies inside any of ``boxes`` (crop pixels).

    Column ``j`` is inside ``[x0, x1)`` when ``x0 <= j + 0.5 < x1``, so a box with integer
    edges covers exactly the columns ``x0 .. x1 - 1``; a box thinner than a pixel may cover
    none. Parts outside the crop are ignored.
    """
    h, w = (int(v) for v in crop_hw)
    mask = np.zeros((h, w), dtype=bool)
    for box in boxes:
        c0, c1 = _pixels(box.x0, box.x1, w)
        r0, r1 = _pixels(box.y0, box.y1, h)
        if c0 < c1 and r0 < r1:
            mask[r0:r1, c0:c1] = True
    return mask


# --------------------------------------------------------------------------- helpers


class _RefusedXml(Exception):
    """An XML construct that is never parsed (a document type declaration)."""


def _parse_xml(data: bytes) -> ElementTree.Element:
    """Parse with expat into an ``xml.etree`` tree, refusing any DOCTYPE as soon as it starts
    (before an entity could be declared, let alone expanded or fetched)."""
    builder = ElementTree.TreeBuilder()
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)

    def refuse(*_: object) -> None:
        raise _RefusedXml("has a DOCTYPE, which is refused (entities are never expanded).")

    def start(tag: str, attrs: dict[str, str]) -> None:
        builder.start(tag, attrs)

    def end(tag: str) -> None:
        builder.end(tag)

    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    parser.Parse(data, True)
    return builder.close()


def _box(wnid: str, values: Sequence[str], names: Sequence[str]) -> Box | str:
    """A :class:`Box` from text values, or the one-line reason it is not one."""
    numbers = []
    for name, value in zip(names, values, strict=True):
        number = _number(value)
        if number is None:
            return f"{name} must be a number. Got {_shown(value)} instead."
        numbers.append(number)
    try:
        return Box(wnid, *numbers)
    except ValueError as exc:
        text = str(exc)
        for ours, theirs in zip(("x0", "y0", "x1", "y1"), names, strict=True):
            text = text.replace(ours, theirs)
        return text


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None and value.strip() else None
    except ValueError:
        return None


def _text(element: ElementTree.Element, tag: str) -> str:
    return (element.findtext(tag) or "").strip()


def _num(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def _shown(text: str) -> str:
    return repr(text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "...")


def _centre(size: int, crop: int) -> tuple[int, int]:
    """``(padding before, crop start)`` of transform._center_crop along one axis: a crop larger
    than the image pads it (the smaller half before), then the crop starts at the rounded
    centre offset of the padded size (Python's round, half to even)."""
    pad = (crop - size) // 2 if crop > size else 0
    padded = max(size, crop)
    return pad, round((padded - crop) / 2.0)


def _pixels(lo: float, hi: float, n: int) -> tuple[int, int]:
    """The pixel indices ``[start, stop)`` whose centres lie in ``[lo, hi)``, within ``[0, n)``."""
    return (
        min(n, max(0, math.ceil(lo - 0.5))),
        min(n, max(0, math.ceil(hi - 0.5))),
    )


def _image_id(path: str) -> str:
    return posixpath.splitext(posixpath.basename(path.rstrip("/")))[0]


def _box_set(source: str, fmt: str, found: BoxesByImage, problems: Sequence[BoxProblem]) -> BoxSet:
    return BoxSet(
        source=source,
        format=fmt,
        boxes={k: tuple(found[k]) for k in sorted(found)},
        problems=tuple(problems),
    )


def _require_boxes(
    found: BoxesByImage, problems: list[BoxProblem], shown: str
) -> tuple[BoxesByImage, list[BoxProblem]]:
    if not found:
        first = f" ({len(problems):,} problems; first: {problems[0]})" if problems else ""
        raise BoxesError(f"The boxes source {shown!r} holds no valid box{first}.")
    return found, problems


def _isdir(fs: AbstractFileSystem, path: str, shown: str) -> bool:
    try:
        if fs.isdir(path):
            return True
        if fs.exists(path):
            return False
    except OSError as exc:
        raise BoxesError(
            f"The boxes source {shown!r} could not be reached: {describe(exc)}"
        ) from None
    raise BoxesError(f"The boxes source {shown!r} must be an existing file or folder.")


def _xml_files(fs: AbstractFileSystem, root: str, shown: str) -> tuple[list[str], list[BoxProblem]]:
    """The ``.xml`` files under ``root`` (sorted, hidden ones left out) and the folders that
    could not be listed, as problems."""
    try:
        found, unlisted = find_files(fs, root)
    except OSError as exc:
        raise BoxesError(
            f"The boxes folder {shown!r} could not be listed: {describe(exc)}"
        ) from None
    prefix = root.rstrip("/") + "/"
    paths = sorted(
        p
        for p in found
        if p.startswith(prefix)
        and p.lower().endswith(".xml")
        and not any(part.startswith(".") for part in p[len(prefix) :].split("/"))
    )
    problems = [BoxProblem("file", fs.unstrip_protocol(p), reason) for p, reason in unlisted]
    return paths, problems


def _read_xml_files(
    fs: AbstractFileSystem,
    root: str,
    folder: str,
    paths: list[str],
    problems: list[BoxProblem],
    secrets: Iterable[str],
) -> tuple[BoxesByImage, list[BoxProblem]]:
    """:func:`read_devkit_xml_boxes` of the listed ``paths`` under ``root``, read
    :data:`XML_READ_THREADS` at a time; ``problems`` (the folders that could not be listed) is
    extended."""
    if not paths:
        raise BoxesError(f"The boxes folder {folder!r} holds no .xml file.")
    prefix = root.rstrip("/") + "/"
    shown = {p: f"{folder.rstrip('/')}/{p[len(prefix) :]}" for p in paths}
    secrets = tuple(secrets)

    def fetch(p: str) -> bytes | OSError:
        try:
            return _read_bytes(fs, p, shown[p], secrets, missing_is_error=False)
        except TransientStorageError:
            raise
        except OSError as exc:
            return exc

    found: BoxesByImage = {}
    first: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=XML_READ_THREADS) as pool:
        for p, data in zip(paths, pool.map(fetch, paths), strict=True):
            where = shown[p]
            if isinstance(data, OSError):
                problems.append(BoxProblem("file", where, f"cannot be read: {describe(data)}"))
                continue
            image_id = _image_id(p)
            if image_id in first:
                problems.append(
                    BoxProblem("file", where, f"repeats image {image_id} (also {first[image_id]}).")
                )
                continue
            boxes, file_problems = parse_devkit_xml(data, where)
            problems.extend(file_problems)
            if boxes:
                first[image_id] = where
                found[image_id] = boxes
    return _require_boxes(found, problems, folder)


def _read_bytes(
    fs: AbstractFileSystem,
    path: str,
    shown: str,
    secrets: Iterable[str] = (),
    *,
    missing_is_error: bool = True,
) -> bytes:
    """A file's bytes, retrying transient storage errors as the decode tasks do.

    Raises:
        BoxesError: (``missing_is_error``) the file is missing, a folder or unreadable; else
            the ``OSError`` itself.
        TransientStorageError: the storage kept failing transiently.
    """

    def fetch() -> bytes:
        with fs.open(path, "rb") as f:
            got: bytes = f.read()
        return got

    try:
        return retry(fetch, f"reading {shown}", READ_ATTEMPTS, READ_BACKOFF_S, secrets=secrets)
    except TransientStorageError:
        raise
    except OSError as exc:
        if not missing_is_error:
            raise
        if isinstance(exc, FileNotFoundError):
            raise BoxesError(f"The boxes file {shown!r} must be an existing file.") from None
        raise BoxesError(f"The boxes file {shown!r} could not be read: {describe(exc)}") from None


def _read_text(fs: AbstractFileSystem, path: str, shown: str) -> str:
    data = _read_bytes(fs, path, shown)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BoxesError(
            f"The boxes file {shown!r} must be UTF-8 text (byte {exc.start} is not)."
        ) from None


def _header(text: str, shown: str) -> tuple[str, ...]:
    return _csv_header(csv.reader(io.StringIO(text.removeprefix("\ufeff")), strict=True), shown)


def _csv_header(reader: Any, shown: str) -> tuple[str, ...]:
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise BoxesError(f"The boxes file {shown!r} line 1 is not CSV: {exc}.") from None
    return tuple(h.strip() for h in header or [])


def _rows(reader: Any, shown: str) -> Iterable[tuple[int, list[str]]]:
    """``(line, row)`` of the non-blank rows after the header.

    Raises:
        BoxesError: the text stops being CSV (an unclosed quote, a NUL).
    """
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise BoxesError(
                f"The boxes file {shown!r} line {reader.line_num} is not CSV: {exc}."
            ) from None
        if row and any(cell.strip() for cell in row):
            yield reader.line_num, row
