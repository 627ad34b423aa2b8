"""List the inputs of a run: which files to read, under which image id, with which label.

Four on-disk layouts are understood (see :class:`~audit.config.Layout`)::

    imagefolder  <root>/<class_id>/.../<image_id>.<ext>      label = the class folder
    kaggle       <root>/.../<image_id>.<ext> + LOC_val_solution.csv
    devkit       <root>/.../<image_id>.<ext> + ILSVRC2012_validation_ground_truth.txt
    unlabeled    <root>/.../<image_id>.<ext>, or an explicit list of paths/URLs

An object store's source is listed once (``fs.find``), so a 50,000-image bucket costs one
recursive listing and no per-file calls; a local folder (and any filesystem whose ``find`` walks
folder by folder) is walked one folder at a time, so that nothing is lost on the way:

* symbolic links are followed, as torchvision's ``ImageFolder`` does (``os.walk(followlinks=True)``):
  a class folder that is a link is a class folder, an image file that is a link is an input; a
  link back to a folder it lies in is not followed and becomes an ``errors`` row (no endless loop);
  a file reached twice through links has its image id twice, so the second is an error record;
* a folder that cannot be listed (``PermissionError``) is an ``errors`` row naming it and why
  (the source itself not being listable is a :class:`ConfigError`).

Which files are inputs:

* every regular file under the source, whatever its extension (a file that is not an image turns
  into an ``errors`` row when it is decoded, so nothing is dropped silently);
* except hidden ones: a file whose name, or the name of a folder between the source and the file,
  starts with ``.`` (``.DS_Store``, ``.ipynb_checkpoints/``, ``.git/``);
* except the labels file itself when it lies inside the source folder.

An input whose label cannot be known at listing time (a file outside any class folder, a class
folder that is not a class of the model, an image missing from the labels file, a second file with
the same image id) is kept as an *error record*: it goes to the ``errors`` table with a one-line
reason instead of disappearing.

Example::

    listing = list_inputs(cfg.data, imagenet_classes())
    listing.records[0]
    # InputRecord(image_id='ILSVRC2012_val_00000001',
    #             uri='file:///data/val/n01751748/ILSVRC2012_val_00000001.JPEG', label=65)
"""

from __future__ import annotations

import dataclasses
import logging
import posixpath
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import fsspec
from fsspec.spec import AbstractFileSystem

from audit.config import ConfigError, DataConfig, Layout
from audit.data.classes import ClassIndex
from audit.data.labels_files import (
    DEVKIT_LABELS,
    KAGGLE_LABELS,
    parse_devkit,
    parse_kaggle,
    read_labels_file,
)
from audit.data.walk import cannot_list, entry_kind, find_files

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputRecord:
    """One input file.

    Attributes:
        image_id: The file name without its last extension (``ILSVRC2012_val_00000001``); the key
            of every output table.
        uri: Fully qualified fsspec URI that workers can open (``file:///abs/x.JPEG``,
            ``s3://bucket/x.JPEG``).
        label: Index into the :class:`ClassIndex` the listing was made for; ``None`` when the
            input has no known label (unlabeled layout, or a listing error).
        error: One-line reason when the input already failed at listing; ``None`` otherwise. An
            error record may still carry a label (a duplicate inside a class folder does).
    """

    image_id: str
    uri: str
    label: int | None
    error: str | None = None


@dataclass(frozen=True)
class Listing:
    """The inputs of a run, after the ``data.classes`` / ``per_class`` / ``limit`` subsets.

    Attributes:
        layout: The resolved layout (never ``AUTO`` or ``DEMO``).
        records: Inputs to decode (``error is None``), sorted by image_id.
        errors: Inputs that already failed at listing (``error`` set), sorted by image_id.
    """

    layout: Layout
    records: tuple[InputRecord, ...]
    errors: tuple[InputRecord, ...]


