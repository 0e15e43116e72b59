"""A path only the driver sees is refused at start, naming the field and the node."""
import os

import pytest

from pipeline.run.visibility import check_nodes, local_paths
from stages.caption import Caption
from stages.split import Split


@pytest.mark.ray
def test_a_model_path_only_the_driver_sees_is_named_with_its_node(tmp_path):
    import ray

    ray.init(address="local", num_cpus=1, include_dashboard=False)
    # /proc/self/fd/N of a descriptor opened after Ray started: a real folder for this process, and
    # absent in every worker, as a local disk of the driver's machine is on the other nodes of a cluster.
    fd = os.open(tmp_path, os.O_RDONLY)
    os.dup2(fd, 900)
    try:
        shared = tmp_path / "shared-model"
        shared.mkdir()
        stages = [Split(), Caption(), Caption(model=str(shared))]
        stages[1].model = "/proc/self/fd/900"  # set after construction: a folder reference is made canonical there
        stages[2].name = "caption2"
        paths = local_paths(stages, str(tmp_path), tmp_path / "out")
        assert set(paths) == {"input", "stages.caption.model", "stages.caption2.model"}  # out not made yet
        problems = check_nodes(paths)
    finally:
        os.close(900)
        os.close(fd)
        ray.shutdown()
    assert len(problems) == 1 and problems[0].startswith("stages.caption.model: /proc/self/fd/900 is not visible"), \
        problems


def test_hub_ids_and_uris_are_not_paths():
    stages = [Caption(model="Qwen/Qwen3-VL-8B-Instruct")]
    assert local_paths(stages, "s3://bucket/raw?endpoint_override=127.0.0.1:9000", "s3://bucket/out") == {}
