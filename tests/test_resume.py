"""Shards, resume and fault tolerance: a run survives a killed driver, a killed model actor and a
failing storage, and ends with every image exactly once and the same tables as an
uninterrupted run."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import fsspec
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from autoscaling_fixtures import autoscaling_cluster
from cluster_fixtures import LocalCluster, _processes
from fsspec.implementations.local import LocalFileSystem
from torch import nn

from audit import store
from audit.config import ConfigError, build_config
from audit.config.checks import Checked
from audit.model_actor import ModelActor, decode_batch
from audit.models import AuditModel
from audit.run import run_audit
from audit.run.lease import LEASE
from audit.run.ledger import EXIT_AFTER_COMMITS_CODE, EXIT_AFTER_COMMITS_ENV
from audit.run.tables import per_image_tables
from audit.run.verify import verify_run
from audit.stages.registry import STAGES, StageBase
from audit.store import read_manifest, read_table

REPO = Path(__file__).resolve().parents[1]

# 6 demo images per class (60) in shards of 10: 6 shards, each committed as soon as its last
# image is back.
SMALL = {
    "data": {"per_class": 6, "decode_batch_size": 8},
    "predict": {"batch_size": 8},
    "explain": {"per_class": 1, "n_samples": 50},
}


def small_config(root: Path | str, run_id: str, **sections: dict[str, Any]) -> dict[str, Any]:
    raw: dict[str, Any] = {k: dict(v) for k, v in SMALL.items()}
    for name, fields in sections.items():
        raw.setdefault(name, {}).update(fields)
    raw["output"] = {"root": str(root), "run_id": run_id, "shard_size": 10, **raw.get("output", {})}
    return raw


@pytest.fixture(scope="module")
def demo_cache(demo_cache: str) -> Iterator[str]:
    """The session's rendered demo set (tests/fixtures_demo.py), as this module's
    ``AUDIT_CACHE_DIR``: the runs here read it in this process."""
    cache = demo_cache
    old = os.environ.get("AUDIT_CACHE_DIR")
    os.environ["AUDIT_CACHE_DIR"] = cache
    yield cache
    if old is None:
        os.environ.pop("AUDIT_CACHE_DIR", None)
    else:
        os.environ["AUDIT_CACHE_DIR"] = old


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, demo_cache: str, ray_local: None) -> str:
    """An uninterrupted run of the small configuration."""
    root = tmp_path_factory.mktemp("ref")
    run_audit(build_config(small_config(root, "ref")))
    return str(root / "ref")


def rows(run: str, table: str, key: tuple[str, ...]) -> list[dict[str, Any]]:
    out = read_table(run, table).to_pylist()
    for r in out:
        r.pop("run_id", None)
    return sorted(out, key=lambda r: tuple(r[k] for k in key))


def assert_same_tables(run: str, ref: str) -> None:
    """Every table of ``run`` equals ``ref``'s, row for row (floats to float32 precision)."""
    keys = {
        "predictions": ("image_id",),
        "errors": ("image_id",),
        "adversarial": ("image_id",),
        "explanations": ("image_id", "variant"),
        "selections": ("class", "method", "role", "rank"),
        "metrics": ("name", "scope"),
    }
    for table, key in keys.items():
        got, want = rows(run, table, key), rows(ref, table, key)
        assert len(got) == len(want), table
        for g, w in zip(got, want, strict=True):
            assert g.keys() == w.keys()
            for col in g:
                a, b = g[col], w[col]
                if isinstance(b, float) or (isinstance(b, list) and b and isinstance(b[0], float)):
                    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=f"{table}.{col}")
                else:
                    assert a == b, f"{table}.{col} of {[g[k] for k in key]}"


