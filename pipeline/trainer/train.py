"""Train the video DiT on committed shards: one process, DDP under torchrun, or Ray Train.

    vidprep train --data OUT -c configs/train_baby.yaml
    torchrun --nproc_per_node 8 -m pipeline.cli train --data OUT -c my.yaml
    vidprep train --data /shared/OUT --backend ray --ray-address auto --num-workers 16

`main(config)` reads top-down like DiT's train.py: set up DDP, the results
folder and logging (rank 0), data, model + EMA + optimiser, resume, then the
loop (rank-0 log line every `log_every` steps with loss, steps/s, tokens/s,
padding — the share of the steps' token budget that held no clip — and on a
GPU of known peak, MFU from the model's FLOPs per clip; held-out loss at
fixed t every `eval_every`; a checkpoint every `ckpt_every` and at the end).
Batches are bucketed, or packed (NaViT) with `data.packing`. Resuming continues bit for bit on CPU: weights, EMA,
optimiser, loader position and every RNG that the loop draws from.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from copy import deepcopy
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from pipeline.trainer.checkpoint import latest_checkpoint, load_state, load_weights, save_checkpoint
from pipeline.trainer.config import TrainConfig
from pipeline.trainer.flow import Flow
from pipeline.trainer.index import ShardIndex
from pipeline.trainer.loader import Loader, text_dim
from pipeline.trainer.model import DiT
from pipeline.trainer.throughput import model_flops, peak_flops
from pipeline.typed import to_dict

log = logging.getLogger("vidprep.train")


def main(config: TrainConfig, device: str | None = None) -> dict[str, Any]:
    cfg = config
    # Setup DDP:
    rank, world_size, device = setup_distributed(device or cfg.train.device)
    use_bf16 = cfg.train.precision == "bf16" or (cfg.train.precision == "auto" and device.type == "cuda")
    torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank

    # Setup an experiment folder and logging (rank 0 writes):
    results = Path(cfg.train.results)
    if rank == 0:
        results.mkdir(parents=True, exist_ok=True)
    resume_from = latest_checkpoint(results) if cfg.train.resume == "auto" else None
    if cfg.train.resume == "never" and latest_checkpoint(results) is not None:
        raise ValueError(f"train.resume: {results} already has checkpoints; use another folder or resume: auto")

    # Setup data:
    index = ShardIndex.open(cfg.data.path)
    if not text_dim(index) and not cfg.data.unconditional:  # a text-to-video model without text is a mistake
        raise ValueError(f"data.path: the shards under {cfg.data.path} carry no text embeddings (no caption "
                         "reached the encode stage, or it embeds no text); set data.unconditional: true to "
                         "train an unconditional model on them")
    model_cfg = cfg.model.build(in_channels=index.channels, text_dim=text_dim(index))
    loader = Loader(index, cfg.data, (model_cfg.patch_t, model_cfg.patch_size), seed=cfg.train.seed,
                    rank=rank, world_size=world_size, pin_memory=device.type == "cuda")
    norm = latent_norm(index, cfg.data.latent_norm)
    mean, std = (torch.tensor(v, device=device).view(-1, 1, 1, 1) for v in norm) if norm else (0.0, 1.0)
    heldout = loader.heldout() if cfg.data.holdout_fraction > 0 else []

    # Create model, EMA and optimiser:
    model = DiT(model_cfg).to(device)
    ema = deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),
                            weight_decay=cfg.optim.weight_decay)
    flow = Flow(cfg.flow)
    generator = torch.Generator(device).manual_seed(cfg.train.seed * 65537 + rank)  # t and noise, per rank
    step = 0
    checkpoint_config = {"train_config": to_dict(cfg), "model": model_cfg.as_dict(), "index_hash": index.hash,
                         "data": {"out": str(index.out), "latents": index.meta, "latent_norm": norm,
                                  "buckets": index.bucket_table(), "text_dim": text_dim(index)}}

    # Resume:
    if resume_from is not None:
        model.load_state_dict(load_weights(resume_from, ema=False, device=str(device)))
        ema.load_state_dict(load_weights(resume_from, ema=True, device=str(device)))
        state = load_state(resume_from)
        opt.load_state_dict(state["optimizer"])
        loader.load_state_dict(state["loader"])
        rng = state["rng"][rank] if rank < len(state["rng"]) else state["rng"][0]
        generator.set_state(rng["generator"])
        torch.set_rng_state(rng["torch"])
        step = state["step"]
    model_params = sum(p.numel() for p in model.parameters())
    if rank == 0:
        log.info("DiT %s: %s parameters; %d rows in %d buckets; %d batches per epoch per rank; world size %d; %s%s",
                 cfg.model.size, f"{model_params:,}", len(index), len(index.keys), loader.steps_per_epoch,
                 world_size, device, f"; resumed at step {step} from {resume_from}" if resume_from else "")
    ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None) if world_size > 1 else model

    # Training loop:
    model.train()
    losses, samples, tokens_seen, capacity_seen = [], 0, 0, 0
    peak = cfg.train.peak_tflops * 1e12 if cfg.train.peak_tflops else (
        peak_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None)
    step_flops = StepFlops(model_cfg)

    def fresh_interval():
        return {"loss": torch.zeros((), device=device), "steps": 0, "tokens": 0, "capacity": 0, "flops": 0.0,
                "text": 0, "text_slots": 0, "start": time.perf_counter()}
    interval = fresh_interval()
    data = iter(loader)
    while step < cfg.train.steps:
        batch = next(data)
        text_lengths = batch["text_mask"].sum(1).tolist()  # on the host, before the copy: no device sync
        text = batch["text"].to(device, non_blocking=True).float()  # (N, S, E)
        text_mask = batch["text_mask"].to(device, non_blocking=True)  # (N, S)
        if "shapes" in batch:  # packed (data.packing): latents of any shapes in one flat buffer
            flat = batch["latent"].to(device, non_blocking=True).float()  # (Σ C·T·H·W,)
            shapes = [tuple(s) for s in batch["shapes"]]
            x = [(v.view(s) - mean) / std for v, s in zip(flat.split([math.prod(s) for s in shapes]), shapes)]
            sample_tokens = [model.tokens(s) for s in shapes]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss = flow.loss_packed(lambda xt, t: ddp(xt, t, text=text, text_mask=text_mask), x, sample_tokens,
                                        generator).mean()
        else:
            x = (batch["latent"].to(device, non_blocking=True).float() - mean) / std  # (N, C, T, H, W)
            shapes = [tuple(x.shape[1:])] * x.shape[0]
            sample_tokens = [model.tokens(x.shape[1:])] * x.shape[0]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss = flow.loss(lambda xt, t: ddp(xt, t, text=text, text_mask=text_mask), x, sample_tokens[0],
                                 generator).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip or float("inf"))
        for group in opt.param_groups:
            group["lr"] = cfg.optim.lr * min(1.0, (step + 1) / cfg.optim.warmup_steps) if cfg.optim.warmup_steps else cfg.optim.lr
        opt.step()
        update_ema(ema, model, cfg.train.ema_decay)
        step += 1
        batch_tokens = sum(sample_tokens)
        capacity = max(cfg.data.token_budget, batch_tokens)  # a clip longer than the budget fills its own step
        samples += len(shapes)
        tokens_seen += batch_tokens
        capacity_seen += capacity
        interval["loss"] += loss.detach()  # no host sync until the log line
        interval["steps"] += 1
        interval["tokens"] += batch_tokens
        interval["capacity"] += capacity
        interval["flops"] += step_flops(shapes, text_lengths)
        interval["text"] += sum(text_lengths)
        interval["text_slots"] += batch["text_mask"].numel()

        if step % cfg.train.log_every == 0 or step == cfg.train.steps:
            counts = [float(interval[k]) for k in ("steps", "tokens", "capacity", "flops", "text", "text_slots")]
            stats = torch.cat([interval["loss"].double().reshape(1), torch.tensor(counts, device=device, dtype=torch.float64)])
            if world_size > 1:
                dist.all_reduce(stats)
            seconds = time.perf_counter() - interval["start"]
            n_steps, n_tokens, n_capacity, flops, n_text, text_slots = stats[1:].tolist()
            record = {"step": step, "epoch": loader.epoch, "loss": stats[0].item() / n_steps,
                      "steps_per_s": interval["steps"] / seconds, "tokens_per_s": n_tokens / seconds,
                      "padding": 1 - n_tokens / n_capacity, "text_padding": 1 - n_text / text_slots if text_slots else 0.0,
                      "model_tflops_per_s": flops / seconds / 1e12,
                      "grad_norm": float(grad_norm), "lr": opt.param_groups[0]["lr"]}
            if peak:
                record["mfu"] = flops / seconds / (peak * world_size)
            losses.append(record["loss"])
            if heldout and (step % cfg.train.eval_every == 0 or step == cfg.train.steps) and rank == 0:
                record["heldout"] = heldout_loss(model, heldout, flow, cfg.train.heldout_t, (mean, std), device, use_bf16)
            if rank == 0:
                log.info("step %d  loss %.4f  %.2f steps/s  %.0f tokens/s  padding %.1f%%%s%s", step, record["loss"],
                         record["steps_per_s"], record["tokens_per_s"], 100 * record["padding"],
                         f"  MFU {100 * record['mfu']:.1f}%" if "mfu" in record else "",
                         "  heldout " + json.dumps(record["heldout"]) if "heldout" in record else "")
                with open(results / "log.jsonl", "a") as handle:
                    handle.write(json.dumps(record) + "\n")
            interval = fresh_interval()

        if step % cfg.train.ckpt_every == 0 or step == cfg.train.steps:
            rng = {"generator": generator.get_state(), "torch": torch.get_rng_state()}
            rngs = [rng]
            if world_size > 1:
                rngs = [None] * world_size
                dist.all_gather_object(rngs, rng)
            if rank == 0:
                state = {"optimizer": opt.state_dict(), "loader": loader.state_dict(), "rng": rngs}
                path = save_checkpoint(results, step, model, ema, state, checkpoint_config, cfg.train.keep_checkpoints)
                log.info("saved checkpoint %s", path)

    # Finish: check that DDP kept the ranks identical, report, clean up.
    totals = torch.tensor([samples, tokens_seen, capacity_seen], device=device, dtype=torch.float64)
    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1)
    in_sync = True
    if world_size > 1:
        dist.all_reduce(totals)
        sums = [torch.zeros_like(checksum) for _ in range(world_size)]
        dist.all_gather(sums, checksum)
        in_sync = all(torch.equal(s, sums[0]) for s in sums)
    summary = {"steps": step, "world_size": world_size, "device": str(device), "parameters": model_params,
               "losses": losses, "samples": int(totals[0]), "tokens": int(totals[1]),
               "padding": 1 - float(totals[1] / totals[2]), "packing": cfg.data.packing, "ranks_in_sync": in_sync,
               "loader": loader.state_dict(), "checkpoint": str(latest_checkpoint(results))}
    if rank == 0:
        (results / "summary.json").write_text(json.dumps(summary, indent=1))
    if world_size > 1 and os.environ.get("VIDPREP_OWNS_PG") == "1":
        dist.destroy_process_group()
    return summary


class StepFlops:
    """Model FLOPs of one optimiser step (forward + backward = 3x forward) over the batch's clips, each
    counted alone (its own tokens and caption; padding is not useful work), cached per (grid, caption)."""

    def __init__(self, cfg):
        self.cfg, self.cache = cfg, {}
        self.patch = (cfg.patch_t, cfg.patch_size, cfg.patch_size)

    def __call__(self, shapes: list[tuple[int, ...]], text_lengths: list[int]) -> float:
        total = 0.0
        for shape, text_len in zip(shapes, text_lengths):
            key = (tuple(-(-v // p) for v, p in zip(shape[1:], self.patch)), int(text_len))
            if key not in self.cache:
                self.cache[key] = 3 * model_flops(self.cfg, *key)
            total += self.cache[key]
        return total


def setup_distributed(device: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device): under torchrun (WORLD_SIZE > 1) start the process group; under Ray
    Train it is already started. NCCL on GPUs, gloo on CPU."""
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device == "auto":
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", 1)) > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        os.environ["VIDPREP_OWNS_PG"] = "1"
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), device
    return 0, 1, device


