"""Class lists: which class id sits at which output index of a model.

ImageNet's 1000 classes ship inside the package (``imagenet_classes.tsv``) in torchvision order:
index i is the i-th WordNet id in sorted order (0 = n01440764 tench, 999 = n15075141 toilet
tissue). The devkit's ``ILSVRC2012_ID`` (1..1000, meta.mat order) is a different numbering; the
same file maps it to WordNet ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources


@dataclass(frozen=True)
class ClassIndex:
    """An ordered list of classes; a class's position is the model's output index.

    Attributes:
        name: What the list is (``imagenet``, ``digits``).
        ids: Class ids (WordNet ids for ImageNet), unique.
        names: Human-readable names, same length as ``ids`` (not necessarily unique).
    """

    name: str
    ids: tuple[str, ...]
    names: tuple[str, ...]
    _lookup: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.names):
            raise ValueError(f"{len(self.ids)} class ids but {len(self.names)} names")
        lookup = {c: i for i, c in enumerate(self.ids)}
        if len(lookup) != len(self.ids):
            raise ValueError(f"class ids of {self.name!r} are not unique")
        object.__setattr__(self, "_lookup", lookup)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, class_id: object) -> bool:
        return class_id in self._lookup

    def index(self, class_id: str) -> int:
        """Output index of ``class_id``; raises KeyError if it is not in the list."""
        return self._lookup[class_id]

    def get(self, class_id: str) -> int | None:
        return self._lookup.get(class_id)


def _rows() -> list[list[str]]:
    text = resources.files("audit.data").joinpath("imagenet_classes.tsv").read_text("utf-8")
    return [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]


@lru_cache(maxsize=1)
def imagenet_classes() -> ClassIndex:
    """The 1000 ILSVRC2012 classes in torchvision order."""
    rows = _rows()
    return ClassIndex("imagenet", tuple(r[1] for r in rows), tuple(r[3] for r in rows))


@lru_cache(maxsize=1)
def imagenet_devkit_ids() -> dict[int, str]:
    """Devkit ``ILSVRC2012_ID`` (1..1000) -> WordNet id."""
    return {int(r[2]): r[1] for r in _rows()}


def read_class_list(uri: str) -> ClassIndex:
    """A class list from a text file (local path or fsspec URL) for ``model.classes``.

    One class per line in output-index order: the class id, optionally followed by a tab or a
    comma and a human-readable name (the id stands in when there is none). Blank lines and
    lines starting with ``#`` are skipped. The list is named after the file's stem.

    Raises:
        ConfigError: the file cannot be read, is empty, or repeats an id.
    """
    import fsspec

    from audit.config import ConfigError

    try:
        with fsspec.open(uri, "r", encoding="utf-8") as f:
            text = f.read()
    except Exception as exc:
        raise ConfigError(
            f"The 'model.classes' file {uri!r} cannot be read: {type(exc).__name__}: {exc}"
        ) from None
    ids: list[str] = []
    names: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        sep = "\t" if "\t" in line else ","
        class_id, _, name = line.partition(sep)
        ids.append(class_id.strip())
        names.append(name.strip() or class_id.strip())
    if not ids:
        raise ConfigError(f"The 'model.classes' file {uri!r} lists no class.")
    stem = uri.rstrip("/").rsplit("/", 1)[-1].rsplit(".", 1)[0] or "classes"
    try:
        return ClassIndex(stem, tuple(ids), tuple(names))
    except ValueError as exc:
        raise ConfigError(f"The 'model.classes' file {uri!r} is not a class list: {exc}") from None