def resolve_layout(data: DataConfig, classes: ClassIndex | None = None) -> Layout:
    """The layout ``data`` describes, detecting it when ``data.layout`` is ``auto``.

    Detection, first match wins: a list source is ``unlabeled``; a set ``labels_file`` is
    ``kaggle`` when it ends in ``.csv`` and ``devkit`` otherwise; a folder holding
    ``LOC_val_solution.csv`` is ``kaggle``; one holding ``ILSVRC2012_validation_ground_truth.txt``
    is ``devkit``; one with subfolders and either no (non-hidden) files at its top level or at
    least one subfolder named as a class of ``classes`` is ``imagefolder`` (a stray README next
    to the class folders then becomes an ``errors`` row instead of turning every label off);
    anything else is ``unlabeled``. Only the top level of the folder is listed.

    Raises:
        ValueError: ``data`` is the demo set, which the caller resolves before listing.
        ConfigError: detection had to look at the source folder, and it does not exist or is a
            file. A layout given explicitly is returned without touching the source.
    """
    _refuse_demo(data)
    if data.layout is not Layout.AUTO or isinstance(data.source, tuple):
        return _layout_without_listing(data)
    if data.labels_file is not None:
        return _layout_from_labels_file(data.labels_file)
    fs, root = _open_folder(data.source, data.storage_options)
    return _detect_layout(fs, root, classes)


def list_inputs(data: DataConfig, classes: ClassIndex) -> Listing:
    """List, label and subset the inputs described by ``data``.

    Args:
        data: The data section of the run config. ``source`` is a folder (local path or fsspec
            URL, opened with ``data.storage_options``) listed recursively, or a list of
            paths/URLs for the unlabeled layout (taken as given; nothing is listed or checked).
        classes: The model's classes; labels are indices into it.

    Returns:
        The listing. Every kept input is in exactly one of ``records`` and ``errors``. Subsets
        apply in order on the inputs sorted by image_id: ``data.classes`` (only inputs of these
        classes), ``data.per_class`` (the first N of each class), ``data.limit`` (the first N).
        With ``classes`` or ``per_class`` set, inputs without a known label are dropped (they
        belong to no class); with only ``limit``, error records count like any other input.
        Among files sharing an image_id, the first by URI is the input and the others are
        error records.

    Raises:
        ValueError: ``data`` is the demo set, which the caller resolves before listing.
        ConfigError: the source is missing, cannot be listed or holds no inputs (a folder
            under it that cannot be listed is an error record instead); the labels file is missing or
            malformed; ``data.classes`` names a class not in ``classes``; ``data.classes`` or
            ``data.per_class`` is set for an unlabeled source; no input is left after subsetting.
    """
    _refuse_demo(data)
    _check_classes(data, classes)
    options = dict(data.storage_options)
    if isinstance(data.source, tuple):
        layout = _layout_without_listing(data)
        if layout is not Layout.UNLABELED:
            raise ConfigError(
                "The 'data.source' field may be a list only with data.layout 'unlabeled'. "
                f"Got layout {layout.value!r} instead."
            )
        _check_subsets_need_labels(data, layout)
        candidates = _list_uris(data.source, options)
    else:
        fs, root = _open_folder(data.source, options)
        if data.layout is Layout.AUTO:
            layout = (
                _detect_layout(fs, root, classes)
                if data.labels_file is None
                else _layout_from_labels_file(data.labels_file)
            )
        else:
            layout = data.layout
        _check_subsets_need_labels(data, layout)
        candidates = _list_folder(data, fs, root, layout, classes)
    candidates = _mark_duplicates(candidates)
    candidates.sort(key=lambda r: (r.image_id, r.uri))
    kept = _subset(candidates, data, classes)
    if not kept:
        raise ConfigError(
            f"No input of data.source {_show(data.source)} is left after data.classes="
            f"{list(data.classes)}, data.per_class={data.per_class}, data.limit={data.limit}."
        )
    return Listing(
        layout=layout,
        records=tuple(r for r in kept if r.error is None),
        errors=tuple(r for r in kept if r.error is not None),
    )


# --------------------------------------------------------------------------- layout detection


def _refuse_demo(data: DataConfig) -> None:
    if data.is_demo:
        raise ValueError("the demo set has no on-disk layout; resolve it before listing inputs")


def _layout_without_listing(data: DataConfig) -> Layout:
    if data.layout is not Layout.AUTO:
        return data.layout
    return Layout.UNLABELED  # a list source; the caller checked isinstance(source, tuple)


def _layout_from_labels_file(labels_file: str) -> Layout:
    return Layout.KAGGLE if labels_file.lower().endswith(".csv") else Layout.DEVKIT