def latent_norm(index: ShardIndex, mode: str) -> tuple[list[float], list[float]] | None:
    if mode == "none" or (mode == "auto" and index.channel_mean is None):
        return None
    if index.channel_mean is None:
        raise ValueError("data.latent_norm: 'stats' needs committed shard_stats files; there are none")
    return index.channel_mean, index.channel_std


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    ema_params = list(ema.parameters())
    torch._foreach_mul_(ema_params, decay)
    torch._foreach_add_(ema_params, [p.detach() for p in model.parameters()], alpha=1 - decay)


@torch.no_grad()
def heldout_loss(model: DiT, batches: list[dict], flow: Flow, ts: list[float], norm, device, use_bf16: bool) -> dict[str, float]:
    """Mean loss over the held-out batches at fixed t, with fixed noise: comparable from step to step."""
    mean, std = norm
    totals = {t: 0.0 for t in ts}
    for i, batch in enumerate(batches):
        x = (batch["latent"].to(device).float() - mean) / std  # (N, C, T, H, W)
        text, text_mask = batch["text"].to(device).float(), batch["text_mask"].to(device)
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(i)).to(device)
        for t in ts:
            times = torch.full((x.shape[0],), t, device=device)
            if flow.config.objective == "ddpm":
                times = (times * (flow.config.ddpm_steps - 1)).round().long()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss = flow.loss(lambda xt, tt: model(xt, tt, text=text, text_mask=text_mask), x, model.tokens(x.shape[1:]),
                                 None, t=times, noise=noise)
            totals[t] += loss.mean().item() / len(batches)
    return {f"{t:g}": round(v, 6) for t, v in totals.items()}


