"""The run plan: everything decided before any work is scheduled, built once per run.

:func:`build_plan` checks the configuration that needs neither Ray nor the data
(:func:`preflight`), loads the model on the driver, renders the demo set if asked for, lists the
inputs, cuts them into shards, fingerprints them, decides which records LIME explains, and
resolves the device from the cluster's GPUs and what its autoscaler can add, waiting for the
model actors' resources if the cluster lacks them (:mod:`audit.run.devices`). Every later step
reads the frozen :class:`RunPlan`; none of them lists, loads or resolves anything again.

Example::

    plan = build_plan(cfg, "20240101-000000-resnet18", cluster_gpus=lambda: 0.0)
    plan = build_plan(cfg, "20240101-000000-resnet18", ray_cluster())  # a connected cluster
    plan.shard_sizes  # (1000, 1000, ..., 1000) for ImageNet's validation set
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import posixpath
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from audit.config import (
    AuditConfig,
    ConfigError,
    DataConfig,
    ExplainWhich,
    Layout,
    OutputConfig,
)
from audit.config.data import BIAS_DEMO_SOURCES
from audit.data.layouts import InputRecord, Listing, list_inputs
from audit.models import LoadedModel, check_model_name, load_model
from audit.run.devices import ActorNeeds, Cluster, resolve_device, wait_for_resources
from audit.stages.registry import STAGES, Stage

InputKey = tuple[str, str]
"""``(image_id, uri)``: what identifies one input within its shard."""


@dataclass(frozen=True)
class RunPlan:
    """What one run will do, decided before it starts.

    Attributes:
        run_id: The run's folder name.
        cfg: The configuration, with the demo source resolved to its rendered folder (what the
            manifest records and a resume compares against).
        model: The model loaded on the driver.
        listing: The listed inputs.
        seconds_listing: How long listing took.
        inputs: Records and listing errors together, sorted by ``(image_id, uri)``; input ``i``
            is in shard ``i // cfg.output.shard_size``.
        shard_of: ``(image_id, uri)`` -> shard number, for every input.
        shard_sizes: Images per shard, in shard order (the last one may be smaller).
        fingerprint: sha256 of every input with its label and listing error.
        explain: Per record of ``listing.records``: whether the decode task segments it for LIME.
        driver_only: URI prefixes only the driver can read (their bytes travel with the rows).
        cluster_gpus: GPUs in the Ray cluster when the run was planned (after the wait).
        device: ``cuda`` or ``cpu``.
        num_actors: Model actors in the pool.
        needs: What each model actor asks Ray for (device, accelerator type, resources).
        requested: Whether the autoscaler was asked for the actors' resources (the run
            withdraws the ask when it ends).
    """

    run_id: str
    cfg: AuditConfig
    model: LoadedModel
    listing: Listing
    seconds_listing: float
    inputs: tuple[InputRecord, ...]
    shard_of: Mapping[InputKey, int]
    shard_sizes: tuple[int, ...]
    fingerprint: str
    explain: tuple[bool, ...]
    driver_only: tuple[str, ...]
    cluster_gpus: float
    device: str
    num_actors: int
    needs: ActorNeeds | None = None
    requested: bool = False

    @property
    def total(self) -> int:
        """Inputs of the run, listing errors included."""
        return len(self.inputs)

    @property
    def sections(self) -> dict[str, Any]:
        """Every registered stage's config section (:meth:`StageRegistry.sections`)."""
        return STAGES.sections(self.cfg)

    @property
    def stages(self) -> list[type[Stage]]:
        """The stage classes the model actors run, in dependency order."""
        return STAGES.enabled(self.sections)