def _detect_layout(fs: AbstractFileSystem, root: str, classes: ClassIndex | None = None) -> Layout:
    try:
        entries = fs.ls(root, detail=True)
    except OSError as exc:
        raise ConfigError(
            f"The 'data.source' folder {fs.unstrip_protocol(root)!r} could not be listed: "
            f"{cannot_list(fs, root, exc)}"
        ) from None
    files: set[str] = set()
    has_dirs = False
    class_dirs = False
    for entry in entries:
        name = posixpath.basename(str(entry["name"]).rstrip("/"))
        if name.startswith("."):
            continue
        if entry_kind(fs, entry) == "directory":
            has_dirs = True
            class_dirs = class_dirs or (classes is not None and name in classes)
        else:
            files.add(name)
    if KAGGLE_LABELS in files:
        return Layout.KAGGLE
    if DEVKIT_LABELS in files:
        return Layout.DEVKIT
    if has_dirs and (not files or class_dirs):
        return Layout.IMAGEFOLDER
    return Layout.UNLABELED


def _check_subsets_need_labels(data: DataConfig, layout: Layout) -> None:
    if layout is Layout.UNLABELED and (data.classes or data.per_class is not None):
        raise ConfigError(
            "The 'data.per_class' and 'data.classes' fields need labels; "
            f"data.source {_show(data.source)} is laid out as 'unlabeled', which has none."
        )


# --------------------------------------------------------------------------- listing


def _show(source: str | tuple[str, ...]) -> str:
    if isinstance(source, tuple):
        return f"[{len(source)} paths]"
    return repr(source)


def _open_folder(source: str, options: Mapping[str, Any]) -> tuple[AbstractFileSystem, str]:
    fs, root = fsspec.core.url_to_fs(source, **dict(options))
    if not fs.isdir(root):
        if fs.exists(root):
            raise ConfigError(
                "The 'data.source' field must be a folder (give a list for single files). "
                f"Got {source!r} instead."
            )
        raise ConfigError(
            f"The 'data.source' field must be an existing folder. Got {source!r} instead."
        )
    return fs, root.rstrip("/") or "/"


def _image_id(path: str) -> str:
    return posixpath.splitext(posixpath.basename(path.rstrip("/")))[0]


def _list_uris(uris: Iterable[str], options: Mapping[str, Any]) -> list[InputRecord]:
    """Records for an explicit list: no listing and no existence check (decode reports those).

    A file named twice (however spelled: ``/d/x.png`` and ``file:///d/x.png``) is one input; the
    repeats are left out with a warning.
    """
    out = []
    seen: set[str] = set()
    repeats = 0
    for url in uris:
        fs, path = fsspec.core.url_to_fs(url, **options)
        uri = fs.unstrip_protocol(path)
        if uri in seen:
            repeats += 1
            continue
        seen.add(uri)
        out.append(InputRecord(_image_id(path), uri, None))
    if repeats:
        log.warning("data.source names %d file(s) more than once; each is one input", repeats)
    return out


def _list_folder(
    data: DataConfig, fs: AbstractFileSystem, root: str, layout: Layout, classes: ClassIndex
) -> list[InputRecord]:
    labels_uri: str | None = None
    labels_fs, labels_path, labels_shown = fs, "", ""
    if data.labels_file is not None:
        labels_fs, labels_path = fsspec.core.url_to_fs(data.labels_file, **data.storage_options)
        labels_shown = data.labels_file
    elif layout in (Layout.KAGGLE, Layout.DEVKIT):
        name = KAGGLE_LABELS if layout is Layout.KAGGLE else DEVKIT_LABELS
        labels_path = f"{root.rstrip('/')}/{name}"
        labels_shown = f"{str(data.source).rstrip('/')}/{name}"
    if labels_path:
        labels_uri = labels_fs.unstrip_protocol(labels_path)

    prefix = root.rstrip("/") + "/"
    try:
        found, unlisted = find_files(fs, root)
    except OSError as exc:  # an object store's one listing failed: nothing can be listed
        raise ConfigError(
            f"The 'data.source' folder {data.source!r} could not be listed: "
            f"{cannot_list(fs, root, exc)}"
        ) from None
    files: list[tuple[str, str]] = []  # (path relative to root, uri)
    for path in found:
        if not path.startswith(prefix):
            continue  # the root itself (some filesystems report a file root this way)
        rel = path[len(prefix) :]
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        uri = fs.unstrip_protocol(path)
        if uri == labels_uri:
            continue
        files.append((rel, uri))
    failed = []  # folders that could not be listed: error records, label of their class folder
    for path, reason in unlisted:
        if not path.startswith(prefix):
            raise ConfigError(
                f"The 'data.source' folder {data.source!r} could not be listed: {reason}"
            )
        rel = path[len(prefix) :]
        label = classes.get(rel.split("/")[0]) if layout is Layout.IMAGEFOLDER else None
        failed.append(InputRecord(rel, fs.unstrip_protocol(path), label, reason))
    if not files:
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        why = f": {failed[0].error}{more}" if failed else ""
        raise ConfigError(
            f"The 'data.source' folder {data.source!r} holds no input files "
            f"(hidden files and the labels file are not inputs){why}."
        )
    return _label_files(layout, classes, files, labels_fs, labels_path, labels_shown) + failed