def run_ray(config: TrainConfig, num_workers: int, address: str | None = None, use_gpu: bool | None = None) -> dict:
    """The same `main` on Ray Train's TorchTrainer workers (process group set up by Ray). Data and
    results must be on a filesystem every worker sees; paths are made absolute here."""
    try:
        import ray
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer
    except ImportError as err:
        raise RuntimeError(f"--backend ray needs Ray Train (pip install 'ray[train]'): {err}") from None

    from pipeline.run.executors import init_ray

    if "://" not in config.data.path:  # (a store URI stays as it is: every worker opens it)
        config.data.path = str(Path(config.data.path).resolve())
    config.train.results = str(Path(config.train.results).resolve())
    # A new local instance (never a stray one on this machine), or a cluster with vidprep's code shipped
    # to its workers; either way no worker gets a terminal as stdin (pipeline/run/terminal.py).
    init_ray(address, None)
    if use_gpu is None:
        use_gpu = ray.cluster_resources().get("GPU", 0) >= num_workers
    trainer = TorchTrainer(_ray_worker, train_loop_config={"config": to_dict(config)},
                           scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
                           run_config=RunConfig(name="vidprep-train", storage_path=str(Path(config.train.results) / "ray")))
    trainer.fit()
    return json.loads((Path(config.train.results) / "summary.json").read_text())


def _ray_worker(loop_config: dict) -> None:
    import ray.train.torch

    from pipeline.trainer.config import TrainConfig
    from pipeline.typed import build

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    main(build(TrainConfig, loop_config["config"], ""), device=str(ray.train.torch.get_device()))