def assert_exactly_once(run: str) -> None:
    m = read_manifest(run)
    ids = read_table(run, "predictions")["image_id"].to_pylist()
    errs = read_table(run, "errors")["image_id"].to_pylist()
    assert len(ids) == len(set(ids)) and not set(ids) & set(errs)
    assert len(ids) + len(errs) == m["data"]["inputs"]
    assert m["shards"]["committed"] == list(range(m["shards"]["total"]))
    # the folder holds exactly the files the manifest lists
    for table, t in m["tables"].items():
        on_disk = sorted(p.name for p in (Path(run) / table).iterdir())
        assert on_disk == sorted(Path(f).name for f in t["files"]), table


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def committed_shards(run: Path) -> int:
    try:
        return len(json.loads((run / "manifest.json").read_text())["shards"]["committed"])
    except (OSError, ValueError, KeyError):
        return 0


def killed_driver(raw: dict[str, Any], commits: int, cache: str) -> int:
    """Run ``raw`` in a driver process of its own on this session's Ray, ended by the test-only
    hook (``os._exit``: no cleanup, like SIGKILL) right after its ``commits``-th shard commit is
    in the manifest: the same point on every run. Returns the driver's pid."""
    import ray

    script = (
        "import json, sys, ray\n"
        "from audit.config import build_config\n"
        "from audit.run import run_audit\n"
        "ray.init(address=sys.argv[1], logging_level='WARNING')\n"
        "run_audit(build_config(json.loads(sys.argv[2])))\n"
    )
    env = {**os.environ, "AUDIT_CACHE_DIR": cache, EXIT_AFTER_COMMITS_ENV: str(commits)}
    driver = subprocess.Popen(
        [sys.executable, "-c", script, ray.get_runtime_context().gcs_address, json.dumps(raw)],
        cwd=REPO,
        env=env,
    )
    assert driver.wait(timeout=600) == EXIT_AFTER_COMMITS_CODE
    return driver.pid


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_killed_driver_then_damaged_files_then_rerun_equals_uninterrupted_run(
    tmp_path: Path, reference: str, demo_cache: str, caplog: pytest.LogCaptureFixture
) -> None:
    """One killed driver, three guarantees: only committed shards are listed and the lease is
    left behind (a killed driver cannot clean up); after three of its four committed files are
    truncated, altered and deleted, the rerun takes the dead driver's lease over, redoes exactly
    those shards and ends equal to an uninterrupted run."""
    raw = small_config(tmp_path, "killed")
    pid = killed_driver(raw, commits=4, cache=demo_cache)
    run = tmp_path / "killed"
    before = json.loads((run / "manifest.json").read_text())
    assert before["state"] == "running"  # the driver had no chance to say anything
    done_before = before["shards"]["committed"]
    assert len(done_before) == 4 < before["shards"]["total"]
    # files of shards in flight may be on disk, but only the committed ones are listed
    listed = {f for t in before["tables"].values() for f in t["files"]}
    assert {f for f in listed if "shard-" in f} <= {
        f"{t}/shard-{k:05d}.parquet" for t in per_image_tables() for k in done_before
    }
    assert json.loads((run / LEASE).read_text())["pid"] == pid

    damaged = [f for f in before["tables"]["predictions"]["files"] if "shard-" in f]
    assert len(damaged) == 4
    data = (run / damaged[0]).read_bytes()
    (run / damaged[0]).write_bytes(data[: len(data) - 20])  # truncated
    flip_byte(run / damaged[1])  # altered, same size
    (run / damaged[2]).unlink()  # missing
    assert pq.ParquetFile(run / damaged[3]).metadata.num_rows  # the fourth is intact

    caplog.set_level("WARNING")
    result = run_audit(build_config(raw))  # the same run id: resumes
    m = result.manifest
    assert m["state"] == "succeeded"
    assert m["attempts"][-1]["committed_shards_at_start"] == 1
    for rel in damaged[:3]:
        assert rel in caplog.text
    assert not (run / LEASE).exists()
    assert_exactly_once(str(run))
    assert_same_tables(str(run), reference)
    assert verify_run(str(run), {}).ok