def _label_files(
    layout: Layout,
    classes: ClassIndex,
    files: list[tuple[str, str]],
    labels_fs: AbstractFileSystem,
    labels_path: str,
    labels_shown: str,
) -> list[InputRecord]:
    """One record per listed ``(path relative to the source, uri)``, labelled for ``layout``."""
    if layout is Layout.IMAGEFOLDER:
        return [_imagefolder_record(rel, uri, classes) for rel, uri in files]
    if layout is Layout.UNLABELED:
        return [InputRecord(_image_id(rel), uri, None) for rel, uri in files]
    if layout not in (Layout.KAGGLE, Layout.DEVKIT):
        raise ValueError(f"cannot list inputs of layout {layout.value!r}")

    text = read_labels_file(labels_fs, labels_path, labels_shown)
    wnids = (
        parse_kaggle(text, labels_shown)
        if layout is Layout.KAGGLE
        else parse_devkit(text, labels_shown)
    )
    file_name = posixpath.basename(labels_path)
    out = []
    for rel, uri in files:
        image_id = _image_id(rel)
        wnid = wnids.get(image_id)
        if wnid is None:
            out.append(InputRecord(image_id, uri, None, f"no label for {image_id} in {file_name}"))
            continue
        label = classes.get(wnid)
        error = None if label is not None else f"label {wnid} is not a class of {classes.name}"
        out.append(InputRecord(image_id, uri, label, error))
    return out


def _imagefolder_record(rel: str, uri: str, classes: ClassIndex) -> InputRecord:
    class_id, sep, _ = rel.partition("/")
    image_id = _image_id(rel)
    if not sep:
        return InputRecord(image_id, uri, None, "no label: file is not inside a class folder")
    label = classes.get(class_id)
    if label is None:
        return InputRecord(
            image_id, uri, None, f"class folder {class_id!r} is not a class of {classes.name}"
        )
    return InputRecord(image_id, uri, label)


def _mark_duplicates(candidates: list[InputRecord]) -> list[InputRecord]:
    """Turn every file but the first (by URI) of each image_id into an error record."""
    first: dict[str, str] = {}
    out = []
    for rec in sorted(candidates, key=lambda r: r.uri):
        seen = first.get(rec.image_id)
        if seen is None:
            first[rec.image_id] = rec.uri
        else:
            rec = dataclasses.replace(rec, error=f"duplicate image_id (also at {seen})")
        out.append(rec)
    return out


def _subset(
    candidates: list[InputRecord], data: DataConfig, classes: ClassIndex
) -> list[InputRecord]:
    """Apply ``data.classes``, then ``data.per_class``, then ``data.limit``, keeping order."""
    kept = candidates
    if data.classes or data.per_class is not None:
        kept = [r for r in kept if r.label is not None]
    if data.classes:
        wanted = {classes.index(c) for c in data.classes}
        kept = [r for r in kept if r.label in wanted]
    if data.per_class is not None:
        # Only readable records fill a class's quota; a record that is already an error (a
        # duplicate image id) comes along when it duplicates a chosen image or while its class
        # still has room, so it is reported, not dropped, and takes no image's place.
        counts: Counter[int | None] = Counter()
        chosen: set[str] = set()
        per_class = []
        for r in kept:
            if r.error is None:
                if counts[r.label] < data.per_class:
                    counts[r.label] += 1
                    chosen.add(r.image_id)
                    per_class.append(r)
            elif r.image_id in chosen or counts[r.label] < data.per_class:
                per_class.append(r)
        kept = per_class
    if data.limit is not None:
        kept = kept[: data.limit]
    return kept


def _check_classes(data: DataConfig, classes: ClassIndex) -> None:
    for c in data.classes:
        if c not in classes:
            example = f" such as {classes.ids[0]!r}" if classes.ids else ""
            raise ConfigError(
                f"The 'data.classes' field must list classes of {classes.name}{example}. "
                f"Got {c!r} instead."
            )
