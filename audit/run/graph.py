"""The Ray Data graph of one pass: input rows -> decode (CPU tasks) -> model actors -> driver.

The driver puts the model's state in the object store once; Ray Data streams the pending
images through decode tasks and a pool of model actors, and hands the output batches to the
driver's callback as they arrive.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import fsspec

from audit.model_actor import ModelActor, decode_batch
from audit.run.devices import ActorNeeds
from audit.run.plan import RunPlan
from audit.run.tables import Batch
from audit.run.units import UNIT_BLOCK_BYTES, should_flush

MAX_INPUT_BLOCKS = 5000
"""Upper bound on the input dataset's blocks (one per decode batch below it)."""


def cluster_gpus() -> float:
    """``GPU`` resources of the connected Ray cluster."""
    import ray

    return float(ray.cluster_resources().get("GPU", 0))


def input_rows(plan: RunPlan, committed: set[int]) -> list[dict[str, Any]]:
    """The Ray Data input rows of the records in shards not committed yet.

    Inputs under a prefix of ``plan.driver_only`` exist only for the driver (memory:// in this
    process; the embedded demo set in this machine's cache, which the other nodes of a cluster do
    not have), so their bytes travel with the rows (``data``; the demo set is under 2 MB). Every
    other input is read by the decode tasks from its URI.
    """
    items = []
    for r, flag in zip(plan.listing.records, plan.explain, strict=True):
        shard = plan.shard_of[(r.image_id, r.uri)]
        if shard in committed:
            continue
        item: dict[str, Any] = {
            "image_id": r.image_id,
            "uri": r.uri,
            "label": -1 if r.label is None else r.label,
            "explain": flag,
            "shard": shard,
        }
        if r.uri.startswith(plan.driver_only):
            item["data"] = driver_bytes(r.uri)
        items.append(item)
    return items


def driver_bytes(uri: str) -> bytes:
    """The bytes of an input only the driver can read, or b"" when they cannot be read (the
    decode task then tries the URI itself and reports why it failed)."""
    try:
        with fsspec.open(uri, "rb") as f:
            data: bytes = f.read()
    except OSError:
        return b""
    return data


def build_dataset(plan: RunPlan, items: list[dict[str, Any]]) -> Any:
    """The lazy Ray Data dataset: ``items`` -> decode tasks -> the model actor pool."""
    import ray
    from ray.data import ActorPoolStrategy

    cfg, model = plan.cfg, plan.model
    n_blocks = min(-(-len(items) // cfg.data.decode_batch_size), MAX_INPUT_BLOCKS)
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
        # Reserve memory for a batch of full-size decodes (ImageNet's largest is 36 MB as RGB).
        # The reservation also differs from the actor's remote args, which keeps Ray Data from
        # fusing decoding into the model actor: fused, one actor per GPU would decode serially
        # while the GPU waits.
        memory=cfg.data.decode_batch_size * 40 * 2**20,
    )
    return ds.map_batches(
        ModelActor,
        fn_constructor_kwargs={
            "model_ref": ray.put(model.module),
            "num_classes": len(model.classes),
            "embedding_dim": model.embedding_dim,
            "device": plan.device,
            "sections": plan.sections,
            "stages": plan.stages,
        },
        batch_size=cfg.predict.batch_size,
        batch_format="numpy",
        compute=ActorPoolStrategy(size=plan.num_actors),
        # num_gpus, num_cpus, accelerator_type, resources: audit.run.devices.ActorNeeds
        **(plan.needs or ActorNeeds(plan.device)).remote_args(),
    )


def stream(
    plan: RunPlan,
    committed: set[int],
    on_batch: Callable[[Batch], None],
    show_progress_bars: bool,
) -> str:
    """Run the pending images through the graph, calling ``on_batch`` with every output batch.

    Args:
        plan: The run plan.
        committed: Shards already committed (their images are not streamed).
        on_batch: Called on the driver with each output batch of the model actors.
        show_progress_bars: Whether Ray Data draws its own progress bars.

    Returns:
        Ray Data's execution statistics (``Dataset.stats()``), or "" when nothing was pending.
    """
    from ray.data import DataContext

    items = input_rows(plan, committed)
    if not items:
        return ""
    DataContext.get_current().enable_progress_bars = show_progress_bars
    if not show_progress_bars:  # the caller draws its own: Ray Data's warning that it is off
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # is noise
    ds = build_dataset(plan, items)
    # Ray Data fails a dataset that emits nothing for this long; -1 disables the guard.
    ds.context.execution_no_progress_timeout_s = plan.cfg.data.no_progress_timeout_s
    if should_flush(plan):  # data.flush_units; the whole plan's blocks (audit.run.units)
        ds.context.target_max_block_size = UNIT_BLOCK_BYTES
    # prefetch_batches=0: the iterator would otherwise hold each batch until the next arrives
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
        on_batch(batch)
    stats: str = ds.stats()
    return stats
