"""The video DiT: tubelet patches, 3D positions per batch, adaLN-Zero blocks, cross-attention to text.

Shapes: N batch, C latent channels, T/H/W latent frames/height/width,
(t, h, w) = the patch grid, L = t*h*w tokens, D hidden size, S text tokens,
E text-embedding size. Images are 1-frame videos (T = 1).

`forward` also takes a packed batch (NaViT): a list of latents of any shapes,
run as one token sequence with attention kept within each example (the layout
and its two attention kernels are in pipeline/trainer/packing.py).

With `DiTConfig.image(size)` (2D patches, 1000-class embedding, no text,
learned-sigma head) the blocks, embedders and final layer are exactly
facebookresearch/DiT's, so the parameter counts are the paper's; the fixed
sin-cos table that DiT stores as a frozen parameter is computed per batch here.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from pipeline.trainer.packing import Kernel, Packing
from pipeline.trainer.sizes import DiT_models


@dataclass
class DiTConfig:
    hidden_size: int = 384
    depth: int = 12
    num_heads: int = 6
    patch_size: int = 2  # p: spatial patch side
    patch_t: int = 1  # p_t: frames per tubelet (ViViT)
    in_channels: int = 4
    out_channels: int | None = None  # None: in_channels; 2 * in_channels is DiT's learned-sigma head
    mlp_ratio: float = 4.0
    text_dim: int | None = None  # E; None: no text conditioning (no cross-attention)
    num_classes: int | None = None  # class-conditional (DiT's ImageNet setting); row num_classes = null
    attention: Literal["full", "factorized"] = "full"  # factorized: blocks alternate spatial / temporal
    grad_checkpointing: bool = False
    packed_attention: Kernel = "segments"  # packed batches: per-run dense attention, or one block-masked SDPA

    def __post_init__(self):
        if self.hidden_size % self.num_heads or self.hidden_size % 2:
            raise ValueError(f"hidden_size: {self.hidden_size} must be even and divisible by num_heads {self.num_heads}")
        if self.patch_size < 1 or self.patch_t < 1:
            raise ValueError(f"patch_size: patch sizes must be >= 1 (got {self.patch_t}x{self.patch_size})")
        if self.attention not in ("full", "factorized"):
            raise ValueError(f"attention: must be 'full' or 'factorized' (got {self.attention!r})")
        if self.packed_attention not in ("segments", "mask"):
            raise ValueError(f"packed_attention: must be 'segments' or 'mask' (got {self.packed_attention!r})")

    @property
    def outputs(self) -> int:
        return self.out_channels or self.in_channels

    @classmethod
    def from_size(cls, size: str, **kwargs) -> "DiTConfig":
        if size not in DiT_models:
            raise ValueError(f"size: unknown DiT size {size!r} (known: {', '.join(DiT_models)})")
        return cls(**{**DiT_models[size], **{k: v for k, v in kwargs.items() if v is not None}})

    @classmethod
    def image(cls, size: str) -> "DiTConfig":
        """DiT's ImageNet setting: 32x32x4 latents, 2D patches, 1000 classes, learned sigma."""
        return cls.from_size(size, in_channels=4, out_channels=8, num_classes=1000)

    def as_dict(self) -> dict:
        return asdict(self)


def modulate(x, shift, scale):
    """x (N, L, D) with shift and scale already broadcastable: (N, 1, D) per example or (1, L, D) per token."""
    return x * (1 + scale) + shift


def per_token(values: torch.Tensor, packing: Packing | None) -> torch.Tensor:
    """Per-example conditioning (N, D) → broadcastable over the tokens: (N, 1, D), or (1, L, D) when packed."""
    return values.unsqueeze(1) if packing is None else packing.expand(values)


