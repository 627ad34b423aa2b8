"""Devices an autoscaling Ray cluster can provide: which device, what each model actor asks
for, and the bounded wait for the nodes that have it.

A cluster started from ``cluster.yaml`` has a CPU head and GPU workers with ``min_workers: 0``:
when a run starts, it may have no GPU *yet*. :func:`resolve_device` therefore looks at what the
cluster has now and at what its autoscaler's node types could add; :func:`wait_for_resources`
asks the autoscaler for the model actors' bundles (``ray.autoscaler.sdk.request_resources``) and
polls the cluster's resources until they are there, or fails with one line after
``predict.wait_for_resources_s``. Everything Ray-facing is reached through a :class:`Cluster`, so
the decisions are tested without Ray.

Example::

    cluster = ray_cluster()
    device = resolve_device(Device.AUTO, cluster.resources().get("GPU", 0), cluster.max_resources())
    needs = ActorNeeds("cuda", accelerator_type="A10G", resources={})
    wait_for_resources([needs.bundle()] * 2, 600, cluster)
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from audit.config import ConfigError, Device
from audit.errors import AuditError

log = logging.getLogger(__name__)

Bundle = dict[str, float]
"""One model actor's resources, as Ray's placement bundles write them: ``{"CPU": 1, "GPU": 1}``."""

ACCELERATOR_PREFIX = "accelerator_type:"
"""Ray gives a node with an accelerator type the resource ``accelerator_type:<type>`` (1); an
actor with ``accelerator_type=<type>`` asks for a sliver of it (:data:`ACCELERATOR_AMOUNT`)."""
ACCELERATOR_AMOUNT = 0.001

LOG_EVERY_S = 10.0
"""Seconds between two progress lines of :func:`wait_for_resources`."""


class ResourcesUnavailable(AuditError):
    """The cluster did not provide the model actors' resources in time (one line)."""


@dataclass(frozen=True)
class Cluster:
    """How the run sees its Ray cluster.

    Attributes:
        resources: The cluster's total resources now (``ray.cluster_resources()``).
        max_resources: The most of each resource the autoscaler's node types could provide, or
            None when the cluster does not say (no autoscaler, or one that does not publish its
            node types: :func:`autoscaler_max_resources`).
        request: Asks the autoscaler for a list of bundles (an empty list withdraws the ask).
    """

    resources: Callable[[], Mapping[str, float]]
    max_resources: Callable[[], Mapping[str, float] | None] = lambda: None
    request: Callable[[list[Bundle]], None] = lambda bundles: None

    @classmethod
    def fixed(cls, gpus: float) -> Cluster:
        """A cluster of ``gpus`` GPUs, CPUs enough, and no autoscaler: it says it can provide
        only what it has (for a plain GPU count, and tests)."""
        have = {"CPU": math.inf, "GPU": float(gpus)}
        return cls(resources=lambda: have, max_resources=lambda: have)


def ray_cluster() -> Cluster:
    """The connected Ray cluster (``ray.init`` has run)."""
    import ray

    def request(bundles: list[Bundle]) -> None:
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=bundles)

    def resources() -> Mapping[str, float]:
        return {k: float(v) for k, v in ray.cluster_resources().items()}

    if started_here():  # no autoscaler: the cluster can provide only what it has
        return Cluster(resources=resources, max_resources=resources)
    return Cluster(resources=resources, max_resources=autoscaler_max_resources, request=request)


def started_here() -> bool:
    """Whether this process started its Ray instance (``ray.init()`` with no address: a laptop,
    a test session), which has no autoscaler. Reads Ray's private ``global_worker.node.head``
    (a driver that connects to a cluster holds a non-head node); False if that changes."""
    try:
        import ray._private.worker

        node = ray._private.worker.global_worker.node
        return bool(node is not None and node.head)
    except Exception:  # a private API: a change in Ray must not fail the run
        return False


def autoscaler_max_resources() -> dict[str, float] | None:
    """The most of each resource the autoscaler's node types could provide together
    (``max_workers`` x the type's resources, summed over types; ``inf`` for an unbounded
    type), or None when the cluster does not publish its autoscaling config.

    Uses Ray's private ``ray._private.state.state.get_max_resources_from_cluster_config()``
    (Ray Data's own autoscaler reads the same record, ``get_cluster_config()``, in
    ``ray/data/_internal/cluster_autoscaler/util.py``): the ``ClusterConfig`` the autoscaler
    reports to the GCS. Only autoscaler v2 (``RAY_enable_autoscaler_v2=1``, KubeRay's default)
    reports it; under autoscaler v1 (``ray up`` with cluster.yaml) it is empty, and so is it on
    a cluster without an autoscaler: None. Any failure of the private API also gives None.
    """
    try:
        import ray._private.state

        found = ray._private.state.state.get_max_resources_from_cluster_config()
    except Exception:  # a private API: a change in Ray must not fail the run
        log.debug("no autoscaling config from the GCS", exc_info=True)
        return None
    if not found:
        return None
    return {k: (math.inf if v >= 2**62 else float(v)) for k, v in found.items()}


