"""Stage `expand` (1:1, GPU actor; runs on CPU too): dense caption → `caption_long` + `caption_short`.

DALL-E 3's recaptioning recipe: a causal LM, through its chat template and a
fixed style (the system prompt), rewrites each clip's `caption_dense` (plus
text that came with the source, if a column holds it) into one detailed,
self-contained paragraph and one sentence, returned as JSON and parsed
strictly; failures are retried with seeded sampling, then fall back to the
dense caption with the reason stored (stages/models/expander.py). `vidprep expand
"a prompt"` and the trainer's sampler use the same Expander (`upsample`).

Stored per clip: both captions, their token counts and repetition scores,
status (ok | fallback | skipped), reason, attempts, empty/truncated flags, the
unusable reply of a fallback, and the version (model, prompt hash, settings).
With `clip_model` set (the clip_score stage's model) and that stage on,
`caption_short_clip_sim` is the cosine of CLIP(caption_short) and the clip's
`clip_embedding`: a low value flags a caption that doesn't match its clip.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from stages.models.expander import Expander, Expansion
from stages.models.generate import model_ref
from stages.text.quality import check_template
from stages.text.sidecar import read_sidecar
from stages.base import Resources, Stage, require

CATALOG = (
    pa.field("caption_long", pa.string()),
    pa.field("caption_short", pa.string()),
    pa.field("caption_long_tokens", pa.int32()),  # tokens of the stored text (expander's tokenizer)
    pa.field("caption_short_tokens", pa.int32()),
    pa.field("caption_long_repetition", pa.float32()),  # share of repeated token 3-grams
    pa.field("caption_short_repetition", pa.float32()),
    pa.field("expand_status", pa.string()),  # ok | fallback | skipped
    pa.field("expand_reason", pa.string()),  # "<code>: <detail>" of the last failed attempt; null when ok
    pa.field("expand_attempts", pa.int32()),
    pa.field("expand_empty", pa.bool_()),  # the last reply was empty
    pa.field("expand_truncated", pa.bool_()),  # the last reply hit max_new_tokens
    pa.field("expand_raw", pa.string()),  # a fallback's unusable reply (first 2000 characters)
    pa.field("expand_model", pa.string()),
    pa.field("expand_prompt_hash", pa.string()),
    pa.field("expand_settings", pa.string()),  # JSON
    pa.field("caption_short_clip_sim", pa.float32()),  # cos(CLIP text(caption_short), clip_embedding)
)

SYSTEM_PROMPT = (
    "You write captions for the training set of a text-to-video model. You receive a detailed description of "
    "one video clip, sometimes with text that came with the video. Reply with one JSON object and nothing else: "
    '{"long": "...", "short": "..."}. "long" is one self-contained paragraph of 60 to 150 words, in the present '
    "tense, that covers in this order: the subjects and their appearance, their actions, the setting, the camera "
    "(shot size, angle, movement), the lighting, and the look (colour, texture, style). \"short\" is one sentence "
    "of at most 25 words naming the main subject, action and setting. Use only what the description supports; "
    'do not invent names, brands or on-screen text. Never begin with phrases like "The video shows" or '
    '"In this clip".'
)


@dataclass
class Expand(Stage):
    name = "expand"
    gpu_cost = 3.0  # a 4B LM writing ~200 tokens a clip from text alone
    inputs = ("status", "caption_dense")
    outputs = tuple(f.name for f in CATALOG)
    catalog_fields = CATALOG

    model: str = "Qwen/Qwen3-4B-Instruct-2507"  # hub id or local folder
    revision: str | None = None
    system_prompt: str = SYSTEM_PROMPT  # the style, shared by captions and upsampled prompts
    prompt_template: str = "Description of the clip:\n{caption}{source}"  # {caption} {source}
    source_template: str = "\n\nText that came with the video: {source_text}"  # fills {source} when present
    upsample_template: str = "A short prompt for the video model; expand it into the caption style:\n{prompt}"
    source_text_column: str | None = None  # a column with source-provided text (title, alt text), if any
    sidecar_text: bool = False  # also read <video stem>.txt / .json beside the source as source text
    max_new_tokens: int = 320
    min_new_tokens: int = 0  # > 0 forces a fixed generation length (benchmarks only)
    retries: int = 2  # extra attempts, with sampling, after a reply that does not parse
    retry_temperature: float = 0.7
    seed: int = 0
    short_max_words: int = 30  # a fallback's short caption: the first sentence, cut to this
    gen_batch_size: int = 16  # requests per generate call (after sorting by length)
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    attn_implementation: str | None = None
    trust_remote_code: bool = False
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. {enable_thinking: false}
    clip_model: str | None = None  # the clip_score stage's open_clip model: enables caption_short_clip_sim
    clip_pretrained: str | None = None  # and its pretrained tag or weights file
    clip_model_config: str | None = None  # and its model config JSON, if it has one
    resources: Resources = field(default_factory=lambda: Resources(cpus=1, gpus=1, concurrency=1, batch_size=64))

    def __post_init__(self):
        require(bool(self.model.strip()), "model", "must name a hub id or a local folder")
        self.model = model_ref(self.model)
        for name in ("clip_model_config", "clip_pretrained"):  # files may be built later (demo-models)
            value = getattr(self, name)
            if value and Path(value).is_file():
                setattr(self, name, str(Path(value).resolve()))  # workers may run elsewhere
        check_template(self.prompt_template, "prompt_template", ("caption", "source"))
        check_template(self.source_template, "source_template", ("source_text",))
        check_template(self.upsample_template, "upsample_template", ("prompt",))
        require("{caption}" in self.prompt_template, "prompt_template", "must contain {caption}")
        require("{prompt}" in self.upsample_template, "upsample_template", "must contain {prompt}")
        require(self.max_new_tokens >= 1, "max_new_tokens", f"must be >= 1 (got {self.max_new_tokens})")
        require(0 <= self.min_new_tokens <= self.max_new_tokens, "min_new_tokens",
                f"must be between 0 and max_new_tokens (got {self.min_new_tokens})")
        require(self.retries >= 0, "retries", f"must be >= 0 (got {self.retries})")
        require(self.retry_temperature > 0, "retry_temperature", f"must be > 0 (got {self.retry_temperature})")
        require(self.short_max_words >= 1, "short_max_words", f"must be >= 1 (got {self.short_max_words})")
        require(self.gen_batch_size >= 1, "gen_batch_size", f"must be >= 1 (got {self.gen_batch_size})")

    def setup(self) -> None:
        self.expander = Expander(self).load()
        self.clip = None
        if self.clip_model:
            from stages.models.clip import load_clip
            from stages.models.loading import device_for

            self.clip = load_clip(self.clip_model, self.clip_pretrained, model_config=self.clip_model_config,
                                  device=device_for(self.resources, self.name))

    def __call__(self, batch: pa.Table) -> pa.Table:
        self.check_inputs(batch)
        if self.source_text_column and self.source_text_column not in batch.column_names:
            raise KeyError(f"stage 'expand': source_text_column {self.source_text_column!r} is not a column; "
                           f"the batch has {batch.column_names}")
        rows = self.accepted(batch)
        dense = batch.column("caption_dense").to_pylist()
        source = batch.column(self.source_text_column).to_pylist() if self.source_text_column else [None] * len(dense)
        if self.sidecar_text:
            source = _with_sidecars(batch, rows, source)
        requests, fallbacks = [], []
        for i in rows:
            has_text = bool((dense[i] or "").strip() or (source[i] or "").strip())
            requests.append(self.expander.caption_request(dense[i], source[i]) if has_text else None)
            fallbacks.append((dense[i] or "").strip() or (source[i] or "").strip())
        results = self.expander.expand(requests, fallbacks)
        version = self.expander.version()
        out: dict[str, list] = {f.name: [None] * batch.num_rows for f in CATALOG}
        for i, result in zip(rows, results):
            values = {"caption_long": result.long, "caption_short": result.short,
                      "caption_long_tokens": result.long_tokens, "caption_short_tokens": result.short_tokens,
                      "caption_long_repetition": result.long_repetition,
                      "caption_short_repetition": result.short_repetition,
                      "expand_status": result.status, "expand_reason": result.reason,
                      "expand_attempts": result.attempts, "expand_empty": result.empty if result.attempts else None,
                      "expand_truncated": result.truncated if result.attempts else None,
                      "expand_raw": result.raw, **version}
            for name, value in values.items():
                out[name][i] = value
        out["caption_short_clip_sim"] = self._clip_similarity(batch, out["caption_short"])
        for f in CATALOG:
            batch = batch.append_column(f, pa.array(out[f.name], type=f.type))
        return batch

    def _clip_similarity(self, batch: pa.Table, shorts: list[str | None]) -> list[float | None]:
        """cos(CLIP text embedding of caption_short, clip_embedding) where both exist."""
        sims: list[float | None] = [None] * batch.num_rows
        if self.clip is None or "clip_embedding" not in batch.column_names:
            return sims
        embeddings = batch.column("clip_embedding").to_pylist()
        rows = [i for i in range(batch.num_rows) if shorts[i] and embeddings[i] is not None]
        if not rows:
            return sims
        texts = self.clip.encode_texts([shorts[i] for i in rows])  # (M, D) unit
        clips = np.asarray([embeddings[i] for i in rows], dtype=np.float32)  # (M, E), float16-rounded
        if clips.shape[1] != texts.shape[1]:
            raise ValueError(f"clip_model: {self.clip_model} gives {texts.shape[1]}-d text embeddings but "
                             f"clip_embedding is {clips.shape[1]}-d; name the clip_score stage's model")
        clips /= np.linalg.norm(clips, axis=1, keepdims=True).clip(min=1e-12)
        for i, value in zip(rows, (texts * clips).sum(1)):
            sims[i] = float(value)
        return sims


def _with_sidecars(batch: pa.Table, rows: list[int], source: list[str | None]) -> list[str | None]:
    """Source text per row: the column's, else the video's sidecar <stem>.txt/.json (read once per video)."""
    uris = batch.column("source_uri").to_pylist()
    found: dict[str, str | None] = {}
    merged = list(source)
    for i in rows:
        if not merged[i]:
            if uris[i] not in found:
                found[uris[i]] = read_sidecar(uris[i])
            merged[i] = found[uris[i]]
    return merged


_LOADED: dict[str, Expander] = {}  # one loaded model per settings, for repeated upsample() calls


def expander_for(config=None) -> Expander:
    """A loaded Expander for an Expand stage, a mapping of its fields, or None (the defaults)."""
    if config is None:
        config = Expand()
    elif isinstance(config, dict):  # checked and typed like the config file's stages.expand
        from pipeline.typed import build  # the config layer, imported only when a mapping is given

        config = build(Expand, config, "stages.expand")
    key = json.dumps({k: v for k, v in vars(config).items() if not k.startswith("_")}, sort_keys=True, default=str)
    if key not in _LOADED:
        _LOADED[key] = Expander(config).load()
    return _LOADED[key]


def upsample(prompt: str, config=None) -> str:
    """Prompt upsampling for sampling: `prompt` rewritten as a long caption in the training style.

    The same model, system prompt and parser as the captions of the training
    data (`stages.expand.Expand`); falls back to the prompt itself when the
    model's reply can't be used (see `expand_prompt` for the status and reason).
    """
    return expand_prompt(prompt, config).long or prompt


def expand_prompt(prompt: str, config=None) -> Expansion:
    """Like `upsample`, with the short caption, status, reason and attempts."""
    return expander_for(config).upsample_one(prompt)
