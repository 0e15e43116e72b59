"""Private helper: a transformers text encoder that returns unpadded token embeddings.

Used by the encode stage (caption_long / caption_short → shards) and by the
trainer's sampler (the user's prompt), so training and sampling embed text
the same way. `kind`: `t5` (T5EncoderModel, what PixArt, CogVideoX and Wan use)
or `clip` (CLIPTextModel).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class TextEncoder:
    tokenizer: Any
    model: Any
    ref: str
    kind: str
    max_tokens: int

    @classmethod
    def load(cls, ref: str, kind: str = "t5", device: str = "cpu", dtype=None, max_tokens: int = 226,
             revision: str | None = None, trust_remote_code: bool = False,
             subfolder: str | None = None) -> "TextEncoder":
        """Encoder weights only (T5EncoderModel skips a full checkpoint's decoder); `subfolder` and
        `revision` pick e.g. a diffusers repo's `text_encoder/` or an encoder-only bf16 checkpoint."""
        import torch

        from stages.models.loading import import_torchvision

        import_torchvision()
        import transformers

        model_cls = {"t5": transformers.T5EncoderModel, "clip": transformers.CLIPTextModel}[kind]
        tokenizer = _tokenizer(transformers, ref, revision, trust_remote_code, subfolder)
        model = model_cls.from_pretrained(ref, revision=revision, dtype=dtype or torch.float32,
                                          trust_remote_code=trust_remote_code,
                                          **({"subfolder": subfolder} if subfolder else {}))
        return cls(tokenizer, model.to(device).eval().requires_grad_(False), ref, kind, max_tokens)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size if self.kind == "clip" else self.model.config.d_model)

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        """One float32 (L_i, D) array per text: the tokens' last hidden states, padding removed."""
        import torch

        if not texts:
            return []
        tokens = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_tokens,
                                return_tensors="pt").to(self.model.device)
        with torch.inference_mode():
            hidden = self.model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).last_hidden_state
        mask = tokens.attention_mask.bool()  # works for left- and right-padding tokenizers
        return [hidden[i][mask[i]].float().cpu().numpy() for i in range(len(texts))]


def _tokenizer(transformers, ref: str, revision: str | None, trust_remote_code: bool, subfolder: str | None):
    """The tokenizer beside the weights or, in a diffusers repo, in the sibling `tokenizer/` folder.

    The sibling is tried first: transformers 5 builds an *empty* T5Tokenizer from a bare
    `text_encoder/config.json` without complaint, and every caption then tokenizes to unknowns.
    """
    kwargs = dict(revision=revision, trust_remote_code=trust_remote_code)
    if not subfolder:
        return transformers.AutoTokenizer.from_pretrained(ref, **kwargs)
    sibling = subfolder.replace("text_encoder", "tokenizer")
    for folder in dict.fromkeys((sibling, subfolder)):
        try:
            return transformers.AutoTokenizer.from_pretrained(ref, subfolder=folder, **kwargs)
        except (OSError, ValueError):
            continue
    raise OSError(f"{ref}: no tokenizer in {sibling}/ or {subfolder}/")
