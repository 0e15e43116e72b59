"""A 2-process gloo DDP run through the real entry point: torchrun -m pipeline.cli train."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from pipeline.trainer.checkpoint import latest_checkpoint, load_state
from pipeline.trainer.index import ShardIndex
from pipeline.trainer.loader import DataConfig, Loader

TINY = ["model.depth=2", "model.hidden_size=32", "model.num_heads=4", "data.num_workers=0", "data.token_budget=48",
        "train.log_every=1", "train.device=cpu", "data.window_row_groups=2"]


def test_two_process_gloo_ddp_keeps_ranks_in_sync_on_disjoint_batches(shards, tmp_path):
    steps = 3
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "pipeline.cli", "train", "--data", shards, "--results", str(tmp_path), "--steps", str(steps)]
    for item in TINY:
        command += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == steps
    assert summary["ranks_in_sync"]  # DDP averaged the gradients of different batches
    index = ShardIndex.open(shards)
    plans = [Loader(index, DataConfig(token_budget=48, num_workers=0, window_row_groups=2), (1, 2),
                    rank=r, world_size=2).plan(0) for r in range(2)]
    per_rank = [[rows for window in plan.batches for rows, _ in window][:steps] for plan in plans]
    assert summary["samples"] == sum(len(rows) for rank in per_rank for rows in rank)  # both ranks trained
    assert not {int(r) for b in per_rank[0] for r in b} & {int(r) for b in per_rank[1] for r in b}
    state = load_state(latest_checkpoint(tmp_path))
    assert len(state["rng"]) == 2 and not (state["rng"][0]["generator"] == state["rng"][1]["generator"]).all()
    assert state["loader"]["world_size"] == 2 and state["loader"]["batches"] == steps
    assert "step 3" in done.stderr and done.stderr.count("saved checkpoint") == 1  # rank 0 logs and writes
