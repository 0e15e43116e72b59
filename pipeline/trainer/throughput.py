"""Training throughput of the DiT: tokens/s and MFU, on synthetic batches (no data loading).

    python -m pipeline.trainer.throughput --size DiT-B/2 --peak-tflops 989 --device cuda
    python -m pipeline.trainer.throughput --size DiT-L/2 --batch-size 8 --latent-shape 16,5,32,32

MFU = achieved model FLOP/s ÷ the accelerator's peak (dense bf16: H100 SXM 989 TFLOP/s, H200 the same).
Model FLOPs count the matmuls and attention only (`model_flops`): 2 per multiply-add, the backward pass
twice the forward (6·N·tokens-style accounting), no activation recomputation. Steps are timed after
warm-up with the device synchronised; the median of `repeats` timed windows is reported.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import torch

from pipeline.trainer.flow import Flow, FlowConfig
from pipeline.trainer.model import DiT, DiTConfig


# Dense bf16 tensor-core peaks (TFLOP/s, fp32 accumulate, no sparsity) from the vendors' datasheets, matched
# against torch.cuda.get_device_name(); the first match wins, so the more specific names come first.
BF16_PEAK_TFLOPS: list[tuple[str, float]] = [
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H200", 989.0), ("H100", 989.0), ("H800", 989.0),
    ("B200", 2250.0), ("A100", 312.0), ("A800", 312.0), ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0),
    ("RTX 4090", 165.0), ("RTX A6000", 155.0),
]


def peak_flops(device_name: str) -> float | None:
    """The device's dense bf16 peak in FLOP/s, or None when it is not in BF16_PEAK_TFLOPS (or a CPU)."""
    for name, tflops in BF16_PEAK_TFLOPS:
        if name.lower() in device_name.lower():
            return tflops * 1e12
    return None


def model_flops(cfg: DiTConfig, grid: tuple[int, int, int], text_len: int) -> float:
    """Forward FLOPs of one sample with a (t, h, w) patch grid and `text_len` caption tokens."""
    d, length = cfg.hidden_size, grid[0] * grid[1] * grid[2]
    patch_in = cfg.patch_t * cfg.patch_size ** 2 * cfg.in_channels
    patch_out = cfg.patch_t * cfg.patch_size ** 2 * cfg.outputs
    hidden = int(d * cfg.mlp_ratio)
    flops = 2 * length * (patch_in * d + d * patch_out)  # patch embedding, final linear
    flops += 2 * (256 * d + d * d) + 2 * 2 * d * d  # timestep MLP, final adaLN
    context = 0
    if cfg.text_dim:
        context = text_len + 1  # the null token
        flops += 2 * context * (cfg.text_dim * d + d * d) + 2 * (cfg.text_dim * d + d * d)  # projection, pooling
    for i in range(cfg.depth):
        kind = "full" if cfg.attention == "full" else ("spatial", "temporal")[i % 2]
        span = {"full": length, "spatial": grid[1] * grid[2], "temporal": grid[0]}[kind]
        flops += 2 * length * 4 * d * d + 4 * length * span * d  # qkv + proj, scores + weighted sum
        flops += 2 * length * 2 * d * hidden  # MLP
        flops += 2 * 6 * d * d  # adaLN modulation
        if cfg.text_dim:
            flops += 2 * length * 2 * d * d + 2 * context * 2 * d * d + 4 * length * context * d  # cross-attention
    return float(flops)


def train_throughput(size: str = "DiT-B/2", latent_shape: tuple[int, ...] = (16, 5, 32, 32), batch_size: int = 8,
                     text_len: int = 120, text_dim: int = 4096, steps: int = 10, warmup: int = 3, repeats: int = 3,
                     device: str = "cuda", precision: str = "bf16", peak_flops: float | None = None,
                     patch_t: int = 1, attention: str = "full", compile: bool = False, **model_kwargs) -> dict[str, Any]:
    """Time optimiser steps of a DiT size on random latents/text; tokens/s, samples/s and MFU (with peak_flops)."""
    device = torch.device(device)
    torch.manual_seed(0)
    cfg = DiTConfig.from_size(size, in_channels=latent_shape[0], text_dim=text_dim or None, patch_t=patch_t,
                              attention=attention, **model_kwargs)
    model = DiT(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    forward = torch.compile(model) if compile else model
    flow, generator = Flow(FlowConfig()), torch.Generator(device).manual_seed(0)
    x = torch.randn(batch_size, *latent_shape, device=device)
    text = torch.randn(batch_size, text_len, text_dim or 1, device=device)
    mask = torch.ones(batch_size, text_len, dtype=torch.bool, device=device)
    tokens = model.tokens(latent_shape)
    grid = (-(-latent_shape[1] // patch_t), -(-latent_shape[2] // cfg.patch_size), -(-latent_shape[3] // cfg.patch_size))

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = flow.loss(lambda xt, t: forward(xt, t, text=text if text_dim else None, text_mask=mask), x, tokens,
                             generator).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        times.append((time.perf_counter() - start) / steps)
    seconds = statistics.median(times)
    flops = 3 * model_flops(cfg, grid, text_len if text_dim else 0) * batch_size  # forward + 2x backward
    result = {"size": size, "device": str(device), "device_name": _device_name(device), "precision": precision,
              "parameters": sum(p.numel() for p in model.parameters()), "latent_shape": list(latent_shape),
              "batch_size": batch_size, "tokens_per_sample": tokens, "text_len": text_len,
              "step_s": seconds, "tokens_per_s": batch_size * tokens / seconds, "samples_per_s": batch_size / seconds,
              "model_tflops_per_s": flops / seconds / 1e12, "step_times_s": times}
    peak = peak_flops or (_peak(result["device_name"]) if device.type == "cuda" else None)
    if peak:
        result["mfu"] = flops / seconds / peak
    if device.type == "cuda":
        result["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
    return result


_peak = peak_flops  # train_throughput's argument shadows the function's name


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.trainer.throughput", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", action="append", help="DiT size (repeatable; default DiT-B/2 and DiT-L/2)")
    parser.add_argument("--latent-shape", default="16,5,32,32", help="C,T,H,W (default: Wan 17x256x256)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--text-len", type=int, default=120)
    parser.add_argument("--text-dim", type=int, default=4096, help="0: no text (no cross-attention)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--peak-tflops", type=float, help="the device's dense peak for MFU (default: from "
                        "BF16_PEAK_TFLOPS by device name; H100/H200 bf16: 989)")
    parser.add_argument("--attention", choices=["full", "factorized"], default="full")
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args(argv)
    shape = tuple(int(v) for v in args.latent_shape.split(","))
    for size in args.size or ["DiT-B/2", "DiT-L/2"]:
        result = train_throughput(size, shape, args.batch_size, args.text_len, args.text_dim, args.steps,
                                  repeats=args.repeats, device=args.device, precision=args.precision,
                                  peak_flops=args.peak_tflops * 1e12 if args.peak_tflops else None,
                                  attention=args.attention, compile=args.compile)
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