@dataclass(frozen=True)
class KillOnceConfig(Checked):
    """Where the marker of the one kill lies, and at which batch of an actor to kill."""

    marker: str = ""
    at_batch: int = 2
    SECTION: ClassVar[str | None] = "kill_once"


class KillOnce(StageBase):
    """A test stage that adds nothing and SIGKILLs its own model actor process at its
    ``at_batch``-th batch, once per run (the marker file says it happened): a deterministic
    lost actor, in the middle of the stream."""

    name: ClassVar[str] = "kill_once"
    section: ClassVar[str] = "kill_once"
    config_type: ClassVar[type] = KillOnceConfig
    needs: ClassVar[tuple[str, ...]] = ("image", "predict")

    def __init__(self, config: KillOnceConfig, context: Any) -> None:
        super().__init__(config, context)
        self.batches = 0

    def run(self, batch: Any, state: dict[str, Any]) -> dict[str, np.ndarray]:
        self.batches += 1
        marker = Path(self.config.marker)
        if self.config.marker and self.batches == self.config.at_batch and not marker.exists():
            self.fault(marker)
        return {}

    def fault(self, marker: Path) -> None:
        """The one fault: note this process in ``marker``, then SIGKILL it."""
        marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)


def test_killed_model_actor_is_replaced_and_run_completes(
    tmp_path: Path, reference: str, demo_cache: str
) -> None:
    from ray import cloudpickle

    run = tmp_path / "actor"
    marker = tmp_path / "killed"
    STAGES.register(KillOnce)
    # the Ray workers cannot import this test module: its classes travel by value
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        raw = small_config(tmp_path, "actor", kill_once={"marker": str(marker)})
        result = run_audit(build_config(raw))
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        STAGES.unregister(KillOnce.name)
    assert marker.exists(), "the model actor was never killed"
    assert int(marker.read_text()) != os.getpid()  # an actor process, not the driver
    assert result.manifest["shards"]["committed"] == list(range(result.manifest["shards"]["total"]))
    assert_exactly_once(str(run))
    assert_same_tables(str(run), reference)


@dataclass(frozen=True)
class StopNodeConfig(KillOnceConfig):
    """Where the marker of the one node loss lies, and at which batch of an actor it comes."""

    SECTION: ClassVar[str | None] = "stop_node"


class StopNode(KillOnce):
    """:class:`KillOnce` whose fault leaves the killing to the test: it writes its process's
    pid, its raylet's pid (a Ray worker is the raylet's child) and its node id to the marker,
    then waits while the test kills the node, at the same point of every run."""

    name: ClassVar[str] = "stop_node"
    section: ClassVar[str] = "stop_node"
    config_type: ClassVar[type] = StopNodeConfig

    def fault(self, marker: Path) -> None:
        import ray

        node = ray.get_runtime_context().get_node_id()
        info = {"pid": os.getpid(), "raylet": os.getppid(), "node": node}
        marker.with_suffix(".tmp").write_text(json.dumps(info))
        marker.with_suffix(".tmp").replace(marker)
        time.sleep(600)  # killed with the node long before this ends


NODE_DRIVER = """\
import json, sys
sys.path.insert(0, sys.argv[1])
import ray
from ray import cloudpickle
import test_resume
from audit.config import build_config
from audit.run import run_audit
from audit.stages.registry import STAGES
# the Ray workers cannot import this test module: its classes travel by value
cloudpickle.register_pickle_by_value(test_resume)
STAGES.register(test_resume.StopNode)
ray.init(logging_level="WARNING")
run_audit(build_config(json.loads(sys.argv[2])))
"""
"""A driver of its own (the test process holds the session's local Ray) on the cluster that
``RAY_ADDRESS`` names, with the :class:`StopNode` stage."""

FAKE_GPU_NODES = {
    "ray.worker.fake_gpu": {
        "resources": {"CPU": 2, "fake_gpu": 1},
        "min_workers": 0,
        "max_workers": 2,  # room for the lost node's replacement while it is still listed
    }
}
FAST_NODE_DEATH = {  # the GCS declares a silent raylet dead after about 3 s, not 15-30 s
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}


