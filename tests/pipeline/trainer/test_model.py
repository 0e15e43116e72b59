"""The DiT: patchify round trip, adaLN-Zero start, any bucket shape, attention variants, the paper's sizes."""
from __future__ import annotations

import pytest
import torch

from pipeline.trainer.model import DiT, DiTConfig, patchify, pos_embed_3d, unpatchify
from pipeline.trainer.sizes import DiT_models

# facebookresearch/DiT's models.py built with its defaults (input 32, in_channels 4, learn_sigma, 1000 classes
# with the CFG row): sum(p.numel() for p in model.parameters()), the figure its train.py logs. That count
# includes the frozen sin-cos table pos_embed of (32 / p)^2 x hidden values, which this DiT computes per batch.
REFERENCE_PARAMS = {
    "DiT-S/2": 32_963_360, "DiT-S/4": 32_945_024, "DiT-S/8": 33_148_160,
    "DiT-B/2": 130_512_416, "DiT-B/4": 130_475_648, "DiT-B/8": 130_881_536,
    "DiT-L/2": 458_102_816, "DiT-L/4": 458_053_760, "DiT-L/8": 458_594_816,
    "DiT-XL/2": 675_129_632, "DiT-XL/4": 675_074_432, "DiT-XL/8": 675_683_072,
}
PAPER_MILLIONS = {"S": 33, "B": 130, "L": 458, "XL": 675}  # as the DiT paper (Peebles & Xie 2023) rounds them


def tiny(**kwargs) -> DiT:
    torch.manual_seed(0)
    return DiT(DiTConfig(**{"hidden_size": 32, "depth": 2, "num_heads": 4, "text_dim": 16, **kwargs}))


