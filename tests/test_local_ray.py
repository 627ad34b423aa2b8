"""A local run's Ray instance listens on 127.0.0.1 only (issue #16, defect 13): ``start_ray``
with no address starts Ray bound to the loopback interface, not the machine's network address.

Each case starts its own Ray in a subprocess (the session's shared Ray is started by the tests'
conftest, not by ``start_ray``), and stops it there with ``ray.shutdown()``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import json, ray
from audit.runtime import start_ray
start_ray(None)
nodes = [n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]]
print(json.dumps({"nodes": nodes, "gcs": ray.get_runtime_context().gcs_address}))
ray.shutdown()
"""


@pytest.mark.slow  # starts a Ray instance
def test_a_local_ray_binds_to_the_loopback_address() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "AUDIT_RAY_NODE_IP")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["nodes"] == ["127.0.0.1"]
    assert found["gcs"].startswith("127.0.0.1:")