def kill_node(raylet: int) -> set[int]:
    """SIGKILL a node's raylet and every process under it (its workers and agents), by PID, as
    Ray's chaos tests kill nodes; returns the pids."""
    procs = _processes()
    assert "raylet/raylet" in procs[raylet][1], procs[raylet][1]
    pids, grew = {raylet}, True
    while grew:
        more = {pid for pid, (ppid, _) in procs.items() if ppid in pids} - pids
        pids |= more
        grew = bool(more)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return pids


def run_driver(cluster: LocalCluster, raw: dict[str, Any], cache: str, log: Path) -> Any:
    """Start :data:`NODE_DRIVER` on ``cluster`` with the run config ``raw``; its output goes to
    ``log`` (a pipe could fill while the test waits)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH_TOKEN_PATH")}
    env.update(
        RAY_ADDRESS=cluster.gcs_address,
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=cluster.token,
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",  # 127.0.0.1 stays 127.0.0.1 (loopback mode)
        AUDIT_CACHE_DIR=cache,
    )
    out = log.open("w")
    return subprocess.Popen(
        [sys.executable, "-c", NODE_DRIVER, str(REPO / "tests"), json.dumps(raw)],
        cwd=REPO,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )


@pytest.mark.slow  # a fake autoscaling cluster, a node lost and replaced, one or two runs
def test_a_worker_node_lost_mid_run(tmp_path: Path, reference: str, demo_cache: str) -> None:
    """The model actor's worker node (the only kind with ``fake_gpu``) is killed in the middle
    of the stream: the run either completes anyway, or fails with a one-line error and the rerun
    with the same run id completes. Either way every image is there exactly once and the tables
    equal an uninterrupted run's; the actors ran on a node the autoscaler added after the loss."""
    marker = tmp_path / "stopped"
    raw = small_config(
        tmp_path,
        "node",
        predict={"resources": {"fake_gpu": 1}, "wait_for_resources_s": 240},
        stop_node={"marker": str(marker), "at_batch": 3},
    )
    run = tmp_path / "node"
    with autoscaling_cluster(FAKE_GPU_NODES, extra_env=FAST_NODE_DEATH) as cluster:
        driver = run_driver(cluster, raw, demo_cache, tmp_path / "driver-1.log")
        try:
            wait_for(lambda: marker.exists() or driver.poll() is not None, 300, "the node stop")
            assert driver.poll() is None, (tmp_path / "driver-1.log").read_text()[-3000:]
            stopped = json.loads(marker.read_text())
            killed = kill_node(stopped["raylet"])
            assert stopped["pid"] in killed
            first = driver.wait(timeout=400)
        finally:
            if driver.poll() is None:
                driver.kill()
        log = (tmp_path / "driver-1.log").read_text()
        after = json.loads((run / "manifest.json").read_text())
        if first == 0:
            print("the run survived the node loss")
            assert after["state"] == "succeeded"
            # The stopped node is not always among execution.nodes: the nodes of the batches
            # the driver received. Batches done there whose blocks died with the node are done
            # again elsewhere. The marker, written by the actor, says it ran there.
        else:
            print(f"the run failed after the node loss: {after.get('error')}")
            assert after["state"] == "failed", log[-3000:]
            assert after["error"] and "\n" not in after["error"]
            assert len(after["shards"]["committed"]) < after["shards"]["total"]
            rerun = run_driver(cluster, raw, demo_cache, tmp_path / "driver-2.log")
            second = rerun.wait(timeout=400)
            assert second == 0, (tmp_path / "driver-2.log").read_text()[-3000:]
    m = json.loads((run / "manifest.json").read_text())
    assert m["state"] == "succeeded"
    nodes = set(m["execution"]["nodes"])
    assert nodes - {stopped["node"]}, "the actors never ran on a node added after the loss"
    assert_exactly_once(str(run))
    assert_same_tables(str(run), reference)


