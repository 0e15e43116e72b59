"""The objective and sampler: time shift, guidance, and overfitting a tiny set through the real trainer."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import torch

from pipeline.store.commit import CommitLog
from pipeline.trainer.flow import Flow, FlowConfig, guided, time_shift
from pipeline.trainer.sample import generate, load_model
from pipeline.trainer.synthetic import smooth_latent, write_shards
from pipeline.trainer.train import main


def test_time_shift_moves_t_towards_noise_and_keeps_the_ends():
    t = torch.linspace(0, 1, 11)
    assert torch.allclose(time_shift(t, 1.0), t)
    shifted = time_shift(t, 3.0)
    assert shifted[0] == 0 and shifted[-1] == 1
    assert (shifted[1:-1] > t[1:-1]).all() and (shifted.diff() > 0).all()


def test_logit_normal_t_and_the_resolution_shift():
    g = torch.Generator().manual_seed(0)
    flow = Flow(FlowConfig(logit_mean=0.0, logit_std=1.0, shift=1.0, shift_base_tokens=256))
    assert flow.shift_for(256) == 1.0 and flow.shift_for(1024) == 2.0  # sqrt(tokens / base)
    t = flow.sample_t(20000, 256, g)
    assert 0 < t.min() and t.max() < 1 and abs(t.median().item() - 0.5) < 0.02
    assert abs(flow.sample_t(20000, 4096, g).median().item() - 0.8) < 0.02  # shift 4: 4·0.5 / (1 + 3·0.5)


def test_default_shift_is_anchored_on_wan_and_grows_with_resolution_and_length():
    flow = Flow(FlowConfig())
    assert flow.shift_for(21 * 30 * 52) == 3.0  # Wan 2.1 at 480p, 81 frames: its documented shift
    assert abs(flow.shift_for(21 * 45 * 80) - 4.56) < 0.01  # 720p: Wan uses 5.0
    assert flow.shift_for(5 * 16 * 16) == 1.0  # a small clip: floored at shift_min, never towards data
    assert flow.shift_for(2 * 21 * 30 * 52) > flow.shift_for(21 * 30 * 52)  # longer clips, more noise


def test_guidance_scale_one_is_the_conditional_model_and_scale_extrapolates():
    def forward(x, t, text, text_mask):  # a "model" whose output is the mean of the valid text tokens
        weights = text_mask.float()[..., None]
        return x * 0 + ((text * weights).sum(1) / weights.sum(1).clamp(min=1)).view(-1, 1, 1, 1, 1)
    x, t = torch.zeros(1, 1, 1, 1, 1), torch.zeros(1)
    cond = {"text": torch.full((1, 3, 1), 2.0), "text_mask": torch.ones(1, 3, dtype=torch.bool)}
    uncond = {"text": torch.zeros(1, 0, 1), "text_mask": torch.zeros(1, 0, dtype=torch.bool)}
    assert guided(forward, 1.0, cond, uncond)(x, t).item() == 2.0
    assert guided(forward, 3.0, cond, uncond)(x, t).item() == 6.0  # 0 + 3 (2 - 0)


def test_euler_sampler_transports_noise_to_the_data_with_the_exact_velocity():
    target = torch.full((2, 1, 1, 2, 2), 0.7)
    flow = Flow(FlowConfig(shift=3.0))
    noise = torch.randn(2, 1, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    velocity = lambda x, t: (x - target) / (t.view(-1, 1, 1, 1, 1) / 1000)  # noqa: E731  v = (x_t - x0) / t
    assert torch.allclose(flow.sample(velocity, noise, 7, 4), target, atol=1e-5)


def test_ddpm_objective_trains(tmp_path):
    torch.manual_seed(0)
    from pipeline.trainer.model import DiT, DiTConfig

    model = DiT(DiTConfig(hidden_size=32, depth=1, num_heads=4))
    flow, g = Flow(FlowConfig(objective="ddpm")), torch.Generator().manual_seed(0)
    x = torch.randn(8, 4, 1, 4, 4, generator=g)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = flow.loss(model, x, 4, g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:5])
    assert flow.sample(model, torch.randn(2, 4, 1, 4, 4), 5, 4).shape == (2, 4, 1, 4, 4)


def test_overfits_a_tiny_set_and_samples_land_on_the_training_latents(tmp_path, tiny_config):
    """Four latents (8 clips each) with a non-zero mean and std: the trainer normalises with shard_stats,
    sampling undoes it."""
    rng = np.random.default_rng(3)
    distinct = [1.5 * smooth_latent(rng, (4, 1, 4, 4), i) + 0.8 for i in range(4)]
    write_shards(tmp_path / "out", {"1x16x16": (4, 1, 4, 4)}, 32, row_group_rows=8,
                 latent_fn=lambda rng, shape, i: distinct[i % 4])
    config = tiny_config(str(tmp_path / "out"), str(tmp_path / "results"), "train.steps=300", "train.log_every=50",
                         "data.text_drop_prob=1.0", "model.hidden_size=64", "optim.lr=0.002", "train.ema_decay=0.95",
                         "data.token_budget=128")
    summary = main(config)
    assert summary["losses"][-1] < 0.35 * summary["losses"][0]

    table = pq.read_table(CommitLog(tmp_path / "out").files("shards")[0])
    stored = np.stack([np.frombuffer(b, np.float16).reshape(4, 1, 4, 4) for b in table.column("latent").to_pylist()])
    data = torch.tensor(np.unique(stored, axis=0).astype(np.float32))  # the 4 distinct latents as stored
    assert len(data) == 4
    model, ckpt_config = load_model(tmp_path / "results", ema=True)
    assert ckpt_config["data"]["latent_norm"] is not None  # trained on normalised latents
    samples = generate(model, ckpt_config, (4, 1, 4, 4), steps=25, cfg_scale=1.0, seed=1, n=24)
    distance = torch.cdist(samples.flatten(1), data.flatten(1))  # (24, 4)
    pairwise = torch.cdist(data.flatten(1), data.flatten(1))
    assert distance.min(1).values.mean() < 0.25 * pairwise[pairwise > 0].mean()
    assert set(distance.argmin(1).tolist()) == {0, 1, 2, 3}  # every training clip is reproduced
    assert abs(samples.mean() - data.mean()) < 0.15 * data.std()
    assert abs(samples.std() / data.std() - 1) < 0.15
