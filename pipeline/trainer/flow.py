"""Training objectives and samplers: rectified flow (default) and DDPM ε-prediction.

Rectified flow (SD3's convention): t = 0 is data, t = 1 is noise,
x_t = (1 - t) x_0 + t ε, and the model predicts the velocity v = ε - x_0.
Training t is logit-normal (sigmoid of a normal), then shifted towards noise
for larger inputs: t' = s t / (1 + (s - 1) t), s = max(shift_min, shift *
sqrt(tokens / shift_base_tokens)) when shift_base_tokens > 0 — SD3's
resolution shift (its paper: s ∝ sqrt(pixels)), where tokens counts frames
too, so longer clips get more noise like bigger images. Defaults are anchored
on Wan 2.1, a video model in this latent layout: shift 3.0 at 480p × 81 frames
(21 latent frames × 30 × 52 patches = 32,760 tokens), which gives 4.56 at 720p
(75,600 tokens; Wan uses 5.0) and never less than 1 for small clips. An image
model (SD3: 3.0 at 1024², 4,096 tokens) wants its own anchor: set both fields.
Sampling integrates the ODE from t = 1 to 0 with Euler steps on the same
shifted schedule and classifier-free guidance.

DDPM: DiT's linear β schedule (1e-4 to 0.02, 1000 steps), ε-prediction with an
MSE loss, deterministic DDIM sampling. The model sees timesteps in [0, 1000]
under both objectives.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import torch


@dataclass
class FlowConfig:
    objective: Literal["rectified_flow", "ddpm"] = "rectified_flow"
    logit_mean: float = 0.0  # logit-normal t: sigmoid(N(logit_mean, logit_std²))
    logit_std: float = 1.0
    shift: float = 3.0  # the shift at shift_base_tokens (1 with shift_base_tokens 0: none)
    shift_base_tokens: int = 32760  # > 0: shift *= sqrt(tokens per sample / shift_base_tokens); 0: fixed shift
    shift_min: float = 1.0  # the resolution-dependent shift never goes below this
    ddpm_steps: int = 1000

    def __post_init__(self):
        if self.logit_std <= 0:
            raise ValueError(f"logit_std: must be > 0 (got {self.logit_std})")
        if self.shift <= 0:
            raise ValueError(f"shift: must be > 0 (got {self.shift})")
        if self.shift_min <= 0:
            raise ValueError(f"shift_min: must be > 0 (got {self.shift_min})")
        if self.shift_base_tokens < 0:
            raise ValueError(f"shift_base_tokens: must be >= 0 (got {self.shift_base_tokens})")
        if self.ddpm_steps < 2:
            raise ValueError(f"ddpm_steps: must be >= 2 (got {self.ddpm_steps})")


ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, timesteps in [0, 1000]) → prediction


def time_shift(t: torch.Tensor, shift: float) -> torch.Tensor:
    return shift * t / (1 + (shift - 1) * t)


class Flow:
    def __init__(self, config: FlowConfig):
        self.config = config
        betas = torch.linspace(1e-4, 0.02, config.ddpm_steps, dtype=torch.float64)
        self.alphas_cumprod = torch.cumprod(1 - betas, dim=0)  # (steps,)

    def shift_for(self, tokens: int) -> float:
        cfg = self.config
        if not cfg.shift_base_tokens:
            return cfg.shift
        return max(cfg.shift_min, cfg.shift * math.sqrt(tokens / cfg.shift_base_tokens))

    def sample_t(self, n: int, tokens: int | list[int], generator: torch.Generator) -> torch.Tensor:
        """Training times (N,): in (0, 1) for rectified flow, integer steps for DDPM. `tokens`: per
        sample, or one count for all (the shift follows each sample's size)."""
        cfg = self.config
        if cfg.objective == "ddpm":
            return torch.randint(0, cfg.ddpm_steps, (n,), generator=generator, device=generator.device)
        u = torch.randn(n, generator=generator, device=generator.device) * cfg.logit_std + cfg.logit_mean
        if isinstance(tokens, int):
            return time_shift(torch.sigmoid(u), self.shift_for(tokens))  # (N,)
        shift = torch.tensor([self.shift_for(k) for k in tokens], dtype=u.dtype, device=u.device)  # (N,)
        return time_shift(torch.sigmoid(u), shift)  # (N,)

    def loss(self, model: ModelFn, x0: torch.Tensor, tokens: int, generator: torch.Generator,
             t: torch.Tensor | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample MSE (N,) at times t (drawn when None) with noise ε (drawn when None)."""
        n, c = x0.shape[:2]
        t = self.sample_t(n, tokens, generator) if t is None else t
        noise = torch.randn(x0.shape, generator=generator, device=generator.device, dtype=x0.dtype) if noise is None else noise
        noise = noise.to(x0.device)
        t = t.to(x0.device)
        if self.config.objective == "ddpm":
            ab = self.alphas_cumprod.to(x0.device)[t].float().view(n, 1, 1, 1, 1)  # (N, 1, 1, 1, 1)
            xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise  # (N, C, T, H, W)
            target, timesteps = noise, t.float()
        else:
            tt = t.float().view(n, 1, 1, 1, 1)
            xt = (1 - tt) * x0 + tt * noise  # (N, C, T, H, W)
            target, timesteps = noise - x0, t.float() * 1000
        pred = model(xt, timesteps)[:, :c]  # a learned-sigma head's extra channels are not trained here
        return (pred.float() - target.float()).pow(2).mean(dim=(1, 2, 3, 4))  # (N,)

    def loss_packed(self, model: Callable, x0s: list[torch.Tensor], tokens: list[int], generator: torch.Generator,
                    t: torch.Tensor | None = None, noise: list[torch.Tensor] | None = None) -> torch.Tensor:
        """`loss` for a packed batch: x0s are N latents (C, T_i, H_i, W_i) of any shapes and the model
        maps a list of them (and timesteps (N,)) to a list of predictions. Per-sample MSE (N,), each
        sample's own mean, as `loss` gives it: averaging these weighs samples alike, as the unpacked path."""
        n, c = len(x0s), x0s[0].shape[0]
        device = x0s[0].device
        shapes, sizes = [x.shape for x in x0s], [x.numel() for x in x0s]
        x0 = torch.cat([x.reshape(-1) for x in x0s])  # (Σ C·T·H·W,)
        t = (self.sample_t(n, tokens, generator) if t is None else t).to(device)
        if noise is None:  # one draw for the whole batch
            noise = torch.randn(x0.shape, generator=generator, device=generator.device, dtype=x0.dtype).to(device)
        else:
            noise = torch.cat([z.reshape(-1) for z in noise]).to(device)
        counts = torch.tensor(sizes, device=device)
        if self.config.objective == "ddpm":
            ab = torch.repeat_interleave(self.alphas_cumprod.to(device)[t].float(), counts, output_size=x0.numel())
            xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
            target, timesteps = noise, t.float()
        else:
            tt = torch.repeat_interleave(t.float(), counts, output_size=x0.numel())  # per value (no host sync)
            xt = (1 - tt) * x0 + tt * noise
            target, timesteps = noise - x0, t.float() * 1000
        preds = model([v.view(s) for v, s in zip(xt.split(sizes), shapes)], timesteps)
        return torch.stack([(pred[:c].float() - goal.view(s).float()).pow(2).mean()
                            for pred, goal, s in zip(preds, target.split(sizes), shapes)])  # (N,)

    @torch.no_grad()
    def sample(self, model: ModelFn, noise: torch.Tensor, steps: int, tokens: int) -> torch.Tensor:
        """Integrate from noise (t = 1) to data (t = 0) in `steps` model calls (see `guided` for CFG)."""
        x = noise
        if self.config.objective == "ddpm":
            return self._ddim(model, x, steps)
        ts = time_shift(torch.linspace(1, 0, steps + 1, dtype=torch.float64), self.shift_for(tokens))  # (steps+1,)
        for t, t_next in zip(ts[:-1].tolist(), ts[1:].tolist()):
            v = model(x, torch.full((x.shape[0],), t * 1000, device=x.device))  # (N, C, T, H, W)
            x = x + (t_next - t) * v[:, : x.shape[1]].to(x.dtype)
        return x

    def _ddim(self, model: ModelFn, x: torch.Tensor, steps: int) -> torch.Tensor:
        ab = self.alphas_cumprod
        times = torch.linspace(self.config.ddpm_steps - 1, 0, steps).round().long().tolist()
        for i, t in enumerate(times):
            eps = model(x, torch.full((x.shape[0],), float(t), device=x.device))[:, : x.shape[1]].to(x.dtype)
            a, a_next = ab[t].item(), (ab[times[i + 1]].item() if i + 1 < len(times) else 1.0)
            x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
            x = math.sqrt(a_next) * x0 + math.sqrt(1 - a_next) * eps
        return x


def guided(forward: Callable, scale: float, cond: dict, uncond: dict) -> ModelFn:
    """Classifier-free guidance u + scale (c - u), both halves batched in one call.

    `forward(x, timesteps, **conditioning)` is the model; `cond` and `uncond`
    hold its conditioning tensors (same keys, batch first)."""
    both = {k: _cat_padded(cond[k], uncond[k]) for k in cond}

    def model(x, t):
        if scale == 1.0:
            return forward(x, t, **cond)
        c, u = forward(torch.cat([x, x]), torch.cat([t, t]), **both).chunk(2)  # 2 × (N, C, T, H, W)
        return u + scale * (c - u)
    return model


def _cat_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Concatenate along the batch, zero-padding dimension 1 (text length) to the longer."""
    if a.dim() >= 2 and a.shape[1] != b.shape[1]:
        size = max(a.shape[1], b.shape[1])
        a, b = (torch.cat([x, x.new_zeros(x.shape[0], size - x.shape[1], *x.shape[2:])], 1) for x in (a, b))
    return torch.cat([a, b])
