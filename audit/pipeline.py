"""The Ray Data wiring of one audit pass: list -> decode (CPU tasks) -> model actor -> tables.

The driver lists the inputs, loads and validates the model once, and puts its state dict in the
object store; Ray Data streams the images through decode tasks and model actors; the driver
consumes the output stream, writes Parquet files as rows arrive, keeps the metrics counters,
and keeps ``manifest.json`` up to date so ``audit-cli status`` can follow a run in progress.

This module never calls ``ray.init()``: the entry points (``ray_jobs.audit``, ``audit-cli``) do.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import platform
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
from fsspec.implementations.memory import MemoryFileSystem

from audit.config import (
    AuditConfig,
    ConfigError,
    DataConfig,
    Device,
    ExplainWhich,
    Layout,
    SelectionMethod,
)
from audit.data.layouts import Listing, list_inputs
from audit.metrics import AttackCounter, ErrorCounter
from audit.model_actor import ModelActor, decode_batch
from audit.models import EvalTransform, LoadedModel, check_model_name, load_model
from audit.store import ERRORS, EXPLANATIONS, SELECTIONS, RunStore, table_dataset, utc_now

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]
"""Called with (images done, images total) as results arrive."""

FORMAT_VERSION = 2
"""2: the model section records its source, transform and weights sha256; a ``classes`` table."""


@dataclass(frozen=True)
class RunResult:
    """What a finished pass produced.

    Attributes:
        run_id: The run's folder name.
        url: The run folder (fsspec URL).
        manifest: The final manifest as written.
        metrics: ``(name, scope, value, count)`` rows, as in the ``metrics`` table.
        data_stats: Ray Data's execution statistics of the pass (``Dataset.stats()``: per
            operator wall and CPU time, rows, blocks); empty when nothing was streamed.
    """

    run_id: str
    url: str
    manifest: dict[str, Any]
    metrics: list[tuple[str, str, float, int]]
    data_stats: str = ""


def default_run_id(model_name: str) -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + model_name


def resolve_data(data: DataConfig) -> DataConfig:
    """Swap the embedded demo set in for ``source: demo`` (rendering it on first use)."""
    if not data.is_demo:
        return data
    from audit.data.demo import ensure_demo_dataset

    return dataclasses.replace(data, source=ensure_demo_dataset(), layout=Layout.IMAGEFOLDER)


def resolve_device(cfg: AuditConfig) -> str:
    """``cuda`` when asked for or when the Ray cluster has GPUs (``auto``), else ``cpu``."""
    import ray

    gpus = float(ray.cluster_resources().get("GPU", 0))
    if cfg.predict.device is Device.CUDA:
        if gpus < 1:
            raise ConfigError(
                "The 'predict.device' field is 'cuda' but the Ray cluster has no GPU. "
                "Use 'auto' or 'cpu'."
            )
        return "cuda"
    if cfg.predict.device is Device.AUTO and gpus >= 1:
        return "cuda"
    return "cpu"


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in (
        "imagenet-audit",
        "ray",
        "torch",
        "torchvision",
        "numpy",
        "pyarrow",
        "fsspec",
        "pillow",
    ):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _list_array(a2d: np.ndarray, typ: pa.DataType) -> pa.ListArray:
    n, k = a2d.shape
    offsets = pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(a2d).ravel(), typ))


TABLES_PER_IMAGE = ("predictions", "errors", "adversarial", "explanations")
"""Tables whose rows belong to one image, and so to one shard."""

RESUME_IGNORED = frozenset(
    {
        ("output", "overwrite"),
        ("output", "root"),  # the run is its folder, wherever it was found
        ("output", "run_id"),
        ("output", "storage_options"),
        ("data", "storage_options"),
        ("data", "decode_batch_size"),
        ("predict", "batch_size"),
        ("predict", "num_actors"),
        ("predict", "cpu_threads"),
        ("explain", "batch_size"),
    }
)
"""Config fields a resumed run may change: they decide how the work runs, not its result."""


def shard_file(shard: int) -> str:
    return f"shard-{shard:05d}"


@dataclass
class _Shard:
    """Rows of one shard collected on the driver until all its images have arrived."""

    expected: int
    seen: set[tuple[str, str]] = dataclasses.field(default_factory=set)
    parts: dict[str, list[pa.Table]] = dataclasses.field(
        default_factory=lambda: {name: [] for name in TABLES_PER_IMAGE}
    )


class _Pass:
    """State of one running pass on the driver: shard buffers, counters, the manifest.

    The inputs (records and listing errors, sorted by image_id) are cut into shards of
    ``output.shard_size``. Rows are buffered per shard; when the last image of a shard arrives,
    the shard's file of every table is written under its final name (``shard-NNNNN.parquet``)
    and only then is the shard recorded as committed in the manifest. A file of a shard that is
    not in the manifest does not count, so a crash at any point loses at most the shards in
    flight, and a rerun redoes exactly those.
    """

    def __init__(
        self,
        cfg: AuditConfig,
        run_id: str,
        model: LoadedModel,
        listing: Listing,
        driver_only: tuple[str, ...],
    ):
        self.cfg = cfg
        self.driver_only = driver_only
        self.run_id = run_id
        self.model = model
        self.listing = listing
        self.store = RunStore(cfg.output.root, run_id, cfg.output.storage_options)
        self.counter = ErrorCounter(len(model.classes))
        self.attack_counter = (
            AttackCounter(len(model.classes), cfg.attack.max_steps) if cfg.attack.enabled else None
        )
        inputs = sorted([*listing.records, *listing.errors], key=lambda r: (r.image_id, r.uri))
        size = cfg.output.shard_size
        self.shard_of = {(r.image_id, r.uri): i // size for i, r in enumerate(inputs)}
        self.shards_total = -(-len(inputs) // size)
        self.shards: dict[int, _Shard] = {}
        for i in range(self.shards_total):
            self.shards[i] = _Shard(expected=min(size, len(inputs) - i * size))
        self.committed: set[int] = set()
        # what was listed, with each input's label and listing error: a corrected labels file
        # at the same path is a change of inputs too
        self.fingerprint = hashlib.sha256(
            "".join(f"{r.image_id}\t{r.uri}\t{r.label}\t{r.error}\n" for r in inputs).encode()
        ).hexdigest()
        self.done = 0  # images whose rows reached the driver in this attempt or were committed
        self.done_at_start = 0
        self.predict_finished: float | None = None  # when the last shard came back
        self.total = len(inputs)
        self.started = time.time()
        self.manifest: dict[str, Any] = {}

    # --- shards -------------------------------------------------------------------------
    def _take(self, shard: int, image_id: str, uri: str) -> bool:
        """Whether this input's rows are new (a retried task may deliver an image twice)."""
        buf = self.shards.get(shard)
        if buf is None or (image_id, uri) in buf.seen:
            log.warning("dropped a duplicate result for %s (shard %d)", uri, shard)
            return False
        buf.seen.add((image_id, uri))
        return True

    def _commit_ready(self, touched: Iterable[int]) -> None:
        """Commit those of the ``touched`` shards whose every image has arrived."""
        for shard in sorted({int(k) for k in touched}):
            buf = self.shards.get(shard)
            if buf is None or len(buf.seen) < buf.expected:
                continue
            written = []
            for table, parts in buf.parts.items():
                if parts:
                    rows = pa.concat_tables(parts)
                    rel = self.store.write(table, rows, name=shard_file(shard), record=False)
                    written.append((table, rel, rows.num_rows))
            # every file of the shard is complete: only now does it count
            for table, rel, n in written:
                self.store.record(table, rel, n)
            del self.shards[shard]
            self.committed.add(shard)
            self.write_manifest("running")

    def resume(self, previous: dict[str, Any]) -> None:
        """Adopt the shards an earlier attempt committed; rebuild the counters from them."""
        committed = {int(k) for k in previous.get("shards", {}).get("committed", [])}
        names = {f"{t}/{shard_file(k)}.parquet" for t in TABLES_PER_IMAGE for k in committed}
        # the files are only recorded here; the caller deletes the others once the manifest
        # lists just these (store.remove_unlisted), so the manifest never names a deleted file
        self.store.adopt(previous.get("tables", {}), keep=lambda rel: rel in names)
        for k in committed:
            buf = self.shards.pop(k)
            self.done += buf.expected
        self.committed = committed
        self.done_at_start = self.done
        self._recount()
        self.manifest = previous
        attempts = previous.setdefault("attempts", [])
        attempts.append({"started": utc_now(), "committed_shards_at_start": len(committed)})

    def _recount(self) -> None:
        """Feed the metric counters with the committed shards' rows."""
        if self.store.files["predictions"]:
            t = table_dataset(
                self.store.url, self.store.files["predictions"], self.cfg.output.storage_options
            ).to_table(columns=["label", "correct_top1", "correct_top5", "loss"])
            self.counter.update(
                t["label"].fill_null(-1).to_numpy(),
                t["correct_top1"].fill_null(False).to_numpy(zero_copy_only=False),
                t["correct_top5"].fill_null(False).to_numpy(zero_copy_only=False),
                t["loss"].fill_null(np.nan).to_numpy(),
            )
        if self.attack_counter is not None and self.store.files["adversarial"]:
            t = table_dataset(
                self.store.url, self.store.files["adversarial"], self.cfg.output.storage_options
            ).to_table(columns=["label", "adv_class", "steps_to_flip"])
            self.attack_counter.update(
                t["label"].fill_null(-1).to_numpy(),
                t["adv_class"].to_numpy(),
                t["steps_to_flip"].fill_null(-1).to_numpy(),
            )

    def pending_items(self, flags: list[bool]) -> list[dict[str, Any]]:
        """The Ray Data input rows of the records in shards not committed yet.

        Inputs under a prefix of ``driver_only`` exist only for the driver (memory:// in this
        process; the embedded demo set in this machine's cache, which the other nodes of a
        cluster do not have), so their bytes travel with the rows (``data``; the demo set is
        under 2 MB). Every other input is read by the decode tasks from its URI.
        """
        items = []
        for r, flag in zip(self.listing.records, flags, strict=True):
            shard = self.shard_of[(r.image_id, r.uri)]
            if shard in self.committed:
                continue
            item: dict[str, Any] = {
                "image_id": r.image_id,
                "uri": r.uri,
                "label": -1 if r.label is None else r.label,
                "explain": flag,
                "shard": shard,
            }
            if r.uri.startswith(self.driver_only):
                item["data"] = _driver_bytes(r.uri)
            items.append(item)
        return items

    # --- tables -------------------------------------------------------------------------
    def add(self, batch: dict[str, np.ndarray]) -> None:
        """Take one output batch of the model actors; commit every shard it completes."""
        shards = np.asarray(batch["shard"], dtype=np.int64)
        fresh = np.array(
            [
                self._take(int(k), str(i), str(u))
                for k, i, u in zip(shards, batch["image_id"], batch["uri"], strict=True)
            ],
            dtype=bool,
        )
        self.done += int(fresh.sum())
        err = np.asarray(batch["error"], dtype=object)
        bad = (err != "") & fresh
        good = (err == "") & fresh
        for shard in np.unique(shards[fresh]):
            here = shards == shard
            if (bad & here).any():
                sel = bad & here
                self.add_errors(
                    int(shard),
                    [str(x) for x in batch["image_id"][sel]],
                    [str(x) for x in batch["uri"][sel]],
                    [str(x) for x in batch["stage"][sel]],
                    [str(x) for x in err[sel]],
                )
            if (good & here).any():
                self._add_predictions(int(shard), {k: v[good & here] for k, v in batch.items()})
        self._commit_ready(shards[fresh])

    def _add_predictions(self, shard: int, b: dict[str, np.ndarray]) -> None:
        n = len(b["image_id"])
        labels = np.asarray(b["label"], dtype=np.int64)
        unknown = labels < 0
        loss = np.asarray(b["loss"], dtype=np.float32)
        self.counter.update(labels, b["correct_top1"], b["correct_top5"], loss)
        emb = (
            _list_array(b["embedding"], pa.float32())
            if "embedding" in b
            else pa.nulls(n, pa.list_(pa.float32()))
        )
        table = pa.table(
            {
                "run_id": pa.array([self.run_id] * n, pa.string()),
                "model": pa.array([self.model.name] * n, pa.string()),
                "image_id": pa.array([str(x) for x in b["image_id"]], pa.string()),
                "uri": pa.array([str(x) for x in b["uri"]], pa.string()),
                "label": pa.array(labels, pa.int32(), mask=unknown),
                "top5_classes": _list_array(b["top5_classes"], pa.int32()),
                "top5_probs": _list_array(b["top5_probs"], pa.float32()),
                "correct_top1": pa.array(b["correct_top1"], pa.bool_(), mask=unknown),
                "correct_top5": pa.array(b["correct_top5"], pa.bool_(), mask=unknown),
                "loss": pa.array(loss, pa.float32(), mask=np.isnan(loss)),
                "label_prob": pa.array(
                    b["label_prob"], pa.float32(), mask=np.isnan(b["label_prob"])
                ),
                "embedding": emb,
            }
        )
        self.shards[shard].parts["predictions"].append(table)
        if self.attack_counter is not None:
            self._add_adversarial(shard, b, labels)
        if "explanations" in b:
            self._add_explanations(shard, b)

    def _add_explanations(self, shard: int, b: dict[str, np.ndarray]) -> None:
        e = self.cfg.explain
        rows = []
        for image_id, found, seg in zip(
            b["image_id"], b["explanations"], b["segments"], strict=True
        ):
            if not found:
                continue
            for ex in json.loads(found):
                rows.append(
                    {
                        "run_id": self.run_id,
                        "model": self.model.name,
                        "image_id": str(image_id),
                        "n_segments": len(ex["weights"]),
                        "segments": bytes(seg),
                        "n_samples": e.n_samples,
                        "kernel_width": e.kernel_width,
                        "seed": e.seed,
                        **ex,
                    }
                )
        if rows:
            self.shards[shard].parts["explanations"].append(
                pa.Table.from_pylist(rows, schema=EXPLANATIONS)
            )

    def _add_adversarial(self, shard: int, b: dict[str, np.ndarray], labels: np.ndarray) -> None:
        n = len(labels)
        steps = np.asarray(b["steps_to_flip"], dtype=np.int16)
        if self.attack_counter is not None:
            self.attack_counter.update(labels, b["adv_class"], steps)
        kept = "image_png" in b
        self.shards[shard].parts["adversarial"].append(
            pa.table(
                {
                    "run_id": pa.array([self.run_id] * n, pa.string()),
                    "model": pa.array([self.model.name] * n, pa.string()),
                    "image_id": pa.array([str(x) for x in b["image_id"]], pa.string()),
                    "label": pa.array(labels, pa.int32(), mask=labels < 0),
                    "target": pa.array(b["target"], pa.int32()),
                    "steps_to_flip": pa.array(steps, pa.int16(), mask=steps < 0),
                    "adv_class": pa.array(b["adv_class"], pa.int32()),
                    "adv_prob": pa.array(b["adv_prob"], pa.float32()),
                    "linf": pa.array(b["linf"], pa.float32()),
                    "l2": pa.array(b["l2"], pa.float32()),
                    "stored_flips": pa.array(b["stored_flips"], pa.bool_())
                    if kept
                    else pa.nulls(n, pa.bool_()),
                    "image_png": pa.array(list(b["image_png"]), pa.binary())
                    if kept
                    else pa.nulls(n, pa.binary()),
                }
            )
        )

    def add_errors(
        self, shard: int, ids: list[str], uris: list[str], stages: list[str], reasons: list[str]
    ) -> None:
        self.shards[shard].parts["errors"].append(
            pa.table(
                {
                    "run_id": [self.run_id] * len(ids),
                    "image_id": ids,
                    "uri": uris,
                    "stage": stages,
                    "reason": reasons,
                },
                schema=ERRORS,
            )
        )

    def add_listing_errors(self) -> None:
        """The inputs that failed at listing become errors rows of their (pending) shards."""
        for rec in self.listing.errors:
            shard = self.shard_of[(rec.image_id, rec.uri)]
            if shard in self.committed or not self._take(shard, rec.image_id, rec.uri):
                continue
            self.done += 1
            self.add_errors(
                shard, [rec.image_id], [rec.uri], ["list"], [rec.error or "listing failed"]
            )
        self._commit_ready(self.shard_of[(r.image_id, r.uri)] for r in self.listing.errors)

    # --- manifest -----------------------------------------------------------------------
    def write_manifest(self, state: str, error: str | None = None) -> None:
        elapsed = (self.predict_finished or time.time()) - self.started
        predict_state = {"running": "running", "succeeded": "done", "failed": "failed"}[state]
        if self.predict_finished is not None and state == "running":
            predict_state = "done"
        rate = (self.done - self.done_at_start) / elapsed if elapsed > 0 else 0.0
        m = self.manifest
        m.update(
            {
                "format_version": FORMAT_VERSION,
                "run_id": self.run_id,
                "state": state,
                "updated": utc_now(),
                "error": error,
            }
        )
        m["stages"]["predict"].update(
            {
                "state": predict_state,
                "done": self.done,
                "total": self.total,
                "shards_done": len(self.committed),
                "shards_total": self.shards_total,
                "seconds": round(elapsed, 3),
                "images_per_second": round(rate, 3) if rate > 0 else None,
                "eta_seconds": round((self.total - self.done) / rate, 1)
                if rate > 0 and predict_state == "running"
                else None,
            }
        )
        m["shards"] = {
            "size": self.cfg.output.shard_size,
            "total": self.shards_total,
            "committed": sorted(self.committed),
        }
        m["tables"] = {
            name: {"rows": self.store.rows[name], "files": list(self.store.files[name])}
            for name in self.store.files
        }
        self.store.write_manifest(m)

    def start_manifest(self, device: str, num_actors: int, seconds_listing: float) -> None:
        self.manifest = {
            "format_version": FORMAT_VERSION,
            "run_id": self.run_id,
            "state": "running",
            "created": utc_now(),
            "config": self.cfg.to_dict(),
            "model": self.model.manifest(),
            "data": {
                "source": _safe_source(self.cfg.data),
                "layout": self.listing.layout.value,
                "inputs": len(self.listing.records) + len(self.listing.errors),
                "fingerprint": self.fingerprint,
            },
            "execution": {"device": device, "num_actors": num_actors},
            "versions": package_versions(),
            "stages": {
                "list": {
                    "state": "done",
                    "seconds": round(seconds_listing, 3),
                    "records": len(self.listing.records),
                    "errors": len(self.listing.errors),
                },
                "predict": {"state": "pending"},
            },
        }