class FlakyFileSystem(LocalFileSystem):
    """The local disk, but writing a file whose path contains ``target`` fails ``failures``
    times (an injected storage error)."""

    protocol = ("flaky",)
    target: ClassVar[str] = ""
    failures: ClassVar[int] = 0

    @classmethod
    def _strip_protocol(cls, path: Any) -> str:
        path = str(path)
        if path.startswith("flaky://"):
            path = path[len("flaky://") :]
        return str(super()._strip_protocol(path))

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        if "w" in mode and type(self).target in path and type(self).failures > 0:
            type(self).failures -= 1
            raise OSError(f"injected storage error on {path}")
        return super()._open(path, mode, **kwargs)


@pytest.fixture
def flaky(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FlakyFileSystem]]:
    fsspec.register_implementation("flaky", FlakyFileSystem, clobber=True)
    monkeypatch.setattr(store, "WRITE_BACKOFF_S", 0.01)
    FlakyFileSystem.target, FlakyFileSystem.failures = "", 0
    yield FlakyFileSystem
    FlakyFileSystem.target, FlakyFileSystem.failures = "", 0


def test_failing_write_is_retried(
    tmp_path: Path, flaky: type[FlakyFileSystem], reference: str, demo_cache: str
) -> None:
    flaky.target, flaky.failures = "predictions/shard-00003", store.WRITE_ATTEMPTS - 1
    raw = small_config(
        f"flaky://{tmp_path}", "retried", criticism={"enabled": False}, explain={"enabled": False}
    )
    run_audit(build_config(raw))
    assert flaky.failures == 0  # both injected failures happened, the third try wrote it
    assert_exactly_once(str(tmp_path / "retried"))
    got = rows(str(tmp_path / "retried"), "predictions", ("image_id",))
    want = rows(reference, "predictions", ("image_id",))
    assert [r["top5_classes"] for r in got] == [r["top5_classes"] for r in want]


@pytest.mark.slow  # two pipeline runs on Ray
def test_write_that_keeps_failing_fails_clearly_and_commits_nothing_partial(
    tmp_path: Path, flaky: type[FlakyFileSystem], demo_cache: str, ray_local: None
) -> None:
    flaky.target, flaky.failures = "adversarial/shard-00004", 10**6
    raw = small_config(
        f"flaky://{tmp_path}", "broken", criticism={"enabled": False}, explain={"enabled": False}
    )
    with pytest.raises(OSError, match=r"adversarial/shard-00004.parquet .*failed 3 times"):
        run_audit(build_config(raw))
    run = tmp_path / "broken"
    m = json.loads((run / "manifest.json").read_text())
    assert m["state"] == "failed" and "shard-00004" in m["error"]
    assert 4 not in m["shards"]["committed"]
    # shard 4's predictions file was written before the failing one, but it does not count
    listed = {f for t in m["tables"].values() for f in t["files"]}
    assert not any("shard-00004" in f for f in listed)

    flaky.failures = 0  # the storage recovers; the same run resumes and completes
    result = run_audit(build_config(raw))
    assert result.manifest["state"] == "succeeded"
    assert_exactly_once(str(run))


def test_resume_refuses_a_changed_config_and_a_finished_run(
    tmp_path: Path, reference: str, demo_cache: str
) -> None:
    root = Path(reference).parent
    changed = small_config(root, "ref", attack={"eps_step": 0.5})
    with pytest.raises(ConfigError, match="already finished"):
        run_audit(build_config(changed))
    # an unfinished run with another config: names the field
    m = json.loads((Path(reference) / "manifest.json").read_text())
    m["state"] = "failed"
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ConfigError, match=r"attack\.eps_step changed"):
        run_audit(build_config(small_config(tmp_path, "half", attack={"eps_step": 0.5})))
    # other weights, or another device, would mix two computations in one run
    for run_id, edit, message in (
        ("w", ("model", "weights_sha256", "0" * 64), "weights of run .* changed"),
        ("d", ("execution", "device", "cuda"), "started on cuda and would resume on cpu"),
    ):
        other = json.loads(json.dumps(m))
        other[edit[0]][edit[1]] = edit[2]
        (tmp_path / run_id).mkdir()
        (tmp_path / run_id / "manifest.json").write_text(json.dumps(other))
        with pytest.raises(ConfigError, match=message):
            run_audit(build_config(small_config(tmp_path, run_id)))