def build_plan(
    cfg: AuditConfig, run_id: str, cluster_gpus: Cluster | Callable[[], float]
) -> RunPlan:
    """Plan the run: everything that can fail on bad configuration, before any work.

    Args:
        cfg: A validated configuration.
        run_id: The run's folder name.
        cluster_gpus: The connected Ray cluster (:func:`audit.run.devices.ray_cluster`), or a
            function returning its ``GPU`` count (no autoscaler); asked once the model is
            loaded and the inputs listed, so that a configuration error is found first.

    Returns:
        The frozen plan.

    Raises:
        ConfigError: with a one-line reason (unknown model or class, demo data with another
            model, ``predict.device=cuda`` on a cluster that has and can get no GPU, a run
            folder that is, contains or lies inside the inputs:
            :func:`refuse_outputs_among_inputs`).
        ResourcesUnavailable: the cluster did not provide the model actors' resources within
            ``predict.wait_for_resources_s``.
    """
    try:  # a stage whose needs are not met stops the run before the model loads
        STAGES.enabled(STAGES.sections(cfg))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not cfg.data.is_demo:  # the demo set's folder is known once it is rendered
        refuse_outputs_among_inputs(cfg.output, cfg.data, run_id)
    model, data, listing, seconds = prepare(cfg)
    if cfg.data.is_demo:
        refuse_outputs_among_inputs(cfg.output, data, run_id)
    cluster = cluster_gpus if isinstance(cluster_gpus, Cluster) else Cluster.fixed(cluster_gpus())
    gpus, device, needs, requested = place_actors(cfg, cluster)
    num_actors = cfg.predict.num_actors or (max(1, int(gpus)) if device == "cuda" else 1)
    inputs = tuple(sorted([*listing.records, *listing.errors], key=lambda r: (r.image_id, r.uri)))
    size = cfg.output.shard_size
    return RunPlan(
        run_id=run_id,
        cfg=dataclasses.replace(cfg, data=data),
        model=model,
        listing=listing,
        seconds_listing=seconds,
        inputs=inputs,
        shard_of={(r.image_id, r.uri): i // size for i, r in enumerate(inputs)},
        shard_sizes=shard_sizes(len(inputs), size),
        fingerprint=fingerprint(inputs),
        explain=tuple(explain_flags(cfg, listing, model)),
        driver_only=driver_only_prefixes(cfg, data),
        cluster_gpus=gpus,
        device=device,
        num_actors=num_actors,
        needs=needs,
        requested=requested,
    )


def place_actors(cfg: AuditConfig, cluster: Cluster) -> tuple[float, str, ActorNeeds, bool]:
    """Resolve the device (:func:`audit.run.devices.resolve_device`) and make sure the cluster
    has the model actors' resources, waiting for its autoscaler if it lacks them.

    Returns:
        The cluster's GPUs (after the wait), the device, each actor's needs, and whether the
        autoscaler was asked.
    """
    p = cfg.predict
    gpus = float(cluster.resources().get("GPU", 0))
    device = resolve_device(p.device, gpus, cluster.max_resources())
    needs = ActorNeeds(device, p.accelerator_type, dict(p.resources))
    wanted = p.num_actors or (max(1, int(gpus)) if device == "cuda" else 1)
    requested = wait_for_resources([needs.bundle()] * wanted, p.wait_for_resources_s, cluster)
    if requested:
        gpus = float(cluster.resources().get("GPU", 0))
    return gpus, device, needs, requested


def refuse_outputs_among_inputs(output: OutputConfig, data: DataConfig, run_id: str) -> None:
    """Refuse a run folder ``<output.root>/<run_id>`` that mixes with the inputs.

    Overwriting a run deletes its folder, and a later run lists whatever lies in its source, so
    the run folder must not be ``data.source``, contain it or lie inside it, must not contain
    the labels file, and must not contain a file of a list source. Paths are compared after
    resolving them: local paths (plain or ``file://``) with :func:`os.path.realpath`, so a
    symbolic link is seen through; URLs as fsspec's normalised paths, and only with the same
    protocol (another protocol is another storage). Nothing is read or written.

    Raises:
        ConfigError: one line naming ``output.root``, ``output.run_id`` and the input field.
    """
    fs, base = fsspec.core.url_to_fs(output.root, **dict(output.storage_options))
    run = _location(fs, base.rstrip("/") + "/" + run_id)
    shown = (
        f"The output run folder {fs.unstrip_protocol(base.rstrip('/') + '/' + run_id)!r} "
        f"(output.root {output.root!r}, output.run_id {run_id!r})"
    )
    options = dict(data.storage_options)
    if isinstance(data.source, str):
        how = _relation(run, _location(*fsspec.core.url_to_fs(data.source, **options)))
        if how is not None:
            raise ConfigError(
                f"{shown} {how} the input folder data.source {data.source!r}: a run's folder "
                "must lie outside its inputs (overwriting it would delete them, and its tables "
                "would be listed as inputs); choose another output.root or data.source."
            )
    else:
        for url in data.source:
            if _relation(run, _location(*fsspec.core.url_to_fs(url, **options))) is not None:
                raise ConfigError(
                    f"{shown} contains {url!r}, an input of data.source: a run's folder must "
                    "lie outside its inputs (overwriting it would delete them); choose another "
                    "output.root or output.run_id."
                )
    if data.labels_file is not None:
        labels = _location(*fsspec.core.url_to_fs(data.labels_file, **options))
        if _relation(run, labels) in ("is", "contains"):
            raise ConfigError(
                f"{shown} contains the labels file data.labels_file {data.labels_file!r}: a "
                "run's folder must lie outside its inputs (overwriting it would delete it); "
                "choose another output.root or output.run_id."
            )


def _location(fs: fsspec.AbstractFileSystem, path: str) -> tuple[str, str]:
    """``(storage, normalised absolute path)`` of ``path`` on ``fs``, for comparing paths."""
    if isinstance(fs, LocalFileSystem):
        return "file", os.path.realpath(path)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol, posixpath.normpath("/" + str(fs._strip_protocol(path)).strip("/"))


def _relation(run: tuple[str, str], other: tuple[str, str]) -> str | None:
    """How the run folder ``run`` stands to ``other``: ``"is"``, ``"contains"``, ``"lies
    inside"``, or None when they are apart (or on different storages)."""
    if run[0] != other[0]:
        return None
    a, b = run[1], other[1]
    if a == b:
        return "is"
    if b.startswith(a.rstrip("/") + "/"):
        return "contains"
    if a.startswith(b.rstrip("/") + "/"):
        return "lies inside"
    return None


def default_run_id(model_name: str) -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + model_name


def shard_sizes(n_inputs: int, size: int) -> tuple[int, ...]:
    """Images per shard when ``n_inputs`` are cut into shards of ``size``: ``(10, 10, 3)``."""
    return tuple(min(size, n_inputs - i * size) for i in range(-(-n_inputs // size)))


def fingerprint(inputs: Sequence[InputRecord]) -> str:
    """sha256 of what was listed, with each input's label and listing error: a corrected labels
    file at the same path is a change of inputs too."""
    return hashlib.sha256(
        "".join(f"{r.image_id}\t{r.uri}\t{r.label}\t{r.error}\n" for r in inputs).encode()
    ).hexdigest()


def driver_only_prefixes(cfg: AuditConfig, data: DataConfig) -> tuple[str, ...]:
    """memory:// lives in this process, the demo set in this machine's cache only."""
    prefixes: tuple[str, ...] = ("memory://",)
    if cfg.data.is_demo:
        fs, root = fsspec.core.url_to_fs(str(data.source))
        prefixes += (fs.unstrip_protocol(root).rstrip("/") + "/",)
    return prefixes


def resolve_data(data: DataConfig) -> DataConfig:
    """Swap the embedded demo set in for ``source: demo``, or a planted-bias demo's images and
    boxes for its source (rendering it on first use)."""
    if not data.is_demo:
        return data
    cue = BIAS_DEMO_SOURCES.get(data.source) if isinstance(data.source, str) else None
    if cue is not None:
        from audit.data.demo_bias import BOXES_FILE, IMAGES, ensure_bias_dataset

        base = ensure_bias_dataset(cue)
        return dataclasses.replace(
            data,
            source=os.path.join(base, IMAGES),
            layout=Layout.IMAGEFOLDER,
            boxes=data.boxes or os.path.join(base, BOXES_FILE),
        )
    from audit.data.demo import ensure_demo_dataset

    return dataclasses.replace(data, source=ensure_demo_dataset(), layout=Layout.IMAGEFOLDER)


def explain_flags(cfg: AuditConfig, listing: Listing, model: LoadedModel) -> list[bool]:
    """Which records get segmented for LIME (decided at listing time).

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
        by_class: dict[int, list[int]] = {}
        for i, r in enumerate(records):
            if r.label is not None:
                by_class.setdefault(r.label, []).append(i)
        flags = [False] * len(records)
        for members in by_class.values():
            drawn = sorted(members, key=lambda i: (explain_draw(e.seed, records[i].image_id), i))
            for i in drawn[: e.per_class]:
                flags[i] = True
        return flags
    return [True] * len(records)


def explain_draw(seed: int, image_id: str) -> bytes:
    """The key by which ``which: per_class`` draws a class's explained images (smallest
    first): a hash of the seed and the image id, so the draw is the same on every machine and
    resume, and the explained images spread over the run's shards instead of piling up in the
    first ones (ImageNet's validation ids interleave the classes, and the first image of
    every class lies within the first ~15 % of the ids)."""
    return hashlib.blake2b(f"{seed}\0{image_id}".encode(), digest_size=16).digest()


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
    factory's name is only its label), and the demo set is run with the demo model.
    ``audit-cli run`` makes them before starting Ray and ``audit-cli submit`` before submitting
    (the weights may exist only on the cluster).

    Raises:
        ConfigError: with a one-line reason.
    """
    if not cfg.model.factory:  # with a factory, model.name is only its label
        check_model_name(cfg.model.name)
    if cfg.data.is_demo and cfg.model.name != cfg.data.demo_model:
        raise ConfigError(
            f"The 'data.source' field is {cfg.data.source!r} (handwritten digits) but model "
            f"{cfg.model.name!r} is not its model; use model.name={cfg.data.demo_model} or "
            "point data.source at images."
        )


def check_weights(cfg: AuditConfig) -> None:
    """The model's weights can be found on this machine (a file-existence check: nothing is
    read or built; a factory's weights are its own business). ``audit-cli run`` and the job
    entry point make it before starting Ray; ``audit-cli submit`` does not (the weights may
    exist only on the cluster).

    Raises:
        ConfigError: one line naming ``model.weights``.
    """
    if not cfg.model.factory:
        from audit.models.registry import resolve

        resolve(cfg.model).check(cfg.model)


def prepare(cfg: AuditConfig) -> tuple[LoadedModel, DataConfig, Listing, float]:
    """Check the model name (:func:`preflight`), load the model on the driver (which checks the
    weights first), check ``explain.classes``, render the demo set if asked for, and list the
    inputs.

    Returns:
        The model, the resolved data section, the listing and the seconds listing took.

    Raises:
        ConfigError: with a one-line reason.
    """
    preflight(cfg)
    model = load_model(cfg.model)
    explain_class_indices(cfg, model)  # a typo stops here, before the run folder is touched
    data = resolve_data(cfg.data)
    check_boxes(data)
    t0 = time.time()
    listing = list_inputs(data, model.classes)
    return model, data, listing, time.time() - t0


def check_boxes(data: DataConfig) -> None:
    """``data.boxes`` can be read (bias discovery reads it again at the end of the pass, so a
    missing or unreadable file stops the run here, before any image is decoded). Bad boxes
    inside a readable file are counted at the end, never fatal.

    Raises:
        ConfigError: one line naming ``data.boxes``.
    """
    if not data.boxes:
        return
    from audit.data.boxes import BoxesError, read_boxes

    try:
        read_boxes(data.boxes, data.storage_options)
    except (BoxesError, OSError) as exc:
        raise ConfigError(f"The 'data.boxes' field cannot be used: {exc}") from None
