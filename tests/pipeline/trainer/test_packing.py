"""NaViT packing: packs of mixed buckets, attention within each example, the unpacked path's loss, resume."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from pipeline.trainer.flow import Flow, FlowConfig
from pipeline.trainer.index import ShardIndex
from pipeline.trainer.loader import DataConfig, Loader, pack
from pipeline.trainer.model import DiT, DiTConfig
from pipeline.trainer.throughput import peak_flops
from pipeline.trainer.train import main

# Two clips of one shape (a run), an image, and a shape that is not a whole number of patches.
SHAPES = [(4, 2, 4, 4), (4, 2, 4, 4), (4, 1, 4, 6), (4, 3, 5, 3)]
TEXT_LENGTHS = [3, 0, 5, 2]  # 0: a dropped caption (the null token only)


def tiny_dit(attention="full", kernel="segments", seed=0) -> DiT:
    torch.manual_seed(seed)
    model = DiT(DiTConfig(hidden_size=32, depth=2, num_heads=4, in_channels=4, text_dim=8, attention=attention,
                          packed_attention=kernel))
    with torch.no_grad():  # past adaLN-Zero's identity start, so that attention and text matter
        for p in model.parameters():
            p.normal_(0, 0.1)
    return model


def inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(s, generator=g) for s in SHAPES]
    t = torch.rand(len(SHAPES), generator=g) * 1000
    text = torch.randn(len(SHAPES), max(TEXT_LENGTHS), 8, generator=g)
    mask = torch.arange(max(TEXT_LENGTHS))[None] < torch.tensor(TEXT_LENGTHS)[:, None]
    return xs, t, text, mask


@pytest.mark.parametrize("attention,kernel", [("full", "segments"), ("full", "mask"), ("factorized", "segments"),
                                              ("factorized", "mask")])
def test_packed_outputs_equal_the_examples_run_one_by_one(attention, kernel):
    model = tiny_dit(attention, kernel)
    xs, t, text, mask = inputs()
    packed = model(xs, t, text, mask)
    for i, x in enumerate(xs):
        n = TEXT_LENGTHS[i]  # alone: its own caption, unpadded
        alone = model(x[None], t[i:i + 1], text[i:i + 1, :n], mask[i:i + 1, :n])[0]
        assert packed[i].shape == x.shape
        torch.testing.assert_close(packed[i], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kernel", ["segments", "mask"])
def test_no_attention_crosses_examples(kernel):
    model = tiny_dit("full", kernel)
    xs, t, text, mask = inputs()
    before = model(xs, t, text, mask)
    xs[1] = xs[1] + torch.randn_like(xs[1])  # perturb example 1: its latent, time and caption
    t[1] = 999 - t[1]
    text[1] = torch.randn_like(text[1])
    mask[1, :4] = True
    after = model(xs, t, text, mask)
    assert (after[1] - before[1]).abs().max() > 0.1  # the perturbation is felt where it should be
    for i in (0, 2, 3):
        torch.testing.assert_close(after[i], before[i], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("objective", ["rectified_flow", "ddpm"])
def test_packed_loss_and_gradients_match_the_bucketed_path(objective):
    """The same clips, times and noise: bucketed batches (one per shape, text padded per batch) against one pack."""
    flow = Flow(FlowConfig(objective=objective))
    xs, _, text, mask = inputs()
    g = torch.Generator().manual_seed(2)
    noise = [torch.randn(x.shape, generator=g) for x in xs]
    t = torch.rand(len(xs), generator=g) if objective == "rectified_flow" else torch.randint(0, 1000, (len(xs),), generator=g)

    packed_model, bucketed_model = tiny_dit(), tiny_dit()
    packed = flow.loss_packed(lambda xt, tt: packed_model(xt, tt, text=text, text_mask=mask), xs, [8] * 4, None,
                              t=t, noise=noise)
    per_sample = torch.zeros(len(xs))
    for group in ([0, 1], [2], [3]):  # the loader's bucketed batches: one latent shape each
        idx = torch.tensor(group)
        per_sample[idx] = flow.loss(lambda xt, tt: bucketed_model(xt, tt, text=text[idx], text_mask=mask[idx]),
                                    torch.stack([xs[i] for i in group]), 8, None, t=t[idx],
                                    noise=torch.stack([noise[i] for i in group]))
    torch.testing.assert_close(packed, per_sample, atol=1e-6, rtol=1e-5)
    packed.mean().backward()
    per_sample.mean().backward()
    for (name, a), b in zip(packed_model.named_parameters(), bucketed_model.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-4, msg=name)


def test_first_fit_decreasing_packs_fill_the_budget_and_keep_shapes_together():
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 3, 40)
    tokens = np.array([30, 20, 12])[keys]
    packs = pack(np.arange(40) + 100, tokens, keys, budget=64, max_rows=8)
    assert sorted(np.concatenate(packs).tolist()) == list(range(100, 140))  # every row once
    loads = [int(tokens[p - 100].sum()) for p in packs]
    assert max(loads) <= 64 and all(len(p) <= 8 for p in packs)
    assert sum(loads) / (64 * len(packs)) > 0.9  # 880 tokens in 14 packs of 64 (bucketed by shape: 18 batches)
    for p in packs:  # equal shapes consecutive: the model's runs
        k = keys[p - 100]
        assert len(np.flatnonzero(np.diff(k))) == len(set(k.tolist())) - 1
    assert [len(p) for p in pack(np.arange(2), np.array([100, 5]), np.array([0, 1]), 64, 8)] == [1, 1]  # too long: alone


def make(shards, **config) -> Loader:
    config = {"token_budget": 50, "num_workers": 0, "window_row_groups": 4, "packing": True, **config}
    return Loader(ShardIndex.open(shards), DataConfig(**config), (1, 2), seed=3)


def test_packed_loader_mixes_buckets_covers_every_row_and_resumes_to_the_same_packs(shards):
    loader = make(shards)
    steps = loader.steps_per_epoch
    unbroken = list(itertools.islice(iter(loader), steps + 3))  # into the second epoch
    first_epoch = unbroken[:steps]
    ids = [c for b in first_epoch for c in b["clip_id"]]
    assert len(ids) == len(set(ids)) == len(loader.train_rows)
    assert any(len(set(b["bucket"])) == 2 for b in first_epoch)  # buckets mixed in one batch
    for b in first_epoch:
        sizes = [int(np.prod(s)) for s in b["shapes"]]
        assert b["latent"].dim() == 1 and b["latent"].numel() == sum(sizes) and len(sizes) == len(b["clip_id"])
        assert sum(s[1] * (s[2] // 2) * (s[3] // 2) for s in b["shapes"]) <= 50
    k = 4
    first = make(shards)
    list(itertools.islice(iter(first), k))
    resumed = make(shards)
    resumed.load_state_dict(first.state_dict())
    again = list(itertools.islice(iter(resumed), steps + 3 - k))
    assert [b["clip_id"] for b in again] == [b["clip_id"] for b in unbroken[k:]]
    assert all(torch.equal(a["latent"], b["latent"]) for a, b in zip(again, unbroken[k:]))
    other_seed = Loader(ShardIndex.open(shards), DataConfig(token_budget=50, num_workers=0, packing=True), (1, 2), seed=4)
    assert [b["clip_id"] for b in itertools.islice(iter(other_seed), 3)] != [b["clip_id"] for b in unbroken[:3]]


def test_packed_training_logs_less_padding_than_bucketed(shards, tmp_path, tiny_config):
    """48 clips of 8 and 6 tokens in one window, budget 60: bucketed batches of 7 x 8 and 10 x 6 tokens, with
    partial batches (3 x 8, 4 x 6), 7 steps, 20% unused; first-fit decreasing packs them in 6 (7% unused)."""
    runs = {}
    for packing in (False, True):
        results = tmp_path / str(packing)
        summary = main(tiny_config(shards, str(results), "train.steps=6", "train.log_every=3", "data.token_budget=60",
                                   "data.window_row_groups=12", f"data.packing={str(packing).lower()}", "optim.lr=0.003",
                                   *(["train.peak_tflops=0.5"] if packing else [])))
        records = [json.loads(line) for line in (results / "log.jsonl").read_text().splitlines()]
        assert all(r["tokens_per_s"] > 0 and r["model_tflops_per_s"] > 0 for r in records)
        if packing:  # MFU against the given peak (on a CPU, only when one is given)
            assert all(r["mfu"] == pytest.approx(r["model_tflops_per_s"] / 0.5) for r in records)
        else:
            assert all("mfu" not in r for r in records)
        assert all(0 <= r["padding"] < 1 and 0 <= r["text_padding"] < 1 for r in records)
        assert np.isfinite(summary["losses"]).all()
        runs[packing] = summary
    assert runs[True]["packing"] and not runs[False]["packing"]
    assert runs[True]["padding"] < 0.08 < 0.12 < runs[False]["padding"]
    assert runs[True]["tokens"] / runs[True]["steps"] > runs[False]["tokens"] / runs[False]["steps"]


def test_gpu_peaks_are_looked_up_by_name():
    assert peak_flops("NVIDIA H200") == 989e12 and peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12 and peak_flops("NVIDIA L40S") == 362e12
    assert peak_flops("NVIDIA A100-SXM4-80GB") == 312e12 and peak_flops("NVIDIA GeForce RTX 4090") == 165e12
    assert peak_flops("x86_64") is None


def test_packing_benchmark_trains_the_same_clips_three_ways_and_rewrites_its_section(shards, tmp_path):
    from pathlib import Path

    from pipeline.bench.packing import END, START, markdown, run_bench, update_markdown

    result = run_bench(Path(shards), repeats=1)
    assert set(result["tokens"]) == {"bucketed", "packed_segments", "packed_mask"}
    assert len(set(result["tokens"].values())) == 1 and len(set(result["samples"].values())) == 1  # the same clips
    assert result["steps"]["packed_segments"] == result["steps"]["packed_mask"] < result["steps"]["bucketed"]
    assert result["padding"]["packed_segments"] < result["padding"]["bucketed"]
    result.update(command="python -m pipeline.bench.packing", date="today", machine="this one", clips=48, threads=1)
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("# Benchmarks\n")
    for _ in range(2):  # the second run replaces the section
        update_markdown(doc, markdown(result))
    text = doc.read_text()
    assert text.count(START) == 1 and text.count(END) == 1 and text.count("| packed, segments attention |") == 1
