"""Trainer fixtures: synthetic shards in the real contract, committed like a pipeline wave; tiny configs."""
from __future__ import annotations

import pytest

from pipeline.trainer.config import load_train_config
from pipeline.trainer.synthetic import write_shards

# bucket (pixels FxHxW) → latent shape (C, T, H, W): a short video bucket and an image bucket
BUCKETS = {"8x32x32": (4, 2, 4, 4), "1x32x48": (4, 1, 4, 6)}
TINY_MODEL = ["model.depth=2", "model.hidden_size=32", "model.num_heads=4"]


@pytest.fixture(scope="session")
def shards(tmp_path_factory) -> str:
    """24 clips per bucket, 4 rows per row group (12 row groups), committed under _commits/."""
    out = tmp_path_factory.mktemp("shards")
    write_shards(out, BUCKETS, 24, row_group_rows=4, seed=0)
    return str(out)


@pytest.fixture
def tiny_config():
    """tiny_config(data, results, *overrides) → a TrainConfig for a 2-block, 32-wide DiT on CPU."""
    def make(data: str, results: str, *overrides: str):
        return load_train_config(None, [f"data.path={data}", f"train.results={results}", *TINY_MODEL,
                                        "data.num_workers=0", "data.token_budget=48", "train.log_every=1",
                                        "train.ckpt_every=1000", "train.ema_decay=0.9", "optim.lr=0.001",
                                        "train.device=cpu", *overrides])
    return make


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine, two spinning OpenMP threads run 10-20x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
