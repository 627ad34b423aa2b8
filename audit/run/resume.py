"""The resume policy: whether an earlier, unfinished attempt of a run may be continued.

A run id whose earlier attempt did not finish is resumed: the shards that attempt committed are
kept and only the others are computed. That is only sound when the rerun would compute the same
thing, so the policy refuses a finished run, a run of another format, another configuration
(but for :data:`RESUME_IGNORED` fields), other inputs, other weights, another transform and
another device. Each check returns one-line reasons instead of raising; the caller raises
:class:`audit.config.ConfigError` with the first. Each takes the earlier manifest typed
(:class:`audit.run.manifest_types.Manifest`) or as JSON gives it.

Example::

    reasons = refusals_before_plan(previous, url)  # [] or ["The output run ... finished: ..."]
    reasons = refusals(previous, plan, url)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from audit.models import EvalTransform, LoadedModel
from audit.run.manifest_types import FORMAT_VERSION, Manifest
from audit.run.plan import RunPlan

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


def refusals_before_plan(previous: Manifest | Mapping[str, Any], url: str) -> list[str]:
    """Why the run whose manifest is ``previous`` cannot be resumed, known from the manifest
    alone (before the model is loaded and the inputs listed); empty when it can be. A manifest
    of another format version (older or newer) is refused, never read further."""
    version = (
        previous.format_version
        if isinstance(previous, Manifest)
        else previous.get("format_version", 1)
    )
    if version != FORMAT_VERSION:
        state = previous.state if isinstance(previous, Manifest) else previous.get("state")
        shards: object = None
    else:
        typed = Manifest.of(previous)
        state, shards = typed.state, typed.shards
    if state == "succeeded":
        return [
            f"The output run {url!r} already finished: choose another 'output.run_id' or "
            "set output.overwrite=true to replace it."
        ]
    if version != FORMAT_VERSION or shards is None:
        return [
            f"The output run {url!r} was written by another version of this tool and "
            "cannot be resumed: choose another 'output.run_id' or set output.overwrite=true."
        ]
    return []


def refusals(previous: Manifest | Mapping[str, Any], plan: RunPlan, url: str) -> list[str]:
    """Why ``plan`` cannot resume the run whose manifest is ``previous``, most basic first:
    the configuration, the inputs, the weights, the transform, the device. Empty when it can."""
    previous = Manifest.of(previous)
    out = []
    changed = config_changes(previous.config, plan.cfg.to_dict())
    if changed:
        out.append(
            f"The output run {url!r} was started with a different configuration "
            f"({', '.join(changed)} changed): rerun it with the same configuration to "
            "resume, or choose another 'output.run_id'."
        )
    if (previous.data.fingerprint if previous.data else None) != plan.fingerprint:
        out.append(
            f"The inputs of run {url!r} changed since it started (the listed files "
            "or their labels differ): choose another 'output.run_id' or set "
            "output.overwrite=true."
        )
    return out + model_and_device_changes(previous, plan.model, plan.device, url)


def config_changes(previous: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``section.field`` names whose values differ, except :data:`RESUME_IGNORED` fields."""
    current = json.loads(json.dumps(current, default=str))
    out = []
    for section in sorted(set(previous) | set(current)):
        old, new = previous.get(section, {}), current.get(section, {})
        for name in sorted(set(old) | set(new)):
            if (section, name) not in RESUME_IGNORED and old.get(name) != new.get(name):
                out.append(f"{section}.{name}")
    return out


def model_and_device_changes(
    previous: Manifest | Mapping[str, Any], model: LoadedModel, device: str, url: str
) -> list[str]:
    """Other weights (a checkpoint replaced at the same path, another torchvision version),
    another transform, or another device (bf16 on GPU against float32 on CPU): the committed
    shards would then come from a different computation than the rest.

    The weights are compared by their sha256, so the same file found under another
    ``TORCH_HOME`` resumes.
    """
    out = []
    previous = Manifest.of(previous)
    before = previous.model
    digest = before.weights_sha256
    if digest is not None and digest != model.weights_sha256:
        out.append(
            f"The weights of run {url!r} changed since it started (sha256 {digest[:12]}... "
            f"from {before.weights}, now {model.weights_sha256[:12]}... from "
            f"{model.weights}): choose another 'output.run_id' or set output.overwrite=true."
        )
    transform = before.transform
    if transform is not None and transform != model.transform.to_dict():
        out.append(
            f"The evaluation transform of run {url!r} changed since it started (was "
            f"{EvalTransform.from_dict(transform).describe()}, now "
            f"{model.transform.describe()}): choose another 'output.run_id' or set "
            "output.overwrite=true."
        )
    ran_on = previous.execution.device if previous.execution else None
    if ran_on is not None and ran_on != device:
        out.append(
            f"Run {url!r} started on {ran_on} and would resume on {device}: resume it on a "
            f"{ran_on} cluster (predict.device={ran_on}), or set output.overwrite=true."
        )
    return out


def committed_shards(previous: Manifest | Mapping[str, Any]) -> set[int]:
    """The shards the manifest ``previous`` lists as committed. Listed is not yet kept:
    :meth:`audit.run.collect.ShardCollector.adopt` verifies their files (size, sha256,
    Parquet footer) and redoes a shard with a missing or altered one."""
    shards = Manifest.of(previous).shards
    return set(shards.committed) if shards is not None else set()