def randomize(model: DiT) -> DiT:
    """Give the zero-initialised layers weights, so behaviour tests see real attention and MLPs."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.mark.parametrize("seed", range(6))
def test_patchify_unpatchify_round_trip(seed):
    g = torch.Generator().manual_seed(seed)
    p_t, p = [int(v) for v in torch.randint(1, 4, (2,), generator=g)]
    t, h, w = [int(v) for v in torch.randint(1, 5, (3,), generator=g)]
    c, n = int(torch.randint(1, 6, (1,), generator=g)), 2
    x = torch.randn(n, c, t * p_t, h * p, w * p, generator=g)
    tokens = patchify(x, p_t, p)
    assert tokens.shape == (n, t * h * w, p_t * p * p * c)
    assert torch.equal(tokens[0, 0], x[0, :, :p_t, :p, :p].permute(1, 2, 3, 0).reshape(-1))  # first tubelet
    assert torch.equal(unpatchify(tokens, (t, h, w), p_t, p), x)


def test_output_is_zero_at_initialisation_and_blocks_are_identities():
    model = tiny(patch_t=2)
    x = torch.randn(3, 4, 4, 6, 8)
    text, mask = torch.randn(3, 5, 16), torch.tensor([[1, 1, 1, 0, 0], [1] * 5, [0] * 5], dtype=torch.bool)
    out = model(x, torch.rand(3) * 1000, text=text, text_mask=mask)
    assert out.shape == x.shape and torch.count_nonzero(out) == 0
    hidden = torch.randn(3, 24, 32)
    c = torch.randn(3, 32)
    context, cmask, _ = model.text_embedder(text, mask)
    for block in model.blocks:
        assert torch.equal(block(hidden, c, (2, 3, 4), context, cmask), hidden)


@pytest.mark.parametrize("shape", [(4, 1, 4, 6), (4, 3, 5, 7), (4, 9, 2, 2)])
def test_any_bucket_shape_including_images_and_odd_sizes(shape):
    model = randomize(tiny(patch_t=2, patch_size=2))
    x = torch.randn(2, *shape)
    out = model(x, torch.tensor([10.0, 900.0]), text=torch.randn(2, 3, 16), text_mask=torch.ones(2, 3, dtype=torch.bool))
    assert out.shape == x.shape and torch.isfinite(out).all() and out.abs().sum() > 0


def test_positions_are_3d_and_distinct_per_token():
    pos = pos_embed_3d(48, (2, 3, 4), "cpu", torch.float32)[0]  # (L, D)
    assert pos.shape == (24, 48)
    assert torch.cdist(pos, pos).add(torch.eye(24) * 1e3).min() > 1e-3  # no two tokens share a position
    image = pos_embed_3d(48, (1, 3, 4), "cpu", torch.float32)[0]
    assert torch.allclose(image, pos[:12])  # an image's positions are a video's first frame


def test_padding_tokens_of_the_caption_are_masked_out():
    model = randomize(tiny())
    x, t = torch.randn(1, 4, 1, 4, 4), torch.tensor([500.0])
    text = torch.randn(1, 3, 16)
    padded = torch.cat([text, torch.randn(1, 4, 16) * 100], dim=1)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    short = model(x, t, text=text, text_mask=torch.ones(1, 3, dtype=torch.bool))
    assert torch.allclose(model(x, t, text=padded, text_mask=mask), short, atol=1e-5)
    empty = model(x, t, text=torch.randn(1, 2, 16), text_mask=torch.zeros(1, 2, dtype=torch.bool))
    assert torch.allclose(model(x, t), empty, atol=1e-6)  # no text = an empty caption (the CFG null)
    assert not torch.allclose(empty, short, atol=1e-4)


def test_factorized_attention_alternates_spatial_and_temporal_blocks():
    model = randomize(tiny(attention="factorized", depth=2))
    assert [b.kind for b in model.blocks] == ["spatial", "temporal"]
    spatial, temporal = model.blocks
    hidden, c = torch.randn(1, 2 * 3 * 4, 32), torch.randn(1, 32)
    changed = hidden.clone()
    changed[:, :12] += torch.randn(12, 32)  # change frame 0 only
    a, b = spatial(hidden, c, (2, 3, 4)), spatial(changed, c, (2, 3, 4))
    assert torch.allclose(a[:, 12:], b[:, 12:], atol=1e-6)  # frame 1 never sees frame 0 in a spatial block
    assert not torch.allclose(a[:, 1:12], b[:, 1:12], atol=1e-4)  # frame 0's tokens see each other
    other = hidden.clone()
    other[:, 12 + 5] += torch.randn(32)  # frame 1, spatial position 5
    a, b = temporal(hidden, c, (2, 3, 4)), temporal(other, c, (2, 3, 4))
    assert not torch.allclose(a[:, 5], b[:, 5], atol=1e-4)  # position 5 of frame 0 sees frame 1's position 5
    assert torch.allclose(a[:, 6], b[:, 6], atol=1e-6)  # other positions don't


def test_class_conditional_image_configuration_runs():
    model = DiT(DiTConfig(hidden_size=32, depth=1, num_heads=4, num_classes=10, out_channels=8))
    out = model(torch.randn(2, 4, 1, 8, 8), torch.tensor([1.0, 2.0]), y=torch.tensor([3, 10]))  # 10 = null class
    assert out.shape == (2, 8, 1, 8, 8)


@pytest.mark.parametrize("size", list(DiT_models))
def test_image_configuration_reproduces_the_dit_parameter_counts(size):
    with torch.device("meta"):
        model = DiT(DiTConfig.image(size))
    cfg = model.config
    count = sum(p.numel() for p in model.parameters())
    frozen_pos_embed = (32 // cfg.patch_size) ** 2 * cfg.hidden_size  # DiT's table for 32x32 inputs
    assert count + frozen_pos_embed == REFERENCE_PARAMS[size]
    name, patch = size.split("-")[1].split("/")
    assert abs(count / 1e6 - PAPER_MILLIONS[name]) < 1.0
    if patch == "2":  # the paper's rounded figures are the trainable parameters of the /2 models
        assert round(count / 1e6) == PAPER_MILLIONS[name]
    assert all(p.requires_grad for p in model.parameters())


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for checkpointing in (False, True):
        model = randomize(tiny(grad_checkpointing=checkpointing))
        x = torch.randn(2, 4, 2, 4, 4, generator=torch.Generator().manual_seed(0))
        model(x, torch.tensor([100.0, 700.0]), text=torch.ones(2, 3, 16), text_mask=torch.ones(2, 3, dtype=torch.bool)).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6) and grads[0].abs().sum() > 0