def run_criticism(state: _Pass) -> None:
    """One Ray task per class with labeled predictions (run on the driver instead when the output
    is memory://, which other processes cannot see); writes the ``selections`` table."""
    import ray

    from audit.criticism_tasks import select_class

    cfg = state.cfg.criticism
    stage: dict[str, Any] = {"state": "skipped", "skipped_methods": {}}
    state.manifest["stages"]["criticism"] = stage
    if not cfg.enabled:
        return
    methods = []
    for m in cfg.methods:
        if m is SelectionMethod.ADVERSARIAL and not state.cfg.attack.enabled:
            stage["skipped_methods"][m.value] = "attack.enabled is false"
        elif m is SelectionMethod.MMD_CRITIC and not state.cfg.predict.embeddings:
            stage["skipped_methods"][m.value] = "predict.embeddings is false"
        else:
            methods.append(m.value)
    classes = [int(c) for c in np.flatnonzero(state.counter.n)]
    t0 = time.time()
    stage.update({"state": "running", "classes": len(classes), "done": 0})
    state.write_manifest("running")
    tables = {name: list(state.store.files[name]) for name in ("predictions", "adversarial")}
    args = (state.store.url, tables)
    opts = dict(state.cfg.output.storage_options)
    rows: list[dict[str, Any]] = []

    def collect(c: int, found: list[tuple[str, str, int, str, float]]) -> None:
        rows.extend(
            {
                "run_id": state.run_id,
                "model": state.model.name,
                "class": c,
                "class_id": state.model.classes.ids[c],
                "method": method,
                "role": role,
                "rank": rank,
                "image_id": image_id,
                "score": score,
            }
            for method, role, rank, image_id, score in found
        )
        stage["done"] = int(stage["done"]) + 1

    if isinstance(state.store.fs, MemoryFileSystem):
        # memory:// lives in this process only: Ray workers could not read the tables
        stage["where"] = "driver (memory:// output is not visible to Ray workers)"
        for c in classes:
            collect(c, select_class(*args, c, cfg, methods, opts))
    else:
        task = ray.remote(num_cpus=1)(select_class)
        pending = {task.remote(*args, c, cfg, methods, opts): c for c in classes}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=min(len(pending), 16), timeout=5.0)
            for ref in ready:
                c = pending.pop(ref)
                collect(c, ray.get(ref))
            if ready:
                state.write_manifest("running")
    if rows:
        rows.sort(key=lambda r: (r["class"], r["method"], r["role"], r["rank"]))
        state.store.write("selections", pa.Table.from_pylist(rows, schema=SELECTIONS), name="all")
    stage.update({"state": "done", "seconds": round(time.time() - t0, 3), "methods": methods})


