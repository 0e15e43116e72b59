"""The training configuration: one YAML file plus `--set key=value`, typed and checked before any work.

Same machinery as the pipeline's config (pipeline.typed): an unknown key or a
bad value fails with the dotted field name, e.g. `optim.lr: must be > 0`.
Sections: data (the loader), model (a DiT size from the registry, optionally
narrowed), flow (the objective), optim, train (the loop, checkpoints, logs)
and sample (defaults that `vidprep sample` reads from the checkpoint).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pipeline.config import read_yaml
from pipeline.trainer.flow import FlowConfig
from pipeline.trainer.loader import DataConfig
from pipeline.trainer.sizes import DiT_models
from pipeline.typed import ConfigError, build


@dataclass
class ModelConfig:
    size: str = "DiT-S/2"  # a key of pipeline.trainer.sizes.DiT_models
    patch_t: int = 1  # frames per tubelet
    attention: Literal["full", "factorized"] = "full"
    depth: int | None = None  # None: the size's; set these for a smaller (baby) model
    hidden_size: int | None = None
    num_heads: int | None = None
    grad_checkpointing: bool = False
    packed_attention: Literal["segments", "mask"] = "segments"  # with data.packing (pipeline/trainer/packing.py)

    def __post_init__(self):
        if self.size not in DiT_models:
            raise ValueError(f"size: unknown DiT size {self.size!r} (known: {', '.join(DiT_models)})")
        if self.patch_t < 1:
            raise ValueError(f"patch_t: must be >= 1 (got {self.patch_t})")

    def build(self, in_channels: int, text_dim: int | None):
        from pipeline.trainer.model import DiTConfig

        try:
            return DiTConfig.from_size(self.size, patch_t=self.patch_t, attention=self.attention, depth=self.depth,
                                       hidden_size=self.hidden_size, num_heads=self.num_heads, in_channels=in_channels,
                                       text_dim=text_dim or None, grad_checkpointing=self.grad_checkpointing,
                                       packed_attention=self.packed_attention)
        except ValueError as err:
            raise ConfigError(f"model.{err}") from None


@dataclass
class OptimConfig:
    lr: float = 1e-4  # DiT: AdamW, constant 1e-4, no weight decay
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    grad_clip: float = 1.0  # max global grad norm (0: off)
    warmup_steps: int = 0

    def __post_init__(self):
        if self.lr <= 0:
            raise ValueError(f"lr: must be > 0 (got {self.lr})")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas: two values in [0, 1) (got {self.betas})")
        if self.grad_clip < 0 or self.weight_decay < 0 or self.warmup_steps < 0:
            raise ValueError("grad_clip: grad_clip, weight_decay and warmup_steps must be >= 0")


@dataclass
class LoopConfig:
    steps: int = 400_000  # total optimiser steps (a resumed run continues to this)
    results: str = "results"  # checkpoints/, log.jsonl, summary.json
    seed: int = 0
    log_every: int = 100
    eval_every: int = 1000  # held-out loss at fixed t (needs data.holdout_fraction > 0)
    ckpt_every: int = 5000  # and always at the last step
    keep_checkpoints: int = 3
    ema_decay: float = 0.9999
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    device: str = "auto"  # auto: cuda:LOCAL_RANK when available, else cpu
    resume: Literal["auto", "never"] = "auto"  # auto: continue from results/checkpoints/latest.json
    heldout_t: list[float] = field(default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9])
    peak_tflops: float | None = None  # the accelerator's dense peak for MFU; None: looked up by GPU name

    def __post_init__(self):
        for name in ("steps", "log_every", "eval_every", "ckpt_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1 (got {getattr(self, name)})")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay: must be in [0, 1) (got {self.ema_decay})")
        if self.peak_tflops is not None and self.peak_tflops <= 0:
            raise ValueError(f"peak_tflops: must be > 0 (got {self.peak_tflops})")
        if not all(0 < t < 1 for t in self.heldout_t):
            raise ValueError(f"heldout_t: values in (0, 1) (got {self.heldout_t})")


@dataclass
class SampleConfig:
    steps: int = 50
    cfg_scale: float = 5.0
    upsample: bool = False  # expand the prompt with stages/models/expander.py (issue 4) before encoding
    expander_model: str | None = None  # the expander's model reference (hub id or local folder)
    fps: float | None = None  # None: the shards' fps

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps: must be >= 1 (got {self.steps})")


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: LoopConfig = field(default_factory=LoopConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)


def load_train_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    return build(TrainConfig, read_yaml(path, overrides), "")
