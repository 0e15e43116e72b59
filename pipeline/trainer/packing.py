"""The layout of a packed (NaViT) sequence: examples of any shape side by side in one token sequence.

A packed batch is a list of latents (C, T, H, W) of any shapes. Their patch
tokens are concatenated into one sequence (1, L, D), L = the sum of their
token counts: every linear layer (patch embedding, qkv, MLP, adaLN outputs,
final layer) runs over real tokens only, never padding. Attention must not
cross examples; two kernels give the same result:

- "segments" (default): examples are grouped in runs of consecutive examples
  with one latent shape (the loader orders each pack so), and each run is
  attended as one dense batch (k, l, D): exactly block-diagonal, no wasted
  FLOPs, no mask (so SDPA may pick its flash kernel on a GPU);
- "mask": one SDPA call over the whole sequence with a boolean block-diagonal
  mask (and for cross-attention, a mask that lets each token see only its own
  example's text tokens): the reference formulation, but dense — it computes
  L² scores, most of them masked away.

Per-example conditioning (timestep, pooled text, class) is gathered per token.
FlexAttention's block masks would be the third choice, but in PyTorch 2.13 its
backward raises NotImplementedError on the CPU.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import torch

Kernel = Literal["segments", "mask"]


@dataclass(frozen=True)
class Run:
    """Consecutive examples [first, first + count) with one latent shape: tokens [start, end) of the sequence."""

    first: int
    count: int
    shape: tuple[int, int, int, int]  # (C, T, H, W)
    grid: tuple[int, int, int]  # (t, h, w) patches
    start: int
    end: int

    @property
    def length(self) -> int:  # tokens per example
        return (self.end - self.start) // self.count


class Packing:
    def __init__(self, shapes: list[tuple[int, ...]], patch: tuple[int, int], device: torch.device | str,
                 kernel: Kernel = "segments"):
        if kernel not in ("segments", "mask"):
            raise ValueError(f"packed_attention: must be 'segments' or 'mask' (got {kernel!r})")
        p_t, p = patch
        self.kernel = kernel
        self.shapes = [tuple(int(v) for v in s) for s in shapes]
        self.grids = [(math.ceil(s[1] / p_t), math.ceil(s[2] / p), math.ceil(s[3] / p)) for s in self.shapes]
        self.tokens = [math.prod(g) for g in self.grids]
        self.length = sum(self.tokens)
        self.runs: list[Run] = []
        start = 0
        for i, shape in enumerate(self.shapes):
            if self.runs and self.runs[-1].shape == shape:
                last = self.runs[-1]
                self.runs[-1] = Run(last.first, last.count + 1, shape, last.grid, last.start, last.end + self.tokens[i])
            else:
                self.runs.append(Run(i, 1, shape, self.grids[i], start, start + self.tokens[i]))
            start += self.tokens[i]
        counts = torch.tensor(self.tokens, device=device)
        # output_size: no device-to-host sync on a GPU
        self.token_example = torch.repeat_interleave(torch.arange(len(shapes), device=device), counts,
                                                     output_size=self.length)  # (L,)
        self._masks: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.shapes)

    def expand(self, per_example: torch.Tensor) -> torch.Tensor:
        """(N, D) per-example values → (1, L, D) per token."""
        return per_example[self.token_example][None]

    def per_run(self, x: torch.Tensor, fn: Callable[[torch.Tensor, Run], torch.Tensor]) -> torch.Tensor:
        """Apply fn to each run as a dense batch (k, l, D) of the sequence x (1, L, D); → (1, L, D)."""
        d = x.shape[-1]
        outs = [fn(x[0, r.start:r.end].reshape(r.count, r.length, d), r).reshape(r.end - r.start, d) for r in self.runs]
        return torch.cat(outs)[None] if len(outs) > 1 else outs[0][None]

    def self_mask(self, kind: str) -> torch.Tensor:
        """(1, 1, L, L) boolean, True = attend: same example, and for factorized attention the same
        frame (spatial) or the same patch position (temporal)."""
        if kind not in self._masks:
            keys = [self.token_example]
            if kind != "full":
                t, hw = self._coordinates()
                keys.append(t if kind == "spatial" else hw)
            mask = torch.ones(self.length, self.length, dtype=torch.bool, device=self.token_example.device)
            for key in keys:
                mask &= key[:, None] == key[None, :]
            self._masks[kind] = mask[None, None]
        return self._masks[kind]

    def flat_context(self, context: torch.Tensor, context_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded text (N, S, D) with mask (N, S) → the real tokens (1, M, D) of every example, and the
        cross-attention mask (1, 1, L, M) that lets each patch token see its own example's text only."""
        text_example = torch.arange(len(self), device=context.device)[:, None].expand_as(context_mask)[context_mask]  # (M,)
        mask = self.token_example[:, None] == text_example[None, :]  # (L, M)
        return context[context_mask][None], mask[None, None]

    def _coordinates(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per token: its frame index and its (h, w) position index, within its example."""
        frames, positions = [], []
        for r in self.runs:
            t, h, w = r.grid
            frames.append(torch.arange(t).repeat_interleave(h * w).repeat(r.count))
            positions.append(torch.arange(h * w).repeat(t * r.count))
        device = self.token_example.device
        return torch.cat(frames).to(device), torch.cat(positions).to(device)
