"""Devices an autoscaler provides (issue #17): the device resolution and the bounded wait
without Ray, then a real run on Ray's fake autoscaling cluster whose model actors run on a
worker node the autoscaler adds for them.

The fake cluster (tests/autoscaling_fixtures.py) has a head with CPUs only and one worker type
with ``min_workers: 0`` that carries ``fake_gpu``, a custom resource standing in for a GPU (no
machine here has CUDA): ``predict.resources: {fake_gpu: 1}`` is what only that node type has.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import requests
from autoscaling_fixtures import autoscaling_cluster
from cluster_fixtures import LocalCluster, _cluster_pids, _processes, jobs_cli

from audit.config import ConfigError, Device
from audit.run.devices import (
    ActorNeeds,
    Cluster,
    ResourcesUnavailable,
    missing,
    resolve_device,
    wait_for_resources,
)

REPO = Path(__file__).resolve().parent.parent
NO_AUTOSCALER: dict[str, float] = {"CPU": 8.0}  # says it can provide only what it has
CAN_ADD_GPUS: dict[str, float] = {"CPU": 24.0, "GPU": 4.0}
UNKNOWN = None  # no autoscaling config published (autoscaler v1, a laptop)


@pytest.mark.parametrize(
    ("wanted", "gpus_now", "max_resources", "device"),
    [
        (Device.AUTO, 2.0, NO_AUTOSCALER, "cuda"),  # GPUs now
        (Device.AUTO, 0.0, CAN_ADD_GPUS, "cuda"),  # the autoscaler can add them
        (Device.AUTO, 0.0, NO_AUTOSCALER, "cpu"),  # neither
        (Device.AUTO, 0.0, UNKNOWN, "cpu"),  # a laptop (or a cluster that does not say)
        (Device.CUDA, 2.0, NO_AUTOSCALER, "cuda"),
        (Device.CUDA, 0.0, CAN_ADD_GPUS, "cuda"),  # waited for later
        (Device.CUDA, 0.0, UNKNOWN, "cuda"),  # waited for later, bounded
        (Device.CPU, 2.0, NO_AUTOSCALER, "cpu"),
        (Device.CPU, 0.0, CAN_ADD_GPUS, "cpu"),
        (Device.CPU, 0.0, UNKNOWN, "cpu"),
    ],
)
def test_resolve_device(
    wanted: Device, gpus_now: float, max_resources: Mapping[str, float] | None, device: str
) -> None:
    assert resolve_device(wanted, gpus_now, max_resources) == device


def test_cuda_on_a_cluster_that_can_get_no_gpu_is_refused_at_once() -> None:
    with pytest.raises(ConfigError, match=r"^The 'predict\.device' field is 'cuda' but .*$"):
        resolve_device(Device.CUDA, 0.0, NO_AUTOSCALER)


def test_a_ray_this_process_started_has_no_autoscaler(ray_local: None) -> None:
    """The session's local Ray (a laptop's): ``cuda`` is refused at once, not after a wait."""
    from audit.run.devices import ray_cluster, started_here

    assert started_here()
    cluster = ray_cluster()
    assert cluster.max_resources() == cluster.resources()
    with pytest.raises(ConfigError, match="no GPU and its autoscaler's node types have none"):
        resolve_device(Device.CUDA, cluster.resources().get("GPU", 0), cluster.max_resources())


def test_actor_needs_as_remote_args_and_bundle() -> None:
    needs = ActorNeeds("cuda", "A10G", {"fake_gpu": 1.0})
    assert needs.remote_args() == {
        "num_gpus": 1,
        "num_cpus": 1,
        "accelerator_type": "A10G",
        "resources": {"fake_gpu": 1.0},
    }
    assert needs.bundle() == {"CPU": 1.0, "GPU": 1.0, "accelerator_type:A10G": 0.001, "fake_gpu": 1}
    assert ActorNeeds("cpu").remote_args() == {"num_gpus": 0, "num_cpus": 1}
    have = {"CPU": 4.0, "GPU": 1.0, "fake_gpu": 2.0, "accelerator_type:A10G": 1.0}
    assert missing([needs.bundle()] * 2, have) == {"GPU": 1.0}


class FakeClock:
    """time.monotonic and time.sleep of a wait that takes no time."""

    def __init__(self) -> None:
        self.now = 0.0

    def sleep(self, s: float) -> None:
        self.now += s

    def __call__(self) -> float:
        return self.now


def test_the_wait_fails_with_one_line_and_withdraws_its_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, asked = FakeClock(), []
    cluster = Cluster(resources=lambda: {"CPU": 2.0}, request=asked.append)
    bundle = ActorNeeds("cuda").bundle()
    with (
        caplog.at_level(logging.INFO, logger="audit.run.devices"),
        pytest.raises(ResourcesUnavailable) as err,
    ):
        wait_for_resources([bundle], 30, cluster, sleep=clock.sleep, clock=clock)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("the Ray cluster did not provide 1 GPU for the model actors")
    assert "within 30 s (predict.wait_for_resources_s)" in message
    assert asked == [[bundle], []]  # asked for the bundle, then withdrew it
    waiting = [r.getMessage() for r in caplog.records if "waiting" in r.getMessage()]
    assert waiting[0] == "waiting up to 30 s for the cluster to provide 1 GPU"
    assert 2 <= len(waiting) <= 4  # about one line every 10 s, not one per poll


def test_the_wait_returns_when_the_autoscaler_delivers() -> None:
    clock, asked = FakeClock(), []
    cluster = Cluster(
        resources=lambda: {"CPU": 4.0, "fake_gpu": 1.0 if clock.now >= 5 else 0.0},
        request=asked.append,
    )
    bundle = ActorNeeds("cpu", resources={"fake_gpu": 1.0}).bundle()
    assert wait_for_resources([bundle], 60, cluster, sleep=clock.sleep, clock=clock) is True
    assert asked == [[bundle]] and clock.now == 5.0  # the caller withdraws it after the run
    assert wait_for_resources([bundle], 60, cluster) is False  # there already: nothing asked


def _head_node_id(cluster: LocalCluster) -> str:
    """The head's Ray node id, from the state API of the cluster's dashboard."""
    r = requests.get(
        cluster.address + "/api/v0/nodes",
        headers={"Authorization": f"Bearer {cluster.token}"},
        timeout=30,
    )
    r.raise_for_status()
    nodes = r.json()["data"]["result"]["result"]
    return str(next(n["node_id"] for n in nodes if n["is_head_node"]))


FAKE_GPU_WORKER = {
    "ray.worker.fake_gpu": {
        "resources": {"CPU": 2, "fake_gpu": 1},
        "min_workers": 0,
        "max_workers": 1,
    }
}


WORKER_SITE = REPO / "tests" / "worker_site"  # sitecustomize.py: a watch on workers' opens
DECODE_BATCH = 4  # a decode task reserves 40 MiB of Ray's `memory` per image: 160 MiB
HEAD_MEMORY = 128 * 2**20  # below one decode task's reservation: decoding runs on the worker


def _task_nodes(cluster: LocalCluster, name: str, count: int) -> list[str]:
    """The node ids the ``count`` tasks called ``name`` ran on (the state API of the cluster's
    dashboard; task events reach it within seconds, so this waits for all of them)."""
    deadline, nodes = time.monotonic() + 60, []
    while time.monotonic() < deadline:
        r = requests.get(
            cluster.address + "/api/v0/tasks",
            params={
                "filter_keys": "name",
                "filter_predicates": "=",
                "filter_values": name,
                "detail": "true",
                "limit": 1000,
            },
            headers={"Authorization": f"Bearer {cluster.token}"},
            timeout=30,
        )
        r.raise_for_status()
        tasks = r.json()["data"]["result"]["result"]
        nodes = [str(t["node_id"]) for t in tasks if t.get("state") == "FINISHED"]
        if len(nodes) >= count:
            return nodes
        time.sleep(1)
    raise AssertionError(f"the state API shows {len(nodes)} finished {name} tasks, not {count}")


def _opens(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.mark.slow  # a Ray cluster, a worker node added, a job over the demo: about 30 s
def test_a_job_on_an_autoscaling_cluster_gets_its_node_and_reads_nothing_of_the_drivers(
    tmp_path: Path, demo_cache: str
) -> None:
    """``audit-cli submit`` of the demo (a set in the driver's cache) with a local output, to
    the Jobs API of a two-node cluster with token auth: the autoscaler adds the node the model
    actors ask for, they run there, and no process of that node opens a file of the demo set or
    of the output (tests/worker_site/sitecustomize.py watches every Ray worker's opens). The
    head's ``memory`` resource is below one decode task's reservation, so the added node decodes
    every image: without the demo set's bytes in the rows, its decode tasks would open them."""
    t0 = time.monotonic()
    out, log = tmp_path / "out", tmp_path / "opens.jsonl"
    watch = {
        "PYTHONPATH": str(WORKER_SITE),
        "AUDIT_TEST_OPEN_LOG": str(log),
        "AUDIT_TEST_DRIVER_ONLY": os.pathsep.join([demo_cache, str(out)]),
        "AUDIT_CACHE_DIR": demo_cache,  # the driver's demo set, rendered once per session
    }
    head_args = [f"--memory={HEAD_MEMORY}"]
    with autoscaling_cluster(FAKE_GPU_WORKER, extra_env=watch, head_args=head_args) as cluster:
        head = _head_node_id(cluster)
        sets = [
            "data.limit=20",
            f"data.decode_batch_size={DECODE_BATCH}",
            "predict.device=cpu",
            "predict.resources={fake_gpu: 1}",
            "predict.wait_for_resources_s=120",
            "attack.max_steps=2",
            "explain.enabled=false",
        ]
        result = jobs_cli(
            cluster,
            "submit",
            "--working-dir",
            str(REPO),
            *(a for s in sets for a in ("--set", s)),
            "--run-id",
            "autoscaled",
            "-o",
            str(out),
            "--wait",
            "--timeout",
            "400",
        )
        logs = jobs_cli(cluster, "logs", "autoscaled").output
        assert result.exit_code == 0, result.output[-3000:] + logs[-3000:]
        classes = json.loads((out / "autoscaled" / "manifest.json").read_text())["stages"][
            "criticism"
        ]["classes"]
        # pyarrow reads a local table natively, unseen by the watch: where the tasks ran says it
        assert set(_task_nodes(cluster, "select_class", classes)) == {head}
        # every decode task ran on the added node, so the watch below covers the demo set too
        decodes = _task_nodes(cluster, "MapBatches(decode_batch)", -(-20 // DECODE_BATCH))
        assert head not in decodes
        temp_dir, gcs = cluster.temp_dir, cluster.gcs_address
        raylets = [c for _, (_, c) in _processes_of(temp_dir, gcs) if "raylet/raylet" in c]
        assert len(raylets) == 2  # the head's and the added worker's: both stopped with it
    manifest = json.loads((out / "autoscaled" / "manifest.json").read_text())
    execution = manifest["execution"]
    assert manifest["state"] == "succeeded"
    assert execution["device"] == "cpu" and execution["resources"] == {"fake_gpu": 1.0}
    assert execution["nodes"] and head not in execution["nodes"]  # the worker ran the actors
    assert manifest["stages"]["criticism"]["where"] == "the driver's node (local output)"
    assert "waiting up to 120 s for the cluster to provide 1 fake_gpu" in logs
    assert not _processes_of(temp_dir, gcs)  # nothing of the cluster is left, workers included
    opens = _opens(log)
    added = [o for o in opens if "fake_gpu" in o["raylet"]]  # the added node's workers
    assert any(o["event"] == "start" for o in added), "the watch saw no worker of that node"
    read = [o for o in added if o["event"] != "start"]
    assert not read, f"the added node opened the driver's files: {[o['path'] for o in read[:5]]}"
    print(f"autoscaling job: {time.monotonic() - t0:.0f} s")


def _processes_of(temp_dir: str, gcs: str) -> list[tuple[int, tuple[int, str]]]:
    """The cluster's processes, as its teardown finds them: pid -> (parent, command line)."""
    procs = _processes()
    pids = _cluster_pids(temp_dir, (f"--address={gcs} ",))
    return [(pid, procs[pid]) for pid in pids if pid in procs]
