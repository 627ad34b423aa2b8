"""The Ray Data wiring of one audit pass: list -> decode (CPU tasks) -> model actor -> tables.

The driver lists the inputs, loads and validates the model once, and puts its state dict in the
object store; Ray Data streams the images through decode tasks and model actors; the driver
consumes the output stream, writes Parquet files as rows arrive, keeps the metrics counters,
and keeps ``manifest.json`` up to date so ``audit-cli status`` can follow a run in progress.

This module never calls ``ray.init()``: the entry points (``ray_jobs.audit``, ``audit-cli``) do.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import numpy as np
import pyarrow as pa

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
from audit.models import LoadedModel, check_model_config, load_model
from audit.store import ERRORS, EXPLANATIONS, SELECTIONS, RunStore, utc_now

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]
"""Called with (images done, images total) as results arrive."""

FORMAT_VERSION = 1


@dataclass(frozen=True)
class RunResult:
    """What a finished pass produced.

    Attributes:
        run_id: The run's folder name.
        url: The run folder (fsspec URL).
        manifest: The final manifest as written.
        metrics: ``(name, scope, value, count)`` rows, as in the ``metrics`` table.
    """

    run_id: str
    url: str
    manifest: dict[str, Any]
    metrics: list[tuple[str, str, float, int]]


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


class _TableBuffer:
    """Collects rows of one table and writes them in files of exactly ``size`` rows (the last
    file of a run may be smaller); calls ``on_file`` after each file."""

    def __init__(self, store: RunStore, table: str, size: int, on_file: Callable[[], None]):
        self.store, self.table, self.size, self.on_file = store, table, size, on_file
        self.parts: list[pa.Table] = []
        self.rows = 0

    def append(self, rows: pa.Table) -> None:
        self.parts.append(rows)
        self.rows += rows.num_rows
        if self.rows < self.size:
            return
        full = pa.concat_tables(self.parts)
        cut = (full.num_rows // self.size) * self.size
        for start in range(0, cut, self.size):
            self.store.write(self.table, full.slice(start, self.size))
        self.parts = [full.slice(cut)] if cut < full.num_rows else []
        self.rows = full.num_rows - cut
        self.on_file()

    def flush(self) -> None:
        if self.rows:
            self.store.write(self.table, pa.concat_tables(self.parts))
            self.parts, self.rows = [], 0
            self.on_file()


class _Pass:
    """State of one running pass on the driver: buffers, counters, the manifest."""

    def __init__(self, cfg: AuditConfig, run_id: str, model: LoadedModel, listing: Listing):
        self.cfg = cfg
        self.run_id = run_id
        self.model = model
        self.listing = listing
        self.store = RunStore(cfg.output.root, run_id, cfg.output.storage_options)
        self.counter = ErrorCounter(len(model.classes))
        self.attack_counter = (
            AttackCounter(len(model.classes), cfg.attack.max_steps) if cfg.attack.enabled else None
        )
        size = cfg.output.shard_size
        on_file = lambda: self.write_manifest("running")  # noqa: E731
        self.predictions = _TableBuffer(self.store, "predictions", size, on_file)
        self.errors = _TableBuffer(self.store, "errors", size, on_file)
        self.adversarial = _TableBuffer(self.store, "adversarial", size, on_file)
        self.explanations = _TableBuffer(self.store, "explanations", max(1, size // 16), on_file)
        self.done = 0
        self.predict_done = False
        self.predict_finished: float | None = None
        self.total = len(listing.records)
        self.started = time.time()
        self.manifest: dict[str, Any] = {}

    # --- tables -------------------------------------------------------------------------
    def add(self, batch: dict[str, np.ndarray]) -> None:
        err = np.asarray(batch["error"], dtype=object)
        bad = err != ""
        if bad.any():
            self.add_errors(
                [str(x) for x in batch["image_id"][bad]],
                [str(x) for x in batch["uri"][bad]],
                [str(x) for x in batch["stage"][bad]],
                [str(x) for x in err[bad]],
            )
        good = ~bad
        if good.any():
            self._add_predictions({k: v[good] for k, v in batch.items()})
        self.done += len(err)

    def _add_predictions(self, b: dict[str, np.ndarray]) -> None:
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
        self.predictions.append(table)
        if self.attack_counter is not None:
            self._add_adversarial(b, labels)
        if "explanations" in b:
            self._add_explanations(b)

    def _add_explanations(self, b: dict[str, np.ndarray]) -> None:
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
            self.explanations.append(pa.Table.from_pylist(rows, schema=EXPLANATIONS))

    def _add_adversarial(self, b: dict[str, np.ndarray], labels: np.ndarray) -> None:
        n = len(labels)
        steps = np.asarray(b["steps_to_flip"], dtype=np.int16)
        if self.attack_counter is not None:
            self.attack_counter.update(labels, b["adv_class"], steps)
        kept = "image_png" in b
        self.adversarial.append(
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
        self, ids: list[str], uris: list[str], stages: list[str], reasons: list[str]
    ) -> None:
        self.errors.append(
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

    def flush(self) -> None:
        self.predictions.flush()
        self.errors.flush()
        self.adversarial.flush()
        self.explanations.flush()

    # --- manifest -----------------------------------------------------------------------
    def write_manifest(self, state: str, error: str | None = None) -> None:
        elapsed = (self.predict_finished or time.time()) - self.started
        predict_state = {"running": "running", "succeeded": "done", "failed": "failed"}[state]
        if self.predict_done and state == "running":
            predict_state = "done"
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
                "seconds": round(elapsed, 3),
                "images_per_second": round(self.done / elapsed, 3) if elapsed > 0 else None,
            }
        )
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
            "model": {
                "name": self.model.name,
                "weights": self.model.weights,
                "classes": self.model.classes.name,
                "num_classes": len(self.model.classes),
                "embedding_dim": self.model.embedding_dim,
            },
            "data": {
                "source": _safe_source(self.cfg.data),
                "layout": self.listing.layout.value,
                "inputs": len(self.listing.records) + len(self.listing.errors),
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
    """One Ray task per class with labeled predictions; writes the ``selections`` table."""
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
    task = ray.remote(num_cpus=1)(select_class)
    tables = {name: list(state.store.files[name]) for name in ("predictions", "adversarial")}
    pending = {
        task.remote(
            state.store.url, tables, c, cfg, methods, dict(state.cfg.output.storage_options)
        ): c
        for c in classes
    }
    rows: list[dict[str, Any]] = []
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=min(len(pending), 16), timeout=5.0)
        for ref in ready:
            c = pending.pop(ref)
            rows += [
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
                for method, role, rank, image_id, score in ray.get(ref)
            ]
            stage["done"] = int(stage["done"]) + 1
        if ready:
            state.write_manifest("running")
    if rows:
        state.store.write("selections", pa.Table.from_pylist(rows, schema=SELECTIONS))
    stage.update({"state": "done", "seconds": round(time.time() - t0, 3), "methods": methods})


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
        wanted = set()
        for class_id in e.classes:
            index = model.classes.get(class_id)
            if index is None:
                raise ConfigError(
                    f"The 'explain.classes' field lists {class_id!r}, which is not a class of "
                    f"{model.classes.name}."
                )
            wanted.add(index)
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


def prepare(cfg: AuditConfig) -> tuple[LoadedModel, DataConfig, Listing, float]:
    """Everything that can fail on bad configuration, before any work is scheduled.

    Checks the model name and weights, loads the model on the driver, renders the demo set if
    asked for, and lists the inputs.

    Raises:
        ConfigError: with a one-line reason.
    """
    check_model_config(cfg.model)
    if cfg.data.is_demo and cfg.model.name != "demo_digits":
        raise ConfigError(
            f"The 'data.source' field is 'demo' (handwritten digits) but model "
            f"{cfg.model.name!r} predicts other classes; use model.name=demo_digits or point "
            "data.source at images."
        )
    model = load_model(cfg.model)
    data = resolve_data(cfg.data)
    t0 = time.time()
    listing = list_inputs(data, model.classes)
    return model, data, listing, time.time() - t0


def run_audit(cfg: AuditConfig, progress: ProgressFn | None = None) -> RunResult:
    """Run the prediction pass end to end on the connected Ray cluster.

    Args:
        cfg: A validated configuration.
        progress: Called with (done, total) after each batch of results.

    Returns:
        The run's id, folder, final manifest and metrics.

    Raises:
        ConfigError: bad configuration, found before any work starts.
    """
    import ray
    from ray.data import ActorPoolStrategy, DataContext

    run_id = cfg.output.run_id or default_run_id(cfg.model.name)
    # before any work: an existing run stops here, not after the model and listing
    RunStore(cfg.output.root, run_id, cfg.output.storage_options).refuse_existing(
        cfg.output.overwrite
    )
    model, data, listing, seconds_listing = prepare(cfg)
    device = resolve_device(cfg)
    num_actors = cfg.predict.num_actors or (
        int(ray.cluster_resources().get("GPU", 0)) if device == "cuda" else 1
    )

    state = _Pass(dataclasses.replace(cfg, data=data), run_id, model, listing)
    state.store.prepare(cfg.output.overwrite)
    state.start_manifest(device, num_actors, seconds_listing)
    for rec in listing.errors:
        state.add_errors([rec.image_id], [rec.uri], ["list"], [rec.error or "listing failed"])
    state.write_manifest("running")
    log.info(
        "run %s: %d inputs (%d listing errors), model %s on %s x%d",
        run_id,
        state.total,
        len(listing.errors),
        model.name,
        device,
        num_actors,
    )
    if progress is not None:
        progress(0, state.total)
    try:
        if listing.records:
            ctx = DataContext.get_current()
            ctx.enable_progress_bars = progress is None
            model_ref = ray.put(model.module)
            flags = explain_flags(cfg, listing, model)
            items = [
                {
                    "image_id": r.image_id,
                    "uri": r.uri,
                    "label": -1 if r.label is None else r.label,
                    "explain": flag,
                }
                for r, flag in zip(listing.records, flags, strict=True)
            ]
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
        state.flush()
        state.predict_done, state.predict_finished = True, time.time()
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
            )
        state.store.ensure_tables()
        accounted = state.store.rows["predictions"] + state.store.rows["errors"]
        inputs = len(listing.records) + len(listing.errors)
        if accounted != inputs:  # a broken invariant is a bug, never a silent loss
            raise RuntimeError(
                f"{inputs} inputs but {state.store.rows['predictions']} predictions + "
                f"{state.store.rows['errors']} errors"
            )
        state.manifest["metrics"] = {m[0]: m[2] for m in metrics if m[1] == "all"}
        state.write_manifest("succeeded")
    except BaseException as exc:
        state.write_manifest("failed", error=f"{type(exc).__name__}: {exc}")
        raise
    return RunResult(run_id, state.store.url, state.manifest, metrics)
