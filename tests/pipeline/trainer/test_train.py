"""The training loop: loss goes down, checkpoints hold everything, resume is bit for bit, config errors name fields."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipeline.trainer.checkpoint import latest_checkpoint, load_state, save_checkpoint
from pipeline.trainer.config import load_train_config
from pipeline.trainer.train import main
from pipeline.typed import ConfigError


def test_loss_decreases_and_logs_are_written(shards, tmp_path, tiny_config):
    summary = main(tiny_config(shards, str(tmp_path), "train.steps=40", "train.log_every=10", "optim.lr=0.003",
                               "data.holdout_fraction=0.2", "train.eval_every=20"))
    assert summary["steps"] == 40 and summary["world_size"] == 1
    assert summary["losses"][-1] < 0.85 * summary["losses"][0]  # 1.94 → 1.48 here
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [10, 20, 30, 40]
    assert all(r["tokens_per_s"] > 0 and r["steps_per_s"] > 0 for r in records)
    assert set(records[1]["heldout"]) == {"0.1", "0.3", "0.5", "0.7", "0.9"} and "heldout" not in records[0]
    assert records[3]["heldout"]["0.5"] < records[1]["heldout"]["0.5"] * 1.05  # fixed t and noise: comparable


def test_checkpoint_holds_weights_ema_optimiser_loader_rng_config_and_index_hash(shards, tmp_path, tiny_config):
    main(tiny_config(shards, str(tmp_path), "train.steps=3"))
    path = latest_checkpoint(tmp_path)
    assert path.name == "0000003" and sorted(p.name for p in path.iterdir()) == [
        "config.json", "ema.safetensors", "model.safetensors", "state.pt"]
    model, ema = load_file(path / "model.safetensors"), load_file(path / "ema.safetensors")
    assert model.keys() == ema.keys() and any(not torch.equal(model[k], ema[k]) for k in model)
    state = load_state(path)
    assert state["step"] == 3 and state["loader"]["batches"] == 3 and len(state["rng"]) == 1
    assert state["optimizer"]["state"]  # Adam moments
    config = json.loads((path / "config.json").read_text())
    assert config["model"]["depth"] == 2 and config["train_config"]["train"]["steps"] == 3
    assert config["index_hash"] == state["loader"]["index_hash"] and config["data"]["latent_norm"]
    assert {b["bucket"] for b in config["data"]["buckets"]} == {"8x32x32", "1x32x48"}


def test_k_steps_resume_k_steps_equals_2k_unbroken_bit_for_bit(shards, tmp_path, tiny_config):
    extra = ["train.ckpt_every=2", "data.window_row_groups=2", "optim.warmup_steps=3"]
    main(tiny_config(shards, str(tmp_path / "unbroken"), "train.steps=10", *extra))
    main(tiny_config(shards, str(tmp_path / "resumed"), "train.steps=5", *extra))
    summary = main(tiny_config(shards, str(tmp_path / "resumed"), "train.steps=10", *extra))  # resumes at 5
    assert summary["steps"] == 10 and summary["samples"] < summary["tokens"]
    a, b = latest_checkpoint(tmp_path / "unbroken"), latest_checkpoint(tmp_path / "resumed")
    for name in ("model.safetensors", "ema.safetensors"):
        x, y = load_file(a / name), load_file(b / name)
        assert all(torch.equal(x[k], y[k]) for k in x), name
    sa, sb = load_state(a), load_state(b)
    assert sa["loader"] == sb["loader"]
    assert all(torch.equal(u, v) for u, v in zip(_tensors(sa["optimizer"]), _tensors(sb["optimizer"])))
    assert torch.equal(sa["rng"][0]["generator"], sb["rng"][0]["generator"])
    assert len([p for p in (tmp_path / "unbroken" / "checkpoints").iterdir() if p.is_dir()]) == 3  # keep_checkpoints


def test_resume_never_refuses_a_results_folder_with_checkpoints(shards, tmp_path, tiny_config):
    main(tiny_config(shards, str(tmp_path), "train.steps=1"))
    with pytest.raises(ValueError, match="train.resume"):
        main(tiny_config(shards, str(tmp_path), "train.steps=2", "train.resume=never"))


def test_an_interrupted_checkpoint_write_leaves_the_previous_one_latest(tmp_path):
    model = torch.nn.Linear(2, 2)
    first = save_checkpoint(tmp_path, 1, model, model, {"x": 1}, {"c": 1})
    (tmp_path / "checkpoints" / ".tmp-0000002-123").mkdir()  # a crash while writing step 2
    (tmp_path / "checkpoints" / "0000002").mkdir()  # or after its rename, before latest.json
    assert latest_checkpoint(tmp_path) == first
    second = save_checkpoint(tmp_path, 2, model, model, {"x": 2}, {"c": 2})
    assert latest_checkpoint(tmp_path) == second and load_state(second)["x"] == 2


@pytest.mark.parametrize("override, message", [
    ("optim.lr=-1", "optim.lr: must be > 0"),
    ("model.size=DiT-XXL/2", "model.size: unknown DiT size"),
    ("data.text_drop_prob=1.5", "data.text_drop_prob: must be in [0, 1]"),
    ("train.stepz=3", "train.stepz: unknown key"),
    ("flow.objective=edm", "flow.objective: must be one of"),
    ("model.packed_attention=flex", "model.packed_attention: must be one of"),
    ("train.peak_tflops=0", "train.peak_tflops: must be > 0"),
])
def test_config_errors_name_the_field(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_train_config(None, [override])


def test_baby_config_is_valid():
    config = load_train_config(Path(__file__).parents[3] / "configs" / "train_baby.yaml")
    assert config.model.depth and config.model.depth <= 6 and config.train.steps <= 5000


def _tensors(state):
    for value in state["state"].values():
        yield from (v for v in value.values() if isinstance(v, torch.Tensor))
