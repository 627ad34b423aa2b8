"""The labels files of the ``kaggle`` and ``devkit`` layouts: reading them and parsing them into
``image_id -> WordNet id``; a file that does not fit is a one-line :class:`ConfigError`."""

from __future__ import annotations

import csv
import io

from fsspec.spec import AbstractFileSystem

from audit.config import ConfigError
from audit.data.classes import imagenet_devkit_ids

KAGGLE_LABELS = "LOC_val_solution.csv"
DEVKIT_LABELS = "ILSVRC2012_validation_ground_truth.txt"
KAGGLE_HEADER = ("ImageId", "PredictionString")


def read_labels_file(fs: AbstractFileSystem, path: str, shown: str) -> str:
    try:
        with fs.open(path, "rb") as f:
            raw: bytes = f.read()
    except (FileNotFoundError, IsADirectoryError):
        raise ConfigError(
            "The 'data.labels_file' field must name an existing labels file "
            f"(it defaults to one inside data.source). Tried {shown!r}."
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"The labels file {shown!r} could not be read: {type(exc).__name__}: {exc}"
        ) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"The labels file {shown!r} is not UTF-8 text.") from None


def parse_kaggle(text: str, shown: str) -> dict[str, str]:
    """``ImageId -> wnid`` from Kaggle's ``LOC_val_solution.csv``.

    The label is the first token of ``PredictionString`` (``"n01751748 56 2 493 344 ..."``: a
    WordNet id followed by its box, repeated per box). Blank lines are skipped; anything else
    that does not fit, including an ImageId listed twice, raises ConfigError.
    """
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or tuple(h.strip() for h in header) != KAGGLE_HEADER:
        raise ConfigError(
            f"The labels file {shown!r} line 1 must be the header 'ImageId,PredictionString'. "
            f"Got {','.join(header or [])!r} instead."
        )
    out: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        if not row:
            continue
        tokens = row[1].split() if len(row) == 2 else []
        image_id = row[0].strip()
        if not image_id or not tokens:
            raise ConfigError(
                f"The labels file {shown!r} line {line} must be 'ImageId,<wnid> <box> ...'. "
                f"Got {','.join(row)!r} instead."
            )
        if image_id in out:
            raise ConfigError(
                f"The labels file {shown!r} line {line} repeats ImageId {image_id!r} "
                f"(first on line {first_line[image_id]})."
            )
        out[image_id] = tokens[0]
        first_line[image_id] = line
    return out


def parse_devkit(text: str, shown: str) -> dict[str, str]:
    """``image_id -> wnid`` from the devkit's ``ILSVRC2012_validation_ground_truth.txt``.

    Line i (1-based) holds the devkit ``ILSVRC2012_ID`` of ``ILSVRC2012_val_{i:08d}``; devkit ids
    are mapped to WordNet ids through :func:`imagenet_devkit_ids` (they are not torchvision
    indices). Trailing blank lines are allowed; a blank line elsewhere would shift every later
    image, so it raises ConfigError like any other malformed line.
    """
    devkit = imagenet_devkit_ids()
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    out: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        value = line.strip()
        wnid = devkit.get(int(value)) if value.isdigit() else None
        if wnid is None:
            raise ConfigError(
                f"The labels file {shown!r} line {number} must hold a devkit ILSVRC2012_ID "
                f"(1..{len(devkit)}). Got {line!r} instead."
            )
        out[f"ILSVRC2012_val_{number:08d}"] = wnid
    return out


# --------------------------------------------------------------------------- duplicates, subsets