def _driver_bytes(uri: str) -> bytes:
    """The bytes of an input only the driver can read, or b"" when they cannot be read (the
    decode task then tries the URI itself and reports why it failed)."""
    try:
        with fsspec.open(uri, "rb") as f:
            data: bytes = f.read()
    except OSError:
        return b""
    return data


def _safe_source(data: DataConfig) -> str | list[str]:
    if isinstance(data.source, tuple):
        return list(data.source[:10]) + (
            [f"... {len(data.source) - 10} more"] if len(data.source) > 10 else []
        )
    return data.source


def explain_flags(cfg: AuditConfig, listing: Listing, model: LoadedModel) -> list[bool]:
    """Which records get segmented for LIME (decided at listing time, by image_id order).

    ``misclassified`` and ``flipped`` are only known after prediction, so every record is a
    candidate then and the actor decides; the others are decided here.

    Raises:
        ConfigError: ``explain.classes`` names a class the model does not have.
    """
    e = cfg.explain
    records = listing.records
    if not e.enabled:
        return [False] * len(records)
    if e.which is ExplainWhich.CLASSES:
        wanted = explain_class_indices(cfg, model)
        return [r.label in wanted for r in records]
    if e.which is ExplainWhich.PER_CLASS:
        seen: dict[int | None, int] = {}
        flags = []
        for r in records:  # sorted by image_id
            k = seen.get(r.label, 0)
            flags.append(r.label is not None and k < e.per_class)
            seen[r.label] = k + 1
        return flags
    return [True] * len(records)


