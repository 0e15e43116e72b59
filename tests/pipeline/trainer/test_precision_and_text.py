"""bf16 under autocast keeps an fp32 residual stream and finite losses; the model learns to use its text."""
from __future__ import annotations

import math

import pytest
import torch

from pipeline.trainer.flow import Flow, FlowConfig
from pipeline.trainer.model import DiT, DiTConfig
from pipeline.trainer.train import main

TINY = DiTConfig(hidden_size=64, depth=2, num_heads=4, patch_size=2, in_channels=4, text_dim=16)


def test_residual_stream_is_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    model = DiT(TINY)
    seen = []
    for block in model.blocks:
        block.register_forward_hook(lambda mod, args, out: seen.append((args[0].dtype, out.dtype)))
    x, t = torch.randn(2, 4, 3, 8, 8), torch.tensor([100.0, 900.0])
    text, mask = torch.randn(2, 5, 16), torch.ones(2, 5, dtype=torch.bool)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, t, text, mask)
    assert seen == [(torch.float32, torch.float32)] * TINY.depth  # DiT's stream; bf16 only inside the matmuls
    reference = model(x, t, text, mask)
    assert torch.isfinite(out).all() and (out.float() - reference).abs().max() < 0.05


def test_a_few_bf16_training_steps_on_cpu_are_finite(shards, tmp_path, tiny_config):
    summary = main(tiny_config(shards, str(tmp_path), "train.steps=4", "train.precision=bf16", "train.log_every=1"))
    assert summary["steps"] == 4 and all(math.isfinite(loss) for loss in summary["losses"])


def test_the_model_learns_to_use_its_text():
    """Two captions decide the content (+1 or -1 latents): after training, the right caption's loss is far
    below the swapped caption's and the empty caption's at the same times and noise."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    captions = torch.randn(2, 3, 16, generator=g)  # two fixed "caption embeddings", 3 tokens each
    content = torch.tensor([1.0, -1.0]).view(2, 1, 1, 1, 1).expand(2, 4, 1, 8, 8)  # caption i → latents ±1
    model, flow = DiT(TINY), Flow(FlowConfig(shift=1.0, shift_base_tokens=0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    mask = torch.ones(8, 3, dtype=torch.bool)
    for _ in range(150):
        which = torch.randint(0, 2, (8,), generator=g)
        loss = flow.loss(lambda x, t: model(x, t, captions[which], mask), content[which].contiguous(), 16, g).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    which = torch.tensor([0, 1] * 32)
    t, noise = torch.rand(64, generator=g) * 0.8 + 0.1, torch.randn(64, 4, 1, 8, 8, generator=g)
    x0 = content[which].contiguous()

    def loss_with(text, text_mask):
        with torch.no_grad():
            return flow.loss(lambda x, tt: model(x, tt, text, text_mask), x0, 16, g, t=t, noise=noise).mean().item()

    right = loss_with(captions[which], torch.ones(64, 3, dtype=torch.bool))
    wrong = loss_with(captions[1 - which], torch.ones(64, 3, dtype=torch.bool))
    empty = loss_with(torch.zeros(64, 0, 16), torch.zeros(64, 0, dtype=torch.bool))
    print(f"text-conditioning losses: right {right:.3f}, wrong {wrong:.3f}, empty {empty:.3f}")
    assert right < 0.5 * wrong and right < 0.7 * empty, (right, wrong, empty)


def test_shards_without_text_are_refused_unless_unconditional(tmp_path, tiny_config):
    from pipeline.trainer.synthetic import write_shards

    out = tmp_path / "no-text"
    write_shards(out, {"8x32x32": (4, 2, 4, 4)}, 8, meta={"text_encoder": None})  # encode embedded no text
    with pytest.raises(ValueError, match="data.path: .* carry no text embeddings"):
        main(tiny_config(str(out), str(tmp_path / "a"), "train.steps=1"))
    summary = main(tiny_config(str(out), str(tmp_path / "b"), "train.steps=1", "data.unconditional=true"))
    assert summary["steps"] == 1
