"""The real Ray Data plan on an embedded cluster: same catalog as the sequential runner."""
import pytest

from pipeline.catalog.views import connect
from pipeline.config import load_config
from pipeline.run.executors import pin_threads
from pipeline.run.runner import run

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    # 2 logical CPUs even on a 1-core box: Ray Data's listing/read tasks need a free CPU.
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


def rows(out):
    con = connect(out)
    return (con.execute("SELECT clip_id, start_frame, end_frame, status, reason FROM clips ORDER BY 1").fetchall(),
            con.execute("SELECT source_uri, status, error, cuts FROM videos ORDER BY 1").fetchall())


def test_ray_plan_equals_sequential_runner(ray_cluster, corpus_dir, demo_yaml, tmp_path):
    (tmp_path / "in").mkdir()
    for name in ["broken.mp4"]:
        (tmp_path / "in" / name).write_bytes(b"not a video at all" * 100)
    import shutil

    for path in sorted(__import__("pathlib").Path(corpus_dir).glob("*.mp4")):
        shutil.copy(path, tmp_path / "in" / path.name)
    base = demo_yaml()
    sequential = run(load_config(base, ["run.runner=sequential"]), str(tmp_path / "in"), tmp_path / "seq",
                     progress=False)
    on_ray = run(load_config(base, ["run.runner=ray", "run.wave_size=2"]), str(tmp_path / "in"),
                 tmp_path / "ray", progress=False)
    assert on_ray.processed == sequential.processed == 4
    assert on_ray.waves == 2
    assert rows(tmp_path / "ray") == rows(tmp_path / "seq")
    broken = [v for v in rows(tmp_path / "ray")[1] if v[0].endswith("broken.mp4")]
    assert broken[0][1:3] == ("error", broken[0][2]) and broken[0][2].startswith("invalid_container")


def test_pin_threads_sets_torch_threads_in_process():
    import torch

    torch.set_num_threads(2)
    pin_threads(1)
    assert torch.get_num_threads() == 1