def patchify(x: torch.Tensor, p_t: int, p: int) -> torch.Tensor:
    """(N, C, T, H, W) → (N, L, p_t*p*p*C), tokens in (t, h, w) order; T, H, W multiples of the patch."""
    n, c, t, h, w = x.shape
    x = x.reshape(n, c, t // p_t, p_t, h // p, p, w // p, p)  # (N, C, t, p_t, h, p, w, p)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)  # (N, t, h, w, p_t, p, p, C)
    return x.reshape(n, (t // p_t) * (h // p) * (w // p), p_t * p * p * c)  # (N, L, p_t*p*p*C)


def unpatchify(x: torch.Tensor, grid: tuple[int, int, int], p_t: int, p: int) -> torch.Tensor:
    """(N, L, p_t*p*p*C) → (N, C, t*p_t, h*p, w*p): the inverse of patchify."""
    n, t, h, w = x.shape[0], *grid
    c = x.shape[-1] // (p_t * p * p)
    x = x.reshape(n, t, h, w, p_t, p, p, c)  # (N, t, h, w, p_t, p, p, C)
    x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)  # (N, C, t, p_t, h, p, w, p)
    return x.reshape(n, c, t * p_t, h * p, w * p)  # (N, C, T, H, W)


def sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """(M,) positions → (M, dim) [sin | cos], DiT/MAE frequencies."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))  # (dim/2,)
    out = pos.double()[:, None] * omega[None]  # (M, dim/2)
    return torch.cat([out.sin(), out.cos()], dim=1)  # (M, dim)


_POS_CACHE: dict[tuple, torch.Tensor] = {}


def pos_embed_3d(dim: int, grid: tuple[int, int, int], device, dtype) -> torch.Tensor:
    """Fixed 3D sin-cos positions for a (t, h, w) grid: 3/8 of dim each for h and w, the rest for t."""
    key = (dim, grid, str(device), dtype)
    if key not in _POS_CACHE:
        d_hw = 2 * ((3 * dim // 8) // 2)
        d_t = dim - 2 * d_hw
        t, h, w = torch.meshgrid(*(torch.arange(g) for g in grid), indexing="ij")  # 3 × (t, h, w)
        emb = torch.cat([sincos_1d(d_t, t.reshape(-1)), sincos_1d(d_hw, h.reshape(-1)),
                         sincos_1d(d_hw, w.reshape(-1))], dim=1)  # (L, D)
        if len(_POS_CACHE) > 64:
            _POS_CACHE.clear()
        _POS_CACHE[key] = emb.to(device=device, dtype=dtype)[None]  # (1, L, D)
    return _POS_CACHE[key]


class TimestepEmbedder(nn.Module):
    """Scalar timesteps in [0, 1000] → (N, D), DiT's sinusoidal frequencies + MLP."""

    def __init__(self, hidden_size: int, frequency_size: int = 256):
        super().__init__()
        self.frequency_size = frequency_size
        self.mlp = nn.Sequential(nn.Linear(frequency_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.frequency_size // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / half)  # (F/2,)
        args = t.float()[:, None] * freqs[None]  # (N, F/2)
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (N, F)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))  # (N, D)


class TextEmbedder(nn.Module):
    """Text-token embeddings → context tokens (N, 1+S, D) and a pooled vector (N, D).

    A learned null token is prepended to every caption: an empty caption (text
    dropped for classifier-free guidance, or the unconditional branch at
    sampling) attends to it alone and pools to it.
    """

    def __init__(self, text_dim: int, hidden_size: int):
        super().__init__()
        self.null = nn.Parameter(torch.randn(text_dim) * text_dim ** -0.5)
        self.proj = nn.Sequential(nn.Linear(text_dim, hidden_size), nn.GELU(approximate="tanh"),
                                  nn.Linear(hidden_size, hidden_size))
        self.pool = nn.Sequential(nn.Linear(text_dim, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, text: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = text.shape[0]
        text = torch.cat([self.null.to(text.dtype).expand(n, 1, -1), text], dim=1)  # (N, 1+S, E)
        mask = torch.cat([mask.new_ones(n, 1), mask.bool()], dim=1)  # (N, 1+S)
        weights = mask.clone()
        weights[:, 0] = ~mask[:, 1:].any(dim=1)  # pool the null token only for empty captions
        weights = weights.to(text.dtype)[..., None]  # (N, 1+S, 1)
        pooled = (text * weights).sum(1) / weights.sum(1)  # (N, E)
        return self.proj(text), mask, self.pool(pooled)  # (N, 1+S, D), (N, 1+S), (N, D)


class Attention(nn.Module):
    """Multi-head attention through scaled_dot_product_attention; self-attention when context is None."""

    def __init__(self, dim: int, num_heads: int, cross: bool = False):
        super().__init__()
        self.num_heads = num_heads
        self.cross = cross
        if cross:
            self.q = nn.Linear(dim, dim)
            self.kv = nn.Linear(dim, 2 * dim)
        else:
            self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None):
        b, l, d = x.shape
        h = self.num_heads
        if self.cross:
            q = self.q(x).reshape(b, l, h, d // h).transpose(1, 2)  # (B, h, L, d/h)
            k, v = self.kv(context).reshape(b, -1, 2, h, d // h).permute(2, 0, 3, 1, 4)  # 2 × (B, h, S, d/h)
            if mask.dim() == 2:  # a key mask (B, S), else a full one (B, 1, L, S) from a packed batch
                mask = mask[:, None, None, :]  # (B, 1, 1, S): True = attend
        else:
            q, k, v = self.qkv(x).reshape(b, l, 3, h, d // h).permute(2, 0, 3, 1, 4)  # 3 × (B, h, L, d/h)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, h, L, d/h)
        return self.proj(x.transpose(1, 2).reshape(b, l, d))  # (B, L, D)


class DiTBlock(nn.Module):
    """adaLN-Zero block: self-attention (full, spatial or temporal), cross-attention to text, MLP."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float, cross: bool, kind: str = "full"):
        super().__init__()
        self.kind = kind
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads)
        if cross:
            self.norm_cross = nn.LayerNorm(hidden_size, eps=1e-6)
            self.cross_attn = Attention(hidden_size, num_heads, cross=True)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        hidden = int(hidden_size * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(hidden_size, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, hidden_size))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x, c, grid, context=None, context_mask=None, packing: Packing | None = None):
        """x (N, L, D), c (N, D); packed: x (1, L, D) holding N examples as `packing` lays them out."""
        mods = self.adaLN_modulation(c).chunk(6, dim=1)  # 6 × (N, D)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (per_token(m, packing) for m in mods)
        x = x + gate_msa * self._self_attention(modulate(self.norm1(x), shift_msa, scale_msa), grid, packing)  # (N, L, D)
        if context is not None:
            x = x + self._cross_attention(self.norm_cross(x), context, context_mask, packing)  # (N, L, D)
        x = x + gate_mlp * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))  # (N, L, D)
        return x

    def _cross_attention(self, x, context, context_mask, packing):
        if packing is None or packing.kernel == "mask":  # packed + mask: context is flat, the mask (1, 1, L, M)
            return self.cross_attn(x, context, context_mask)
        return packing.per_run(x, lambda xr, r: self.cross_attn(xr, context[r.first:r.first + r.count],
                                                                context_mask[r.first:r.first + r.count]))

    def _self_attention(self, x, grid, packing=None):
        if packing is not None:  # attention within each example only
            if packing.kernel == "mask":
                return self.attn(x, mask=packing.self_mask(self.kind))
            return packing.per_run(x, lambda xr, r: self._self_attention(xr, r.grid))
        n, l, d = x.shape
        t, s = grid[0], grid[1] * grid[2]
        if self.kind == "spatial":  # each frame's h*w tokens attend to each other
            return self.attn(x.reshape(n * t, s, d)).reshape(n, l, d)  # (N*t, h*w, D) → (N, L, D)
        if self.kind == "temporal":  # each position's t tokens attend across frames
            x = x.reshape(n, t, s, d).transpose(1, 2).reshape(n * s, t, d)  # (N*h*w, t, D)
            return self.attn(x).reshape(n, s, t, d).transpose(1, 2).reshape(n, l, d)  # (N, L, D)
        return self.attn(x)  # (N, L, D): full spatio-temporal attention


class FinalLayer(nn.Module):
    def __init__(self, hidden_size: int, patch_dim: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x, c, packing: Packing | None = None):
        shift, scale = (per_token(m, packing) for m in self.adaLN_modulation(c).chunk(2, dim=1))  # 2 × (N, D)
        return self.linear(modulate(self.norm_final(x), shift, scale))  # (N, L, p_t*p*p*C_out)


class DiT(nn.Module):
    """Diffusion transformer over latent videos (N, C, T, H, W) of any shape."""

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = cfg = config
        d = cfg.hidden_size
        self.x_embedder = nn.Linear(cfg.patch_t * cfg.patch_size ** 2 * cfg.in_channels, d)  # tubelet embedding
        self.t_embedder = TimestepEmbedder(d)
        self.text_embedder = TextEmbedder(cfg.text_dim, d) if cfg.text_dim else None
        self.y_embedder = nn.Embedding(cfg.num_classes + 1, d) if cfg.num_classes else None  # last row: null class
        kinds = ["spatial", "temporal"] if cfg.attention == "factorized" else ["full"]
        self.blocks = nn.ModuleList([DiTBlock(d, cfg.num_heads, cfg.mlp_ratio, cross=bool(cfg.text_dim),
                                              kind=kinds[i % len(kinds)]) for i in range(cfg.depth)])
        self.final_layer = FinalLayer(d, cfg.patch_t * cfg.patch_size ** 2 * cfg.outputs)
        self.initialize_weights()

    def initialize_weights(self):
        def _basic_init(module):
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        self.apply(_basic_init)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for block in self.blocks:  # adaLN-Zero: every block starts as the identity
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
            if hasattr(block, "cross_attn"):
                nn.init.zeros_(block.cross_attn.proj.weight)
                nn.init.zeros_(block.cross_attn.proj.bias)
        for layer in (self.final_layer.adaLN_modulation[-1], self.final_layer.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def tokens(self, shape) -> int:
        """Patch tokens of one latent of shape (C, T, H, W) (after padding to the patch)."""
        cfg = self.config
        return math.ceil(shape[-3] / cfg.patch_t) * math.ceil(shape[-2] / cfg.patch_size) * math.ceil(shape[-1] / cfg.patch_size)

    def forward(self, x, t, text=None, text_mask=None, y=None):
        """x: (N, C, T, H, W) latents; t: (N,) timesteps in [0, 1000]; text: (N, S, E) with text_mask (N, S)
        (True = token); y: (N,) class labels. Returns (N, C_out, T, H, W).

        Packed (NaViT): x is a list of N latents (C, T_i, H_i, W_i) of any shapes; returns the list of
        their outputs (C_out, T_i, H_i, W_i), each as if run alone."""
        if isinstance(x, (list, tuple)):
            return self._forward_packed(list(x), t, text, text_mask, y)
        cfg = self.config
        n, _, T, H, W = x.shape
        p_t, p = cfg.patch_t, cfg.patch_size
        pad = (0, -W % p, 0, -H % p, 0, -T % p_t)  # any bucket: pad to whole patches, crop at the end
        if any(pad):
            x = F.pad(x, pad)  # (N, C, T', H', W')
        grid = (x.shape[2] // p_t, x.shape[3] // p, x.shape[4] // p)  # (t, h, w)
        # The residual stream stays float32 under bf16 autocast, as in DiT: only the blocks' matmuls run
        # in bf16, and their outputs are added to an fp32 stream (the positions are fp32 too).
        x = self.x_embedder(patchify(x, p_t, p)).float()  # (N, L, D)
        x = x + pos_embed_3d(cfg.hidden_size, grid, x.device, torch.float32)  # (N, L, D)
        c, context, text_mask = self._conditioning(n, t, text, text_mask, y, x.device)
        for block in self.blocks:
            if cfg.grad_checkpointing and self.training:
                x = checkpoint(block, x, c, grid, context, text_mask, use_reentrant=False)  # (N, L, D)
            else:
                x = block(x, c, grid, context, text_mask)  # (N, L, D)
        x = self.final_layer(x, c)  # (N, L, p_t*p*p*C_out)
        x = unpatchify(x, grid, p_t, p)  # (N, C_out, T', H', W')
        return x[:, :, :T, :H, :W]  # (N, C_out, T, H, W)

    def _conditioning(self, n, t, text, text_mask, y, device):
        """→ c (N, D): timestep + pooled text + class; the text context (N, 1+S, D) and its mask (N, 1+S)."""
        cfg = self.config
        c = self.t_embedder(t)  # (N, D)
        context = None
        if self.text_embedder is not None:
            if text is None:  # unconditional: empty captions
                text = torch.zeros(n, 0, cfg.text_dim, device=device)
                text_mask = torch.zeros(n, 0, dtype=torch.bool, device=device)
            context, text_mask, pooled = self.text_embedder(text.float(), text_mask)  # (N, 1+S, D), (N, 1+S), (N, D)
            c = c + pooled  # (N, D)
        if self.y_embedder is not None:
            y = torch.full((n,), cfg.num_classes, device=device) if y is None else y
            c = c + self.y_embedder(y)  # (N, D)
        return c, context, text_mask

    def _forward_packed(self, xs: list[torch.Tensor], t, text, text_mask, y) -> list[torch.Tensor]:
        cfg = self.config
        p_t, p, d = cfg.patch_t, cfg.patch_size, cfg.hidden_size
        device = xs[0].device
        packing = Packing([x.shape for x in xs], (p_t, p), device, cfg.packed_attention)
        tokens, positions = [], []
        for r in packing.runs:  # each run of one shape: padded, patchified and positioned as a dense batch
            x = torch.stack(xs[r.first:r.first + r.count])  # (k, C, T, H, W)
            T, H, W = r.shape[1:]
            pad = (0, -W % p, 0, -H % p, 0, -T % p_t)
            x = F.pad(x, pad) if any(pad) else x
            tokens.append(patchify(x, p_t, p).flatten(0, 1))  # (k*l, p_t*p*p*C)
            positions.append(pos_embed_3d(d, r.grid, device, torch.float32)[0].repeat(r.count, 1))  # (k*l, D)
        x = self.x_embedder(torch.cat(tokens)).float()[None] + torch.cat(positions)[None]  # (1, L, D)
        c, context, context_mask = self._conditioning(len(xs), t, text, text_mask, y, device)  # (N, D), ...
        if context is not None and packing.kernel == "mask":
            context, context_mask = packing.flat_context(context, context_mask)  # (1, M, D), (1, 1, L, M)
        for block in self.blocks:
            if cfg.grad_checkpointing and self.training:
                x = checkpoint(block, x, c, None, context, context_mask, packing, use_reentrant=False)  # (1, L, D)
            else:
                x = block(x, c, None, context, context_mask, packing)  # (1, L, D)
        x = self.final_layer(x, c, packing)[0]  # (L, p_t*p*p*C_out)
        outputs = []
        for r in packing.runs:
            out = unpatchify(x[r.start:r.end].reshape(r.count, r.length, -1), r.grid, p_t, p)  # (k, C_out, T', H', W')
            outputs += out[:, :, :r.shape[1], :r.shape[2], :r.shape[3]].unbind(0)
        return outputs
