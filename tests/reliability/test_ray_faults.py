"""Worker faults on the real Ray plan, and a real multi-node cluster through --ray-address."""
import os
import subprocess
import sys

import pytest

from pipeline.catalog.views import connect

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]
QUERY = "SELECT clip_id, start_frame, end_frame, status FROM clips ORDER BY 1"


def run_cli(config, source, out, *extra, env=None):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "-c", str(config), "-i", source, "-o",
                           str(out), "--no-progress", *extra], capture_output=True, text=True, timeout=400,
                          env={**{k: v for k, v in os.environ.items() if not k.startswith("VIDPREP_CRASH")},
                               **(env or {})})


@pytest.fixture(scope="module")
def sequential(corpus_dir, demo_yaml, tmp_path_factory):
    out = tmp_path_factory.mktemp("sequential")
    assert run_cli(demo_yaml(), corpus_dir, out, "--runner", "sequential").returncode == 0
    return connect(out).execute(QUERY).fetchall()


@pytest.mark.parametrize("stage", ["split"])
def test_a_killed_worker_is_retried_and_no_row_is_lost(corpus_dir, demo_yaml, sequential, tmp_path, stage):
    marker = tmp_path / "killed"
    proc = run_cli(demo_yaml(), corpus_dir, tmp_path / "out", "--set", "run.num_cpus=2",
                   env={"VIDPREP_CRASH_AT": f"stage:{stage}:1", "VIDPREP_CRASH_ONCE": str(marker)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert marker.exists()  # a worker really died mid-run
    assert connect(tmp_path / "out").execute(QUERY).fetchall() == sequential


def test_multi_node_cluster_equals_embedded_run(corpus_dir, demo_yaml, sequential, s3_bucket):
    """Two nodes that share no disk: sources and output in an object store (moto's S3 server on 127.0.0.1);
    workers read the sources and write the wave files straight to the store, the driver writes the records."""
    from ray.cluster_utils import Cluster

    source, out = s3_bucket.upload(corpus_dir, "videos"), s3_bucket("out")

    # >= 2 logical CPUs per node: Ray Data tasks can wait forever for a whole free CPU on 1-CPU nodes
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    try:
        cluster.add_node(num_cpus=2)  # a second raylet: a separate node process
        cluster.wait_for_nodes()
        proc = run_cli(demo_yaml(), source, out, "--ray-address", cluster.address)
        assert proc.returncode == 0, proc.stderr[-3000:]
    finally:
        cluster.shutdown()
    assert connect(out).execute(QUERY).fetchall() == sequential


def test_a_killed_actor_is_restarted_and_no_row_is_lost(corpus_dir, demo_yaml, tmp_path):
    from pipeline.kit.tiny import vae

    models = vae.build(tmp_path / "vae")
    config = demo_yaml(("probe", "split", "encode"))
    sets = ["--set", f"stages.encode.vae={models['vae_wan']}", "--set", "stages.encode.text_encoder=null",
            "--set", "stages.encode.resources.batch_size=2"]
    assert run_cli(config, corpus_dir, tmp_path / "seq", "--runner", "sequential", *sets).returncode == 0
    marker = tmp_path / "killed"
    proc = run_cli(config, corpus_dir, tmp_path / "ray", "--set", "run.num_cpus=2", *sets,
                   env={"VIDPREP_CRASH_AT": "stage:encode:2", "VIDPREP_CRASH_ONCE": str(marker)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert marker.exists()  # the encode actor died on its second batch and was restarted
    query = "SELECT clip_id, latent FROM shards ORDER BY 1"
    assert connect(tmp_path / "ray").execute(query).fetchall() == connect(tmp_path / "seq").execute(query).fetchall()
