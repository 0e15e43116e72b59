"""A real cluster: `ray start --head` from another folder, `vidprep run --ray-address` from a third, with
configs/demo.yaml as shipped (relative model paths). Workers run in the cluster's folder, not the driver's,
so this catches paths resolved per worker (ray.cluster_utils.Cluster starts workers in the test's folder)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

from pipeline.catalog import connect

ROOT = Path(__file__).parents[3]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _vidprep(*args, cwd, env, timeout=600):
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture
def cluster(tmp_path):
    """A head node started by the `ray start` command in its own folder; its whole process group is stopped."""
    port, home = _free_port(), tmp_path / "cluster-home"
    home.mkdir()
    temp = tempfile.mkdtemp(prefix="vr-", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    head = subprocess.Popen([str(BIN / "ray"), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                             "--include-dashboard=false", f"--temp-dir={temp}", "--node-ip-address=127.0.0.1", "--disable-usage-stats"],
                            cwd=home, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 90
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.5)
    else:
        os.killpg(head.pid, signal.SIGKILL)
        pytest.fail("ray start --head did not listen within 90 s")
    yield f"127.0.0.1:{port}", env
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=5)
    except subprocess.TimeoutExpired:  # `ray start --block` takes ~30 s to stop its children on SIGTERM
        pass
    try:
        os.killpg(head.pid, signal.SIGKILL)  # whatever is left of the node: raylet, GCS, workers
    except ProcessLookupError:
        pass
    head.wait(timeout=30)
    shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.ray
def test_demo_config_on_a_ray_start_cluster_from_another_folder(cluster, tmp_path):
    address, env = cluster
    work = tmp_path / "work"  # the user's folder: demo/ lives here, as after `make demo` in a checkout
    work.mkdir()
    env = {**env, "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])}
    _vidprep("demo-videos", "demo/videos", cwd=work, env=env)
    _vidprep("demo-models", "demo/models", cwd=work, env=env)
    config = str(ROOT / "configs" / "demo.yaml")
    _vidprep("run", "-c", config, "-i", "demo/videos", "-o", "out-cluster", "--ray-address", address, cwd=work, env=env)
    _vidprep("run", "-c", config, "-i", "demo/videos", "-o", "out-local", "--runner", "sequential", cwd=work, env=env)
    sql = "SELECT clip_id, status, reason FROM clips ORDER BY clip_id"
    on_cluster = connect(work / "out-cluster").sql(sql).fetchall()
    assert on_cluster and on_cluster == connect(work / "out-local").sql(sql).fetchall()
    models = connect(work / "out-cluster").sql("SELECT DISTINCT caption_model FROM clips WHERE caption_model IS NOT NULL")
    assert [Path(m).is_absolute() for (m,) in models.fetchall()] == [True]  # what the workers were given