def explain_class_indices(cfg: AuditConfig, model: LoadedModel) -> set[int]:
    """The model's indices of ``explain.classes``.

    Raises:
        ConfigError: A listed class is not one of the model's.
    """
    wanted = set()
    for class_id in cfg.explain.classes:
        index = model.classes.get(class_id)
        if index is None:
            raise ConfigError(
                f"The 'explain.classes' field lists {class_id!r}, which is not a class of "
                f"{model.classes.name}."
            )
        wanted.add(index)
    return wanted


def preflight(cfg: AuditConfig) -> None:
    """The checks that need neither Ray, the data nor the weights: the model name exists (a
    factory's name is only its label), and the demo set is run with the demo model. ``audit-cli run`` makes them before starting Ray
    and ``audit-cli submit`` before submitting (the weights may exist only on the cluster).

    Raises:
        ConfigError: with a one-line reason.
    """
    if not cfg.model.factory:  # with a factory, model.name is only its label
        check_model_name(cfg.model.name)
    if cfg.data.is_demo and cfg.model.name != "demo_digits":
        raise ConfigError(
            f"The 'data.source' field is 'demo' (handwritten digits) but model "
            f"{cfg.model.name!r} predicts other classes; use model.name=demo_digits or point "
            "data.source at images."
        )


