"""Ray's fake autoscaling cluster on this machine, started and stopped without ``ray stop``.

``ray.cluster_utils.AutoscalingCluster`` starts the autoscaler's ``fake_multinode`` provider
(worker "nodes" are raylets the autoscaler starts on this machine when work asks for them), but
its ``start()`` and ``shutdown()`` run ``ray stop --force``, which stops every Ray process on
the machine. This module builds the same cluster config (Ray's
``fake_multi_node/example.yaml``, which the wheel does not ship, with the head's and workers'
node types) and starts the head with :func:`cluster_fixtures.start_cluster`'s flags: 127.0.0.1,
free ports, a private temp dir, token auth. The fake worker nodes are started by the head's
autoscaler process and use the head's temp dir, so :func:`cluster_fixtures.stop_cluster` stops
them with the rest.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from cluster_fixtures import LocalCluster, free_port, start_cluster, stop_cluster


def fake_cluster_config(
    head_cpus: int, worker_types: Mapping[str, Mapping[str, Any]], gcs_port: int, v2: bool
) -> dict[str, Any]:
    """The autoscaler config of a ``fake_multinode`` cluster (what ``AutoscalingCluster``
    generates from Ray's example.yaml), its workers joining the GCS at 127.0.0.1:``gcs_port``.

    Args:
        head_cpus: CPUs of the head (no GPU, no other resource).
        worker_types: Node type name -> ``{"resources": {...}, "min_workers": n,
            "max_workers": m}``.
        gcs_port: The head's GCS port.
        v2: Autoscaler v2 (launch_multiple, the fake head's node id).
    """
    from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID

    provider: dict[str, Any] = {
        "type": "fake_multinode",
        "use_node_id_as_ip": True,
        "disable_node_updaters": True,
        "disable_launch_config_check": True,
        "gcs_address": f"127.0.0.1:{gcs_port}",
    }
    if v2:
        provider.update(launch_multiple=True, head_node_id=FAKE_HEAD_NODE_ID)
    types: dict[str, Any] = {
        name: {"node_config": {}, **dict(spec)} for name, spec in worker_types.items()
    }
    types["ray.head.default"] = {
        "resources": {"CPU": head_cpus},
        "node_config": {},
        "max_workers": 0,
    }
    return {
        "cluster_name": "fake_multinode",
        "max_workers": 8,
        "provider": provider,
        "available_node_types": types,
        "head_node_type": "ray.head.default",
        "auth": {},
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 0.1,
        "docker": {},
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
    }


@contextlib.contextmanager
def autoscaling_cluster(
    worker_types: Mapping[str, Mapping[str, Any]],
    head_cpus: int = 2,
    v2: bool = False,
    extra_env: Mapping[str, str] | None = None,
    head_args: Sequence[str] = (),
) -> Iterator[LocalCluster]:
    """A token-auth head with CPUs only whose autoscaler adds fake worker nodes of
    ``worker_types`` on demand; stopped (only it, workers included) on exit. ``extra_env`` is
    added to the head's environment (Ray's ``RAY_<setting>`` system config, for one),
    ``head_args`` to its ``ray start`` (``--memory=...``, for one)."""
    from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID

    temp_dir = tempfile.mkdtemp(prefix="rayas-", dir="/tmp")  # short: Unix socket paths
    port = free_port()
    config = Path(temp_dir) / "autoscaling.json"
    config.write_text(json.dumps(fake_cluster_config(head_cpus, worker_types, port, v2)))
    env = {
        "RAY_FAKE_CLUSTER": "1",
        "AUTOSCALER_UPDATE_INTERVAL_S": "1",
        # the fake workers take this machine's address from Ray's loopback mode: 127.0.0.1
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    }
    if v2:
        env.update(
            RAY_enable_autoscaler_v2="1",
            RAY_CLOUD_INSTANCE_ID=FAKE_HEAD_NODE_ID,
            RAY_OVERRIDE_NODE_ID_FOR_TESTING=FAKE_HEAD_NODE_ID,
        )
    env.update(extra_env or {})
    try:
        yield start_cluster(
            temp_dir,
            num_cpus=head_cpus,
            port=port,
            extra_args=[f"--autoscaling-config={config}", *head_args],
            extra_env=env,
        )
    finally:
        stop_cluster(temp_dir, markers=(f"--address=127.0.0.1:{port} ",))
        shutil.rmtree(temp_dir, ignore_errors=True)