class _Poisoned(nn.Module):
    """Fails on any batch that holds an all-black image; otherwise a linear map of the channel
    means."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.amax(dim=(1, 2, 3)) == 0).any():
            raise RuntimeError("poisoned input")
        return self.fc(x.mean(dim=(2, 3)))


def test_an_image_that_always_fails_becomes_an_error_row(tmp_path: Path) -> None:
    from PIL import Image

    paths = []
    for i, colour in enumerate([(200, 30, 30), (0, 0, 0), (20, 180, 60)]):
        p = tmp_path / f"img{i}.png"
        Image.new("RGB", (300, 260), colour).save(p)
        paths.append(str(p))
    batch = decode_batch(
        {
            "image_id": np.array(["a", "black", "c"], dtype=object),
            "uri": np.array(paths, dtype=object),
            "label": np.array([1, 2, 3]),
        },
        max_pixels=10**8,
    )
    model = AuditModel(_Poisoned(), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    actor = ModelActor(model, 10, 3, "cpu")
    out = actor.run_batch(batch)
    assert list(out["error"][[0, 2]]) == ["", ""]
    assert out["stage"][1] == "predict" and "poisoned input" in out["error"][1]
    with torch.no_grad():  # the healthy rows equal a direct forward pass
        x = torch.from_numpy(batch["image"][[0, 2]]).permute(0, 3, 1, 2).float() / 255
        probs = torch.softmax(model.net(x), dim=1).numpy()
    np.testing.assert_array_equal(out["top5_classes"][[0, 2], 0], probs.argmax(1))
    np.testing.assert_allclose(out["top5_probs"][[0, 2], 0], probs.max(1), rtol=1e-5)


@pytest.mark.slow  # two pipeline runs on Ray
def test_failing_first_write_of_listing_errors_is_recorded_and_rerun(
    tmp_path: Path, flaky: type[FlakyFileSystem], ray_local: None
) -> None:
    # Shard 0 holds only listing errors (files outside any class folder sort first): it is
    # written before the pass starts. That write failing must still leave a 'failed' manifest,
    # so that the same run can be rerun (it used to leave a folder without one, refused after).
    from PIL import Image

    data = tmp_path / "data"
    (data / "digit_0").mkdir(parents=True)
    for name in ("aaa_0.png", "aaa_1.png", "digit_0/zzz_0.png", "digit_0/zzz_1.png"):
        Image.new("RGB", (40, 40), (90, 120, 200)).save(data / name)
    raw = {
        "data": {"source": str(data), "layout": "imagefolder"},
        "attack": {"enabled": False},
        "explain": {"enabled": False},
        "criticism": {"enabled": False},
        "output": {"root": f"flaky://{tmp_path}/out", "run_id": "first", "shard_size": 2},
    }
    flaky.target, flaky.failures = "errors/shard-00000", 10**6
    with pytest.raises(OSError, match=r"errors/shard-00000.parquet .*failed 3 times"):
        run_audit(build_config(raw))
    m = json.loads((tmp_path / "out" / "first" / "manifest.json").read_text())
    assert m["state"] == "failed" and m["shards"]["committed"] == []

    flaky.failures = 0
    result = run_audit(build_config(raw))
    assert result.manifest["state"] == "succeeded"
    run = str(tmp_path / "out" / "first")
    assert read_table(run, "errors").column("image_id").to_pylist() == ["aaa_0", "aaa_1"]
    assert sorted(read_table(run, "predictions").column("image_id").to_pylist()) == [
        "zzz_0",
        "zzz_1",
    ]