def prepare(cfg: AuditConfig) -> tuple[LoadedModel, DataConfig, Listing, float]:
    """Everything that can fail on bad configuration, before any work is scheduled.

    Checks the model name (:func:`preflight`), loads the model on the driver (which checks the
    weights first), renders the demo set if asked for, and lists the inputs.

    Raises:
        ConfigError: with a one-line reason.
    """
    preflight(cfg)
    model = load_model(cfg.model)
    explain_class_indices(cfg, model)  # a typo stops here, before the run folder is touched
    data = resolve_data(cfg.data)
    t0 = time.time()
    listing = list_inputs(data, model.classes)
    return model, data, listing, time.time() - t0


def config_changes(previous: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``section.field`` names whose values differ, except :data:`RESUME_IGNORED` fields."""
    current = json.loads(json.dumps(current, default=str))
    out = []
    for section in sorted(set(previous) | set(current)):
        old, new = previous.get(section, {}), current.get(section, {})
        for name in sorted(set(old) | set(new)):
            if (section, name) not in RESUME_IGNORED and old.get(name) != new.get(name):
                out.append(f"{section}.{name}")
    return out


def _previous_attempt(store: RunStore, overwrite: bool) -> dict[str, Any] | None:
    """The manifest of an unfinished earlier attempt of this run, to resume; None for a new run.

    Raises:
        ConfigError: the run already finished (and ``overwrite`` is false), or its folder holds
            something that is not a run.
    """
    if overwrite:
        return None
    previous = store.read_manifest()
    if previous is None:
        store.refuse_existing(overwrite)  # a non-empty folder with no manifest
        return None
    if previous.get("state") == "succeeded":
        raise ConfigError(
            f"The output run {store.url!r} already finished: choose another 'output.run_id' or "
            "set output.overwrite=true to replace it."
        )
    if previous.get("format_version") != FORMAT_VERSION or "shards" not in previous:
        raise ConfigError(
            f"The output run {store.url!r} was written by another version of this tool and "
            "cannot be resumed: choose another 'output.run_id' or set output.overwrite=true."
        )
    return previous


def _check_same_model_and_device(
    previous: Mapping[str, Any], model: LoadedModel, device: str, url: str
) -> None:
    """Refuse to resume with other weights (a checkpoint replaced at the same path, another
    torchvision version), another transform, or on another device (bf16 on GPU against float32
    on CPU): the committed shards would then come from a different computation than the rest.

    The weights are compared by their sha256, so the same file found under another
    ``TORCH_HOME`` resumes.

    Raises:
        ConfigError: naming what changed.
    """
    before = previous.get("model") or {}
    digest = before.get("weights_sha256")
    if digest is not None and digest != model.weights_sha256:
        raise ConfigError(
            f"The weights of run {url!r} changed since it started (sha256 {digest[:12]}... "
            f"from {before.get('weights')}, now {model.weights_sha256[:12]}... from "
            f"{model.weights}): choose another 'output.run_id' or set output.overwrite=true."
        )
    transform = before.get("transform")
    if transform is not None and transform != model.transform.to_dict():
        raise ConfigError(
            f"The evaluation transform of run {url!r} changed since it started (was "
            f"{EvalTransform.from_dict(transform).describe()}, now "
            f"{model.transform.describe()}): choose another 'output.run_id' or set "
            "output.overwrite=true."
        )
    ran_on = (previous.get("execution") or {}).get("device")
    if ran_on is not None and ran_on != device:
        raise ConfigError(
            f"Run {url!r} started on {ran_on} and would resume on {device}: resume it on a "
            f"{ran_on} cluster (predict.device={ran_on}), or set output.overwrite=true."
        )


def _write_classes(state: _Pass) -> None:
    """The ``classes`` table: the model's output index -> class id and name."""
    classes = state.model.classes
    state.store.write(
        "classes",
        {
            "index": list(range(len(classes))),
            "class_id": list(classes.ids),
            "name": list(classes.names),
        },
        name="all",
    )


def run_audit(cfg: AuditConfig, progress: ProgressFn | None = None) -> RunResult:
    """Run the audit pass end to end on the connected Ray cluster, or resume it.

    A run id whose earlier attempt did not finish is resumed: the shards that attempt committed
    are kept, and only the others are computed. The configuration must be the same (but for
    fields that only decide how the work runs, :data:`RESUME_IGNORED`), and so must the inputs.

    Args:
        cfg: A validated configuration.
        progress: Called with (done, total) after each batch of results.

    Returns:
        The run's id, folder, final manifest and metrics.

    Raises:
        ConfigError: bad configuration, or a run that cannot be resumed; found before any work
            starts.
    """
    import ray
    from ray.data import ActorPoolStrategy, DataContext

    run_id = cfg.output.run_id or default_run_id(cfg.model.name)
    # before any work: a finished run stops here, not after the model and listing
    store = RunStore(cfg.output.root, run_id, cfg.output.storage_options)
    previous = _previous_attempt(store, cfg.output.overwrite)
    model, data, listing, seconds_listing = prepare(cfg)
    data_stats = ""
    device = resolve_device(cfg)
    num_actors = cfg.predict.num_actors or (
        int(ray.cluster_resources().get("GPU", 0)) if device == "cuda" else 1
    )

    # memory:// lives in this process, the demo set in this machine's cache only
    driver_only: tuple[str, ...] = ("memory://",)
    if cfg.data.is_demo:
        fs, root = fsspec.core.url_to_fs(str(data.source))
        driver_only += (fs.unstrip_protocol(root).rstrip("/") + "/",)
    state = _Pass(dataclasses.replace(cfg, data=data), run_id, model, listing, driver_only)
    if previous is not None:
        changed = config_changes(previous.get("config", {}), state.cfg.to_dict())
        if changed:
            raise ConfigError(
                f"The output run {store.url!r} was started with a different configuration "
                f"({', '.join(changed)} changed): rerun it with the same configuration to "
                "resume, or choose another 'output.run_id'."
            )
        if previous.get("data", {}).get("fingerprint") != state.fingerprint:
            raise ConfigError(
                f"The inputs of run {store.url!r} changed since it started (the listed files "
                "or their labels differ): choose another 'output.run_id' or set "
                "output.overwrite=true."
            )
        _check_same_model_and_device(previous, model, device, store.url)
        state.resume(previous)
        state.manifest["execution"] = {"device": device, "num_actors": num_actors}
    else:
        state.store.prepare(cfg.output.overwrite)
        state.start_manifest(device, num_actors, seconds_listing)
    _write_classes(state)
    # a manifest first, so that a failure from here on is recorded and the run can be rerun
    state.write_manifest("running")
    state.store.remove_unlisted()
    log.info(
        "run %s: %d inputs (%d listing errors), %d of %d shards to do, model %s on %s x%d",
        run_id,
        state.total,
        len(listing.errors),
        state.shards_total - len(state.committed),
        state.shards_total,
        model.name,
        device,
        num_actors,
    )
    if progress is not None:
        progress(state.done, state.total)
    try:
        state.add_listing_errors()
        items = state.pending_items(explain_flags(cfg, listing, model))
        if items:
            ctx = DataContext.get_current()
            ctx.enable_progress_bars = progress is None
            model_ref = ray.put(model.module)
            n_blocks = min(-(-len(items) // cfg.data.decode_batch_size), 5000)
            ds: Any = ray.data.from_items(items, override_num_blocks=n_blocks)
            ds = ds.map_batches(
                decode_batch,
                batch_size=cfg.data.decode_batch_size,
                batch_format="numpy",
                fn_kwargs={
                    "max_pixels": cfg.data.max_pixels,
                    "storage_options": dict(cfg.data.storage_options),
                    "segmentation": cfg.explain.segmentation.value if cfg.explain.enabled else None,
                    "seed": cfg.explain.seed,
                    "jpeg_draft": cfg.data.jpeg_draft,
                    "transform": model.transform.to_dict(),
                },
                num_cpus=1,
                # Reserve memory for a batch of full-size decodes (ImageNet's largest is 36 MB
                # as RGB). The reservation also differs from the actor's remote args, which
                # keeps Ray Data from fusing decoding into the model actor: fused, one actor per
                # GPU would decode serially while the GPU waits.
                memory=cfg.data.decode_batch_size * 40 * 2**20,
            )
            ds = ds.map_batches(
                ModelActor,
                fn_constructor_kwargs={
                    "model_ref": model_ref,
                    "num_classes": len(model.classes),
                    "embedding_dim": model.embedding_dim,
                    "device": device,
                    "bf16": cfg.predict.bf16,
                    "embeddings": cfg.predict.embeddings,
                    "cpu_threads": cfg.predict.cpu_threads,
                    "attack": cfg.attack,
                    "explain_cfg": cfg.explain,
                },
                batch_size=cfg.predict.batch_size,
                batch_format="numpy",
                compute=ActorPoolStrategy(size=num_actors),
                num_gpus=1 if device == "cuda" else 0,
                num_cpus=1,
            )
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                state.add(batch)
                if progress is not None:
                    progress(state.done, state.total)
            data_stats = ds.stats()
        if state.shards:  # a broken invariant is a bug, never a silent loss
            missing = sum(b.expected - len(b.seen) for b in state.shards.values())
            raise RuntimeError(
                f"{len(state.shards)} shards incomplete after the pass: {missing} images "
                "never came back from the model actors"
            )
        state.predict_finished = time.time()
        run_criticism(state)
        metrics = state.counter.rows(model.classes)
        if state.attack_counter is not None:
            metrics += state.attack_counter.rows(model.classes)
        if metrics:
            state.store.write(
                "metrics",
                {
                    "run_id": [run_id] * len(metrics),
                    "model": [model.name] * len(metrics),
                    "name": [m[0] for m in metrics],
                    "scope": [m[1] for m in metrics],
                    "value": [float(m[2]) for m in metrics],
                    "count": [int(m[3]) for m in metrics],
                },
                name="all",
            )
        state.store.ensure_tables()
        accounted = state.store.rows["predictions"] + state.store.rows["errors"]
        if accounted != state.total:  # a broken invariant is a bug, never a silent loss
            raise RuntimeError(
                f"{state.total} inputs but {state.store.rows['predictions']} predictions + "
                f"{state.store.rows['errors']} errors"
            )
        state.manifest["metrics"] = {m[0]: m[2] for m in metrics if m[1] == "all"}
        state.write_manifest("succeeded")
    except BaseException as exc:
        try:
            state.write_manifest("failed", error=f"{type(exc).__name__}: {exc}")
        except Exception:  # the storage itself failed: keep the original error
            log.exception("could not record the failure in the manifest")
        raise
    return RunResult(run_id, state.store.url, state.manifest, metrics, data_stats)
