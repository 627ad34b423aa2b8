"""The run's ``manifest.json`` as frozen dataclasses: :class:`Manifest` and its sections.

:meth:`Manifest.from_json` reads the dict ``json.load`` gives and :meth:`Manifest.to_json`
gives it back: for a manifest this version wrote, ``Manifest.from_json(m).to_json() == m``.
Reading is lenient about what is missing (a hand-made or older manifest: every section has a
default), strict about what it cannot know: a ``format_version`` newer than
:data:`FORMAT_VERSION` is refused with :class:`ManifestVersionError`.

Keys this module does not know are kept (``extra``) and written back, so that a manifest read
and rewritten loses nothing.

Format versions:

- 1: the first format (no ``format_version`` key at all counts as 1): the model section has no
  source, transform nor weights sha256; read with the old fixed transform.
- 2: the model section records its source, transform and weights sha256; a ``classes`` table.
- 3: the model section lists the run's class ids in output-index order (``model.class_ids``).
  Later writers of 3 also record each committed file's size and sha256 in its table's
  ``checksums`` (an optional key: a 3 manifest without it reads, its files are checked for
  existence and a readable Parquet footer only; ``audit-cli verify``, :mod:`audit.run.verify`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from audit.errors import AuditError

if TYPE_CHECKING:
    from audit.models.transform import EvalTransform

FORMAT_VERSION = 3
"""The manifest format this code writes, and the newest it reads (see the module docstring)."""


class ManifestError(AuditError, ValueError):
    """A manifest that cannot be read: not JSON, not an object, a field of the wrong type."""


class ManifestVersionError(ManifestError):
    """A manifest written by a newer version of this tool (one line naming both versions)."""


class NoRunError(AuditError, FileNotFoundError):
    """No ``manifest.json`` where a run folder was expected."""


def _known(data: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """The entries of ``data`` not in ``keys`` (kept as they are, written back)."""
    return {k: copy.deepcopy(v) for k, v in data.items() if k not in keys}


def _section(data: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ManifestError(f"the manifest's {key!r} is not an object")
    return value


@dataclass(frozen=True)
class ModelInfo:
    """The ``model`` section: which model, weights and transform produced the run.

    Attributes:
        name: The registry name.
        source: ``torchvision``, ``timm``, ``demo``, ...; None in a version 1 manifest.
        weights: What was loaded (a weights enum, a path, ``random (seed=0)``).
        weights_sha256: The weights' digest; None in a version 1 manifest.
        weights_digest_of: What the digest is of (``file``, ``state_dict``...).
        classes: The name of the class list (``imagenet``, ``digits``); not the ids.
        num_classes: The model's outputs.
        embedding_dim: ``D`` of the embedding.
        embedding: What the embedding is, in words.
        transform: The evaluation transform as recorded (``EvalTransform.to_dict()``); None
            when not recorded (version 1). :meth:`eval_transform` gives it typed.
        transform_text: The transform in one line.
        class_ids: The class ids in output-index order (version 3; empty before).
        extra: Keys this module does not know, kept as read.
    """

    name: str = "?"
    source: str | None = None
    weights: str | None = None
    weights_sha256: str | None = None
    weights_digest_of: str | None = None
    classes: str | None = None
    num_classes: int = 0
    embedding_dim: int | None = None
    embedding: Any = None
    transform: Mapping[str, Any] | None = None
    transform_text: str | None = None
    class_ids: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    _KEYS = (
        "name",
        "source",
        "weights",
        "weights_sha256",
        "weights_digest_of",
        "classes",
        "num_classes",
        "embedding_dim",
        "embedding",
        "transform",
        "transform_text",
        "class_ids",
    )

    def eval_transform(self) -> EvalTransform:
        """The transform, or the old fixed one (resize 256, crop 224) when none is recorded.
        (Imports torch: kept out of reading the manifest, which ``audit-cli status`` does.)"""
        from audit.models.transform import EvalTransform

        return EvalTransform.from_dict(self.transform)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "source": self.source,
            "weights": self.weights,
            "weights_sha256": self.weights_sha256,
            "weights_digest_of": self.weights_digest_of,
            "classes": self.classes,
            "num_classes": self.num_classes,
            "embedding_dim": self.embedding_dim,
            "embedding": copy.deepcopy(self.embedding),
            "transform": copy.deepcopy(dict(self.transform)) if self.transform else None,
            "transform_text": self.transform_text,
        }
        if self.class_ids:
            out["class_ids"] = list(self.class_ids)
        return {**out, **copy.deepcopy(dict(self.extra))}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelInfo:
        transform = data.get("transform")
        return cls(
            name=str(data.get("name", "?")),
            source=data.get("source"),
            weights=data.get("weights"),
            weights_sha256=data.get("weights_sha256"),
            weights_digest_of=data.get("weights_digest_of"),
            classes=data.get("classes"),
            num_classes=int(data.get("num_classes") or 0),
            embedding_dim=data.get("embedding_dim"),
            embedding=copy.deepcopy(data.get("embedding")),
            transform=copy.deepcopy(dict(transform)) if transform else None,
            transform_text=data.get("transform_text"),
            class_ids=tuple(str(c) for c in data.get("class_ids") or ()),
            extra=_known(data, cls._KEYS),
        )


@dataclass(frozen=True)
class DataInfo:
    """The ``data`` section: what was listed.

    Attributes:
        source: ``data.source`` (a list source shortened to its first 10 entries).
        layout: The input layout found (``imagefolder``, ``unlabeled``...).
        inputs: Inputs listed, records and listing errors together.
        fingerprint: The digest of the listing a resume compares against.
    """

    source: str | list[str] | None = None
    layout: str | None = None
    inputs: int | None = None
    fingerprint: str | None = None

    def to_json(self) -> dict[str, Any]:
        source = list(self.source) if isinstance(self.source, list) else self.source
        return {
            "source": source,
            "layout": self.layout,
            "inputs": self.inputs,
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DataInfo:
        source = data.get("source")
        return cls(
            source=list(source) if isinstance(source, list) else source,
            layout=data.get("layout"),
            inputs=data.get("inputs"),
            fingerprint=data.get("fingerprint"),
        )


@dataclass(frozen=True)
class ExecutionInfo:
    """The ``execution`` section: where the latest attempt ran.

    Attributes:
        device: The resolved device, ``cuda`` or ``cpu``.
        num_actors: Model actors in the pool.
        accelerator_type: ``predict.accelerator_type`` the actors asked for, or None.
        resources: ``predict.resources`` the actors asked for.
        nodes: The Ray node ids the model actors ran on, sorted (filled as batches come back;
            empty in manifests written before they were recorded).
    """

    device: str | None = None
    num_actors: int | None = None
    accelerator_type: str | None = None
    resources: Mapping[str, float] = field(default_factory=dict)
    nodes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "num_actors": self.num_actors,
            "accelerator_type": self.accelerator_type,
            "resources": dict(self.resources),
            "nodes": list(self.nodes),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ExecutionInfo:
        return cls(
            device=data.get("device"),
            num_actors=data.get("num_actors"),
            accelerator_type=data.get("accelerator_type"),
            resources=dict(data.get("resources") or {}),
            nodes=tuple(sorted(str(n) for n in data.get("nodes") or ())),
        )


@dataclass(frozen=True)
class StageInfo:
    """One entry of ``stages`` (``list``, ``predict``, ``criticism``...).

    Stages record different progress fields (``records`` and ``errors`` for the listing,
    ``done``/``total``/``shards_done``/``images_per_second``/``eta_seconds`` for predict,
    ``classes`` and ``skipped_methods`` for criticism); they are kept in ``fields`` as written,
    and the common ones have properties.

    Attributes:
        state: ``pending``, ``running``, ``done``, ``failed``, ``interrupted`` or ``skipped``
            (None: none recorded, and none written back).
        fields: Every other key of the stage, in the order written.
    """

    state: str | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> int | None:
        value = self.fields.get("done")
        return value if isinstance(value, int) else None

    @property
    def total(self) -> int | None:
        value = self.fields.get("total")
        return value if isinstance(value, int) else None

    @property
    def seconds(self) -> float | None:
        value = self.fields.get("seconds")
        return float(value) if isinstance(value, int | float) else None

    @property
    def images_per_second(self) -> float | None:
        value = self.fields.get("images_per_second")
        return float(value) if isinstance(value, int | float) else None

    def to_json(self) -> dict[str, Any]:
        state = {} if self.state is None else {"state": self.state}
        return {**state, **copy.deepcopy(dict(self.fields))}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StageInfo:
        return cls(state=data.get("state"), fields=_known(data, ("state",)))


@dataclass(frozen=True)
class ShardsInfo:
    """The ``shards`` section: the shard size and which shards are committed.

    Attributes:
        size: Images per shard (``output.shard_size``).
        total: Shards in the run.
        committed: The committed shards, sorted; only their files count.
    """

    size: int | None = None
    total: int | None = None
    committed: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "total": self.total, "committed": list(self.committed)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ShardsInfo:
        return cls(
            size=data.get("size"),
            total=data.get("total"),
            committed=tuple(int(s) for s in data.get("committed") or ()),
        )


@dataclass(frozen=True)
class FileChecksum:
    """What a committed file was when it was written: its size and the sha256 of its bytes.

    Attributes:
        bytes: The file's size in bytes.
        sha256: The hex sha256 of the whole file.
    """

    bytes: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"bytes": self.bytes, "sha256": self.sha256}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FileChecksum:
        """Raises: ManifestError: not an object with an integer ``bytes`` and a ``sha256``."""
        if not isinstance(data, Mapping):
            raise ManifestError("a checksum in the manifest's 'tables' is not an object")
        size, digest = data.get("bytes"), data.get("sha256")
        if not isinstance(size, int) or isinstance(size, bool) or not isinstance(digest, str):
            raise ManifestError(
                "a checksum in the manifest's 'tables' lacks an integer 'bytes' or a 'sha256'"
            )
        return cls(bytes=size, sha256=digest)


@dataclass(frozen=True)
class TableInfo:
    """One entry of ``tables``: the committed files (relative to the run folder) and rows.

    Attributes:
        rows: The rows of all the files.
        files: The committed files, relative to the run folder.
        checksums: Size and sha256 of each file as it was written, by relative path; a file
            without one (written before checksums were recorded) is checked for existence and
            a readable Parquet footer only. Written only when there is one.
    """

    rows: int = 0
    files: tuple[str, ...] = ()
    checksums: Mapping[str, FileChecksum] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rows": self.rows, "files": list(self.files)}
        if self.checksums:
            out["checksums"] = {rel: c.to_json() for rel, c in self.checksums.items()}
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TableInfo:
        checksums = data.get("checksums") or {}
        if not isinstance(checksums, Mapping):
            raise ManifestError("a table's 'checksums' in the manifest is not an object")
        return cls(
            rows=int(data.get("rows") or 0),
            files=tuple(data.get("files") or ()),
            checksums={str(rel): FileChecksum.from_json(c) for rel, c in checksums.items()},
        )


@dataclass(frozen=True)
class Attempt:
    """One entry of ``attempts``: a resumed attempt, when it started and what it kept."""

    started: str | None = None
    committed_shards_at_start: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "committed_shards_at_start": self.committed_shards_at_start,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Attempt:
        return cls(
            started=data.get("started"),
            committed_shards_at_start=int(data.get("committed_shards_at_start") or 0),
        )


_MANIFEST_KEYS = (
    "format_version",
    "run_id",
    "state",
    "created",
    "config",
    "model",
    "data",
    "execution",
    "versions",
    "stages",
    "updated",
    "error",
    "shards",
    "tables",
    "attempts",
    "metrics",
)


@dataclass(frozen=True)
class Manifest:
    """A run's ``manifest.json``.

    Attributes:
        format_version: The format it was written in (1 when the key is missing).
        run_id: The run's folder name.
        state: ``running``, ``succeeded``, ``failed`` or ``interrupted`` (SIGINT or SIGTERM;
            resumed like a failed run); None when missing.
        created: When the first attempt started (UTC, ``...Z``).
        updated: When it was last written.
        error: The failure, one line; None unless ``failed``.
        config: The run's configuration as ``AuditConfig.to_dict()`` wrote it.
        model: The model section.
        data: The data section; None when missing.
        execution: The latest attempt's device and actors; None when missing.
        versions: Package versions of the writer.
        stages: Per-stage progress, in the order the stages run.
        shards: Shard size and committed shards; None in a manifest without shards.
        tables: Each table's committed files and rows.
        attempts: One entry per resumed attempt (none for a run never resumed).
        metrics: The overall metrics (``scope == "all"``); None until the run succeeds.
        extra: Top-level keys this module does not know, kept as read.
    """

    run_id: str | None = None
    state: str | None = None
    format_version: int = FORMAT_VERSION
    created: str | None = None
    updated: str | None = None
    error: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    model: ModelInfo = field(default_factory=ModelInfo)
    data: DataInfo | None = None
    execution: ExecutionInfo | None = None
    versions: Mapping[str, str] = field(default_factory=dict)
    stages: Mapping[str, StageInfo] = field(default_factory=dict)
    shards: ShardsInfo | None = None
    tables: Mapping[str, TableInfo] = field(default_factory=dict)
    attempts: tuple[Attempt, ...] = ()
    metrics: Mapping[str, float] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def config_value(self, section: str, name: str, default: Any = None) -> Any:
        """``config[section][name]``, ``default`` when either is missing."""
        part = self.config.get(section)
        return part.get(name, default) if isinstance(part, Mapping) else default

    def files(self, table: str) -> tuple[str, ...]:
        """The committed files of ``table``; none for a table the manifest does not list."""
        info = self.tables.get(table)
        return info.files if info is not None else ()

    def rows(self, table: str) -> int:
        """The rows of ``table``; 0 for a table the manifest does not list."""
        info = self.tables.get(table)
        return info.rows if info is not None else 0

    @property
    def inputs(self) -> int | None:
        return self.data.inputs if self.data is not None else None

    def to_json(self) -> dict[str, Any]:
        """The JSON-ready dict, keys in the order the writer has always written them."""
        out: dict[str, Any] = {"format_version": self.format_version, "run_id": self.run_id}
        out["state"] = self.state
        if self.created is not None:
            out["created"] = self.created
        out["config"] = copy.deepcopy(dict(self.config))
        out["model"] = self.model.to_json()
        if self.data is not None:
            out["data"] = self.data.to_json()
        if self.execution is not None:
            out["execution"] = self.execution.to_json()
        out["versions"] = dict(self.versions)
        out["stages"] = {name: st.to_json() for name, st in self.stages.items()}
        if self.updated is not None:
            out["updated"] = self.updated
        out["error"] = self.error
        if self.shards is not None:
            out["shards"] = self.shards.to_json()
        out["tables"] = {name: t.to_json() for name, t in self.tables.items()}
        if self.attempts:
            out["attempts"] = [a.to_json() for a in self.attempts]
        if self.metrics is not None:
            out["metrics"] = dict(self.metrics)
        return {**out, **copy.deepcopy(dict(self.extra))}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str = "the run") -> Manifest:
        """Read ``data`` (what ``json.load`` gave), naming ``where`` in an error.

        Raises:
            ManifestVersionError: ``format_version`` is newer than :data:`FORMAT_VERSION`.
            ManifestError: not an object, or a section that is not one.
        """
        if not isinstance(data, Mapping):
            raise ManifestError(f"the manifest of {where} is not a JSON object")
        version = data.get("format_version", 1)
        if not isinstance(version, int) or isinstance(version, bool):
            raise ManifestError(
                f"the manifest of {where} has format_version {version!r}, not a number"
            )
        if version > FORMAT_VERSION:
            raise ManifestVersionError(
                f"the manifest of {where} has format_version {version}, but this version of "
                f"imagenet-audit reads format_version {FORMAT_VERSION} and older: upgrade it"
            )
        model, data_, execution = (_section(data, k) for k in ("model", "data", "execution"))
        shards = _section(data, "shards")
        metrics = _section(data, "metrics")
        return cls(
            format_version=version,
            run_id=None if data.get("run_id") is None else str(data["run_id"]),
            state=None if data.get("state") is None else str(data["state"]),
            created=data.get("created"),
            updated=data.get("updated"),
            error=data.get("error"),
            config=copy.deepcopy(dict(_section(data, "config") or {})),
            model=ModelInfo.from_json(model or {}),
            data=DataInfo.from_json(data_) if data_ is not None else None,
            execution=ExecutionInfo.from_json(execution) if execution is not None else None,
            versions=dict(_section(data, "versions") or {}),
            stages={
                str(name): StageInfo.from_json(st or {})
                for name, st in (_section(data, "stages") or {}).items()
            },
            shards=ShardsInfo.from_json(shards) if shards is not None else None,
            tables={
                str(name): TableInfo.from_json(t or {})
                for name, t in (_section(data, "tables") or {}).items()
            },
            attempts=tuple(Attempt.from_json(a) for a in data.get("attempts") or ()),
            metrics=dict(metrics) if metrics is not None else None,
            extra=_known(data, _MANIFEST_KEYS),
        )

    @classmethod
    def of(cls, manifest: Manifest | Mapping[str, Any]) -> Manifest:
        """``manifest`` typed: as it is, or read from its JSON dict."""
        return manifest if isinstance(manifest, Manifest) else cls.from_json(manifest)