def resolve_device(
    wanted: Device, gpus_now: float, max_resources: Mapping[str, float] | None
) -> str:
    """``cuda`` or ``cpu``.

    ``auto`` is ``cuda`` when the cluster has a GPU now or its autoscaler's node types can add
    one (``max_resources``), else ``cpu`` (a laptop, a CPU cluster). ``cuda`` is ``cuda``; the
    GPUs need not be there yet (:func:`wait_for_resources` waits for them), but a cluster that
    says its node types have none is refused at once.

    Raises:
        ConfigError: ``cuda`` on a cluster with no GPU whose autoscaler cannot add one.
    """
    can_add = max_resources is not None and max_resources.get("GPU", 0) >= 1
    if wanted is Device.CUDA:
        if gpus_now < 1 and max_resources is not None and not can_add:
            raise ConfigError(
                "The 'predict.device' field is 'cuda' but the Ray cluster has no GPU and its "
                "autoscaler's node types have none. Use 'auto' or 'cpu'."
            )
        return "cuda"
    if wanted is Device.AUTO and (gpus_now >= 1 or can_add):
        return "cuda"
    return "cpu"


@dataclass(frozen=True)
class ActorNeeds:
    """What one model actor asks Ray for.

    Attributes:
        device: ``cuda`` (one GPU) or ``cpu``.
        accelerator_type: Ray's ``accelerator_type`` option (``A10G``, ``H100``...), or None.
        resources: Custom resources (``predict.resources``), name -> amount.
    """

    device: str
    accelerator_type: str | None = None
    resources: Mapping[str, float] = field(default_factory=dict)

    def remote_args(self) -> dict[str, Any]:
        """The keyword arguments of ``map_batches`` that place the actor."""
        args: dict[str, Any] = {"num_gpus": 1 if self.device == "cuda" else 0, "num_cpus": 1}
        if self.accelerator_type is not None:
            args["accelerator_type"] = self.accelerator_type
        if self.resources:
            args["resources"] = dict(self.resources)
        return args

    def bundle(self) -> Bundle:
        """The same needs as a resource bundle, for the autoscaler and for :func:`covers`."""
        out: Bundle = {"CPU": 1.0}
        if self.device == "cuda":
            out["GPU"] = 1.0
        if self.accelerator_type is not None:
            out[ACCELERATOR_PREFIX + self.accelerator_type] = ACCELERATOR_AMOUNT
        out.update({k: float(v) for k, v in self.resources.items()})
        return out


def missing(bundles: Sequence[Bundle], have: Mapping[str, float]) -> Bundle:
    """What ``have`` (cluster totals) lacks of the sum of ``bundles``; empty when it is enough.

    Totals, not a placement: 2 GPUs on two nodes cover two one-GPU bundles, as the actors need.
    """
    need: Bundle = {}
    for b in bundles:
        for k, v in b.items():
            need[k] = need.get(k, 0.0) + v
    return {k: v - have.get(k, 0.0) for k, v in need.items() if have.get(k, 0.0) + 1e-9 < v}


def wait_for_resources(
    bundles: Sequence[Bundle],
    timeout_s: float,
    cluster: Cluster,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> bool:
    """Make sure the cluster has ``bundles``: asks its autoscaler for them when it lacks them,
    and polls until they are there (an INFO line every :data:`LOG_EVERY_S` s says what it
    waits for).

    Returns:
        Whether the autoscaler was asked (the caller withdraws the ask, ``cluster.request([])``,
        once the actors ran: a node freed before they start would be scaled down).

    Raises:
        ResourcesUnavailable: still missing after ``timeout_s`` (the ask is withdrawn).
    """
    lack = missing(bundles, cluster.resources())
    if not lack:
        return False
    cluster.request(list(bundles))
    start = last_log = clock()
    log.info("waiting up to %.0f s for the cluster to provide %s", timeout_s, _show(lack))
    while lack:
        now = clock()
        if now - start >= timeout_s:
            cluster.request([])
            raise ResourcesUnavailable(
                f"the Ray cluster did not provide {_show(lack)} for the model actors within "
                f"{timeout_s:.0f} s (predict.wait_for_resources_s); check that its autoscaler "
                "has a node type with them (predict.device, predict.accelerator_type, "
                "predict.resources) and can launch it"
            )
        if now - last_log >= LOG_EVERY_S:
            log.info("still waiting (%.0f s) for %s", now - start, _show(lack))
            last_log = now
        sleep(1.0)
        lack = missing(bundles, cluster.resources())
    log.info("the cluster provides the model actors' resources after %.0f s", clock() - start)
    return True


def _show(lack: Mapping[str, float]) -> str:
    """``1 GPU, 2 fake_gpu`` (accelerator types by name)."""
    parts = []
    for k, v in sorted(lack.items()):
        if k.startswith(ACCELERATOR_PREFIX):
            parts.append(f"a node of accelerator type {k[len(ACCELERATOR_PREFIX) :]!r}")
        else:
            parts.append(f"{v:g} {k}")
    return ", ".join(parts)
